"""The regime detector: forward-only filtering, walk-forward refits, CRISIS override, hysteresis."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging

import numpy as np
import pandas as pd
import pytest

from learning.brain import regime_features as rf
from learning.brain.regime import (
    PROB_COLUMNS,
    REGIMES,
    Regime,
    RegimeConfig,
    RegimeDetector,
    RegimeFitError,
    RegimeHMM,
    RegimePerformance,
    regime_features,
)
from learning.core.config import parse_section
from learning.core.errors import ConfigError, StateError

# Small windows so a walk-forward over ~1000 hourly candles runs in well under a second.
SMALL = RegimeConfig(
    trend_window=12, vol_window=12, vol_baseline_window=120, dispersion_window=12,
    drawdown_window=12, fit_window=300, min_fit_candles=150, refit_every=50, burn_in=12,
    n_states=4, n_iter=30, min_dwell=3)
START = "2024-01-01"


def candles(logp: np.ndarray, start: str = START) -> pd.DataFrame:
    close = np.exp(logp)
    open_ = np.concatenate([[close[0]], close[:-1]])
    return pd.DataFrame({
        "date": pd.date_range(start, periods=len(close), freq="1h", tz="UTC"),
        "open": open_, "high": np.maximum(open_, close) * 1.001,
        "low": np.minimum(open_, close) * 0.999, "close": close, "volume": 1.0})


def market(n: int = 1000, seed: int = 0, crash_at: int | None = None,
           crash_depth: float = 0.15) -> dict[str, pd.DataFrame]:
    """BTC alternating bull/bear/chop blocks, three alts (beta + noise, one theme block)."""
    rng = np.random.default_rng(seed)
    drift = np.resize(np.repeat([0.003, -0.003, 0.0], 100), n)
    r = drift + rng.normal(0, 0.01, n)
    if crash_at is not None:  # -crash_depth over six candles
        r[crash_at:crash_at + 6] = np.log1p(-crash_depth) / 6
    out = {"BTC/USDT": candles(8 + np.cumsum(r))}
    for i, pair in enumerate(("ETH/USDT", "SOL/USDT", "XRP/USDT")):
        idio = rng.normal(0, 0.008, n)
        idio[400:500] += 0.01 * (1 if i == 0 else -0.3)  # a theme: ETH runs, others lag
        out[pair] = candles(4 + np.cumsum(1.2 * r + idio))
    return out


def features(n: int = 1000, seed: int = 0, cfg: RegimeConfig = SMALL, **kw) -> pd.DataFrame:
    m = market(n, seed, **kw)
    return regime_features(m["BTC/USDT"], {p: d for p, d in m.items() if p != "BTC/USDT"}, cfg)


def refit_rows(f: pd.DataFrame, cfg: RegimeConfig = SMALL) -> np.ndarray:
    periods = pd.DatetimeIndex(f["date"]).as_unit("ns").asi8 // cfg.period.value
    return np.flatnonzero(np.diff(periods)) + 1


# ----------------------------------------------------------------------------------------------
# Forward filter


def brute_force_filter(log_lik: np.ndarray, start: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """P(s_t | x_1..t) by summing the joint over every path s_1..s_t."""
    t_len, k = log_lik.shape
    b = np.exp(log_lik)
    out = np.zeros((t_len, k))
    for t in range(t_len):
        for path in itertools.product(range(k), repeat=t + 1):
            p = start[path[0]] * b[0, path[0]]
            for s in range(1, t + 1):
                p *= trans[path[s - 1], path[s]] * b[s, path[s]]
            out[t, path[-1]] += p
        out[t] /= out[t].sum()
    return out


def test_forward_filter_on_two_states_matches_path_enumeration(rng):
    start = np.array([0.7, 0.3])
    trans = np.array([[0.9, 0.1], [0.2, 0.8]])
    log_lik = rng.normal(-1.0, 1.5, (7, 2))
    probs, last = rf.forward_filter(log_lik, start, trans)
    expected = brute_force_filter(log_lik, start, trans)
    np.testing.assert_allclose(probs, expected, rtol=1e-12)
    np.testing.assert_allclose(last, expected[-1], rtol=1e-12)


def test_forward_filter_resumed_from_alpha_equals_one_pass(rng):
    start = np.array([0.5, 0.5])
    trans = np.array([[0.95, 0.05], [0.1, 0.9]])
    log_lik = rng.normal(0.0, 2.0, (12, 2))
    whole, _ = rf.forward_filter(log_lik, start, trans)
    head, alpha = rf.forward_filter(log_lik[:5], start, trans)
    tail, _ = rf.forward_filter(log_lik[5:], start, trans, alpha0=alpha)
    np.testing.assert_allclose(np.vstack([head, tail]), whole, rtol=1e-12)


def test_gaussian_log_likelihood_with_nan_row_gives_prediction_step():
    means = np.array([[0.0], [3.0]])
    covars = np.array([[[1.0]], [[1.0]]])
    ll = rf.gaussian_log_likelihood(np.array([[0.0], [np.nan]]), means, covars)
    np.testing.assert_allclose(ll[0, 0], -0.5 * np.log(2 * np.pi))
    assert (ll[1] == 0).all()
    trans = np.array([[0.9, 0.1], [0.3, 0.7]])
    probs, _ = rf.forward_filter(ll, np.array([0.5, 0.5]), trans)
    np.testing.assert_allclose(probs[1], probs[0] @ trans)


# ----------------------------------------------------------------------------------------------
# Features and walk-forward detection


def test_regime_features_prefix_values_unchanged_when_candles_appended():
    m = market(700)
    others = {p: d for p, d in m.items() if p != "BTC/USDT"}
    full = regime_features(m["BTC/USDT"], others, SMALL)
    assert full["dispersion"].notna().sum() > 600
    for t in (30, 131, 400, 699):
        part = regime_features(m["BTC/USDT"].iloc[:t + 1], others, SMALL)
        pd.testing.assert_series_equal(part.iloc[t], full.iloc[t], check_names=False)


def test_detect_prefix_values_unchanged_when_candles_appended():
    f = features(900)
    full = RegimeDetector(SMALL).detect(f)
    cuts = refit_rows(f)
    first = next(b for b in cuts if full["regime"].iloc[b] != "UNKNOWN")
    rows = {first - 1, first, first + 1, cuts[-3], cuts[-3] + 1, cuts[-2] - 1, len(f) - 1}
    for t in sorted(rows):
        part = RegimeDetector(SMALL).detect(f.iloc[:t + 1])
        pd.testing.assert_series_equal(part.iloc[t], full.iloc[t], check_names=False)


def test_detect_on_growing_frame_matches_one_call_and_fits_once_per_refit(monkeypatch):
    f = features(800)
    batch = RegimeDetector(SMALL).detect(f)
    fits = []
    real_fit = RegimeHMM.fit
    monkeypatch.setattr(RegimeHMM, "fit", lambda self, *a, **k: fits.append(1) or real_fit(
        self, *a, **k))
    det = RegimeDetector(SMALL)
    for end in [*range(500, 560), 700, 800, 800]:  # one candle at a time, then jumps, a repeat
        out = det.detect(f.iloc[:end])
    pd.testing.assert_frame_equal(out, batch)
    fitted_refits = [b for b in refit_rows(f) if b < 800 and b >= SMALL.min_fit_candles]
    assert len(fits) == len(fitted_refits)


def test_detect_on_sliding_frame_keeps_previous_values():
    f = features(800)
    det = RegimeDetector(SMALL)
    first = det.detect(f.iloc[:700])
    slid = det.detect(f.iloc[100:701])
    pd.testing.assert_frame_equal(slid.iloc[:-1], first.iloc[100:700])
    assert slid["regime"].iloc[-1] != "UNKNOWN"


@pytest.mark.parametrize("seed", [0, 1])
def test_detect_started_later_agrees_with_full_history_after_warm_up(seed):
    # A bot started late (or freqtrade's fixed-length live window) sees fewer candles than the
    # backtest; once its frame covers a fit window past the features' warm-up, the same candles
    # must get the same regimes, so every refit may depend on its own window only.
    m = market(1000, seed)
    others = {p: d for p, d in m.items() if p != "BTC/USDT"}
    full = RegimeDetector(SMALL).detect(regime_features(m["BTC/USDT"], others, SMALL))
    late = RegimeDetector(SMALL).detect(regime_features(m["BTC/USDT"].iloc[300:], others, SMALL))
    a, b = full.iloc[-300:], late.iloc[-300:]
    np.testing.assert_allclose(a[list(PROB_COLUMNS)], b[list(PROB_COLUMNS)], atol=1e-9)
    assert (a["regime"].to_numpy() == b["regime"].to_numpy()).all()


def test_detect_with_too_little_history_is_unknown_and_logs_once(caplog):
    f = features(140)  # fewer than min_fit_candles = 150 valid rows
    det = RegimeDetector(SMALL)
    with caplog.at_level(logging.WARNING, logger="learning.brain.regime"):
        for end in (100, 120, 140):
            out = det.detect(f.iloc[:end])
    assert (out["regime"] == Regime.UNKNOWN.value).all()
    assert (out["regime_id"] == 0).all() and (out["regime_confidence"] == 0).all()
    assert (out[list(PROB_COLUMNS)].to_numpy() == 0).all()
    assert sum("too little history" in r.message for r in caplog.records) == 1


def test_detect_output_probabilities_sum_to_one_or_all_zero():
    out = RegimeDetector(SMALL).detect(features(900))
    total = out[list(PROB_COLUMNS)].sum(axis=1).to_numpy()
    unknown = (out["regime"] == "UNKNOWN").to_numpy()
    assert unknown.any() and (~unknown).sum() > 500
    np.testing.assert_allclose(total[~unknown], 1.0)
    assert (total[unknown] == 0).all()
    known = out[~unknown]
    idx = [list(PROB_COLUMNS).index(f"regime_prob_{r}") for r in known["regime"]]
    np.testing.assert_allclose(known["regime_confidence"],
                               known[list(PROB_COLUMNS)].to_numpy()[np.arange(len(idx)), idx])


def test_detect_twice_with_same_seed_is_identical():
    f = features(900, seed=3)
    a = RegimeDetector(SMALL).detect(f)
    b = RegimeDetector(SMALL).detect(f)
    pd.testing.assert_frame_equal(a, b)


# ----------------------------------------------------------------------------------------------
# Naming of states across refits


def test_refit_with_permuted_states_keeps_each_states_regime():
    rng = np.random.default_rng(1)
    centres = [[2.0, 0, 0], [-2.0, 0, 0], [0, 0, 0], [0, 0, 3.0], [0, 3.0, 0]]
    x = rng.permutation(np.vstack([rng.normal(c, 0.4, (120, 3)) for c in centres]))
    names = ("trend", "log_vol", "dispersion")
    cfg = dataclasses.replace(SMALL, n_states=5, min_fit_candles=100, fit_window=600)
    old = RegimeHMM(cfg).fit(x, names)
    assert {Regime.BULL_MOMENTUM, Regime.BEAR_DEFENSIVE, Regime.CHOPPY,
            Regime.THEME_DRIVEN} <= set(old.state_regimes_)
    # The same data fitted from k-means comes out with its states in another order: each
    # state's regime must follow its emission mean, not its index.
    new = RegimeHMM(dataclasses.replace(cfg, init="kmeans", random_state=0)).fit(x, names)
    nearest = [int(np.argmin(np.linalg.norm(old.means_ - mu, axis=1))) for mu in new.means_]
    assert sorted(nearest) == list(range(5)) and nearest != list(range(5))
    assert new.state_regimes_ == tuple(old.state_regimes_[i] for i in nearest)
    np.testing.assert_allclose(new.state_weights_, old.state_weights_[nearest], atol=0.02)


def test_state_mean_crossing_a_threshold_moves_probability_smoothly():
    cfg = RegimeConfig()
    names, mean, scale = ("trend", "log_vol", "dispersion"), np.zeros(3), np.ones(3)

    def weights(trend: float) -> np.ndarray:
        means = np.array([[trend, 0.0, 0.0], [-2.0, 0.0, 0.0]])
        return rf.soft_names(rf.fit_margins(means, mean, scale, names, cfg), cfg.label_softness)

    bull, chop = REGIMES.index(Regime.BULL_MOMENTUM), REGIMES.index(Regime.CHOPPY)
    below, above = weights(cfg.bull_trend - 0.02), weights(cfg.bull_trend + 0.02)
    assert below[0, chop] > below[0, bull] and above[0, bull] > above[0, chop]  # names flip...
    assert np.abs(above - below).max() < 0.25  # ...but the split moves only a little
    far = weights(3.0)
    assert far[0, bull] > 0.99 and far[1, REGIMES.index(Regime.BEAR_DEFENSIVE)] > 0.99
    np.testing.assert_allclose(far.sum(axis=1), 1.0)
    assert (far[:, REGIMES.index(Regime.CRISIS)] == 0).all()  # CRISIS only from the override


# ----------------------------------------------------------------------------------------------
# CRISIS override and hysteresis


def test_crisis_override_fires_on_injected_crash_with_high_confidence():
    crash = 700
    out = RegimeDetector(SMALL).detect(features(900, crash_at=crash))
    flagged = np.flatnonzero((out["regime"] == "CRISIS").to_numpy())
    assert flagged.size and crash <= flagged[0] <= crash + 5
    assert (out["regime_confidence"].iloc[flagged] >= SMALL.crisis_confidence).all()
    assert flagged[-1] - flagged[0] >= SMALL.crisis_min_dwell - 1
    calm = RegimeDetector(SMALL).detect(features(900))
    assert not (calm["regime"].iloc[crash - 50:crash + 50] == "CRISIS").any()


def test_crisis_override_on_real_btc_flags_luna_and_ftx(real_data_dir):
    from learning.data.candles import load_candles

    btc = load_candles(real_data_dir, "BTC/USDT", "1h")
    # No HMM (too little history for any fit): only the rule-based override speaks.
    cfg = RegimeConfig(fit_window=10**6, min_fit_candles=10**6)
    out = RegimeDetector(cfg).detect(regime_features(btc, None, cfg))
    crisis = out.set_index("date")["regime"] == "CRISIS"
    assert crisis["2022-05-09":"2022-05-12"].any()  # LUNA/UST
    assert crisis["2022-11-08":"2022-11-10"].any()  # FTX
    assert not crisis["2023-10-01":"2023-12-31"].any()  # a quiet rally
    assert crisis.mean() < 0.05


def test_detect_on_theme_block_flags_theme_driven():
    out = RegimeDetector(SMALL).detect(features(900))
    theme = (out["regime"] == "THEME_DRIVEN").to_numpy()
    assert theme[420:500].mean() > 0.6  # ETH runs away from the others on rows 400-500
    assert theme[520:].mean() < 0.2
    rp = np.full((3, 5), 0.2)
    boosted = rf.theme_rule(rp, np.array([0.0, 2.0, np.nan]), 1.5, 0.6)
    np.testing.assert_allclose(boosted[[0, 2]], rp[[0, 2]])
    np.testing.assert_allclose(boosted[1], [0.08, 0.08, 0.08, 0.08, 0.68])


def _switches(cfg: RegimeConfig, rp: np.ndarray) -> int:
    n = len(rp)
    probs, regime, conf = np.zeros((n, 5)), np.full(n, -1, dtype=np.int8), np.zeros(n)
    rf.decide(rp, np.zeros(n), np.ones(n), rf.Carry(), cfg, probs, regime, conf)
    return int((np.diff(regime) != 0).sum())


def test_hysteresis_on_noisy_probabilities_prevents_flip_flopping(rng):
    # BULL and CHOPPY within a few percent of each other, the lead changing at random.
    p_bull = 0.5 + rng.normal(0, 0.04, 500)
    rp = np.zeros((500, 5))
    rp[:, 0], rp[:, 2] = p_bull, 1 - p_bull
    without = dataclasses.replace(SMALL, min_dwell=1, switch_margin=0.0)
    assert _switches(without, rp) > 100
    assert _switches(SMALL, rp) <= 2
    rp[:, 0], rp[:, 2] = 0.55, 0.45
    rp[250:, 0], rp[250:, 2] = 0.1, 0.9  # a real change still gets through
    assert _switches(SMALL, rp) == 1


# ----------------------------------------------------------------------------------------------
# Failed fits


def test_fit_with_zero_variance_state_raises():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(size=(300, 3)), np.tile([4.0, 4.0, 4.0], (100, 1))])
    cfg = dataclasses.replace(SMALL, n_states=3, min_fit_candles=50, fit_window=400)
    with pytest.raises(RegimeFitError, match="zero variance"):
        RegimeHMM(cfg).fit(x, ("trend", "log_vol", "dispersion"))


def test_failed_refit_keeps_previous_model_and_logs_once(monkeypatch, caplog):
    f = features(900)
    real_fit = RegimeHMM.fit
    calls = []

    def flaky_fit(self, *a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise RegimeFitError("simulated non-convergence")
        return real_fit(self, *a, **k)

    monkeypatch.setattr(RegimeHMM, "fit", flaky_fit)
    cfg = dataclasses.replace(SMALL, theme_rule_z=0.0)  # probabilities straight from the HMM
    det = RegimeDetector(cfg)
    with caplog.at_level(logging.WARNING, logger="learning.brain.regime"):
        out = det.detect(f)
        det.detect(f)  # a repeated call neither refits nor logs again
    failed = [r for r in caplog.records if "failed" in r.message]
    assert len(calls) > 2 and len(failed) == len(calls) - 1
    # The first model filters on, uninterrupted, to the last candle.
    first = next(m for m in det._models.values() if m is not None)
    cuts = refit_rows(f)
    b0 = next(b for b in cuts if out["regime"].iloc[b] != "UNKNOWN")
    x = f[list(first.feature_names_)].to_numpy()
    _, alpha = first.filter(x[b0 - cfg.burn_in:b0])
    sp, _ = first.filter(x[b0:], alpha)
    expected = first.regime_probs(sp)
    calm = (out["regime"].iloc[b0:] != "CRISIS").to_numpy()
    np.testing.assert_allclose(out[list(PROB_COLUMNS)].to_numpy()[b0:][calm], expected[calm])


# ----------------------------------------------------------------------------------------------
# Config and per-regime performance


def test_config_with_unknown_hmm_feature_is_rejected():
    with pytest.raises(ConfigError, match="hmm_features"):
        parse_section(RegimeConfig, {"hmm_features": ["trend", "rsi"]}, "regime")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_section(RegimeConfig, {"fit_windw": 100}, "regime")


def test_performance_state_round_trips_through_json():
    perf = RegimePerformance()
    for regime, profit in [(Regime.BULL_MOMENTUM, 0.02), ("BULL_MOMENTUM", -0.01),
                           (Regime.CRISIS, -0.05), ("CHOPPY", 0.0)]:
        perf.record_trade(regime, profit)
    perf.record_trade("NOT_A_REGIME", 0.1)  # ignored, logged
    perf.record_trade(Regime.CHOPPY, float("nan"))  # ignored, logged
    state = json.loads(json.dumps(perf.to_state()))
    back = RegimePerformance.from_state(state)
    assert back == perf
    bull = back.stats[Regime.BULL_MOMENTUM]
    assert (bull.trades, bull.wins, bull.win_rate) == (2, 1, 0.5)
    assert bull.profit == pytest.approx(0.01)
    assert back.stats[Regime.CHOPPY].trades == 1 and back.stats[Regime.CHOPPY].wins == 0


@pytest.mark.parametrize("state", [
    {"version": 99, "regimes": {}},
    {"version": 1, "regimes": {"BULL_MOMENTUM": {"trades": 1, "wins": 2, "profit": 0.0}}},
    {"version": 1, "regimes": {"MOON": {"trades": 1, "wins": 0, "profit": 0.0}}},
    {"version": 1},
    [],
])
def test_performance_from_bad_state_raises_state_error(state):
    with pytest.raises(StateError):
        RegimePerformance.from_state(state)


def test_regimes_tuple_matches_helper_names():
    assert tuple(r.value for r in REGIMES) == rf.NAMES
