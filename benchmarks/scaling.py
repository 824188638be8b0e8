"""Per-device memory and per-step communication of the paper configs, data-parallel and FSDP,
from XLA's compiled memory analysis and the collectives in the partitioned program (issue 16
item 4). Runs on a CPU with forced devices; writes JSON, and `benchmarks/scaling.md` from it.

    PYTHONPATH=. python benchmarks/scaling.py --devices 8 --out benchmarks/results/scaling_cpu8.json
    PYTHONPATH=. python benchmarks/scaling.py --report benchmarks/results/scaling_cpu8.json \
        > benchmarks/scaling.md

Measured, for each config and mode, by compiling the trainer's real step (`train_step.setup_step`,
mesh (N, 1), ``mesh.fsdp`` off / on) for N forced CPU devices at 1 and 2 images per device:

- state bytes per device: the compiled program's argument bytes minus the batch's;
- activation bytes per image: the difference of the temporaries at 2 and 1 images per device;
- collective bytes: every all-reduce / all-gather / reduce-scatter / all-to-all in the
  partitioned HLO, as its payload B (the full, unsharded size), and per-device ring traffic:
  all-reduce 2·(N−1)/N·B, all-gather and reduce-scatter (N−1)/N·B.

Extrapolated to other N (the report's formulas): data-parallel state is replicated; FSDP splits
the "embed"-annotated leaves N ways (the compiled fraction of the state that shrank at the
measured N), the rest stays replicated; the payloads do not depend on N, the traffic per device
follows the ring factors; activations at the paper's per-device batch max(1, B/N).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys

PAPER = {  # name -> (config spec, extra overrides)
    "NeCo ViT-S/14 reg4 518/98, B 64": ("configs/neco_dinov2.py", ()),
    "NeCo ViT-B/14 reg4 518/98, B 64": ("configs/neco_dinov2.py:vitb14", ("data.batch_size=64",)),
    "NeCo ViT-L/14 reg4 518/98, B 64": (
        "configs/neco_dinov2.py:vitb14",
        ("data.batch_size=64", "model.variant=dinov2_vitl14_reg4"),
    ),
    "DINO ViT-S/16 2×224, B 256": ("configs/dino_coco.py", ()),
    "CrOC ViT-S/16 2×224, B 256": ("configs/croc_coco.py", ()),
}
SPEED = ("model.dtype=bfloat16", "model.remat=True")
COLLECTIVE = re.compile(r"=\s*(.*?)\s(all-reduce|all-gather|reduce-scatter|all-to-all)(?:-start)?\(")
SHAPE = re.compile(r"(bf16|f16|f32|f64|s32|u32|s8|u8|pred)\[([\d,]*)\]")
BYTES = {"bf16": 2, "f16": 2, "f32": 4, "f64": 8, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1}


def collective_payloads(hlo: str, n: int) -> dict[str, float]:
    """Full-size payload bytes per collective kind in a partitioned HLO module's text."""
    out: dict[str, float] = {}
    for line in hlo.splitlines():
        m = COLLECTIVE.search(line)
        if not m:
            continue
        shapes = SHAPE.findall(m.group(1))
        size = sum(BYTES[t] * math.prod(int(x) for x in d.split(",") if x) for t, d in shapes)
        if m.group(2) == "reduce-scatter":
            size *= n  # the result is one shard
        out[m.group(2)] = out.get(m.group(2), 0.0) + size
    return out


def measure(spec: str, overrides: tuple, fsdp: bool, per_device: int, n: int) -> dict:
    from benchmarks.train_step import load_config, setup_step

    config = load_config(spec, [*overrides, *SPEED, f"data.batch_size={per_device * n}", f"mesh.fsdp={fsdp}"])
    config.mesh.shape = (n, 1)
    setup = setup_step(config)
    compiled = setup.lower().compile()
    mem = compiled.memory_analysis()
    batch_bytes = sum(a.addressable_shards[0].data.nbytes for a in jax_leaves(setup.batch))
    return {
        "state_bytes": mem.argument_size_in_bytes - batch_bytes,
        "temp_bytes": mem.temp_size_in_bytes,
        "collectives": collective_payloads(compiled.as_text(), n),
    }


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def run(devices: int, out: str, only: list[str] | None) -> None:
    results = {"devices": devices, "configs": {}}
    if os.path.exists(out):
        with open(out) as f:
            results = json.load(f)
    for name, (spec, overrides) in PAPER.items():
        if only and not any(o in name for o in only):
            continue
        for mode in ("dp", "fsdp"):
            key = f"{name} | {mode}"
            if key in results["configs"]:
                continue
            try:
                one = measure(spec, overrides, mode == "fsdp", 1, devices)
                two = measure(spec, overrides, mode == "fsdp", 2, devices)
                results["configs"][key] = {"one": one, "two": two}
            except Exception as error:  # noqa: BLE001  (recorded: e.g. a width not divisible by N)
                results["configs"][key] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
            print(key, json.dumps(results["configs"][key]), flush=True)
            with open(out, "w") as f:
                json.dump(results, f, indent=1)


def report(path: str) -> str:
    """Markdown tables extrapolated from one measured device count (module docstring)."""
    with open(path) as f:
        results = json.load(f)
    measured_n = results["devices"]
    gib = 2**30
    rows = []
    for key, r in results["configs"].items():
        name, mode = key.split(" | ")
        if "error" in r:
            rows.append(f"| {name} | {mode} | {r['error'][:80]} |" + " |" * 8)
            continue
        one, two = r["one"], r["two"]
        batch = int(re.search(r"B (\d+)", name).group(1))
        act = max(two["temp_bytes"] - one["temp_bytes"], 0)
        base_temp = one["temp_bytes"] - act
        state_n = one["state_bytes"]
        full_state = results["configs"].get(f"{name} | dp", {}).get("one", {}).get("state_bytes", state_n)
        cells = []
        for n in (1, 8, 64, 256):
            state = state_n
            if mode == "fsdp":
                sharded = (full_state - state_n) / (1 - 1 / measured_n) if measured_n > 1 else 0.0
                state = full_state - sharded + sharded / n
            per_device = max(1, batch // n)
            cells.append((state + base_temp + per_device * act) / gib)
        payload = one["collectives"]
        traffic = {
            n: sum((2 if kind == "all-reduce" else 1) * (n - 1) / n * b for kind, b in payload.items()) / gib
            for n in (8, 64, 256)
        }
        rows.append(
            f"| {name} | {mode} | {full_state / gib:.2f} | {act / gib:.2f} | "
            + " | ".join(f"{c:.1f}" for c in cells)
            + " | "
            + " | ".join(f"{traffic[n]:.2f}" for n in (8, 64, 256))
            + " |"
        )
    head = (
        "| config | mode | state GiB (1 dev) | act. GiB / image | mem/dev N=1 | N=8 | N=64 | N=256 "
        "| comm GiB/dev/step N=8 | N=64 | N=256 |\n|" + "---|" * 11
    )
    return head + "\n" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results/scaling_cpu8.json")
    parser.add_argument("--only", nargs="*", default=None, help="substrings of config names")
    parser.add_argument("--report", default="", help="print the markdown tables of a results JSON")
    args = parser.parse_args()
    if args.report:
        print(report(args.report))
        return
    if "jax" in sys.modules:
        raise RuntimeError("set the device count before jax is imported")
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
    ).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    run(args.devices, args.out, args.only)


if __name__ == "__main__":
    main()
