"""Mistakes in the command line and the config: one clear line from the training CLI, exit 1,
no traceback (dense_jax/core/errors.py)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m <module> args`` from the repository root on the 8 CPU devices of the tests."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),  # XLA_FLAGS (8 devices) from conftest
        timeout=timeout,
    )


def assert_one_line_error(out: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 1, no traceback, stderr ends with one ``error:`` line holding `words`; returns it."""
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), out.stderr[-2000:]
    for word in words:
        assert word in line, line
    return line


def exit_line(main, *args, words=()) -> str:
    """Run a CLI's ``main(*args)`` in-process; it must exit with one ``error:`` line holding
    `words` (what ``sys.exit`` prints on stderr, with status 1); returns the line."""
    with pytest.raises(SystemExit) as exit:
        main(*args)
    line = exit.value.code
    assert isinstance(line, str) and line.startswith("error: ") and "\n" not in line, line
    for word in words:
        assert word in line, line
    return line


@pytest.mark.parametrize(
    "override, words",
    [
        ("--config.data.bach_size=8", ("no field of the config", 'Did you mean "batch_size"')),
        ("--config.data.batch_size=abc", ("--config.data.batch_size=abc", "invalid literal for int()")),
        ("--config.data.batch_size=12", ("data.batch_size=12 is not divisible by the 8 devices",)),
        ("--config.mesh.shape=(16,1)", ("mesh.shape=(16, 1) needs 16 devices", "has 8")),
        ("--config.init_from=/nowhere/w.pth", ("weights file '/nowhere/w.pth' not found",)),
    ],
)
def test_train_cli_config_mistakes_are_one_line(tmp_path, override, words):
    out = run_cli("dense_jax.main", "--config=configs/dino_coco.py:smoke", f"--workdir={tmp_path}", override)
    assert_one_line_error(out, *words)
