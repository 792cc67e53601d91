"""Conformal intervals: split-conformal coverage, ACI causality and adaptation, bad input."""

import numpy as np
import pandas as pd

from learning.encoder.conformal import (
    COLUMNS,
    LEVELS,
    MIN_CALIBRATION,
    aci_intervals,
    contains_zero,
    half_width_at,
    half_widths,
)


def test_split_conformal_coverage_on_exchangeable_data_is_nominal_within_sampling_error(rng):
    # Finite-sample guarantee: 0.9 <= E[coverage] <= 0.9 + 1/(n+1) for exchangeable residuals.
    covered = []
    for _ in range(200):
        cal = rng.standard_t(4, 200)
        test = rng.standard_t(4, 2000)
        q = half_widths(cal)[LEVELS.index(0.9)]
        covered.append(np.mean(np.abs(test) <= q))
    mean = float(np.mean(covered))
    se = float(np.std(covered) / np.sqrt(len(covered)))
    assert 0.9 - 3 * se <= mean <= 0.9 + 1 / 201 + 3 * se, (mean, se)


def test_half_widths_with_too_few_residuals_abstain():
    assert half_widths(np.ones(MIN_CALIBRATION - 1)) is None
    assert half_widths(np.r_[np.ones(MIN_CALIBRATION - 1), np.nan]) is None


def test_half_width_at_interpolates_is_infinite_above_the_grid_and_empty_at_zero():
    grid = np.array(LEVELS) * 2.0
    assert np.isclose(half_width_at(grid, 0.9), 1.8)
    assert np.isclose(half_width_at(grid, 0.875), 1.75)
    assert half_width_at(grid, 0.999) == np.inf
    assert np.isclose(half_width_at(grid, 0.1), grid[0] * 0.1 / LEVELS[0])
    assert half_width_at(grid, 0.0) == 0.0 and half_width_at(grid, -0.2) == 0.0


