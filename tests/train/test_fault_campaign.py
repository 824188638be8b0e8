"""The fault-injection campaign (`benchmarks/faults.py`, issue 18 item 7) as a slow test:
≥ 10 SIGKILLs per method (sync and async saves), every restart resumes and every run ends
bitwise equal to an uninterrupted one."""

import re

import pytest

from benchmarks import faults

METHODS = ["dino", "neco", "croc", "cribo"]


@pytest.mark.slow
def test_killed_runs_end_bitwise_equal(tmp_path, capsys):
    ok = faults.campaign(METHODS, kills=5, seed=0, root=str(tmp_path))
    out = capsys.readouterr().out
    print(out)
    pattern = r"total: (\d+) kills, (\d+) restarts, (\d+) unreadable checkpoints, (\d+) failed restarts, "
    pattern += r"(\d+) fresh"
    total = re.search(pattern, out)
    assert ok and total, out
    kills, restarts, _, failed, fresh = map(int, total.groups())
    assert kills >= 10 * len(METHODS) and restarts >= kills and failed == fresh == 0, out
