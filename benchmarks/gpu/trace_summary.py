"""Where a traced train step spends its time, from the jax.profiler trace alone: the executed
XLA ops (events carrying an ``hlo_op``) of the device lanes (``/device:...``; the host's
when there is none, as on a CPU), their time summed per op over the traced steps, largest
first. It lets a GPU session bring back the kernel breakdown as a few lines of JSON instead
of a trace to open in a viewer.
"""

from __future__ import annotations

import collections
import glob
import gzip
import itertools
import json
import os


def _events(trace_dir: str) -> list[dict]:
    """The events of the newest ``*.trace.json.gz`` under `trace_dir`."""
    files = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.trace.json.gz")))
    if not files:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}/plugins/profile")
    with gzip.open(files[-1]) as f:
        return json.load(f)["traceEvents"]


def op_times(trace_dir: str, steps: int, top: int = 25) -> dict:
    """``{"lanes", "ms_per_step", "ops": [[hlo_op, ms per step, share], ...]}``: the `top`
    XLA ops by summed self time (an event's duration less that of the op events nested in
    it, e.g. a CPU while loop's body) over the `steps` traced steps, and the total of all."""
    events = _events(trace_dir)
    names = {
        e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name" and e.get("ph") == "M"
    }
    device = {pid for pid, name in names.items() if name.startswith("/device:")}
    lanes = device or set(names)
    ops = [
        e for e in events if e.get("ph") == "X" and e.get("pid") in lanes and "hlo_op" in e.get("args", {})
    ]
    per_op: collections.Counter = collections.Counter()
    for _, lane in itertools.groupby(sorted(ops, key=_lane_order), key=lambda e: (e["pid"], e["tid"])):
        for op, self_us in _self_times(list(lane)):
            per_op[op] += self_us
    total_us = sum(per_op.values())
    return {
        "lanes": sorted(names[pid] for pid in lanes),
        "ms_per_step": round(total_us / 1e3 / steps, 3),
        "ops": [
            [op, round(us / 1e3 / steps, 3), round(us / total_us, 4)] for op, us in per_op.most_common(top)
        ],
    }


def _lane_order(e: dict):
    return e["pid"], e["tid"], e["ts"], -e["dur"]  # an enclosing event before what it holds


def _self_times(lane: list[dict]):
    """(hlo_op, self time in µs) of one thread's events, sorted by `_lane_order`."""
    open_events: list[list] = []  # [end, op, self time] of the events holding the current one
    for e in lane:
        while open_events and open_events[-1][0] <= e["ts"]:
            _, op, self_us = open_events.pop()
            yield op, self_us
        if open_events:
            open_events[-1][2] -= e["dur"]
        open_events.append([e["ts"] + e["dur"], e["args"]["hlo_op"], e["dur"]])
    for _, op, self_us in reversed(open_events):
        yield op, self_us
