"""Metrics are small pure functions; check them on hand-computed cases."""

import numpy as np
import pytest

from kpcore.evaluation import metrics as M


def test_px_error_and_nme_by_hand():
    true = np.zeros((2, 2, 2))
    pred = np.array([[[3, 4], [0, 0]], [[6, 8], [6, 8]]], float)  # distances 5,0 and 10,10
    np.testing.assert_allclose(M.px_error(pred, true), [2.5, 10.0])
    np.testing.assert_allclose(M.nme(pred, true, [5.0, 100.0]), [0.5, 0.1])
    assert M.mae(pred, true) == pytest.approx((3 + 4 + 0 + 0 + 6 + 8 + 6 + 8) / 8)


def test_failure_rate_and_auc():
    nmes = np.array([0.0, 0.04, 0.1])
    assert M.failure_rate(nmes) == pytest.approx(1 / 3)
    # CED is 1/3 on [0, 0.04) and 2/3 on [0.04, 0.08]: area / 0.08 = 0.5
    assert M.auc(nmes) == pytest.approx(0.5, abs=1e-3)
    assert M.auc(np.zeros(10)) == pytest.approx(1.0)
    assert M.auc(np.full(10, 0.2)) == 0.0


def test_ced_is_monotone_and_ends_at_success_rate():
    nmes = np.random.default_rng(0).uniform(0, 0.12, 500)
    levels, frac = M.ced(nmes)
    assert levels[0] == 0 and levels[-1] == pytest.approx(M.FAILURE_THRESHOLD)
    assert np.all(np.diff(frac) >= 0)
    assert frac[-1] == pytest.approx(1 - M.failure_rate(nmes))


def test_summary_keys_and_per_keypoint():
    rng = np.random.default_rng(1)
    true = rng.uniform(0, 100, (5, 68, 2))
    pred = true.copy()
    pred[:, 30] += [3, 4]  # only the nose tip is off, by 5 px
    s = M.summarize(pred, true, np.full(5, 50.0))
    assert {"n", "mean_px_error", "nme", "failure_rate", "auc", "mae"} <= set(s)
    assert s["per_keypoint_px"][30] == pytest.approx(5.0) and s["per_keypoint_px"][0] == 0
    assert s["nme"] == pytest.approx(5 / 68 / 50)


def test_nme_rejects_zero_norm():
    with pytest.raises(ValueError, match="positive"):
        M.nme(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), [0.0])
