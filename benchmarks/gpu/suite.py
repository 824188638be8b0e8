"""One-command GPU benchmark suite (issue 16): every paper config's real train step, its split,
exact k-NN at Hummingbird scale and the Hummingbird GPU-vs-CPU exactness check.

    bash benchmarks/gpu/run.sh                       # on the GPU machine; results in $OUT
    python -m benchmarks.gpu.suite --cpu-dry-run     # every entry at tiny shapes on a CPU (CI)

Per entry of `ENTRIES` (a config file, its variants and ``--set``-style overrides, plus the
speed settings `SPEED`): the trainer's own jitted step (`benchmarks/train_step.py`: sharded
state, EMA, optimizer, method aux) on device-resident synthetic batches of the config's
shapes: compile seconds, step ms (median of ``--steps`` calls after the first), img/s,
analytic MFU, the compiled program's memory; and the split, each part jitted on its own
(`benchmarks/step_parts.py`): teacher forward, student forward + backward, the method's own
ops (``method_parts`` of `METHOD_PARTS`), optimizer + EMA; for the ``--trace`` entries (default:
the first), a jax.profiler trace of 3 steps summed per XLA op (`trace_summary`: where the
step's time goes, kernel by kernel; 1 step in the dry run).

MFU = model FLOPs / step time / (peak × devices). Model FLOPs (`train_step.model_flops`):
per image and crop, ViT matmuls 24·T·D² + attention 4·T²·D per block (T tokens incl. CLS
and registers), the patch embedding 6·T·p²·D, NeCo's projection MLP on every patch token;
student fwd + bwd = 3 × forward on all crops, teacher forward on the globals; remat recompute,
DINO/CrOC heads and clustering not counted. Peak: `train_step.PEAK_TFLOPS` (dense bf16, or
TF32 for fp32 runs; H100 SXM / H200 989.4 TFLOP/s bf16). Memory: the compiled step's
arguments + outputs − aliased + temporaries (``memory_analysis``); the device allocator's
running peak is in the JSON.

Programs compile first, ``--compile-workers`` at a time in threads (XLA compiles with the
GIL released), then run one after the other; entries that would start after ``--budget-s``
are skipped with the reason. Missing config files are skipped with the reason printed. The
JSON (``$OUT/gpu_suite.json``, ``OUT`` defaulting to ``./out``) is rewritten after every
entry, so a run cut short keeps what it measured; the markdown table is printed last and
written to ``$OUT/gpu_suite.md``.

Needs neither grain, ml_collections nor tensorflow-datasets: `configdict.install` stands in
for ml_collections when it is absent, and the step's modules import it for annotations only.
"""

from __future__ import annotations

from benchmarks.gpu import configdict

CONFIG_IMPL = configdict.install()  # before anything imports a config file

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import jax  # noqa: E402

from benchmarks import step_parts, train_step  # noqa: E402
from benchmarks.gpu import numerics, retrieval_checks, trace_summary  # noqa: E402
from dense_jax.models import build  # noqa: E402
from dense_jax.train import observe  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    config: str  # path[:variants]
    overrides: tuple[str, ...] = ()  # key.path=value; data.batch_size ones are dropped in the dry run
    split: bool = True  # also time the parts (variants of an entry time the step only)


SPEED = ("model.dtype=bfloat16", "model.attention_impl=cudnn")
ENTRIES = (
    Entry("neco_vits14_reg4", "configs/neco_dinov2.py", ("data.batch_size=64",)),
    Entry("neco_vitb14_reg4", "configs/neco_dinov2.py:vitb14", ("data.batch_size=64", "model.remat=True")),
    Entry("dino_vits16", "configs/dino_coco.py"),
    Entry("croc_vits16", "configs/croc_coco.py"),
    Entry("cribo_vits16", "configs/cribo_coco.py"),
    # speed settings that change numerics or memory, chosen by these measurements (step only)
    Entry(
        "neco_vits14_reg4_bf16_residual",
        "configs/neco_dinov2.py",
        ("data.batch_size=64", "model.residual_dtype=bfloat16"),
        split=False,
    ),
    Entry(
        "neco_vitb14_reg4_remat_dots",
        "configs/neco_dinov2.py:vitb14",
        ("data.batch_size=64", "model.remat=True", "model.remat_policy=dots_with_no_batch_dims_saveable"),
        split=False,
    ),
)
# method -> module with ``method_parts(config) -> {name: Part}`` and ``METHOD_OPS`` (the part
# holding all of the method's own ops); a method without one gets no "method ops" column.
METHOD_PARTS = {
    "neco": "benchmarks.neco_parts",
    "croc": "benchmarks.croc_parts",
    "cribo": "benchmarks.cribo_parts",
}
DRY_SPEED = ("model.dtype=bfloat16", "model.attention_impl=xla", "model.depth=1")  # no cuDNN on a CPU


