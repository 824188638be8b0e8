"""Fault-injection campaign: SIGKILL the training CLI at random (seeded) moments, restart it,
and check that the run ends bitwise equal to an uninterrupted one (issue 18, item 7).

    python benchmarks/faults.py --methods=dino,neco,croc,cribo --kills=5 --seed=0
    python benchmarks/faults.py --methods=comus --kills=5 --seed=0     # the staged pipeline

For every method's ``:smoke`` config (``configs/<method>_*.py``) one uninterrupted reference
run, then for sync and async saves a chain of launches of the same command in one workdir:
each launch but the last is killed with SIGKILL at a moment drawn from the seeded generator —

- ``step``: after 1-3 new step records and a random delay of up to 0.2 s;
- ``save``: as soon as a save's temporary directory (``*.orbax-checkpoint-tmp*``) appears;
- ``cleanup``: right after a new step has committed, when the oldest is being removed —

and the last one runs to the end. Checkpoints are saved every step and only 2 are kept, so
kills often land inside saves and cleanups; the phase seen at each kill is recorded.

Printed per method and save mode, then in total: kills, restarts, unreadable checkpoints
(steps a restart reported damaged), restarts that failed, restarts that started over although
a checkpoint was there (the restart markers of ``metrics.jsonl``) and whether the final state is
bitwise equal to the reference: the per-array fingerprints of the final checkpoints
(`dense_jax.train.integrity`) and their data-iterator positions are compared. The last line
contains "bitwise".

COMUS (``--methods=comus``) is a staged pipeline, not one training run: its stages cache their
outputs in the workdir and its self-training rounds run on the trainer (saves are sync there).
Its chain kills each launch but the last at a moment it has not reached yet (a stage's output
appears: saliency, discovery, round-0 masks; or 1-3 more steps of round 1 or 2 are logged), after
a random delay of up to 0.5 s, and compares the final ``results.json`` (all but the wall times)
with the reference's.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP_MARK = "orbax-checkpoint-tmp"
# Every step saved, 2 kept: many saves and cleanups to land in. 4 epochs: room for the kills.
OVERRIDES = ("--config.ckpt.every_steps=1", "--config.ckpt.keep=2", "--config.train.epochs=4")


def smoke_config(method: str) -> str:
    """``configs/<method>_*.py:smoke`` (the first in name order)."""
    found = sorted(glob.glob(os.path.join(REPO, "configs", f"{method}_*.py")))
    if not found:
        raise SystemExit(f"no configs/{method}_*.py")
    return os.path.relpath(found[0], REPO) + ":smoke"


def _command(method: str, workdir: str, async_save: bool) -> list[str]:
    base = [
        sys.executable,
        "-m",
        "dense_jax.main",
        f"--config={smoke_config(method)}",
        f"--workdir={workdir}",
    ]
    if method == "comus":  # the rounds' checkpoint settings live in its self_train section
        return base
    return [*base, f"--config.ckpt.async_save={async_save}", *OVERRIDES]


def _env() -> dict:
    return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")


def _steps_logged(workdir: str) -> int:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum('"loss"' in line for line in f)


def _checkpoints(workdir: str) -> list[str]:
    directory = os.path.join(workdir, "ckpt")
    return os.listdir(directory) if os.path.isdir(directory) else []


def _latest(workdir: str) -> int:
    return max((int(n) for n in _checkpoints(workdir) if n.isdigit()), default=-1)


def _saves_in_progress(workdir: str) -> set[str]:
    return {n for n in _checkpoints(workdir) if TMP_MARK in n}


def _phase(workdir: str, stale: set[str]) -> str:
    """What the run is doing on disk right now (`stale`: temporary directories left by an
    earlier killed launch, removed when this one opens its checkpoints)."""
    trash = os.path.join(workdir, "ckpt", "trash")
    if _saves_in_progress(workdir) - stale:
        return "save"
    if os.path.isdir(trash) and os.listdir(trash):
        return "cleanup"
    return "step"


def _moment_reached(kind: str, workdir: str, start: dict) -> bool:
    if kind == "step":
        return _steps_logged(workdir) >= start["steps"] + start["wait_steps"]
    if kind == "save":
        return bool(_saves_in_progress(workdir) - start["stale"])
    return _latest(workdir) > start["latest"]  # cleanup follows the commit


def _launch(cmd: list[str], log_path: str) -> subprocess.Popen:
    with open(log_path, "w") as log:
        return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)


def _restart_origins(workdir: str) -> list[str]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [r["restart"] for r in map(json.loads, f) if "restart" in r]


def _final(workdir: str) -> tuple[dict, object]:
    """(fingerprint, data position) of the run's final checkpoint."""
    with open(os.path.join(workdir, "ckpt", str(_latest(workdir)), "meta", "metadata")) as f:
        meta = json.load(f)
    return meta["fingerprint"], meta["data"]


