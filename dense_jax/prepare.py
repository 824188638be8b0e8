"""Write the fixed file lists of an evaluation dataset beside the data, and optionally verify it.

    python -m dense_jax.prepare --dataset voc --root /data/VOCdevkit
    python -m dense_jax.prepare --dataset ade20k --root /data/ADEChallengeData2016 --verify
    python -m dense_jax.prepare --dataset coco --root /data/coco --lists-dir /scratch/lists

Lists go to <dataset folder>/dense_jax_lists/<group>/ (the folder is VOCdevkit,
ADEChallengeData2016, the COCO root or DAVIS; or --lists-dir): every usable id of each split,
the class-balanced fractions 1/128, 1/64, 1/8 of VOC trainaug and ADE20K train for the five
seeds 42, 400, 783, 1293, 4019 (evaluation.md §1), and the COCO train2017 10% list.

THESE ARE OUR OWN DRAWS. They are made deterministically from your copy of the data (the same
files give the same lists anywhere), but the references' random subsets were never published
in reproducible form, so they cannot be regenerated; for strict parity with published numbers
pass hbird's shipped file_sets as `ids=` instead. See dense_jax/data/lists.py for the procedure.
Readers load our lists by name: VOCSegmentation(root, "trainaug", subset="trainaug_128_42").
When a split is complete, the sizes are checked against evaluation.md (VOC trainaug 10582 ->
80 / 160 / 1320, ADE20K train 20210 -> 150 / 300 / 2550, COCO 118287 -> 11828).

--verify decodes every image and mask once; the files that fail are written to excluded.txt,
which the readers then skip. Masks of the fraction pools are always decoded (to find the
classes present), and failures there are excluded the same way.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
from pathlib import Path

import numpy as np

import dense_jax
from dense_jax.data import lists
from dense_jax.data import segmentation as seg

# group -> (readers, splits, fraction pool split, foreground classes of the balanced draw)
_PLANS = {
    "voc": ((seg.VOCSegmentation,), ("train", "trainaug", "val"), "trainaug", range(1, 21)),
    "ade20k": ((seg.ADE20K,), ("train", "val"), "train", range(1, 151)),
    "coco": ((seg.COCOThings, seg.COCOStuff), ("train", "val"), None, None),
    "pascal_context": ((seg.PascalContext,), ("train", "val"), None, None),
    "davis2017": ((seg.DAVIS2017,), ("train", "val"), None, None),
}
_WORKERS = min(16, 4 * (os.cpu_count() or 1))


def _readers(group, root, split, sbd_root, lists_dir):
    """The readers of `group` whose data is present (COCO: Things and/or Stuff)."""
    kinds, errors, out = _PLANS[group][0], [], []
    for kind in kinds:
        kwargs = {"sbd_root": sbd_root} if kind is seg.VOCSegmentation else {}
        try:
            out.append(kind(root, split, lists_dir=lists_dir, **kwargs))
        except FileNotFoundError as err:
            errors.append(err)
    if not out:
        raise errors[0]
    return out


def class_presence(source, classes):
    """(id -> frozenset of the `classes` present in its mask, id -> error of unreadable masks)."""
    classes = np.asarray(sorted(set(classes)))

    def scan(index):
        try:
            present = np.unique(source.read_mask(index))
        except seg.UnreadableSampleError as err:
            return None, str(err)
        return frozenset(np.intersect1d(present, classes).tolist()), None

    presence, failures = {}, {}
    with concurrent.futures.ThreadPoolExecutor(_WORKERS) as pool:
        for key, (present, error) in zip(source.ids, pool.map(scan, range(len(source)))):
            if error is None:
                presence[key] = present
            else:
                failures[key] = error
    return presence, failures


def verify(source) -> dict[str, str]:
    """Decode every sample; id -> error for those that fail."""

    def check(index):
        try:
            source[index]
        except seg.UnreadableSampleError as err:
            return str(err)
        return None

    with concurrent.futures.ThreadPoolExecutor(_WORKERS) as pool:
        errors = list(pool.map(check, range(len(source))))
    return {key: err for key, err in zip(source.ids, errors) if err is not None}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


def _merge_excluded(path: Path, failures: dict[str, str]) -> None:
    lists.write_excluded(path, {**lists.read_excluded(path), **failures})


def _fractions(group, reader, classes, seeds, directory, excluded_path, log) -> tuple[set, str]:
    """Write the class-balanced fractions of `reader`'s split; (unreadable ids, a summary)."""
    presence, failures = class_presence(reader, classes)
    if failures:
        _merge_excluded(excluded_path, failures)
        log(f"{len(failures)} unreadable masks in {reader.split}, listed in {excluded_path}")
    pool = set(presence)
    complete = len(pool) == lists.EXPECTED_SIZES[group][reader.split]
    divisors = lists.DIVISORS  # 128, 64, 8: growing counts, so each draw extends the last
    counts = [lists.per_class_count(len(pool), d, len(classes)) for d in divisors]
    for seed in seeds:
        drawn = lists.balanced_fractions(presence, list(classes), counts, seed)
        for d, n, ids in zip(divisors, counts, drawn):
            if n == 0:
                continue
            _check(
                len(set(ids)) == n * len(classes) and set(ids) <= pool,
                f"1/{d} seed {seed}: {len(ids)} ids, expected {n * len(classes)} distinct",
            )
            want = lists.EXPECTED_FRACTION_SIZES[group][d]
            _check(
                not complete or len(ids) == want,
                f"1/{d} seed {seed}: {len(ids)} ids, evaluation.md §1 says {want}",
            )
            name = lists.fraction_name(reader.split, d, seed)
            lists.write_ids(lists.list_path(directory, group, name), ids)
        for small, large in zip(drawn, drawn[1:]):
            _check(set(small) <= set(large), f"seed {seed}: fractions are not nested")
    note = (
        f"Class-balanced fractions of {reader.split} ({len(pool)} images, {len(classes)} "
        f"foreground classes {classes.start}..{classes.stop - 1}), seeds {list(seeds)}: "
        + ", ".join(f"1/{d} -> {n} per class = {n * len(classes)} images" for d, n in zip(divisors, counts))
        + ("" if all(counts) else " (fractions with 0 per class are not written)")
    )
    return set(failures), note


