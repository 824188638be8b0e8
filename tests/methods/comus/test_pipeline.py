"""The COMUS pipeline on the built-in scenes (methods/comus/pipeline.py, configs/comus_voc.py:smoke):
the discovery stages' outputs (saliency and pseudo-mask PNGs, ids, shapes, values), stage caching,
the self-training config, the pseudo-mask source, and (slow) the whole pipeline with a resume."""

import json
import os

import jax
import numpy as np
import pytest

from configs import comus_voc
from dense_jax.core.sharding import make_mesh
from dense_jax.data.mask_folder import MaskFileError, MaskFolder, read_label_png, write_label_png
from dense_jax.eval import report
from dense_jax.methods.comus import discovery, pipeline, saliency, self_train


def smoke_config(**limits):
    c = comus_voc.get_config("smoke")
    c.self_train.limits = limits.get("limits", (24, 16))
    return c


def test_discovery_stages_write_consistent_masks_and_are_cached(tmp_path, monkeypatch):
    config = smoke_config()
    apply_fn, params = pipeline.backbone(config)
    mesh = make_mesh(config.mesh.shape)
    source, sal, disc, round0 = pipeline.discover(
        config, str(tmp_path), apply_fn, params, mesh, log=lambda s: None
    )
    k = config.discovery.n_clusters
    assert len(sal["ids"]) == len(source) == 24 and sal["missing"] == []
    with_box = [i for i, b in enumerate(sal["boxes"]) if b is not None]
    np.testing.assert_array_equal(disc["positions"], with_box)
    assert disc["features"].shape == (len(with_box), config.model.embed_dim)
    assert set(disc["labels"].tolist()) <= set(range(k))
    assert round0["positions"] == disc["positions"][disc["keep"]].tolist()
    for i in range(len(source)):
        item = source[i]
        salient = saliency.read_mask_png(
            os.path.join(sal["folder"], f"{item['id']}.png"), item["image"].shape[:2]
        )
        assert int(salient.sum()) == sal["areas"][i]
        assert (sal["boxes"][i] is None) == (discovery.proposal(salient, config.saliency.min_area) is None)
        path = os.path.join(round0["folder"], f"{item['id']}.png")
        assert os.path.exists(path) == (i in round0["positions"])
        if i in round0["positions"]:
            mask = read_label_png(path)
            label = round0["labels"][round0["positions"].index(i)]
            assert mask.shape == item["image"].shape[:2]
            assert (mask[~salient] == 0).all() and (mask[salient] == label + 1).all()

    def no_recompute(*args, **kwargs):
        raise AssertionError("a cached stage ran again")

    monkeypatch.setattr(discovery, "crop_features", no_recompute)
    monkeypatch.setattr(saliency, "attention_masks", no_recompute)
    again = pipeline.discover(config, str(tmp_path), apply_fn, params, mesh, log=lambda s: None)
    assert again[1] == sal and again[3] == round0
    for key in disc:
        np.testing.assert_array_equal(again[2][key], disc[key])


def test_self_training_config_follows_the_reference_recipe():
    c = comus_voc.get_config()
    for r, epochs in ((1, 10), (2, 5)):
        s = self_train.segmentation_config(c, r)
        assert s.method == "segmentation" and not s.teacher.ema and s.init_from == ""
        assert s.segmentation.num_classes == 21 and s.segmentation.head == "conv"
        assert not s.segmentation.freeze_backbone and tuple(s.segmentation.crop_scale) == (0.5, 2.0)
        assert s.optim.name == "adam" and s.optim.lr == s.optim.min_lr == 6e-5 and s.optim.weight_decay == 0
        assert s.optim.warmup_epochs == 0 and s.optim.lr_scale.backbone == 0.1
        assert s.data.batch_size == 56 and s.train.epochs == epochs and s.crops.global_size == 448
    linear = self_train.segmentation_config(comus_voc.get_config("linear"), 1)
    assert linear.segmentation.freeze_backbone and linear.optim.lr_scale.backbone == 0.0
    assert comus_voc.get_config("overcluster30").evaluation.match == "majority"


def test_mask_folder_reads_label_pngs_and_names_a_bad_one(tmp_path):
    items = [{"image": np.zeros((6, 8, 3), np.uint8), "id": f"im{i}"} for i in range(3)]
    write_label_png(str(tmp_path / "im2.png"), np.full((6, 8), 4, np.uint8))
    write_label_png(str(tmp_path / "im0.png"), np.zeros((5, 8), np.uint8))
    source = MaskFolder(items, str(tmp_path), [2, 0])
    assert len(source) == 2 and source[0]["id"] == "im2" and (source[0]["mask"] == 4).all()
    with pytest.raises(MaskFileError, match="im0.png is"):
        source[1]
    with pytest.raises(MaskFileError, match="im1.png does not exist"):
        MaskFolder(items, str(tmp_path), [1])[0]


