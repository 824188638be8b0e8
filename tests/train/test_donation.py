"""The train step donates its state (train/step.py): every buffer of the old state is reused
for the new one, none is copied (issue 16 item 2, "donate/alias checks")."""

from __future__ import annotations

import jax

from benchmarks.train_step import load_config, run_steps, setup_step


def test_step_donates_and_aliases_the_whole_state():
    config = load_config("configs/dino_coco.py:smoke", [])
    setup = setup_step(config)
    with setup.context():
        compiled = setup.lower().compile()
        state = setup.init()
        leaves = jax.tree.leaves(state)
        new_state, _ = compiled(state, setup.batch, setup.rng)
        jax.block_until_ready(new_state)
    assert all(leaf.is_deleted() for leaf in leaves)  # donated, not kept alive next to the new state
    state_bytes = sum(leaf.nbytes for leaf in leaves)
    assert compiled.memory_analysis().alias_size_in_bytes >= state_bytes
    assert len(run_steps(setup, compiled, 1)[1]) == 1  # the compiled step runs again on a fresh state