def chain(method: str, workdir: str, async_save: bool, kills: int, rng: random.Random) -> dict:
    """Launch, kill `kills` times, let the last launch finish; the counts of one chain."""
    cmd = _command(method, workdir, async_save)
    out = {"kills": 0, "restarts": 0, "unreadable": 0, "failed": 0, "fresh": 0, "phases": {}}
    for launch in range(kills + 1):
        log_path = os.path.join(workdir, f"launch{launch}.log")
        start = {
            "steps": _steps_logged(workdir),
            "latest": _latest(workdir),
            "stale": _saves_in_progress(workdir),
            "wait_steps": rng.randint(1, 3),
            "origins": len(_restart_origins(workdir)),
        }
        kind = rng.choice(["step", "save", "cleanup"]) if launch < kills else None
        delay = rng.uniform(0.0, 0.2) if kind == "step" else rng.uniform(0.0, 0.01)
        proc = _launch(cmd, log_path)
        out["restarts"] += launch > 0
        while kind and proc.poll() is None and not _moment_reached(kind, workdir, start):
            time.sleep(0.005)
        if kind and proc.poll() is None:
            time.sleep(delay)
            phase = _phase(workdir, start["stale"])
            proc.send_signal(signal.SIGKILL)
            out["kills"] += proc.wait() == -signal.SIGKILL
            out["phases"][phase] = out["phases"].get(phase, 0) + 1
        proc.wait()
        # A restart must resume from a checkpoint whenever one was there (never start over).
        new_origins = _restart_origins(workdir)[start["origins"] :]
        out["fresh"] += start["latest"] >= 0 and "scratch" in new_origins
        with open(log_path) as f:
            text = f.read()
        out["unreadable"] += text.count(" is damaged (")
        if proc.returncode not in (0, -signal.SIGKILL):
            out["failed"] += 1
            print(f"  launch {launch} failed (exit {proc.returncode}): {text.strip().splitlines()[-1:]}")
            break
    return out


# COMUS stage outputs in pipeline order (dense_jax/methods/comus/pipeline.py), and its rounds:
# (metrics of the round's training, the file written once the round is done).
COMUS_STAGES = ("saliency.json", "discovery.npz", "round0.json")
COMUS_ROUNDS = (("round1/metrics.jsonl", "round1.json"), ("round2/metrics.jsonl", "results.json"))


def _comus_targets(workdir: str, rng: random.Random) -> list[tuple[str, int]]:
    """Kill moments ahead of the run: (file, step records it must hold; 0 = it exists)."""
    ahead = [(s, 0) for s in COMUS_STAGES if not os.path.exists(os.path.join(workdir, s))]
    for metrics, done in COMUS_ROUNDS:
        if not os.path.exists(os.path.join(workdir, done)):
            ahead.append((metrics, _steps_logged(os.path.join(workdir, os.path.dirname(metrics)))))
    return [(path, records + rng.randint(1, 3) if path.endswith(".jsonl") else 0) for path, records in ahead]


def _target_reached(workdir: str, target: tuple[str, int]) -> bool:
    path, records = target
    if not records:
        return os.path.exists(os.path.join(workdir, path))
    return _steps_logged(os.path.join(workdir, os.path.dirname(path))) >= records


