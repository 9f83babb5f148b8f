"""Tests of petavox.tasks.evaluate.metrics: brute-force references, streaming, invariances,
real data."""

from __future__ import annotations

import functools
import itertools
import json
import math
import pickle
from collections import Counter

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.sparse as sparse
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from petavox.tasks.evaluate import metrics
from petavox.tasks.evaluate.metrics import (
    Contingency,
    Scores,
    contingency,
    evaluate,
    merge_all,
    scores,
)

BIG = 2**64 - 1
ID_POOL = [0, 1, 2, 3, 5, 70_000, 2**32 + 7, 2**63 + 1, BIG]


# ----------------------------------------------------------------------------- references


def brute_force(seg: np.ndarray, gt: np.ndarray, ignore_gt=(0,)) -> Scores:
    """Explicit pair counting (adapted Rand) and probability sums (VOI), for tiny inputs.

    Over ordered voxel pairs (u, v), self pairs included, of scored voxels (gt not ignored):
    sumA counts pairs with equal gt; sumB pairs in the same segment, sumAB pairs in the same
    segment and the same gt. A seg 0 voxel is a singleton: it shares a segment only with itself,
    and that self pair weighs 1/n (n = all voxels, ignored ones included) as in SNEMI3D / gala.
    """
    s_all = [int(v) for v in np.ravel(seg)]
    g_all = [int(v) for v in np.ravel(gt)]
    n = len(g_all)
    keep = [k for k in range(n) if g_all[k] not in ignore_gt]
    s = np.array([s_all[k] for k in keep], dtype=object)
    g = np.array([g_all[k] for k in keep], dtype=object)
    same_gt = g[:, None] == g[None, :]
    same_label = s[:, None] == s[None, :]
    is_self = np.eye(len(keep), dtype=bool)
    seg0 = (s == 0)[:, None] | np.zeros((1, len(keep)), bool)
    same_seg = np.where(seg0, is_self, same_label)
    weight = np.where(seg0 & is_self, 1.0 / n, 1.0)
    sum_a = float(np.sum(same_gt))
    sum_b = float(np.sum(weight * same_seg))
    sum_ab = float(np.sum(weight * (same_seg & same_gt)))
    p, r = sum_ab / sum_b, sum_ab / sum_a
    arand = 1.0 - 2.0 * p * r / (p + r)

    total = len(keep)
    joint = Counter(zip(s, g))
    p_g = Counter(g)
    p_s = Counter(s)
    h_s_given_g = -sum(c / total * math.log2(c / p_g[gl]) for (_, gl), c in joint.items())
    h_g_given_s = -sum(c / total * math.log2(c / p_s[sl]) for (sl, _), c in joint.items())
    return Scores(arand=arand, voi_split=h_s_given_g, voi_merge=h_g_given_s)


def _dense(a: np.ndarray) -> np.ndarray:
    """Relabel to 0..k-1 keeping 0 as 0 (for unsigned ids)."""
    u, inv = np.unique(np.ravel(a), return_inverse=True)
    return inv if u[0] == 0 else inv + 1


def gala_adapted_rand(seg: np.ndarray, gt: np.ndarray) -> float:
    """Transcription of gala's `adapted_rand_error` (SNEMI3D); gt 0 ignored, n = all voxels."""
    seg_a, seg_b = _dense(gt), _dense(seg)
    n = seg_a.size
    p_ij = sparse.csr_matrix((np.ones(n), (seg_a, seg_b)), shape=(seg_a.max() + 1, seg_b.max() + 1))
    a = p_ij[1:, :]
    b = p_ij[1:, 1:]
    c = p_ij[1:, 0].toarray()
    d = b.toarray() ** 2
    a_i = np.asarray(a.sum(1))
    b_i = np.asarray(b.sum(0))
    sum_a = np.sum(a_i * a_i)
    sum_b = np.sum(b_i * b_i) + np.sum(c) / n
    sum_ab = np.sum(d) + np.sum(c) / n
    precision, recall = sum_ab / sum_b, sum_ab / sum_a
    return float(1.0 - 2.0 * precision * recall / (precision + recall))


def assert_scores_close(a: Scores, b: Scores, tol: float = 1e-12) -> None:
    for key, value in a.to_dict().items():
        assert value == pytest.approx(b.to_dict()[key], abs=tol, rel=tol), key


# ----------------------------------------------------------------------------- strategies


