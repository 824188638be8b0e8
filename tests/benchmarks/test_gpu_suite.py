"""The GPU suite never rots: its CPU dry run passes and fills every field, and the step path
imports and builds the paper configs without ml_collections / grain / tensorflow-datasets (the
GPU machine has none of them)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAPER_CONFIGS = (
    "configs/neco_dinov2.py",
    "configs/neco_dinov2.py:vitb14",
    "configs/dino_coco.py",
    "configs/croc_coco.py",
)
# XLA's cheapest CPU compile: the dry run is about compiling and running every program once.
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, not 8
    env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **extra)
    return env


BLOCKED_IMPORTS = """
import json, sys
for name in ("ml_collections", "grain", "tensorflow_datasets", "tensorflow"):
    sys.modules[name] = None  # any import of them raises ImportError
from benchmarks.gpu import suite  # installs the ConfigDict stand-in
import dense_jax.train.step, dense_jax.train.state, dense_jax.eval.retrieval.kernels, dense_jax.ops.knn
from dense_jax import methods
for name in ("dino", "neco", "croc"):
    methods.get(name)
configs = {spec: suite.train_step.load_config(spec, []).to_dict() for spec in sys.argv[1:]}
print(json.dumps({"impl": suite.CONFIG_IMPL, "configs": configs}, default=list))
"""


def test_step_path_and_configs_need_no_optional_packages():
    from benchmarks.train_step import load_config

    out = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORTS, *PAPER_CONFIGS],
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["impl"].startswith("benchmarks.gpu.configdict")
    for spec in PAPER_CONFIGS:  # the stand-in builds the same configs as ml_collections
        expected = json.loads(json.dumps(load_config(spec, []).to_dict(), default=list))
        assert got["configs"][spec] == expected, spec


def test_configdict_update_and_access():
    from benchmarks.gpu.configdict import ConfigDict

    c = ConfigDict(dict(a=1, sub=dict(b=2, c=(3, 4))))
    c.sub.update(dict(b=5))
    c.update(dict(sub=dict(d=6)))
    c["e"] = dict(f=7)
    assert c.sub.b == 5 and c.sub.c == (3, 4) and c.sub.d == 6 and c.e.f == 7
    assert c.get("missing", 8) == 8 and "a" in c and "missing" not in c
    assert c.to_dict() == {"a": 1, "sub": {"b": 5, "c": (3, 4), "d": 6}, "e": {"f": 7}}
    with pytest.raises(AttributeError):
        _ = c.missing


def test_cpu_dry_run_fills_every_field(tmp_path):
    from benchmarks.gpu import suite
    from benchmarks.train_step import load_config
    from dense_jax.models import build

    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu.suite", "--cpu-dry-run", "--out", str(tmp_path)],
        env=_env(XLA_FLAGS=FAST_XLA),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert results["mode"] == "cpu-dry-run" and results["platform"] == "cpu"
    assert results["hbird_device_vs_cpu"]["equal"] is True
    knn = results["knn"]
    assert knn["block_s"] > 0 and knn["voc_val_queries"] == 1449 * 36 * 36
    assert knn["voc_full_exact_s"] == pytest.approx(knn["block_s"] * knn["voc_val_queries"] / 64, rel=0.01)

    by_name = {r["entry"]: r for r in results["entries"]}
    assert list(by_name) == [e.name for e in suite.ENTRIES]
    for entry in suite.ENTRIES:
        r = by_name[entry.name]
        if not (ROOT / entry.config.partition(":")[0]).exists():
            assert "does not exist" in r["skipped"]
            continue
        assert "error" not in r and "skipped" not in r, r
        config, _ = suite.entry_config(entry, dry_run=True)
        assert r["batch"] == config.data.batch_size
        # MFU's numerator: 3 × student forward on all crops + teacher forward on the globals
        vit, c = build.backbone(config.model), config.crops
        per = {s: _vit_flops(vit, s, config) for s in (c.global_size, c.local_size)}
        student = c.n_global * per[c.global_size] + c.n_local * per[c.local_size]
        expected = config.data.batch_size * (3 * student + c.n_global * per[c.global_size])
        assert r["model_flops_per_step"] == pytest.approx(expected, rel=1e-9)
        assert r["overrides"][-3:] == list(suite.DRY_SPEED)
        assert r["step_ms"] > 0 and r["img_per_s"] == pytest.approx(r["batch"] / r["step_ms"] * 1e3, rel=0.01)
        assert r["mfu"] is None  # no peak for a CPU
        assert r["compile_s"]["step"] > 0
        assert r["donated_state_fraction"] >= 1.0  # the whole state is updated in place
        split = r["split_ms"]
        if not entry.split:
            assert split == {}
            continue
        for part in ("teacher_forward", "student_forward_backward", "optimizer_ema"):
            assert split[part] > 0, (entry.name, part)
        if config.method in ("neco", "croc"):
            assert 0 < r["method_ops_share"] == pytest.approx(r["method_ops_ms"] / r["step_ms"], rel=0.01)

    traced = by_name[suite.ENTRIES[0].name]["trace"]  # the default --trace entry, one step
    assert traced["lanes"] == ["/host:CPU"] and traced["ms_per_step"] > 0
    assert 0 < sum(share for _, _, share in traced["ops"]) <= 1.0001
    assert all("trace" not in r for r in results["entries"][1:])

    assert load_config("configs/neco_dinov2.py", []).data.batch_size == 64  # dry run left it alone

    table = out.stdout.strip().splitlines()
    rows = [line for line in table if line.startswith("| ")]
    assert rows[0].startswith("| entry | batch | crops | step ms | img/s | MFU")
    assert [row.split(" | ")[0][2:] for row in rows[1:]] == [e.name for e in suite.ENTRIES]
    assert table[-2].startswith("Hummingbird on cpu vs CPU backend: equal")
    assert table[-1].startswith("ViT-S/14 outputs, max |Δ| / max |fp32|")
    vn = results["vit_numerics"]
    assert vn["fused_vs_xla_bf16"] == {k: 0.0 for k in vn["fused_vs_xla_bf16"]}  # one implementation on CPU
    assert 0 < max(vn["bf16_xla"].values()) < 0.1
    assert (tmp_path / "gpu_suite.md").read_text().strip() == "\n".join(table[table.index(rows[0]) :])


def _vit_flops(vit, size: int, config) -> float:
    """Hand count: per block 24·T·D² (qkv, proj, MLP) + 4·T²·D (attention), patch embedding
    6·T·p²·D, NeCo's head 2·N·(D·h + h·h + h·o) on the N patch tokens."""
    n = (size // vit.patch_size) ** 2
    t, d = n + 1 + vit.num_registers, vit.embed_dim
    flops = vit.depth * (24 * t * d * d + 4 * t * t * d) + 6 * t * vit.patch_size**2 * d
    if config.method == "neco":
        h, o = config.neco.hidden_dim, config.neco.out_dim
        flops += 2 * n * (d * h + h * h + h * o)
    return flops


def test_trace_summary_sums_self_time_per_op(tmp_path):
    """Nested op events (a CPU while loop holding its body) count once, as self time; device
    lanes are preferred to the host's; other events are ignored."""
    from benchmarks.gpu import trace_summary

    def op(pid, ts, dur, name, tid=1):
        return {
            "ph": "X",
            "pid": pid,
            "tid": tid,
            "ts": ts,
            "dur": dur,
            "name": name,
            "args": {"hlo_op": name},
        }

    events = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
        {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}},
        op(1, 0, 1000, "host_op"),
        op(2, 0, 100, "while.1"),  # holds the two below: self time 100 - 30 - 20 = 50
        op(2, 10, 30, "fusion.1"),
        op(2, 50, 20, "fusion.2"),
        op(2, 200, 30, "fusion.1"),
        op(2, 0, 40, "fusion.3", tid=2),  # another stream
        {"ph": "X", "pid": 2, "tid": 1, "ts": 0, "dur": 500, "name": "no hlo_op", "args": {}},
    ]
    directory = tmp_path / "plugins" / "profile" / "run"
    directory.mkdir(parents=True)
    with gzip.open(directory / "host.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    summary = trace_summary.op_times(str(tmp_path), steps=2)
    assert summary["lanes"] == ["/device:GPU:0"]
    assert summary["ms_per_step"] == pytest.approx(0.085)  # (50 + 60 + 20 + 40) µs / 2 steps
    assert summary["ops"] == [
        ["fusion.1", 0.03, 0.3529],
        ["while.1", 0.025, 0.2941],
        ["fusion.3", 0.02, 0.2353],
        ["fusion.2", 0.01, 0.1176],
    ]
