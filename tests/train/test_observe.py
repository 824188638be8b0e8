"""The run's compile line and profiler window bounds (dense_jax/train/observe.py); the loop's
use of them is tested in test_loop.py."""

from dense_jax.train import observe


def test_describe_scales_counts_and_bytes():
    report = {"compile_s": 22.04, "params": {"backbone": 51296, "head": 3664, "bias": 12}}
    assert observe.describe(report) == "step compiled in 22.0 s; params backbone 51.3k, head 3.7k, bias 12"
    report = {"compile_s": 1, "params": {"backbone": 21_700_000}, "step_memory_bytes": int(2.1 * 2**30)}
    assert (
        observe.describe(report)
        == "step compiled in 1.0 s; params backbone 21.7M; step memory per device 2.1 GiB"
    )


def test_profile_window_traces_only_its_steps(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(observe.jax.profiler, "start_trace", lambda d: calls.append(("start", d)))
    monkeypatch.setattr(observe.jax.profiler, "stop_trace", lambda: calls.append(("stop",)))
    window = observe.ProfileWindow((2, 4), str(tmp_path))
    for step in range(6):
        window.before(step)
        calls.append(step)
        window.after(step + 1, None)
    window.close()
    assert calls == [0, 1, ("start", str(tmp_path)), 2, 3, ("stop",), 4, 5]
    off = observe.ProfileWindow((0, 0), str(tmp_path))
    off.before(0)
    off.close()
    assert not off.active
