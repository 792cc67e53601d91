"""Benchmark metrics against cases computed by hand (and one published example)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from learning.bench import metrics as M
from tests.bench import mtm as X

DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2025-01-01", tz="UTC")


def daily_curve(values: list[float]) -> pd.Series:
    return pd.Series(values, index=pd.date_range(T0, periods=len(values), freq="D"))


# A curve with daily returns +10 %, -10 %, +10 %.
CURVE = daily_curve([100.0, 110.0, 99.0, 108.9])


def test_daily_returns_of_daily_marks_are_the_simple_returns():
    assert M.daily_returns(CURVE).to_numpy() == pytest.approx([0.1, -0.1, 0.1])


def test_sharpe_of_known_curve_matches_hand_computation():
    # mean 1/30, sample std sqrt(((1/15)^2 * 2 + (2/15)^2) / 2) = 0.1154701
    expected = (1 / 30) / 0.11547005383792516 * math.sqrt(365)
    assert M.sharpe(M.daily_returns(CURVE)) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(5.51513, rel=1e-5)


def test_sortino_of_known_curve_uses_downside_deviation_over_all_days():
    # downside deviation sqrt((0 + 0.01 + 0) / 3) = 0.0577350
    assert M.sortino(M.daily_returns(CURVE)) == pytest.approx(
        (1 / 30) / math.sqrt(0.01 / 3) * math.sqrt(365), rel=1e-9)


def test_max_drawdown_and_calmar_of_known_curve():
    assert M.max_drawdown(CURVE) == pytest.approx(0.1)  # 110 -> 99
    growth = 1.089 ** (365.25 / 3) - 1
    assert M.cagr(CURVE) == pytest.approx(growth, rel=1e-9)
    assert M.total_return(CURVE) == pytest.approx(0.089)
    assert M.calmar(M.cagr(CURVE), M.max_drawdown(CURVE)) == pytest.approx(growth / 0.1)


def test_sharpe_with_constant_returns_is_nan_not_infinite():
    assert math.isnan(M.sharpe([0.01, 0.01, 0.01]))
    assert math.isnan(M.sharpe([0.01]))


def test_daily_equity_with_midnight_mark_closes_the_previous_day():
    idx = pd.DatetimeIndex([T0, T0 + pd.Timedelta(hours=12), T0 + DAY,
                            T0 + DAY + pd.Timedelta(hours=12), T0 + 2 * DAY])
    curve = pd.Series([100.0, 150.0, 120.0, 90.0, 132.0], index=idx)
    daily = M.daily_equity(curve)
    assert list(daily.index) == [T0, T0 + DAY, T0 + 2 * DAY]
    assert daily.to_numpy() == pytest.approx([100.0, 120.0, 132.0])
    assert M.daily_returns(curve).to_numpy() == pytest.approx([0.2, 0.1])


def test_profit_factor_and_win_rate_of_known_trades():
    pnl = [10.0, -5.0, 20.0, -10.0, 0.0]
    assert M.profit_factor(pnl) == pytest.approx(30 / 15)
    assert M.win_rate(pnl) == pytest.approx(2 / 5)


def test_exit_breakdown_counts_reasons_by_frequency_with_mean_profit_and_median_hold():
    trades = pd.DataFrame({"exit_reason": ["roi", "stop", "roi", "roi", "stop"],
                           "profit_ratio": [0.02, -0.05, 0.04, 0.00, -0.01],
                           "trade_duration": [30, 600, 60, 90, 1200]})
    out = M.exit_breakdown(trades)
    assert out["median_hold_minutes"] == 90.0
    assert list(out["by_exit_reason"]) == ["roi", "stop"]
    assert out["by_exit_reason"]["roi"] == {"trades": 3, "mean_profit_ratio": pytest.approx(0.02)}
    assert out["by_exit_reason"]["stop"] == {"trades": 2,
                                             "mean_profit_ratio": pytest.approx(-0.03)}
    empty = M.exit_breakdown(trades.iloc[:0])
    assert math.isnan(empty["median_hold_minutes"]) and empty["by_exit_reason"] == {}


def test_fee_share_of_gross_is_fees_over_the_pre_fee_gains_of_gaining_trades():
    # net profits and fees of three trades: +8 (fees 2), -3 (fees 2: gross -1), -1 (fees 2: +1)
    share = M.fee_share_of_gross([8.0, -3.0, -1.0], [2.0, 2.0, 2.0])
    assert share == pytest.approx(6.0 / (10.0 + 1.0))
    assert M.fee_share_of_gross([-5.0, -1.0], [1.0, 1.0]) != M.fee_share_of_gross(
        [-5.0, -1.0], [1.0, 1.0])  # NaN: nothing gained before fees
    trades = pd.DataFrame({"exit_reason": ["a", "b"], "profit_ratio": [0.01, -0.01],
                           "profit_abs": [8.0, -3.0], "trade_duration": [60, 120]})
    out = M.exit_breakdown(trades, [2.0, 2.0])
    assert out["fee_share_of_gross"] == pytest.approx(4.0 / 10.0)


def test_trade_fees_charge_entries_at_fee_open_and_exits_at_fee_close():
    trades = pd.DataFrame({"fee_open": [0.001], "fee_close": [0.002], "orders": [[
        {"amount": 2.0, "safe_price": 100.0, "ft_is_entry": True},
        {"amount": 1.0, "safe_price": 110.0, "ft_is_entry": True},
        {"amount": 3.0, "safe_price": 120.0, "ft_is_entry": False},
        {"amount": 0.0, "safe_price": 99.0, "ft_is_entry": False}]]})
    fees = M.trade_fees(trades)
    assert fees.tolist() == pytest.approx([0.2 + 0.11 + 0.72])
    assert M.fees_paid(trades) == pytest.approx(1.03)


def test_profit_factor_without_losses_is_inf_and_without_trades_nan():
    assert M.profit_factor([1.0, 2.0]) == math.inf
    assert math.isnan(M.profit_factor([]))
    assert math.isnan(M.win_rate([]))


def _closes(values: list[float], step: pd.Timedelta, pair: str = "A/USDT") -> pd.DataFrame:
    idx = pd.date_range(T0 + step, periods=len(values), freq=step)
    return pd.DataFrame({pair: values}, index=idx)


def test_mark_to_market_of_one_round_trip_matches_hand_ledger():
    step = pd.Timedelta(minutes=5)
    closes = _closes([102.0, 103.0, 105.0, 101.0], step)
    fills = [X.Fill("A/USDT", T0, True, 1.0, 100.0, 0.01),  # open of candle 0
             X.Fill("A/USDT", T0 + 2 * step, False, 1.0, 104.0, 0.01)]  # open of candle 2
    book = X.mark_to_market(fills, closes, 1000.0, T0, step)
    # cash after entry 1000 - 101; after exit + 104 * 0.99
    assert book.equity.to_numpy() == pytest.approx(
        [1000.0, 899.0 + 102.0, 899.0 + 103.0, 899.0 + 102.96, 899.0 + 102.96])
    assert book.fees == pytest.approx(1.0 + 1.04)
    # Held during candles 0 and 1 of 4.
    assert M.exposure(book.in_market) == pytest.approx(0.5)


def test_mark_to_market_with_force_exit_at_the_end_books_it_in_the_last_mark():
    step = pd.Timedelta(minutes=5)
    closes = _closes([102.0, 103.0], step)
    fills = [X.Fill("A/USDT", T0, True, 1.0, 100.0, 0.01),
             X.Fill("A/USDT", T0 + 2 * step, False, 1.0, 103.0, 0.01)]  # at the last close
    book = X.mark_to_market(fills, closes, 1000.0, T0, step)
    assert book.equity.iloc[-1] == pytest.approx(1000 - 101 + 103 * 0.99)
    assert book.fees == pytest.approx(1.0 + 1.03)


def test_buy_and_hold_of_two_pairs_matches_hand_computation():
    step = pd.Timedelta(hours=1)
    closes = pd.DataFrame({"A/USDT": [11.0, 12.0], "B/USDT": [20.0, 18.0]},
                          index=pd.date_range(T0 + step, periods=2, freq=step))
    book, pnl = M.buy_and_hold({"A/USDT": 10.0, "B/USDT": 20.0}, closes, 1000.0, 0.01, T0)
    a, b = 500 / 1.01 / 10, 500 / 1.01 / 20
    final_value = a * 12 + b * 18
    assert book.equity.iloc[1] == pytest.approx(a * 11 + b * 20)
    assert book.equity.iloc[-1] == pytest.approx(final_value * 0.99)
    assert pnl["A/USDT"] == pytest.approx(a * 12 * 0.99 - 500)
    assert pnl["B/USDT"] == pytest.approx(b * 18 * 0.99 - 500)
    assert book.fees == pytest.approx(1000 * 0.01 / 1.01 + final_value * 0.01)
    assert M.exposure(book.in_market) == 1.0


def test_returns_by_regime_compounds_each_label_s_candles():
    step = pd.Timedelta(minutes=5)
    equity = pd.Series([100.0, 110.0, 99.0, 108.9],
                       index=pd.date_range(T0, periods=4, freq=step))
    labels = pd.Series(["bull", "bear", "bull"], index=pd.date_range(T0, periods=3, freq=step))
    out = M.returns_by_regime(equity, labels, step)
    assert out["bull"]["return"] == pytest.approx(1.1 * 1.1 - 1)
    assert out["bear"] == {"return": pytest.approx(-0.1), "candles": 1}


def test_block_bootstrap_interval_is_deterministic_and_contains_the_estimate(rng):
    r = rng.normal(0.002, 0.02, 400)
    point = M.sharpe(r)
    lo, hi = M.block_bootstrap_sharpe(r, seed=7)
    assert lo < point < hi
    assert (lo, hi) == M.block_bootstrap_sharpe(r, seed=7)
    assert (lo, hi) != M.block_bootstrap_sharpe(r, seed=8)


def test_block_bootstrap_interval_narrows_with_more_days(rng):
    short = M.block_bootstrap_sharpe(rng.normal(0.002, 0.02, 60), seed=1)
    long = M.block_bootstrap_sharpe(rng.normal(0.002, 0.02, 1500), seed=1)
    assert long[1] - long[0] < (short[1] - short[0]) / 2


def test_expected_max_sharpe_matches_published_example():
    # Bailey & Lopez de Prado (2014), section 6: N = 100 trials, annualized variance of the
    # trials' Sharpe 0.5 over 250 days a year -> SR0 = 0.1132 per day.
    assert M.expected_max_sharpe(100, 0.5 / 250) == pytest.approx(0.1132, abs=5e-4)


def test_expected_max_sharpe_matches_formula_by_hand():
    nd, gamma, n, var = NormalDist(), 0.5772156649015329, 10, 0.01
    by_hand = math.sqrt(var) * ((1 - gamma) * nd.inv_cdf(1 - 1 / n)
                                + gamma * nd.inv_cdf(1 - 1 / (n * math.e)))
    assert M.expected_max_sharpe(n, var) == pytest.approx(by_hand, rel=1e-9)
    assert M.expected_max_sharpe(1, var) == 0.0


def test_deflated_sharpe_matches_published_example():
    # Same example: SR 2.5 annualized (250 days), T = 1250, skew -3, kurtosis 10 -> DSR 0.9004.
    sr0 = M.expected_max_sharpe(100, 0.5 / 250)
    assert M.probabilistic_sharpe(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0) == pytest.approx(
        0.9004, abs=2e-3)


def test_deflated_sharpe_of_returns_matches_formula_by_hand(rng):
    r = rng.standard_t(5, 300) * 0.01 + 0.001
    trials = [0.05, 0.02, 0.11, -0.03, M.period_sharpe(r)]
    n = len(r)
    m, s = r.mean(), r.std(ddof=1)
    z = (r - m) / r.std(ddof=0)
    skew = np.mean(z**3) * math.sqrt(n * (n - 1)) / (n - 2)  # adjusted Fisher-Pearson
    g2 = np.mean(z**4) - 3
    kurt = ((n + 1) * g2 + 6) * (n - 1) / ((n - 2) * (n - 3)) + 3  # unbiased, Pearson
    nd, gamma = NormalDist(), 0.5772156649015329
    v = np.var(trials, ddof=1)
    sr0 = math.sqrt(v) * ((1 - gamma) * nd.inv_cdf(1 - 1 / 5)
                          + gamma * nd.inv_cdf(1 - 1 / (5 * math.e)))
    sr = m / s
    dsr = nd.cdf((sr - sr0) * math.sqrt(n - 1) / math.sqrt(1 - skew * sr
                                                          + (kurt - 1) / 4 * sr**2))
    out = M.deflated_sharpe(r, trials)
    assert out["sr0"] == pytest.approx(sr0, rel=1e-9)
    assert out["dsr"] == pytest.approx(dsr, rel=1e-9)
    assert out["n_trials"] == 5


def test_deflated_sharpe_with_more_trials_is_lower(rng):
    r = rng.normal(0.003, 0.02, 365)
    few = M.deflated_sharpe(r, [0.0, 0.1, 0.15])["dsr"]
    many = M.deflated_sharpe(r, [0.0, 0.1, 0.15] * 10)["dsr"]
    assert many < few


def test_summarize_reports_every_metric():
    step = pd.Timedelta(hours=6)
    closes = _closes([101.0, 99.0, 103.0, 104.0, 100.0, 106.0, 107.0, 108.0], step)
    fills = [X.Fill("A/USDT", T0, True, 1.0, 100.0, 0.001),
             X.Fill("A/USDT", T0 + 5 * step, False, 1.0, 100.0, 0.001)]
    book = X.mark_to_market(fills, closes, 1000.0, T0, step)
    out = M.summarize(book, [-0.2], seed=0)
    for key in ("total_return", "cagr", "sharpe", "sharpe_ci_low", "sharpe_ci_high", "sortino",
                "calmar", "max_drawdown", "profit_factor", "win_rate", "trades", "exposure",
                "fees", "final_equity", "days"):
        assert key in out
    assert out["trades"] == 1 and out["days"] == 2
    assert out["exposure"] == pytest.approx(5 / 8)
    assert out["final_equity"] == pytest.approx(1000 - 100.1 + 99.9)
