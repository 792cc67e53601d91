"""BOCD on the market proxy: causality, a planted changepoint, a stationary series, bad input."""

import dataclasses
import logging

import numpy as np
import pandas as pd
import pytest

from learning.brain.changepoint import (
    BOCD,
    ChangepointConfig,
    ChangepointDetector,
    alarm_onsets,
    level,
)
from learning.brain.regime import RegimeDetector

CFG = ChangepointConfig(enabled=True, downside_only=False)


def candles_from_returns(r: np.ndarray, start: str = "2024-01-01") -> pd.DataFrame:
    close = 100 * np.exp(np.cumsum(r))
    open_ = np.r_[100.0, close[:-1]]
    spread = np.abs(r) + 0.5 * np.std(r[:50])
    return pd.DataFrame({"date": pd.date_range(start, periods=len(r), freq="1h", tz="UTC"),
                         "open": open_, "high": np.maximum(open_, close) * (1 + spread / 2),
                         "low": np.minimum(open_, close) * (1 - spread / 2), "close": close,
                         "volume": 1.0})


def planted(seed: int = 0, n0: int = 1500, n1: int = 200, jump: float = 5.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    r = np.r_[rng.standard_t(6, n0) * 0.004, rng.standard_t(6, n1) * 0.004 * jump - 0.003]
    return candles_from_returns(r)


def test_bocd_posterior_is_a_distribution_over_bounded_run_lengths(rng):
    b = BOCD(2, hazard=100, max_run=50)
    for x in rng.normal(size=(200, 2)):
        post = b.update(x)
        assert len(post) <= 51 and np.isclose(post.sum(), 1.0) and (post >= 0).all()


def test_bocd_run_length_grows_on_stationary_data(rng):
    b = BOCD(1, hazard=1000, max_run=500)
    for x in rng.normal(size=(300, 1)):
        post = b.update(x)
    assert int(np.argmax(post)) > 200  # one long run, no changepoint


def test_changepoint_prefix_values_unchanged_when_candles_appended():
    frame = planted()
    full = ChangepointDetector(CFG, "1h").probabilities(frame)
    for t in (700, 1499, 1510, 1650):
        part = ChangepointDetector(CFG, "1h").probabilities(frame.iloc[:t + 1])
        np.testing.assert_allclose(part, full[:t + 1], equal_nan=True, rtol=1e-9)


def test_changepoint_on_growing_and_sliding_frames_matches_one_call():
    frame = planted()
    full = ChangepointDetector(CFG, "1h").probabilities(frame)
    det = ChangepointDetector(CFG, "1h")
    det.probabilities(frame.iloc[:1000])
    for end in range(1001, 1701, 37):  # grows, then slides: a fixed number of candles
        out = det.probabilities(frame.iloc[max(0, end - 1200):end])
        np.testing.assert_allclose(out, full[max(0, end - 1200):end], equal_nan=True, rtol=1e-9)


def test_changepoint_planted_in_synthetic_series_is_found_within_a_few_candles():
    delays = []
    for seed in range(5):
        frame = planted(seed)
        prob = ChangepointDetector(CFG, "1h").probabilities(frame)
        after = np.flatnonzero(np.nan_to_num(prob[1500:]) > CFG.block_above)
        delays.append(after[0] + 1 if after.size else 999)
    assert max(delays) <= 6, delays


def test_changepoint_on_stationary_series_raises_almost_no_alarm():
    # Gaussian returns with a constant law: a finite hazard still sees the odd streak of
    # same-sign returns, so the bound is a rate (at most one alarm per 4,000 candles).
    cfg = dataclasses.replace(CFG, downside_only=True)  # as shipped
    onsets = 0
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        frame = candles_from_returns(rng.normal(0, 0.004, 2000))
        onsets += len(alarm_onsets(ChangepointDetector(cfg, "1h").probabilities(frame),
                                   cfg.block_above))
    assert onsets <= 5, onsets


def test_changepoint_downside_only_ignores_a_rally():
    rng = np.random.default_rng(3)
    r = np.r_[rng.normal(0, 0.004, 1500), np.abs(rng.normal(0.01, 0.02, 100))]
    frame = candles_from_returns(r)
    both = ChangepointDetector(CFG, "1h").probabilities(frame)
    down = ChangepointDetector(dataclasses.replace(CFG, downside_only=True), "1h")
    assert np.nanmax(both[1500:]) > CFG.exit_above
    assert np.nanmax(down.probabilities(frame)[1500:]) == 0.0


def test_changepoint_with_too_little_history_abstains_and_logs_once(caplog):
    frame = planted().iloc[:40]
    det = ChangepointDetector(CFG, "1h")
    with caplog.at_level(logging.WARNING):
        out1 = det.probabilities(frame)
        out2 = det.probabilities(frame.iloc[:30])
    assert np.isnan(out1).all() and np.isnan(out2).all()
    assert sum("too little history" in r.getMessage() for r in caplog.records) == 1


def test_changepoint_with_nan_prices_skips_those_candles_without_raising():
    frame = planted()
    frame.loc[1200:1203, ["high", "low", "close"]] = np.nan
    out = ChangepointDetector(CFG, "1h").probabilities(frame)
    assert np.isnan(out[1200:1204]).all() and np.isfinite(out[1300:]).all()


@pytest.mark.parametrize(("prob", "expected"), [(0.5, 0), (0.75, 1), (0.95, 2),
                                                (float("nan"), 0)])
def test_level_maps_probability_to_block_and_exit(prob, expected):
    assert level(prob, CFG) == expected
    assert level(prob, dataclasses.replace(CFG, enabled=False)) == 0


def test_regime_alarm_lets_the_detector_switch_before_min_dwell_and_refits():
    from tests.brain.test_regime import SMALL, features

    feats = features(seed=1)
    cfg = dataclasses.replace(SMALL, min_dwell=60)
    base_det = RegimeDetector(cfg)
    base = base_det.detect(feats)
    alarm = np.zeros(len(feats), dtype=bool)
    alarm[[420, 421, 422, 910]] = True  # refits 5 candles after each onset (not on a period edge)
    det = RegimeDetector(cfg)
    out = det.detect(feats, alarm=alarm, refit_delay=5)
    assert len(det._models) == len(base_det._models) + 2  # one extra refit per alarm onset
    # causal: nothing before the first alarm changes
    pd.testing.assert_frame_equal(out.iloc[:420], base.iloc[:420])
    # the dwell: without the alarm the regime is held, with it the detector may switch at once
    full_alarm = np.ones(len(feats), dtype=bool)
    fast = RegimeDetector(cfg).detect(feats, alarm=full_alarm, refit_delay=10_000)
    slow = RegimeDetector(cfg).detect(feats)
    switches = lambda f: int((f["regime"] != f["regime"].shift()).sum())  # noqa: E731
    assert switches(fast) > switches(slow)