def _comus_results(workdir: str) -> dict:
    """results.json without its wall times."""
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    saved["results"].pop("wall_time_s")
    return saved


def comus_chain(workdir: str, kills: int, rng: random.Random) -> dict:
    """The staged pipeline's chain (module docstring): kills, restarts, failed restarts."""
    cmd = _command("comus", workdir, async_save=False)
    out = {"kills": 0, "restarts": 0, "unreadable": 0, "failed": 0, "fresh": 0, "phases": {}}
    for launch in range(kills + 1):
        log_path = os.path.join(workdir, f"launch{launch}.log")
        ahead = _comus_targets(workdir, rng)
        target = rng.choice(ahead) if launch < kills and ahead else None
        delay = rng.uniform(0.0, 0.5)
        proc = _launch(cmd, log_path)
        out["restarts"] += launch > 0
        while target and proc.poll() is None and not _target_reached(workdir, target):
            time.sleep(0.01)
        if target and proc.poll() is None:
            time.sleep(delay)
            phase = target[0].split("/")[0].split(".")[0] + (
                f" ({target[1]} step records)" if target[1] else ""
            )
            proc.send_signal(signal.SIGKILL)
            out["kills"] += proc.wait() == -signal.SIGKILL
            out["phases"][phase] = out["phases"].get(phase, 0) + 1
        if proc.wait() not in (0, -signal.SIGKILL):
            out["failed"] += 1
            with open(log_path) as f:
                print(
                    f"  launch {launch} failed (exit {proc.returncode}): {f.read().strip().splitlines()[-1:]}"
                )
            break
    return out


def campaign(methods: list[str], kills: int, seed: int, root: str) -> bool:
    """Run the campaign; print the figures; True when every chain ended bitwise equal."""
    rng = random.Random(seed)
    total = {"kills": 0, "restarts": 0, "unreadable": 0, "failed": 0, "fresh": 0, "equal": 0, "chains": 0}
    for method in methods:
        reference = os.path.join(root, method, "reference")
        os.makedirs(reference)
        proc = _launch(_command(method, reference, async_save=False), reference + ".log")
        if proc.wait() != 0:
            raise SystemExit(f"{method}: the reference run failed; see {reference}.log")
        final = _comus_results if method == "comus" else _final
        expected = final(reference)
        for async_save in (False,) if method == "comus" else (False, True):
            mode = "staged" if method == "comus" else "async" if async_save else "sync"
            workdir = os.path.join(root, method, mode)
            os.makedirs(workdir)
            if method == "comus":
                out = comus_chain(workdir, kills, rng)
            else:
                out = chain(method, workdir, async_save, kills, rng)
            equal = out["failed"] == 0 and out["fresh"] == 0 and final(workdir) == expected
            phases = ", ".join(f"{n} in {p}" for p, n in sorted(out["phases"].items()))
            print(
                f"{method} {mode}: {out['kills']} kills ({phases}), {out['restarts']} restarts, "
                f"{out['unreadable']} unreadable checkpoints, {out['failed']} failed restarts, "
                f"{out['fresh']} fresh starts over a checkpoint, "
                f"final state bitwise-equal to the uninterrupted run: {'yes' if equal else 'NO'}",
                flush=True,
            )
            for key in ("kills", "restarts", "unreadable", "failed", "fresh"):
                total[key] += out[key]
            total["equal"] += equal
            total["chains"] += 1
    print(
        f"total: {total['kills']} kills, {total['restarts']} restarts, {total['unreadable']} unreadable "
        f"checkpoints, {total['failed']} failed restarts, {total['fresh']} fresh starts over a checkpoint; "
        f"bitwise-equal {total['equal']}/{total['chains']} runs"
    )
    return total["equal"] == total["chains"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--methods", default="dino,neco,croc,cribo", help="comma-separated; configs/<method>_*.py:smoke"
    )
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs per method and save mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/dense_jax_faults", help="emptied first")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    ok = campaign(args.methods.split(","), args.kills, args.seed, args.workdir)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