@pytest.mark.slow
def test_smoke_pipeline_end_to_end_and_resume(tmp_path):
    """Both rounds of the smoke config: finite scores with the Hungarian matching, round-1 labels of
    the next split with ids in {0..K}; removing the later stages' outputs and re-running restores the
    trained rounds from their checkpoints and gives identical results."""
    from dense_jax.train.loop import fit

    config = smoke_config()
    workdir = str(tmp_path)
    results = pipeline.run(config, workdir, fit=fit, log=lambda s: None)
    k = config.discovery.n_clusters
    for name in ("iteration0", "iteration1", "iteration2", "kmeans_patch_tokens"):
        assert results[name]["matching"] == "hungarian"
        assert 0.0 <= results[name]["miou"] <= 1.0 and np.isfinite(results[name]["miou"])
    with open(os.path.join(workdir, "round1.json")) as f:
        labels = json.load(f)
    assert len(labels["positions"]) == config.self_train.limits[1]
    for name in os.listdir(labels["folder"]):
        mask = read_label_png(os.path.join(labels["folder"], name))
        assert mask.shape == tuple(config.data.image_size) and mask.max() <= k
    for name in ("clusters.png", "iteration0.png", "iteration2.png", "results.json"):
        assert os.path.exists(os.path.join(workdir, name))

    os.remove(os.path.join(workdir, "results.json"))
    os.remove(os.path.join(workdir, "round1.json"))
    again = pipeline.run(config, workdir, fit=fit, log=lambda s: None)
    assert again["summary"] == results["summary"]
    records = report.read_jsonl(os.path.join(workdir, "round2", "metrics.jsonl"))
    assert records[-1].get("restart") is not None  # restored, not retrained
    jax.clear_caches()


@pytest.mark.slow
def test_demo_beats_kmeans_of_the_same_backbone(tmp_path):
    """Issue 15's demo check, `configs/comus_voc.py:demo` with seeds 0 and 1 (LOST on the shipped
    scenes backbone): the last iteration's Hungarian mIoU on val beats K-means of the same
    backbone's patch tokens by >= 2 points on each seed (measured here 18.40 vs 13.85 and
    21.39 vs 17.00; the one-device CLI gives 21.43 for seed 1), and LOST's foreground IoU on
    the discovery split is >= 35 % (39.5)."""
    from dense_jax.train.loop import fit

    for seed in (0, 1):
        config = comus_voc.get_config("demo")
        config.seed = seed
        results = pipeline.run(config, str(tmp_path / f"seed{seed}"), fit=fit, log=lambda s: None)
        last = results["summary"]["iteration2_miou"]
        kmeans = results["summary"]["kmeans_patch_tokens_miou"]
        print(f"\nseed {seed}: COMUS {100 * last:.2f} vs K-means {100 * kmeans:.2f}")
        assert last >= kmeans + 0.02, (seed, last, kmeans)
        assert results["iteration0"]["saliency_fg_iou"] >= 0.35
    jax.clear_caches()


def test_crop_sampler_with_scale_above_one_falls_back_to_the_whole_image():
    """§10.12: scale (0.5, 2) on a 375×500 image: every crop's area fraction is ≤ 1 and about 15 %
    of the draws fall back to the whole image after 10 rejected tries (albumentations 1.2.0)."""
    from dense_jax.data.transforms import sample_crop_box

    rng = np.random.default_rng(0)
    boxes = np.array([sample_crop_box(rng, (375, 500), (0.5, 2.0)) for _ in range(4000)])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (375 * 500)
    assert area.max() <= 1.0
    whole = np.mean((boxes == (0, 0, 500, 375)).all(axis=1))
    assert 0.12 < whole < 0.18, whole


def test_saliency_folder_with_missing_masks_skips_and_lists_them(tmp_path):
    """Bad input: images without a mask in the folder are counted, listed and get no proposal;
    a mask of another size stops the stage naming the file."""
    from PIL import Image

    from dense_jax.eval.features import open_source
    from dense_jax.methods.comus import scoring

    config = smoke_config()
    config.saliency.update(dict(type="dir", dir=str(tmp_path / "masks"), max_missing_fraction=0.1))
    source = open_source(config.data, "train", 12)
    os.makedirs(tmp_path / "masks")
    for i in range(len(source)):
        item = source[i]
        fg = scoring.comus_gt(item["mask"], config.data)
        if i != 3:
            Image.fromarray(((fg != 0) & (fg != 255)).astype(np.uint8) * 255).save(
                tmp_path / "masks" / f"{item['id']}.png"
            )
    logged = []
    sal = pipeline.saliency_stage(config, str(tmp_path / "run"), source, None, logged.append)
    assert sal["missing"] == [source[3]["id"]] and sal["boxes"][3] is None and sal["areas"][3] == 0
    assert "1 images have no mask" in logged[0] and source[3]["id"] in logged[0]
    assert sum(b is not None for b in sal["boxes"]) >= 9
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "masks" / f"{source[3]['id']}.png")
    with pytest.raises(saliency.SaliencyError, match=f"{source[3]['id']}.png is 5x5"):
        pipeline.saliency_stage(config, str(tmp_path / "run2"), source, None, logged.append)
