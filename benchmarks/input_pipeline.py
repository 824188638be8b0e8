"""Host input-pipeline cost per image and core, PIL path vs ``data.device_photometric``.

    PYTHONPATH=. python benchmarks/input_pipeline.py                     # this table
    PYTHONPATH=. python benchmarks/input_pipeline.py --grain-workers 0,4,8,12,16 --configs NeCo
    PYTHONPATH=. python benchmarks/input_pipeline.py --device-batch 64 --configs NeCo

Default mode: writes `--images` photo-like 640×480 JPEGs (COCO's size; smooth colour
fields plus noise, quality 90) to a temporary folder, then for every image and paper config
times decode (`images.decode`) + `MultiCropTransform` of the config's recipe, in one process
(one core), as this process's CPU time (``--wall``: wall time): "before" (PIL photometric
ops + float normalisation on the host) and "after" (``device_photometric``: crop + resize +
flip on the host, uint8 views + draws shipped, the rest in the step). The two alternate
per image (which goes first alternates too), so a machine shared with other jobs loads
both alike; the ``uptime`` load averages are printed. Also times a JPEG decode with PIL's
``draft`` at ½ scale (what a reduced-size decode could save).

``--grain-workers``: images/s of the real grain pipeline (`pipeline.build`, ImageFolder
source, the config's batch) for each worker count: the measurement that picks
``data.workers`` on a training host. ``--device-batch B``: ms per step of the jitted
device-side ops (`photometric.apply_to_batch`) on a batch of B images of the config's
shapes, on the default JAX device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
from PIL import Image

from dense_jax.core.config_files import config_from_file
from dense_jax.data import images, pipeline
from dense_jax.data.transforms import MultiCropTransform

CONFIGS = {
    "DINO": "configs/dino_coco.py",
    "CrOC": "configs/croc_coco.py",
    "NeCo": "configs/neco_dinov2.py",
    **({"CrIBo": "configs/cribo_coco.py"} if os.path.exists("configs/cribo_coco.py") else {}),
}
IMAGE_HW = (480, 640)


def write_jpegs(folder: str, count: int, seed: int = 0) -> list[str]:
    """`count` photo-like JPEGs (quality 90) of COCO's usual 640×480."""
    rng = np.random.default_rng(seed)
    h, w = IMAGE_HW
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (h // 32, w // 32, 3), dtype=np.uint8))
        field = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), np.int16)
        pixels = np.clip(field + rng.integers(-12, 13, field.shape), 0, 255).astype(np.uint8)
        paths.append(os.path.join(folder, f"{i:04d}.jpg"))
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def decode_draft(path: str, scale: int = 2) -> np.ndarray:
    with Image.open(path) as image:
        image.draft("RGB", (image.width // scale, image.height // scale))
        return np.asarray(image.convert("RGB"))


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def time_transforms(paths, configs, repeats: int, clock=time.process_time) -> dict:
    """ms per image of decode, before and after, per config, interleaved; `clock` is this
    process's CPU time by default (what a core spends; robust to other jobs on the machine,
    unlike wall time)."""
    transforms = {}
    for name, path in configs.items():
        spec = pipeline.crop_spec(config_from_file(path))
        transforms[name] = {
            "before": MultiCropTransform(dataclasses.replace(spec, device_photometric=False)),
            "after": MultiCropTransform(dataclasses.replace(spec, device_photometric=True)),
        }
    times = {name: {"decode": [], "draft": [], "before": [], "after": []} for name in configs}
    for r in range(repeats):
        for i, path in enumerate(paths):
            for name, variants in transforms.items():
                order = ("before", "after") if (i + r) % 2 == 0 else ("after", "before")
                for variant in order:
                    t0 = clock()
                    image = images.decode(path)
                    t1 = clock()
                    variants[variant].random_map({"image": image}, np.random.default_rng(i))
                    t2 = clock()
                    times[name]["decode"].append(t1 - t0)
                    times[name][variant].append(t2 - t0)
                t0 = clock()
                decode_draft(path)
                times[name]["draft"].append(clock() - t0)
    return {name: {k: 1e3 * statistics.mean(v) for k, v in t.items()} for name, t in times.items()}


def grain_rates(paths, config_path: str, workers: list[int], batches: int) -> dict:
    """images/s of `pipeline.build` over an ImageFolder of `paths` (repeated) per worker count,
    over `batches` batches after the first (which includes the workers' start-up). Even with
    0 workers grain prefetches elements with threads (``ReadOptions``: 16 threads, 500
    elements), so take `batches` · batch well above 500."""
    from absl import flags

    from dense_jax.data import sources

    flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags
    root = os.path.dirname(os.path.dirname(paths[0]))
    rates = {}
    for count in workers:
        config = config_from_file(config_path)
        config.data.update(dict(workers=count, device_photometric=True))
        source = sources.SkipUnreadable(
            sources.ImageFolder(root, (os.path.basename(os.path.dirname(paths[0])),), ""), 1
        )
        config = pipeline_config(config, len(source))
        data = iter(pipeline.build(config, source, 0, 1))
        next(data)
        t0 = time.perf_counter()
        for _ in range(batches):
            next(data)
        rates[count] = batches * config.data.batch_size / (time.perf_counter() - t0)
        data.close()
    return rates


def pipeline_config(config, num_examples: int):
    from dense_jax.train.loop import resolve_config

    config.data.batch_size = min(config.data.batch_size, num_examples)
    return resolve_config(config, num_examples)


def device_step_ms(config_path: str, batch: int, repeats: int = 10) -> float:
    """Median ms of the jitted device photometric ops on `batch` images of the config."""
    import jax

    from dense_jax.data import photometric

    spec = dataclasses.replace(pipeline.crop_spec(config_from_file(config_path)), device_photometric=True)
    image = np.random.default_rng(0).integers(0, 256, IMAGE_HW + (3,), dtype=np.uint8)
    transform = MultiCropTransform(spec)
    outs = [transform.random_map({"image": image}, np.random.default_rng(i)) for i in range(batch)]
    host = jax.tree.map(lambda *v: np.stack(v), *outs)
    keys = [k for k in host if k.startswith(("global", "local"))]
    device = jax.device_put({k: host[k] for k in keys})
    fn = jax.jit(photometric.apply_to_batch, static_argnums=(1, 2, 3))
    args = (spec.mean, spec.std, spec.jitter[3] > 0)
    jax.block_until_ready(fn(device, *args))
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(device, *args))
        runs.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(runs)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--grain-workers", default="")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--device-batch", type=int, default=0)
    parser.add_argument("--out", default="")
    parser.add_argument("--wall", action="store_true", help="time wall clock instead of CPU time")
    args = parser.parse_args()
    configs = {name: CONFIGS[name] for name in args.configs.split(",")}
    result = {"load_before": load_average()}
    print(result["load_before"])
    if args.device_batch:
        result["device_ms"] = {
            name: device_step_ms(path, args.device_batch) for name, path in configs.items()
        }
        for name, ms in result["device_ms"].items():
            print(f"{name}: device photometric ops, batch {args.device_batch}: {ms:.2f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "train"))
        paths = write_jpegs(os.path.join(tmp, "train"), args.images)
        if args.grain_workers:
            workers = [int(w) for w in args.grain_workers.split(",")]
            result["grain"] = {
                name: grain_rates(paths, path, workers, args.batches) for name, path in configs.items()
            }
            for name, rates in result["grain"].items():
                print(name, " ".join(f"workers={w}: {r:.1f} img/s" for w, r in rates.items()))
        elif not args.device_batch:
            clock = time.perf_counter if args.wall else time.process_time
            result["clock"] = clock.__name__
            result["ms_per_image"] = time_transforms(paths, configs, args.repeats, clock)
            print("| config | decode | decode, draft ½ | before (PIL) | after (device) | before / after |")
            print("|---|---|---|---|---|---|")
            for name, ms in result["ms_per_image"].items():
                print(
                    f"| {name} | {ms['decode']:.1f} | {ms['draft']:.1f} | {ms['before']:.1f} | "
                    f"{ms['after']:.1f} | {ms['before'] / ms['after']:.2f}× |"
                )
    result["load_after"] = load_average()
    print(result["load_after"])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
