"""Deliberately broken implementations that the strengthened tests must catch (issue 18 item 8).

    PYTHONPATH=. python benchmarks/mutations.py                 # every mutant
    PYTHONPATH=. python benchmarks/mutations.py --only=8b,8c    # some of them

Each mutant is one textual edit of the package (a plausible bug: a mesh-dependent learning rate,
a restore that silently starts over, a SIGTERM that exits without saving, ...). For each, the
tracked files of this checkout are copied to a temporary directory, the edit is applied there
(it must match exactly once, so a mutant cannot rot into a no-op), and the test that claims to
guard against that bug is run on the copy. The mutant is *killed* when the test fails. The
table printed last (and written with ``--out``) is the evidence that each test can fail.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Mutant:
    key: str  # the issue item the test answers
    bug: str  # what the edit models
    path: str
    old: str
    new: str
    test: str  # pytest node id(s), space-separated


MUTANTS = (
    Mutant(
        "1",
        "restored values are never checked against the saved fingerprint",
        "dense_jax/train/checkpoint.py",
        'bad = integrity.mismatches(meta["fingerprint"], state) if "fingerprint" in meta else []',
        "bad = []",
        "tests/train/test_checkpoint_faults.py::test_changed_values_fail_the_checksum",
    ),
    Mutant(
        "8a",
        "learning rate depends on the mesh size (1 + 1e-3 per extra device)",
        "dense_jax/train/step.py",
        "lr, wd = schedules.lr(step), schedules.weight_decay(step)",
        "lr, wd = schedules.lr(step) * (1 + 1e-3 * (mesh.size - 1)), schedules.weight_decay(step)",
        "tests/train/test_trainer.py::test_mesh_parity",
    ),
    Mutant(
        "8b",
        "restore ignores the run's own checkpoints and silently starts over",
        "dense_jax/train/restore.py",
        "found = newest_state(ckpt, target, data_iter)\n    if found is not None:",
        "found = None\n    if found is not None:",
        "tests/train/test_trainer.py::test_sigkill_resume_is_bitwise",
    ),
    Mutant(
        "8c-sigterm",
        "SIGTERM stops the run without saving",
        "dense_jax/train/loop.py",
        "if stop or done % config.ckpt.every_steps == 0 or done == total:",
        "if done % config.ckpt.every_steps == 0 or done == total:",
        "tests/train/test_loop.py::test_sigterm_saves_at_the_next_step_and_exits_cleanly",
    ),
    Mutant(
        "8c-nan",
        "the logged loss and gradient norm are never checked for NaN/Inf",
        "dense_jax/train/loop.py",
        'bad = [k for k in ("loss", "grad_norm") if not np.isfinite(v[k])]',
        "bad = []",
        "tests/train/test_loop.py::test_nan_stops_without_a_checkpoint_after_it",
    ),
    Mutant(
        "8d",
        "no gradient flows through NeCo's soft sort",
        "dense_jax/methods/neco.py",
        "    _, perm = soft_sort(\n        sim,",
        "    _, perm = soft_sort(\n        jax.lax.stop_gradient(sim),",
        "tests/methods/test_neco_train.py::test_a_few_steps_train_through_sort_roi_align_and_ema",
    ),
    Mutant(
        "8f",
        "attn_cls is off by one token (reads the CLS/register column)",
        "dense_jax/models/vit.py",
        'details["cls_probs"][:, :, first_patch:]',
        'details["cls_probs"][:, :, first_patch - 1 : -1]',
        "tests/models/test_weights_parity.py::test_every_output_matches_the_official_model",
    ),
    Mutant(
        "8g",
        "evaluation features come from shuffled weights (random-init level, every backbone alike)",
        "dense_jax/eval/features.py",
        "self.params = on_mesh(params, mesh)",
        "self.params = on_mesh(jax.tree.map(lambda a: jax.random.permutation(jax.random.key(0), a.ravel())"
        ".reshape(a.shape), params), mesh)",
        "tests/eval/test_protocols_rank_backbones.py",
    ),
)


def _copy_tracked(dest: str) -> None:
    """The tracked and untracked-but-not-ignored files of this checkout, copied to `dest`."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = os.path.join(REPO, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel))


def _apply(root: str, mutant: Mutant) -> None:
    path = os.path.join(root, mutant.path)
    with open(path) as f:
        text = f.read()
    matches = text.count(mutant.old)
    if matches != 1:
        raise SystemExit(f"mutant {mutant.key}: its edit matches {matches} times in {mutant.path}")
    with open(path, "w") as f:
        f.write(text.replace(mutant.old, mutant.new))


def run(mutant: Mutant) -> tuple[bool, float, str]:
    """(killed, seconds, last lines of pytest's output) for one mutant."""
    with tempfile.TemporaryDirectory(prefix=f"mutant_{mutant.key}_") as root:
        _copy_tracked(root)
        _apply(root, mutant)
        start = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-x",
                "-m",
                "",
                "-p",
                "no:cacheprovider",
                *mutant.test.split(" "),
            ],
            cwd=root,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode != 0, seconds, "\n".join(lines[-3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated mutant keys (default: all)")
    parser.add_argument("--out", default="", help="also write the table to this markdown file")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.key in args.only.split(",")]
    rows = ["| item | mutant (the bug) | test | outcome | s |", "|---|---|---|---|---|"]
    for mutant in chosen:
        killed, seconds, tail = run(mutant)
        print(f"[{mutant.key}] {'killed' if killed else 'SURVIVED'} in {seconds:.0f} s\n{tail}\n", flush=True)
        test, outcome = mutant.test.split("::")[-1], "killed" if killed else "**survived**"
        rows.append(f"| {mutant.key} | {mutant.bug} | `{test}` | {outcome} | {seconds:.0f} |")
    table = "\n".join(rows)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    survived = sum("**survived**" in row for row in rows)
    print(f"{len(chosen) - survived} of {len(chosen)} mutants killed")
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
