"""Portfolio risk budget: the correlation cap, refusals, bad input, never above the cap."""

from datetime import UTC, datetime

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from learning.brain.budget import BudgetConfig, correlation_budget, shrunk_correlation
from learning.core.risk import RiskConfig, RiskGuard

CFG = BudgetConfig(enabled=True)
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def correlated(rho: float, n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = rho * a + np.sqrt(1 - rho ** 2) * rng.normal(size=n)
    return a * 0.01, b * 0.02


def test_budget_without_open_trades_keeps_the_stake():
    b = correlation_budget(np.zeros(10), {}, CFG, 5)
    assert b.factor == 1.0 and b.reason == "no_open_trades"


def test_budget_below_the_cap_keeps_the_stake():
    cand, other = correlated(0.2)
    b = correlation_budget(cand, {"ETH/USDT": other}, CFG, 50)
    assert b.factor == 1.0 and b.reason == "ok" and b.correlation < 0.6


def test_budget_above_the_cap_cuts_in_proportion_to_the_excess():
    cand, other = correlated(0.8)
    b = correlation_budget(cand, {"ETH/USDT": other}, CFG, 50)
    assert b.reason == "correlation_cap" and b.with_pair == "ETH/USDT"
    assert np.isclose(b.factor, (1 - b.correlation) / (1 - 0.6))
    assert 0.3 < b.factor < 0.8


def test_budget_takes_the_most_correlated_open_pair():
    cand, hi = correlated(0.9, seed=1)
    _, lo = correlated(0.1, seed=2)
    b = correlation_budget(cand, {"A/USDT": lo[: len(cand)], "B/USDT": hi}, CFG, 50)
    assert b.with_pair == "B/USDT"


def test_budget_near_perfect_correlation_refuses():
    cand, other = correlated(0.98)
    b = correlation_budget(cand, {"ETH/USDT": other}, CFG, 50)
    assert b.factor == 0.0 and b.reason == "refused"


def test_budget_with_a_flat_series_falls_back_to_inverse_volatility():
    cand, _ = correlated(0.5)
    b = correlation_budget(cand, {"STABLE/USDT": np.zeros_like(cand)}, CFG, 50)
    assert b.factor == 1.0 and b.reason == "singular_covariance"
    assert shrunk_correlation(np.column_stack([cand, np.zeros_like(cand)])) is None


def test_budget_with_too_little_history_keeps_the_stake():
    cand, other = correlated(0.95, n=20)
    b = correlation_budget(cand, {"ETH/USDT": other}, CFG, 72)
    assert b.factor == 1.0 and b.reason == "too_little_history"


@settings(max_examples=200, deadline=None)
@given(rho=st.floats(-0.99, 0.99), cap=st.floats(0.0, 1.0), refuse=st.floats(0.0, 1.0),
       stake=st.floats(0.0, 1e6), equity=st.floats(1.0, 1e7), seed=st.integers(0, 1000),
       n=st.integers(0, 300))
def test_budget_never_raises_a_stake_above_the_guard_cap(rho, cap, refuse, stake, equity, seed,
                                                         n):
    cand, other = correlated(rho, n=n, seed=seed)
    cfg = BudgetConfig(enabled=True, correlation_cap=cap, refuse_below=refuse)
    b = correlation_budget(cand, {"X/USDT": other}, cfg, 30)
    assert 0.0 <= b.factor <= 1.0
    guard = RiskGuard(RiskConfig())
    verdict = guard.check_stake(T0, equity, stake * b.factor)
    assert verdict.amount <= guard.max_stake(equity) * (1 + 1e-12)
    assert stake * b.factor <= stake