def entry_config(entry: Entry, dry_run: bool):
    """The entry's config with the speed settings, or its ``smoke`` variant for the dry run."""
    overrides = list(entry.overrides) + list(SPEED)
    spec = entry.config
    if dry_run:
        path, _, variants = spec.partition(":")
        spec = f"{path}:{variants + ',' if variants else ''}smoke"
        overrides = [o for o in entry.overrides if not o.startswith("data.batch_size")] + list(DRY_SPEED)
    config = train_step.load_config(spec, overrides)
    config.mesh.shape = (-1, 1)
    return config, overrides


def method_parts(config) -> tuple[dict, str | None, str]:
    """(parts, name of the method-ops part or None, note) for the config's method."""
    module_name = METHOD_PARTS.get(config.method)
    if module_name is None:
        return {}, None, f"{config.method}: no method-specific ops module"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        return {}, None, f"{module_name} does not exist yet"
    return module.method_parts(config), module.METHOD_OPS, ""


def memory_gib(compiled) -> float | None:
    """Arguments + outputs − aliased + temporaries of a compiled program, GiB."""
    total = observe.step_memory_bytes(compiled)
    return None if total is None else round(total / 2**30, 2)


def donated_fraction(setup: train_step.StepSetup, compiled) -> float | None:
    """Bytes of the step's outputs aliased to its donated inputs / bytes of the state (1.0: the
    whole state is updated in place; meant for the suite's single-device, data-parallel run)."""
    try:
        alias = compiled.memory_analysis().alias_size_in_bytes
    except (AttributeError, NotImplementedError, TypeError):
        return None
    state_bytes = sum(s.size * s.dtype.itemsize for s in jax.tree.leaves(jax.eval_shape(setup.init)))
    return round(alias / state_bytes, 3) if state_bytes else None


def allocator_peak_gib() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return round(peak / 2**30, 2) if peak is not None else None


@dataclasses.dataclass
class Prepared:
    """An entry ready to compile: the step setup and the parts, or why it is skipped."""

    entry: Entry
    record: dict
    setup: train_step.StepSetup | None = None
    parts: dict = dataclasses.field(default_factory=dict)
    method_ops: str | None = None
    compiled: dict = dataclasses.field(default_factory=dict)  # program -> executable or exception
    compile_s: dict = dataclasses.field(default_factory=dict)


def prepare(entry: Entry, dry_run: bool) -> Prepared:
    record = {"entry": entry.name, "config": entry.config}
    path = entry.config.partition(":")[0]
    if not os.path.isfile(path):
        record["skipped"] = f"{path} does not exist (its method is not in this checkout)"
        return Prepared(entry, record)
    config, overrides = entry_config(entry, dry_run)
    c = config.crops
    record.update(
        overrides=overrides,
        method=config.method,
        batch=config.data.batch_size,
        crops=f"{c.n_global}x{c.global_size}" + (f" + {c.n_local}x{c.local_size}" if c.n_local else ""),
        model_flops_per_step=train_step.model_flops(config, build.backbone(config.model)),
    )
    setup = train_step.setup_step(config)
    if not entry.split:
        return Prepared(entry, record, setup)
    with setup.context():
        state = setup.init()
    parts = step_parts.backbone_parts(config, state.params["backbone"], jax.random.key(1))
    extra, ops_name, note = method_parts(config)
    if note:
        record["method_ops_note"] = note
    parts.update(extra)
    parts["optimizer_ema"] = step_parts.optimizer_part(setup, state)
    return Prepared(entry, record, setup, parts, ops_name)