def _coco_fraction(root, seed, directory) -> str:
    """Write the COCO 10% list, drawn from all train2017 image files (whatever their masks)."""
    images = sorted(p.stem for p in (Path(root) / "train2017").glob("*.jpg"))
    ids = lists.random_fraction(images, lists.COCO_PERCENT, seed)
    want = lists.EXPECTED_FRACTION_SIZES["coco"][lists.COCO_PERCENT]
    _check(
        len(images) != lists.EXPECTED_SIZES["coco"]["train"] or len(ids) == want,
        f"COCO {lists.COCO_PERCENT}%: {len(ids)} ids, evaluation.md §5 says {want}",
    )
    lists.write_ids(lists.list_path(directory, "coco", lists.coco_fraction_name(seed)), ids)
    return f"COCO {lists.COCO_PERCENT}%: {len(ids)} of the {len(images)} train2017 images, seed {seed}"


def prepare(
    group: str,
    root,
    *,
    sbd_root=None,
    lists_dir=None,
    seeds=lists.SEEDS,
    coco_seed: int = lists.COCO_SEED,
    verify_files: bool = False,
    log=print,
) -> Path:
    """Write the lists of `group` (a key of _PLANS) for the data at `root`; returns their folder."""
    if group not in _PLANS:
        raise ValueError(f"unknown dataset {group!r}; one of {sorted(_PLANS)}")
    _, splits, pool_split, classes = _PLANS[group]
    readers = {s: _readers(group, root, s, sbd_root, lists_dir) for s in splits}
    directory = readers[splits[0]][0].lists_dir  # the dataset's own folder, however `root` named it
    excluded_path = lists.list_path(directory, group, "excluded")

    if verify_files:
        failures = {}
        for split in splits:
            for reader in readers[split]:
                failures.update(verify(reader))
        if failures:
            _merge_excluded(excluded_path, failures)
            readers = {s: _readers(group, root, s, sbd_root, lists_dir) for s in splits}
        log(
            f"verify: {len(failures)} unreadable samples"
            + (f", listed in {excluded_path}" if failures else "")
        )
    for split in splits:
        for reader in readers[split]:
            for key, reason in reader.skipped[:5]:
                log(f"{reader.name} {split}: skipped {key}: {reason}")
            if len(reader.skipped) > 5:
                log(f"{reader.name} {split}: ... {len(reader.skipped)} skipped in all")

    split_ids = {s: readers[s][0].ids for s in splits}
    if group == "voc":
        overlap = set(split_ids["trainaug"]) & set(split_ids["val"])
        _check(not overlap, f"trainaug and val share {len(overlap)} ids, e.g. {sorted(overlap)[:5]}")
    notes = []
    if pool_split is not None:
        bad, note = _fractions(group, readers[pool_split][0], classes, seeds, directory, excluded_path, log)
        split_ids = {s: tuple(i for i in ids if i not in bad) for s, ids in split_ids.items()}
        notes.append(note)
    if group == "coco":
        notes.append(_coco_fraction(root, coco_seed, directory))
    else:  # COCO readers enumerate the image folders; no split lists needed
        for split in splits:
            lists.write_ids(lists.list_path(directory, group, split), split_ids[split])

    expected = lists.EXPECTED_SIZES[group]
    sizes = [
        f"{s} {len(split_ids[s])}"
        + (" (complete)" if len(split_ids[s]) == expected[s] else f" (official: {expected[s]})")
        for s in splits
    ]
    notes.append(f"Usable samples per split: {', '.join(sizes)}")
    for note in notes:
        log(note)
    readme = lists.list_path(directory, group, "README")
    readme.parent.mkdir(parents=True, exist_ok=True)
    readme.write_text(
        f"Written by `python -m dense_jax.prepare --dataset {group}` (dense_jax "
        f"{dense_jax.__version__}) from the data under {Path(root).resolve()}.\n"
        "These are OUR OWN deterministic draws from this copy of the data; the references' random "
        "subsets cannot be reproduced. For parity use hbird's file_sets. Procedure: "
        "dense_jax/data/lists.py.\n" + "".join(f"{n}.\n" for n in notes)
    )
    return directory / group


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dense_jax.prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", required=True, choices=sorted(_PLANS))
    parser.add_argument(
        "--root", required=True, help="the root the readers take (the dataset folder or its parent)"
    )
    parser.add_argument(
        "--lists-dir",
        default=None,
        help="where to write the lists (default <dataset folder>/dense_jax_lists)",
    )
    parser.add_argument(
        "--sbd-root", default=None, help="VOC: SBD's benchmark_RELEASE/dataset (default: inside VOCdevkit)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(lists.SEEDS),
        help="seeds of the class-balanced fractions (default: hbird's five)",
    )
    parser.add_argument("--coco-seed", type=int, default=lists.COCO_SEED, help="seed of the COCO 10%% list")
    parser.add_argument(
        "--verify", action="store_true", help="decode every file once and exclude the unreadable ones"
    )
    args = parser.parse_args(argv)
    try:
        out = prepare(
            args.dataset,
            args.root,
            sbd_root=args.sbd_root,
            lists_dir=args.lists_dir,
            seeds=tuple(args.seeds),
            coco_seed=args.coco_seed,
            verify_files=args.verify,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
