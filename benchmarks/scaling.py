"""Per-device memory and per-step communication of the paper configs, data-parallel and FSDP,
from XLA's compiled memory analysis and the collectives in the partitioned program (issue 16
item 4). Runs on a CPU with forced devices; writes JSON, and the tables of
`benchmarks/scaling.md` from it.

    PYTHONPATH=. python benchmarks/scaling.py --devices 8 --out benchmarks/results/scaling_cpu8.json
    PYTHONPATH=. python benchmarks/scaling.py --report benchmarks/results/scaling_cpu8.json

Measured, for each config and mode, by compiling the trainer's real step (`train_step.setup_step`,
bf16 compute with remat, mesh (N, 1), ``mesh.fsdp`` off / on) for N forced CPU devices with one
image per device and small crops (`SMALL_CROPS`: neither the state nor the collectives depend
on the crop size, only the activations do):

- state bytes per device: the compiled program's argument bytes minus the batch's;
- collective payloads: every all-reduce / all-gather / reduce-scatter / all-to-all in the
  partitioned HLO, as its full (unsharded) size B; per-device ring traffic is
  all-reduce 2·(N−1)/N·B, all-gather and reduce-scatter (N−1)/N·B.

Extrapolated to other N: data-parallel state is replicated; FSDP splits the leaves annotated
"embed" N ways (the fraction of the state that shrank at the measured N), the rest stays
replicated; the payloads do not depend on N. Activations come from the GPU suite's compiled
step memory (`benchmarks/gpu`), per image, times the per-device batch.
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
    # one image per device: the clustering's normalisation group must divide the batch
    "CrOC ViT-S/16 2×224, B 256": ("configs/croc_coco.py", ("croc.norm_group=1",)),
}
SPEED = ("model.dtype=bfloat16", "model.remat=True")
SMALL_CROPS = {  # patch size -> crop overrides
    14: ("crops.global_size=56", "crops.local_size=28"),
    16: ("crops.global_size=64", "crops.local_size=32"),
}
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
    from dense_jax.models import build

    settings = [*overrides, *SPEED, f"data.batch_size={per_device * n}", f"mesh.fsdp={fsdp}"]
    patch = build.backbone(load_config(spec, settings).model).patch_size
    config = load_config(spec, [*settings, *SMALL_CROPS[patch]])
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
                results["configs"][key] = measure(spec, overrides, mode == "fsdp", 1, devices)
            except Exception as error:  # noqa: BLE001  (recorded: e.g. a width not divisible by N)
                results["configs"][key] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
            print(key, json.dumps(results["configs"][key]), flush=True)
            with open(out, "w") as f:
                json.dump(results, f, indent=1)


def report(path: str) -> str:
    """Markdown table extrapolated from one measured device count (module docstring)."""
    with open(path) as f:
        results = json.load(f)
    measured_n, gib = results["devices"], 2**30
    rows = []
    for key, r in results["configs"].items():
        name, mode = key.split(" | ")
        if "error" in r:
            rows.append(f"| {name} | {mode} | {r['error'][:100]} |" + " |" * 7)
            continue
        full = results["configs"].get(f"{name} | dp", {}).get("state_bytes", r["state_bytes"])
        sharded = (full - r["state_bytes"]) / (1 - 1 / measured_n) if mode == "fsdp" else 0.0
        state = {n: (full - sharded + sharded / n) / gib for n in (1, 8, 64, 256)}
        payload = r["collectives"]
        ring = {
            n: sum((2 if k == "all-reduce" else 1) * (n - 1) / n * b for k, b in payload.items())
            for n in (8, 64, 256)
        }
        traffic = {n: t / gib for n, t in ring.items()}
        kinds = ", ".join(f"{k} {b / gib:.2f}" for k, b in sorted(r["collectives"].items()))
        rows.append(
            f"| {name} | {mode} | "
            + " | ".join(f"{state[n]:.2f}" for n in (1, 8, 64, 256))
            + " | "
            + " | ".join(f"{traffic[n]:.2f}" for n in (8, 64, 256))
            + f" | {kinds} |"
        )
    head = (
        "| config | mode | state GiB/dev N=1 | N=8 | N=64 | N=256 | comm GiB/dev/step N=8 | N=64 | N=256 "
        f"| payload GiB per kind (measured, N={measured_n}) |\n|" + "---|" * 10
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
