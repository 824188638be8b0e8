"""Property-based tests (hypothesis) of the crop geometry and the exact k-NN: for any image size,
scale and ratio the crop sampler's boxes lie inside the image; the NeCo overlap rule returns the
first candidate over the threshold, else the best of its tries; the NeCo box records lie in the
views' frames and ROI-align of a constant map over them gives that constant; the k-NN equals a
numpy brute force (ties to the lower index) on small integer data full of ties.

Examples are few and shapes are drawn from short lists, so that jit compiles stay bounded and
the module runs in seconds."""

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dense_jax.data.transforms import (
    MultiCropSpec,
    MultiCropTransform,
    _intersection_area,
    intersection_boxes,
    sample_crop_box,
)
from dense_jax.ops.knn import knn
from dense_jax.ops.roi_align import roi_align

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
sides = st.integers(1, 400)
scales = st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0)).map(sorted)
ratios = st.tuples(st.floats(0.2, 1.0), st.floats(1.0, 5.0))
seeds = st.integers(0, 2**32 - 1)


@SETTINGS
@given(height=sides, width=sides, scale=scales, ratio=ratios, seed=seeds)
def test_crop_boxes_lie_inside_the_image(height, width, scale, ratio, seed):
    x1, y1, x2, y2 = sample_crop_box(np.random.default_rng(seed), (height, width), scale, ratio)
    assert all(isinstance(v, int) for v in (x1, y1, x2, y2))
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


@SETTINGS
@given(
    height=st.integers(16, 300),
    width=st.integers(16, 300),
    min_overlap=st.floats(0.0, 0.5),
    index=st.integers(1, 3),
    seed=seeds,
)
def test_overlap_rule_takes_the_first_good_candidate_else_the_best(height, width, min_overlap, index, seed):
    spec = MultiCropSpec(n_global=2, global_blur_p=(1.0, 0.1), min_overlap=min_overlap, max_tries=6)
    rng = np.random.default_rng(seed)
    prior = [sample_crop_box(rng, (height, width), spec.global_scale) for _ in range(min(index, 2))]
    scale = spec.global_scale if index < 2 else spec.local_scale
    box = MultiCropTransform(spec)._crop_box(
        index, (height, width), scale, prior, np.random.default_rng(seed)
    )

    replay = np.random.default_rng(seed)
    candidates = [sample_crop_box(replay, (height, width), scale, spec.ratio) for _ in range(spec.max_tries)]
    overlaps = [_intersection_area(np.asarray(c, np.float64), prior).min() for c in candidates]
    threshold = int(height * width * min_overlap) * (2 if index < 2 else 1)
    good = [c for c, o in zip(candidates, overlaps) if o > threshold]
    assert box == (good[0] if good else candidates[int(np.argmax(overlaps))])


@SETTINGS
@given(
    data=st.data(),
    n_views=st.integers(2, 4),
    height=st.integers(20, 200),
    width=st.integers(20, 200),
    seed=seeds,
)
def test_box_records_lie_in_the_view_frames_and_roi_align_keeps_a_constant(
    data, n_views, height, width, seed
):
    rng = np.random.default_rng(seed)
    boxes = np.asarray([sample_crop_box(rng, (height, width), (0.05, 1.0)) for _ in range(n_views)])
    size = data.draw(st.sampled_from([8, 12]))
    in_a, in_b = intersection_boxes(boxes[:2], size, boxes, size)
    for records in (in_a, in_b):
        assert (records >= -1e-4).all() and (records <= size + 1e-4).all()
        assert (records[..., 2] >= records[..., 0]).all() and (records[..., 3] >= records[..., 1]).all()
    features = jnp.full((2, size, size, 3), 2.5)
    pooled = np.asarray(roi_align(features, jnp.asarray(in_a), output_size=2))  # (2, n_views, 2, 2, 3)
    area = (in_a[..., 2] - in_a[..., 0]) * (in_a[..., 3] - in_a[..., 1])
    np.testing.assert_allclose(pooled[area > 1e-3], 2.5, rtol=1e-5)
    np.testing.assert_array_equal(pooled[area == 0], 0.0)


def _brute(queries, memory, k):
    sims = queries @ memory.T
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, idx, axis=1), idx


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    queries=hnp.arrays(np.float32, (5, 3), elements=st.integers(-2, 2).map(float)),
    memory=hnp.arrays(np.float32, (37, 3), elements=st.integers(-2, 2).map(float)),
    k=st.sampled_from([1, 4, 37]),
    chunk_size=st.sampled_from([8, 64]),
)
def test_knn_equals_brute_force_with_ties(queries, memory, k, chunk_size):
    sims, idx = knn(queries, memory, k, chunk_size=chunk_size, group_size=4)
    want_sims, want_idx = _brute(queries, memory, k)
    np.testing.assert_array_equal(np.asarray(sims), want_sims)
    np.testing.assert_array_equal(np.asarray(idx), want_idx)