@st.composite
def label_pairs(draw, max_size: int = 120):
    n = draw(st.integers(1, max_size))
    pool = draw(st.sampled_from([ID_POOL, ID_POOL[:5]]))
    ids = st.sampled_from(pool)
    seg = draw(hnp.arrays(np.uint64, n, elements=ids))
    gt = draw(hnp.arrays(np.uint64, n, elements=ids))
    return seg, gt


IGNORES = st.sampled_from([(0,), (), (0, 3), (BIG,)])


# ----------------------------------------------------------------------------- 1. references


@settings(max_examples=150, deadline=None)
@given(label_pairs(), IGNORES)
def test_matches_brute_force(pair, ignore_gt):
    seg, gt = pair
    table = contingency(seg, gt, ignore_gt)
    assert table.n_ignored == sum(int(v) in ignore_gt for v in gt)
    if table.n_scored == 0:
        with pytest.raises(ValueError, match="no voxels"):
            scores(table)
        return
    assert_scores_close(scores(table), brute_force(seg, gt, ignore_gt), tol=1e-9)


@settings(max_examples=100, deadline=None)
@given(label_pairs())
def test_arand_matches_gala_transcription(pair):
    seg, gt = pair
    if not np.any(gt != 0):
        return
    assert evaluate(seg, gt).arand == pytest.approx(gala_adapted_rand(seg, gt), abs=1e-12)


def test_hand_computed_case():
    # gt splits 4 voxels in two; seg merges all: P = 8/16, R = 8/8, F = 2/3.
    s = evaluate(np.array([1, 1, 1, 1]), np.array([1, 1, 2, 2]))
    assert s.arand == pytest.approx(1 / 3)
    assert s.voi_split == 0.0
    assert s.voi_merge == pytest.approx(1.0)


def test_table_contents_and_dtypes():
    seg = np.array([[0, 5, 5], [7, 7, 0]])
    gt = np.array([[1, 1, 0], [2, 2, 2]])
    t = contingency(seg, gt)
    assert t.seg.dtype == np.uint64 and t.gt.dtype == np.uint64 and t.count.dtype == np.int64
    assert list(zip(t.seg.tolist(), t.gt.tolist(), t.count.tolist())) == [
        (0, 1, 1),
        (0, 2, 1),
        (5, 1, 1),
        (7, 2, 2),
    ]
    assert t.n_ignored == 1 and t.n_scored == 5
    for dtype in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32):
        assert contingency(seg.astype(dtype), gt.astype(np.uint64)) == t
        assert contingency(seg.astype(np.uint64), gt.astype(dtype)) == t


def test_negative_ids_wrap_like_astype():
    t = contingency(np.array([-1, 2, -1]), np.array([1, 1, 1]))
    assert t == Contingency(seg=[2, BIG], gt=[1, 1], count=[1, 2])


