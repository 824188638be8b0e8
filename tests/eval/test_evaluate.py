"""Evaluation CLI (dense_jax/evaluate.py): every protocol on the built-in scenes, results.json
and PNGs, the dataset layouts the default configs point at, the missing-dataset
message and backbones from a dense_jax training workdir."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.dino_coco import get_config as train_config
from configs.eval import base
from dense_jax import evaluate, methods
from dense_jax.eval import features, periodic
from dense_jax.train import loop
from dense_jax.train.checkpoint import Checkpointer
from tests.data.test_segmentation import _davis, _voc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNGS = {
    "linear": ("linear_predictions.png",),
    "kmeans": ("kmeans_clusters.png",),
    "hbird": ("hbird_predictions.png", "hbird_neighbours.png"),
    "davis": ("davis_propagation.png",),
    "cbfe": ("cbfe.png",),
}
SUMMARIES = {
    "linear": {"miou", "miou_hungarian", "miou_corrected"},
    "kmeans": {"k9", "k12"},
    "hbird": {"1/4_reference", "1/4_corrected", "full_reference", "full_corrected"},
    "davis": {"j_and_f", "j_mean", "f_mean"},
    "cbfe": {"cbfe_miou", "val_fg_iou", "val_attention_fg_iou"},
}


def tiny_demo(protocols):
    """The demo config with the smallest sizes that still exercise every path."""
    c = base.make("linear", "voc", "demo")
    c.protocols = protocols
    c.data.update(dict(limit_train=24, limit_val=4, image_size=(64, 64)))
    c.input.update(dict(size=64, batch_size=8))
    c.output.n_show = 2
    c.linear.update(dict(epochs=2, batch_size=8, label_size=16, eval_size=64))
    c.kmeans.update(dict(ks=(9, 12), seeds=2, label_size=16, n_iter=10, n_init=1))
    c.hbird.update(
        dict(
            size=64,
            k=5,
            memory_size=1024,
            epochs=1,
            fractions=(1 / 4, 1.0),
            seeds=(42,),
            query_batch_size=8,
            chunk_size=256,
        )
    )
    c.davis.update(dict(short_side=64, multiple=32))
    c.cbfe.update(dict(k_fg=8, seeds=1, label_size=16, n_iter=10, n_init=1))
    return c


# Two groups so that each test stays short (most of the time is compilation).
@pytest.mark.parametrize("protocols", [("linear", "kmeans", "hbird"), ("davis", "cbfe")])
def test_demo_runs_the_protocols_and_writes_results(tmp_path, protocols):
    lines = []
    results = evaluate.evaluate(tiny_demo(protocols), str(tmp_path), log=lines.append)
    with open(tmp_path / "results.json") as f:
        saved = json.load(f)
    assert set(saved) == {"backbone", "config", "results", "total_time_s"}
    assert saved["backbone"] == "random init (vit_demo16, seed 0)"
    assert saved["config"]["protocols"] == list(protocols)
    assert set(saved["results"]) == set(protocols)
    for protocol in protocols:
        summary = saved["results"][protocol]["summary"]
        assert set(summary) == SUMMARIES[protocol], protocol
        assert all(0.0 <= v <= 1.0 for v in summary.values()), (protocol, summary)
        assert saved["results"][protocol]["time_s"] > 0
        assert summary == results[protocol]["summary"]
        for png in PNGS[protocol]:
            assert (tmp_path / png).stat().st_size > 0, png
        table = lines[-2]  # then "wrote .../results.json"
        assert any(row.startswith(protocol) and "wall time" in row for row in table.splitlines())
    if "linear" in protocols:
        linear = saved["results"]["linear"]
        assert (linear["n_train"], linear["n_val"]) == (24, 4)
        assert 0.0 < linear["summary"]["miou"] < 0.5  # random init, 9 classes: far from perfect
        assert saved["results"]["hbird"]["runs"]["1/4"][0]["n_images"] < 24
    else:
        assert saved["results"]["davis"]["n_videos"] == 4


def test_default_roots_match_the_reader_layouts(tmp_path, monkeypatch):
    """``data.root`` defaults resolve from the working directory: data/VOCdevkit (VOC2012
    inside) and data/DAVIS are what the readers expect."""
    _voc(tmp_path / "data" / "VOCdevkit")
    _davis(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    voc = base.make("linear", "voc").data
    assert len(features.open_source(voc, voc.val_split)) == 2
    assert len(features.open_source(voc, voc.train_split, limit=1)) == 1
    davis = base.make("davis", "davis").data
    with pytest.raises(features.MissingSamplesError, match="davis val: 1 of 2 listed samples"):
        features.open_source(davis, davis.val_split)  # blackswan has a mis-sized annotation
    davis.allow_missing = True
    video = features.open_source(davis, davis.val_split)[0]
    assert video["image"].shape[0] == 3 and video["mask"].shape[0] == 3


def test_davis_protocol_reads_the_davis_layout(tmp_path):
    _davis(tmp_path)
    c = base.make("davis", "davis", "demo")
    c.data.update(dict(base.DATASETS["davis"], root=str(tmp_path / "DAVIS"), limit_val=0, allow_missing=True))
    c.davis.update(dict(short_side=64, multiple=32, save_masks=True))
    result = evaluate.evaluate(c, str(tmp_path / "out"), log=lambda _: None)["davis"]
    assert result["n_videos"] == 1 and result["n_objects"] == 2  # blackswan is skipped
    assert 0.0 <= result["summary"]["j_and_f"] <= 1.0
    names = sorted(os.listdir(tmp_path / "out" / "davis" / "bear"))
    assert names == ["00000.png", "00001.png", "00002.png"]


def test_missing_dataset_is_one_clear_error(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dense_jax.evaluate",
            "--config=configs/eval/linear_voc.py",
            f"--workdir={tmp_path}",
            f"--config.data.root={tmp_path / 'nowhere'}",
            "--config.model.variant=vit_demo16",
        ],  # the backbone is built before the data opens
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        timeout=120,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "error: Pascal VOC 2012 not found" in out.stderr
    assert "VOCtrainval_11-May-2012.tar" in out.stderr


def test_weights_from_a_training_workdir_load_the_teacher(tmp_path):
    """``weights=<workdir>``: the latest checkpoint's EMA teacher backbone, with the run's own
    architecture (smoke: 32-d, 2 blocks), whatever ``model.variant`` says."""
    config = train_config("smoke")
    config.mesh.shape = (2, 1)
    mesh, rules = loop.mesh_and_rules(config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        trainer = loop.build_trainer(config, methods.get(config.method), mesh, rules)
        state = trainer.init()
        teacher = jax.tree.map(lambda a: a + 1.0, state.params["backbone"])  # != student
        state = state.replace(teacher={**state.teacher, "backbone": teacher})
        ckpt = Checkpointer(str(tmp_path / "ckpt"), trainer.config)
        ckpt.save(5, state, trainer.data_iterator(), trainer.config)
        ckpt.wait()
        ckpt.close()
    c = base.make("linear", "voc", "demo")
    c.weights = str(tmp_path)
    backbone_fn, params, description, _ = evaluate.load_backbone(c)
    assert description == f"{tmp_path} step 5 teacher (vit_demo16)"
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(jax.device_get(teacher))):
        np.testing.assert_array_equal(got, want)
    out = backbone_fn(params, np.zeros((1, 32, 32, 3), np.float32))
    assert out["patch"].shape == (1, 2, 2, 32)
    assert out["last_blocks"].shape[0] == 2  # min(n_last_blocks, depth)


def test_evaluations_at_two_cadences_run_on_the_sharded_teacher(tmp_path, monkeypatch):
    """``config.evals``: K-means at the start and every 4 steps and the linear probe (through
    the trainer) every 8 and at the end, in the training mesh (FSDP) on the teacher's params as
    the trainer holds them (device arrays sharded over 'data', never gathered to the host);
    scores keyed eval/<name>/… in metrics.jsonl, PNGs under eval/<name>/step_<n>; the
    before/after table compares step 0 with the last step."""
    config = train_config("smoke")
    config.mesh.update(dict(shape=(2, 4), fsdp=True))
    config.evals.clusters = dict(
        config=os.path.join(REPO, "configs/eval/kmeans_voc.py:demo"), every=4, at_start=True
    )
    config.evals.probe = dict(config=os.path.join(REPO, "configs/eval/linear_voc.py:demo"), every=8)
    seen = []
    original = periodic.run_protocols

    def spy(backbone_fn, params, eval_config, *args, **kwargs):
        kernel = params["block_0"]["mlp"]["fc1"]["kernel"]
        seen.append((isinstance(kernel, jax.Array), tuple(kernel.sharding.spec), kwargs["mesh"].shape))
        return original(backbone_fn, params, eval_config, *args, **kwargs)

    monkeypatch.setattr(periodic, "run_protocols", spy)
    evals = periodic.from_config(config, str(tmp_path), fit=loop.fit)
    loop.train(config, methods.get(config.method), str(tmp_path), evals=evals)
    with open(tmp_path / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    total = max(r["step"] for r in records)
    kmeans_steps = [r["step"] for r in records if "eval/clusters/kmeans/k9" in r]
    linear_steps = [r["step"] for r in records if "eval/probe/linear/miou" in r]
    assert total == 16
    assert kmeans_steps == [0, 4, 8, 12, 16] and linear_steps == [8, 16]
    assert all(0.0 < r["eval/probe/linear/miou"] < 1.0 for r in records if "eval/probe/linear/miou" in r)
    assert seen and all(s == (True, ("data", "model"), {"data": 2, "model": 4}) for s in seen)
    assert os.listdir(tmp_path / "eval" / "clusters" / "step_4")
    assert os.listdir(tmp_path / "eval" / "probe" / "step_16")
    first = {}  # step -> every eval score logged at that step
    for r in records:
        first.setdefault(r["step"], {}).update({k: v for k, v in r.items() if k.startswith("eval/")})
    table = periodic.before_after(str(tmp_path / "metrics.jsonl")).splitlines()
    assert table[0].split()[1:] == ["step", "0", "step", "16", "change"]
    row = next(line.split() for line in table if line.startswith("clusters/kmeans/k9"))
    want = [100 * first[0]["eval/clusters/kmeans/k9"], 100 * first[16]["eval/clusters/kmeans/k9"]]
    assert [float(v) for v in row[1:3]] == pytest.approx(want, abs=0.006)
    probe = next(line.split() for line in table if line.startswith("probe/linear/miou "))
    assert probe[1] == "-" and float(probe[2]) == pytest.approx(
        100 * first[16]["eval/probe/linear/miou"], abs=0.006
    )


def test_an_evaluation_entry_with_unknown_keys_fails_before_training(tmp_path):
    config = train_config("smoke")
    config.evals.x = dict(config=os.path.join(REPO, "configs/eval/kmeans_voc.py:demo"), evry=4)
    with pytest.raises(ValueError, match="config.evals.x needs the keys"):
        periodic.from_config(config, str(tmp_path))