def series(n: int = 1500, seed: int = 0, drift_scale: float = 1.0, scale=None):
    """Predictions, the window's half-width grid and prices whose realised 4-candle log return is
    the prediction plus noise (noise scale x ``drift_scale`` in the second half, or ``scale`` per
    row)."""
    rng = np.random.default_rng(seed)
    h = 4
    pred = rng.normal(0, 0.01, n)
    if scale is None:
        scale = np.where(np.arange(n) < n // 2, 0.01, 0.01 * drift_scale)
    # build closes so that log(c[t+h]/c[t]) = pred[t] + noise: one step per candle
    steps = np.zeros(n)
    for t in range(0, n - h, h):
        steps[t + 1:t + h + 1] = (pred[t] + rng.normal(0, scale[t])) / h
    close = 100 * np.exp(np.cumsum(steps))
    grid = np.tile(half_widths(rng.normal(0, 0.01, 500)), (n, 1))
    return pred, grid, close, h


def test_aci_prefix_values_unchanged_when_rows_appended():
    pred, grid, close, h = series()
    lo, hi = aci_intervals(pred, grid, close, h, 0.9, 0.01)
    for t in (10, 500, 1200):
        lo2, hi2 = aci_intervals(pred[:t + 1], grid[:t + 1], close[:t + 1], h, 0.9, 0.01)
        np.testing.assert_array_equal(lo2, lo[:t + 1])
        np.testing.assert_array_equal(hi2, hi[:t + 1])


def coverage(pred, lo, hi, close, h, rows):
    y = np.log(close[h:] / close[:-h])
    idx = [t for t in rows if t + h < len(close) and t % h == 0]
    return np.mean([lo[t] <= y[t] <= hi[t] for t in idx])


def test_aci_restores_coverage_after_the_noise_doubles():
    pred, grid, close, h = series(n=6000, drift_scale=2.0)
    lo0, hi0 = aci_intervals(pred, grid, close, h, 0.9, 0.0)  # plain split conformal
    lo1, hi1 = aci_intervals(pred, grid, close, h, 0.9, 0.02)
    late = range(4000, 6000)
    split, aci = coverage(pred, lo0, hi0, close, h, late), coverage(pred, lo1, hi1, close, h, late)
    assert split < 0.8, split  # the calibration no longer holds
    assert abs(aci - 0.9) < abs(split - 0.9) and aci > 0.82, (split, aci)


def test_aci_keeps_adapting_after_a_wild_spell_made_its_intervals_unbounded(rng):
    # Noise three times the calibration's drives alpha_t below the grid's lowest miscoverage:
    # the intervals become unbounded (and cover, so alpha_t climbs back). When the noise calms,
    # ACI must narrow them to nominal coverage again (a recursion that skipped unbounded
    # intervals froze at the first one, every later interval unbounded).
    n = 9000
    scale = np.where(np.arange(n) < n // 3, 0.03, 0.01)
    pred = rng.normal(0, 0.01, n)
    y = pred + rng.normal(0, 1, n) * scale  # log(close[t+1] / close[t])
    close = 100 * np.exp(np.r_[0.0, np.cumsum(y)[:-1]])
    grid = np.tile(half_widths(rng.normal(0, 0.01, 500)), (n, 1))
    lo, hi = aci_intervals(pred, grid, close, 1, 0.9, 0.02)
    assert np.isinf(lo[:n // 3]).mean() > 0.3  # the wild spell did reach unbounded intervals
    late = slice(6000, n - 1)
    assert np.isfinite(lo[late]).mean() > 0.95
    covered = (lo[late] <= y[late]) & (y[late] <= hi[late])
    assert abs(covered.mean() - 0.9) < 0.02, covered.mean()


def test_aci_without_a_grid_has_no_interval():
    pred, grid, close, h = series(n=50)
    grid[:] = np.nan
    lo, hi = aci_intervals(pred, grid, close, h, 0.9, 0.01)
    assert np.isnan(lo).all() and not contains_zero(lo, hi).any()


def test_contains_zero():
    lo = np.array([-0.01, 0.001, np.nan, -np.inf])
    hi = np.array([0.02, 0.03, np.nan, np.inf])
    assert contains_zero(lo, hi).tolist() == [True, False, False, True]


def test_interval_columns_name_every_level():
    assert len(COLUMNS) == len(LEVELS) and COLUMNS[LEVELS.index(0.9)] == "&-cq_0900"
    assert pd.Index(COLUMNS).is_unique


class _Pipe:
    """Label pipeline double: the scaled label is half the original."""

    def inverse_transform(self, df):
        return df * 2.0, None, None


class _Kitchen:
    def __init__(self):
        self.pair, self.label_list, self.label_pipeline = "BTC/USDT", ["&-s_return", "&-s_vol"], \
            _Pipe()
        self.data = {}


class _Model:
    def predict(self, x):
        return np.column_stack([x["f"].to_numpy(), np.zeros(len(x))])


def test_conformal_mixin_calibrates_on_the_held_out_split_in_label_units(rng):
    from learning.encoder.conformal import ConformalMixin

    x = pd.DataFrame({"f": rng.normal(size=300)})
    y = pd.DataFrame({"&-s_return": x["f"] + rng.normal(0, 0.1, 300), "&-s_vol": 0.0})
    dk = _Kitchen()
    ConformalMixin().calibrate(_Model(), {"test_features": x, "test_labels": y}, dk)
    expected = half_widths(2 * (y["&-s_return"] - x["f"]).to_numpy())
    np.testing.assert_allclose(dk.data["conformal"]["half_widths"], expected)
    assert dk.data["labels_mean"]["&-cq_0900"] == expected[LEVELS.index(0.9)]
    out = ConformalMixin().add_conformal_columns(pd.DataFrame({"&-s_return": [0.0, 0.1]}), dk)
    assert out["&-cq_0900"].tolist() == [expected[LEVELS.index(0.9)]] * 2
    few = _Kitchen()
    ConformalMixin().calibrate(_Model(), {"test_features": x.iloc[:10],
                                          "test_labels": y.iloc[:10]}, few)
    assert few.data["conformal"] is None
    assert ConformalMixin().add_conformal_columns(pd.DataFrame({"a": [1.0]}), few)[
        "&-cq_0900"].isna().all()