def compile_all(prepared: list[Prepared], workers: int) -> None:
    """Compile every step and part, `workers` at a time; exceptions are kept, not raised."""

    def compile_one(p: Prepared, name: str):
        start = time.perf_counter()
        try:
            if name == "step":
                with p.setup.context():
                    out = p.setup.lower().compile()
            else:
                out = p.parts[name].fn.lower(*p.parts[name].args).compile()
        except Exception as error:  # noqa: BLE001  (reported per program, the suite goes on)
            out = error
        return p, name, out, time.perf_counter() - start

    jobs = [(p, name) for p in prepared if p.setup for name in ("step", *p.parts)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for p, name, out, seconds in pool.map(lambda job: compile_one(*job), jobs):
            p.compiled[name], p.compile_s[name] = out, round(seconds, 1)


def measure(p: Prepared, steps: int, part_repeats: int, peak_of) -> None:
    """Run the compiled step and parts of `p`, filling ``p.record``."""
    r, config = p.record, p.setup.config
    r["compile_s"] = p.compile_s
    step = p.compiled["step"]
    if isinstance(step, Exception):
        r["error"] = f"step compile: {type(step).__name__}: {str(step)[:300]}"
        return
    r["step_memory_gib"] = memory_gib(step)
    r["donated_state_fraction"] = donated_fraction(p.setup, step)
    _, times, metrics = train_step.run_steps(p.setup, step, steps)
    step_s = statistics.median(times)
    flops = r["model_flops_per_step"]
    peak = peak_of(config.model.dtype)
    r.update(
        step_ms=round(step_s * 1e3, 2),
        step_ms_min_max=[round(min(times) * 1e3, 2), round(max(times) * 1e3, 2)],
        img_per_s=round(config.data.batch_size / step_s, 1),
        achieved_tflops=round(flops / step_s / 1e12, 1),
        peak_tflops_assumed=peak,
        mfu=round(flops / step_s / 1e12 / (peak * jax.device_count()), 4) if peak else None,
        loss=float(metrics["loss"]),
    )
    split = {}
    for name, part in p.parts.items():
        compiled = p.compiled[name]
        if isinstance(compiled, Exception):
            split[name] = f"compile: {type(compiled).__name__}: {str(compiled)[:200]}"
            continue
        split[name] = round(step_parts.median_ms(compiled, part.args, part_repeats), 2)
    r["split_ms"] = split
    if p.method_ops and isinstance(split.get(p.method_ops), float):
        r["method_ops_ms"] = split[p.method_ops]
        r["method_ops_share"] = round(split[p.method_ops] / r["step_ms"], 4)
    r["allocator_peak_gib_so_far"] = allocator_peak_gib()


def trace_ops(p: Prepared, steps: int, out: str) -> dict:
    """`trace_summary.op_times` of `steps` steps of `p`'s compiled step, traced after one
    untraced step (the trace stays in ``<out>/profile/<entry>`` for a viewer)."""
    directory = os.path.join(out, "profile", p.entry.name)
    step = p.compiled["step"]
    with p.setup.context():
        state, _ = step(p.setup.init(), p.setup.batch, p.setup.rng)
        jax.block_until_ready(state)
        with jax.profiler.trace(directory):
            for _ in range(steps):
                state, _ = step(state, p.setup.batch, p.setup.rng)
            jax.block_until_ready(state)
    return trace_summary.op_times(directory, steps)


def _cell(value, fmt="{:.1f}") -> str:
    return "—" if value is None or isinstance(value, str) else fmt.format(value)


def table(results: dict) -> str:
    """The markdown table of a results dict (one row per entry, then the retrieval rows)."""
    head = (
        "| entry | batch | crops | step ms | img/s | MFU | mem GiB | compile s | teacher fwd ms "
        "| student fwd+bwd ms | method ops ms (share) | opt+EMA ms |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in results["entries"]:
        if "skipped" in r or "error" in r:
            lines.append(f"| {r['entry']} | " + r.get("skipped", r.get("error", "")) + " |" + " |" * 10)
            continue
        split = r.get("split_ms", {})
        share = r.get("method_ops_share")
        ops = "—" if share is None else f"{r['method_ops_ms']:.1f} ({100 * share:.1f} %)"
        lines.append(
            f"| {r['entry']} | {r['batch']} | {r['crops']} | {_cell(r.get('step_ms'))} "
            f"| {_cell(r.get('img_per_s'))} | {_cell(r.get('mfu'), '{:.1%}')} "
            f"| {_cell(r.get('step_memory_gib'), '{:.2f}')} | {_cell(r['compile_s'].get('step'))} "
            f"| {_cell(split.get('teacher_forward'))} | {_cell(split.get('student_forward_backward'))} "
            f"| {ops} | {_cell(split.get('optimizer_ema'))} |"
        )
    knn = results.get("knn", {})
    if "block_s" in knn:
        lines.append(
            f"\nExact k-NN, M = {knn['memory_rows']:,} × D = {knn['dim']}, k = {knn['k']}: "
            f"{knn['queries_timed']} queries in {knn['block_s']:.3f} s ({knn['tflops']} TFLOP/s); "
            f"VOC val ({knn['voc_val_queries']:,} queries) ≈ {knn['voc_full_exact_s']:.1f} s."
        )
    hb = results.get("hbird_device_vs_cpu", {})
    if "equal" in hb:
        lines.append(
            f"Hummingbird on {hb['device']} vs CPU backend: {'equal' if hb['equal'] else 'DIFFERENT'} "
            f"({hb['index_mismatches']} index, {hb['prediction_mismatches']} of {hb['pixels']} "
            "pixel mismatches)."
        )
    vn = results.get("vit_numerics", {})
    if vn:
        worst = {name: max(vn[name].values()) for name in vn if isinstance(vn[name], dict)}
        lines.append(
            "ViT-S/14 outputs, max |Δ| / max |fp32| over cls/patch/q/k/v/attn_cls/last_blocks "
            f"(fused = {vn['fused_impl']}): " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()) + "."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="every entry at tiny shapes")
    parser.add_argument("--only", nargs="*", default=None, help="entry names to run (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10; dry run 2)")
    parser.add_argument("--compile-workers", type=int, default=None, help="default 4; dry run 2")
    parser.add_argument("--budget-s", type=float, default=None, help="default 420 s; dry run: none")
    parser.add_argument("--knn-queries", type=int, default=None, help="default 8192; dry run 64")
    parser.add_argument("--out", default=os.environ.get("OUT") or "out")
    parser.add_argument(
        "--trace", nargs="*", default=[ENTRIES[0].name], help="entries whose step ops are traced and summed"
    )
    args = parser.parse_args(argv)
    dry = args.cpu_dry_run
    steps = args.steps or (2 if dry else 10)
    part_repeats = 1 if dry else 5
    budget_s = args.budget_s or (float("inf") if dry else 420.0)
    start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    device = jax.devices()[0]
    results = {
        "suite": "benchmarks/gpu/suite.py",
        "mode": "cpu-dry-run" if dry else "full",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device.device_kind,
        "platform": device.platform,
        "n_devices": jax.device_count(),
        "jax": jax.__version__,
        "config_impl": CONFIG_IMPL,
        "load_average": os.getloadavg(),
        "entries": [],
    }

    def save():
        with open(os.path.join(args.out, "gpu_suite.json"), "w") as f:
            json.dump(results, f, indent=1)

    results["hbird_device_vs_cpu"] = retrieval_checks.hbird_device_vs_cpu()
    results["vit_numerics"] = numerics.attention_and_dtype_differences(*((56, 2, 2) if dry else (224, 2, 12)))
    rows = 4096 if dry else 10_240_000
    queries = args.knn_queries or (64 if dry else 8192)
    results["knn"] = retrieval_checks.knn_timing(rows, 384, queries, 30, 2 if dry else 3)
    save()
    print(json.dumps({k: results[k] for k in ("hbird_device_vs_cpu", "vit_numerics", "knn")}), flush=True)

    entries = [e for e in ENTRIES if args.only is None or e.name in args.only]
    prepared = []
    for entry in entries:
        try:
            prepared.append(prepare(entry, dry))
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            record = {"entry": entry.name, "error": f"setup: {type(error).__name__}: {error}"}
            prepared.append(Prepared(entry, record))
        if "skipped" in prepared[-1].record:
            print(f"skip {entry.name}: {prepared[-1].record['skipped']}", flush=True)
    compile_all(prepared, args.compile_workers or (2 if dry else 4))
    results["compile_wall_s"] = round(time.perf_counter() - start, 1)

    def peak_of(dtype: str):
        return train_step.peak_tflops(device.device_kind, dtype)

    for p in prepared:
        if p.setup is not None and "error" not in p.record:
            elapsed = time.perf_counter() - start
            if elapsed > budget_s:
                p.record["skipped"] = f"time budget: {elapsed:.0f} s > --budget-s {budget_s:.0f}"
            else:
                try:
                    measure(p, steps, part_repeats, peak_of)
                    if p.entry.name in args.trace and "error" not in p.record:
                        p.record["trace"] = trace_ops(p, 1 if dry else 3, args.out)
                except Exception as error:  # noqa: BLE001  (e.g. out of memory: the next entry still runs)
                    traceback.print_exc()
                    p.record["error"] = f"run: {type(error).__name__}: {str(error)[:300]}"
        results["entries"].append(p.record)
        p.setup, p.parts, p.compiled = None, {}, {}  # free the device buffers before the next entry
        print(json.dumps(p.record), flush=True)
        save()
    results["total_s"] = round(time.perf_counter() - start, 1)
    save()
    md = table(results)
    with open(os.path.join(args.out, "gpu_suite.md"), "w") as f:
        f.write(md + "\n")
    print(f"\n{results['device']}, jax {results['jax']}, {results['date_utc']}, {results['total_s']} s\n")
    print(md)
    return results


if __name__ == "__main__":
    main()