def test_bad_inputs():
    with pytest.raises(ValueError, match="shapes differ"):
        contingency(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(TypeError, match="integer"):
        contingency(np.zeros(3), np.zeros(3, int))
    with pytest.raises(ValueError, match="equally long"):
        Contingency(seg=[1], gt=[1, 2], count=[1])


def test_empty_and_fully_ignored():
    with pytest.raises(ValueError, match="no voxels"):
        scores(Contingency.empty())
    t = contingency(np.ones((2, 2), np.uint32), np.zeros((2, 2), np.uint32))
    assert t.n_scored == 0 and t.n_ignored == 4
    with pytest.raises(ValueError, match="no voxels"):
        evaluate(np.ones(4, np.uint32), np.zeros(4, np.uint32))
    assert contingency(np.zeros((0, 3), int), np.zeros((0, 3), int)) == Contingency.empty()


def counter_table(seg: np.ndarray, gt: np.ndarray, ignore_gt=(0,)) -> Contingency:
    """Reference table by plain Python counting."""
    pairs = Counter(
        (int(s), int(g)) for s, g in zip(np.ravel(seg), np.ravel(gt)) if int(g) not in ignore_gt
    )
    n_ignored = sum(int(g) in ignore_gt for g in np.ravel(gt))
    if not pairs:
        return Contingency(seg=[], gt=[], count=[], n_ignored=n_ignored)
    (seg_ids, gt_ids), counts = zip(*pairs.keys()), list(pairs.values())
    return Contingency(seg=seg_ids, gt=gt_ids, count=counts, n_ignored=n_ignored)


@pytest.mark.parametrize("limit", [None, 0])
@pytest.mark.parametrize("pack_bits", [None, 0])
@pytest.mark.parametrize("kind", ["noise", "blocky", "blocky_big_ids"])
def test_counting_paths_agree(monkeypatch, limit, pack_bits, kind):
    # bincount, np.unique, packed sort of runs and np.unique(return_inverse) of runs
    if limit is not None:
        monkeypatch.setattr(metrics, "_BINCOUNT_CELLS", limit)
        monkeypatch.setattr(metrics, "_BINCOUNT_CELLS_PER_KEY", limit)
    if pack_bits is not None:
        monkeypatch.setattr(metrics, "_PACK_BITS", pack_bits)
    rng = np.random.default_rng(1)
    if kind == "noise":
        seg = rng.integers(0, 10**6, 600, dtype=np.uint64)
        gt = rng.integers(0, 10**6, 600, dtype=np.uint64)
    else:
        gt = blocky_labels(rng, (7, 8, 48), 8, 9, 0.2)  # long runs along the last axis
        seg = blocky_labels(rng, (7, 8, 48), 6, 30, 0.1)
        if kind == "blocky_big_ids":
            seg = seg * np.uint64(2**44) + np.uint64(3)
    for ignore in [(0,), (), (0, 1, 2)]:
        assert contingency(seg, gt, ignore) == counter_table(seg, gt, ignore)


@settings(max_examples=100, deadline=None)
@given(label_pairs(), IGNORES)
def test_table_matches_counter(pair, ignore_gt):
    seg, gt = pair
    seg, gt = np.sort(seg), np.sort(gt)  # long runs exercise run-length compression
    assert contingency(seg, gt, ignore_gt) == counter_table(seg, gt, ignore_gt)


# ----------------------------------------------------------------------------- 2. streaming


def blocky_labels(rng, shape, block, n_labels, zero_fraction):
    small = rng.integers(1, n_labels + 1, [-(-s // block) for s in shape], dtype=np.uint64)
    small[rng.random(small.shape) < zero_fraction] = 0
    big = small
    for axis in range(3):
        big = np.repeat(big, block, axis=axis)
    noise = rng.random(shape) < 0.05
    out = big[: shape[0], : shape[1], : shape[2]].copy()
    out[noise] = rng.integers(0, n_labels + 1, int(noise.sum()), dtype=np.uint64)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_streaming_equals_whole(seed):
    rng = np.random.default_rng(seed)
    shape = (23, 31, 17)
    gt = blocky_labels(rng, shape, 5, 12, 0.15)
    seg = blocky_labels(rng, shape, 3, 40, 0.1) * np.uint64(2**40)  # large ids too
    whole = contingency(seg, gt)
    cuts = [
        [0, *sorted(rng.choice(np.arange(1, s), size=rng.integers(1, 5), replace=False)), s]
        for s in shape
    ]
    tables = []
    for (z0, z1), (y0, y1), (x0, x1) in itertools.product(
        *[list(itertools.pairwise(c)) for c in cuts]
    ):
        box = np.s_[z0:z1, y0:y1, x0:x1]
        tables.append(contingency(seg[box], gt[box]))
    order = rng.permutation(len(tables))
    streamed = merge_all(tables[i] for i in order)
    pairwise = functools.reduce(Contingency.merge, [tables[i] for i in order[::-1]])
    for merged in (streamed, pairwise):
        assert merged == whole
        assert merged.n_ignored == whole.n_ignored == int(np.sum(gt == 0))
        assert len(set(zip(merged.seg.tolist(), merged.gt.tolist()))) == merged.seg.size
        assert_scores_close(scores(merged), scores(whole))
    assert merge_all([]) == Contingency.empty()
    assert whole.merge(Contingency.empty()) == whole


def test_serialisation_round_trip():
    rng = np.random.default_rng(3)
    seg = rng.choice(np.array(ID_POOL, np.uint64), 200)
    gt = rng.choice(np.array(ID_POOL, np.uint64), 200)
    t = contingency(seg, gt)
    back = Contingency.from_dict(json.loads(json.dumps(t.to_dict())))
    assert back == t and back.seg.dtype == np.uint64
    assert pickle.loads(pickle.dumps(t)) == t
    s = scores(t)
    assert Scores(**json.loads(json.dumps(s.to_dict()))) == s


# ----------------------------------------------------------------------------- 3. invariances


def random_bijection(rng, ids: np.ndarray, fix_zero: bool) -> dict[int, int]:
    ids = [int(v) for v in np.unique(ids)]
    targets = rng.choice(2**62, size=len(ids), replace=False) + 1
    mapping = {v: int(t) for v, t in zip(ids, targets)}
    if fix_zero and 0 in mapping:
        mapping[0] = 0
    return mapping


def apply(mapping: dict[int, int], a: np.ndarray) -> np.ndarray:
    return np.array([mapping[int(v)] for v in a.ravel()], np.uint64).reshape(a.shape)


@pytest.mark.parametrize("seed", range(5))
def test_relabel_invariance(seed):
    rng = np.random.default_rng(seed)
    gt = blocky_labels(rng, (9, 10, 11), 3, 8, 0.2)
    seg = blocky_labels(rng, (9, 10, 11), 2, 15, 0.2)
    base = evaluate(seg, gt)
    seg2 = apply(random_bijection(rng, seg, fix_zero=True), seg)
    gt2 = apply(random_bijection(rng, gt, fix_zero=True), gt)
    assert_scores_close(evaluate(seg2, gt2), base)
    # VOI treats seg 0 as an ordinary label: any bijection of seg ids keeps it.
    seg3 = apply(random_bijection(rng, seg, fix_zero=False), seg)
    moved = evaluate(seg3, gt)
    assert moved.voi_split == pytest.approx(base.voi_split, abs=1e-12)
    assert moved.voi_merge == pytest.approx(base.voi_merge, abs=1e-12)
    # voxel order does not matter either
    perm = rng.permutation(seg.size)
    assert_scores_close(evaluate(seg.ravel()[perm], gt.ravel()[perm]), base)


@settings(max_examples=60, deadline=None)
@given(label_pairs())
def test_swapping_roles_swaps_voi(pair):
    seg, gt = pair
    a = evaluate(seg, gt, ignore_gt=())
    b = evaluate(gt, seg, ignore_gt=())
    assert a.voi_split == pytest.approx(b.voi_merge, abs=1e-12)
    assert a.voi_merge == pytest.approx(b.voi_split, abs=1e-12)


# ----------------------------------------------------------------------------- 4. known cases


def test_known_cases():
    rng = np.random.default_rng(7)
    gt = blocky_labels(rng, (10, 12, 14), 4, 6, 0.1)
    assert evaluate(gt, gt) == Scores(arand=0.0, voi_split=0.0, voi_merge=0.0)
    relabelled = apply(random_bijection(rng, gt, fix_zero=False), gt)
    assert evaluate(relabelled, gt) == Scores(arand=0.0, voi_split=0.0, voi_merge=0.0)

    merged = evaluate(np.ones_like(gt), gt)
    assert merged.voi_split == 0.0 and merged.voi_merge > 0 and 0 < merged.arand < 1

    oversplit = evaluate(np.arange(1, gt.size + 1).reshape(gt.shape), gt)
    assert oversplit.voi_merge == 0.0 and oversplit.voi_split > 0 and 0 < oversplit.arand < 1

    all_zero = evaluate(np.zeros_like(gt), gt)  # every voxel a singleton for adapted Rand
    assert all_zero.arand > oversplit.arand - 1e-9 and all_zero.voi_split == 0.0


# ----------------------------------------------------------------------------- 5. real data


@pytest.fixture(scope="module")
def gala_test(gala_dir):
    """Skips (through conftest's `gala_dir`) where the shared data is absent."""
    with np.load(gala_dir / "test.npz") as f:
        return f["gt"], f["boundary"]


def test_gala_data_gt_against_itself(gala_test):
    gt, _ = gala_test
    assert evaluate(gt, gt) == Scores(arand=0.0, voi_split=0.0, voi_merge=0.0)


def test_gala_data_connected_components(gala_test):
    gt, boundary = gala_test
    seg, n = ndi.label(boundary < 0.5)  # 6-connected in 3-D
    assert n > 1
    s = evaluate(seg, gt)
    assert 0.0 < s.arand < 1.0 and s.voi_split > 0 and s.voi_merge > 0
    assert s.arand == pytest.approx(gala_adapted_rand(seg, gt), abs=1e-12)
    whole = contingency(seg, gt)
    chunks = [
        contingency(seg[z : z + 17, y : y + 40, x : x + 64], gt[z : z + 17, y : y + 40, x : x + 64])
        for z in range(0, gt.shape[0], 17)
        for y in range(0, gt.shape[1], 40)
        for x in range(0, gt.shape[2], 64)
    ]
    assert merge_all(chunks) == whole
    assert_scores_close(scores(merge_all(chunks)), s)
