import numpy as np
import pytest

from autolabel.markup import GROUPS, MIRROR, N_POINTS, connections, flip_points
from autolabel.metrics import auc, ced, failure_rate, interocular, interpupil, nme


def test_mirror_is_an_involution_and_swaps_eyes():
    assert sorted(MIRROR.tolist()) == list(range(N_POINTS))
    assert (MIRROR[MIRROR] == np.arange(N_POINTS)).all()
    assert MIRROR[36] == 45 and MIRROR[39] == 42  # outer and inner eye corners
    assert MIRROR[0] == 16 and MIRROR[8] == 8  # jaw ends; chin stays
    assert MIRROR[17] == 26 and MIRROR[48] == 54 and MIRROR[30] == 30
    assert set(MIRROR[list(range(36, 42))].tolist()) == set(range(42, 48))


def test_flip_twice_is_identity():
    p = np.random.default_rng(0).uniform(0, 100, (5, N_POINTS, 2)).astype(np.float32)
    np.testing.assert_allclose(flip_points(flip_points(p, 100), 100), p, atol=1e-5)


def test_flip_maps_left_eye_to_right_side():
    p = np.zeros((N_POINTS, 2), np.float32)
    p[36] = [30, 40]  # subject's right eye outer corner, image left
    p[45] = [70, 40]
    f = flip_points(p, 101)
    assert f[36].tolist() == [30, 40] and f[45].tolist() == [70, 40]  # mirrored and relabelled


def test_groups_cover_all_points_once():
    covered = [i for a, b, _ in GROUPS.values() for i in range(a, b + 1)]
    assert sorted(covered) == list(range(N_POINTS))
    assert len(connections()) == 17 - 1 + 4 + 4 + 3 + 4 + 6 + 6 + 12 + 8


def test_nme_hand_computed():
    gt = np.zeros((N_POINTS, 2))
    gt[36] = [0, 0]
    gt[45] = [10, 0]  # inter-ocular distance 10
    gt[36:42] = [[0, 0]] * 6
    gt[42:48] = [[10, 0]] * 6  # pupils 10 apart too
    gt[36], gt[45] = [0, 0], [10, 0]
    pred = gt.copy()
    pred[0] += [3, 4]  # one point off by 5
    assert interocular(gt) == pytest.approx(10)
    assert interpupil(gt) == pytest.approx(10)
    assert nme(pred, gt) == pytest.approx(5 / 68 / 10)


def test_failure_rate_auc_ced_hand_computed():
    e = np.array([0.01, 0.03, 0.09, 0.05])
    assert failure_rate(e, 0.08) == 0.25
    x, y = ced(e, 0.08, steps=9)  # x = 0, .01, ..., .08
    np.testing.assert_allclose(y, [0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75])
    # a face at 0 error everywhere -> AUC 1; all failures -> 0
    assert auc(np.zeros(3)) == pytest.approx(1.0)
    assert auc(np.full(3, 0.5)) == 0.0
    # single face at 0.04 -> area = (0.08 - 0.04) / 0.08 = 0.5
    assert auc(np.array([0.04]), steps=8001) == pytest.approx(0.5, abs=1e-3)


def test_spearman_and_confidence_quality_are_exact_on_known_rankings():
    from autolabel.metrics import confidence_quality, spearman

    e = np.arange(20, dtype=float)
    assert spearman(e, e ** 3) == pytest.approx(1.0) and spearman(e, -e) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)  # ties share their mean rank
    perfect = confidence_quality(e, e)
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["worst_in_top"] == 1.0
    swapped = e.copy()
    swapped[[19, 0]] = swapped[[0, 19]]  # the worst face scored surest: one of the two worst missed
    q = confidence_quality(swapped, e)
    assert q["worst_in_top"] == 0.5 and q["faces"] == 20
    assert confidence_quality(np.r_[e, np.nan], np.r_[e, 5.0])["faces"] == 20  # NaN scores left out
