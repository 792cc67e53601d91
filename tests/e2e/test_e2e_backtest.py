"""End to end: ``freqtrade backtesting --strategy AdvancedLearning`` through the real CLI against
the local exchange, on real candles or, without them, the synthetic market (3 pairs, 3 months of
5m), checked by an independent ledger (tests/ledger.py) built from freqtrade's result file and
the raw candles."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from learning.brain.decision import Brain
from learning.exchange.localrun import freqtrade_backtest, local_exchange
from learning.strategy.config import load_learning_config
from tests.conftest import ROOT
from tests.ledger import (
    adds_against_wallet,
    equity_before,
    equity_curve,
    fills_from_trades,
    stake_after_entries,
    wallet_export,
)

pytestmark = pytest.mark.slow

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
TIMERANGE = "20250901-20251201"
FEE = 0.001
START = 10_000.0
STEP = pd.Timedelta(minutes=5)
FIRST, LAST = pd.Timestamp("2025-09-01", tz="UTC"), pd.Timestamp("2025-12-01", tz="UTC")


@pytest.fixture(scope="module")
def exchange(market_data_dir, tmp_path_factory):
    with local_exchange(market_data_dir, tmp_path_factory.mktemp("exchange")) as handle:
        yield handle


def run_backtest(exchange, market_data_dir, tmp_path, learning_overrides: dict):
    user_dir = tmp_path / "user_data"
    user_dir.mkdir()
    overlay = tmp_path / "test-overlay.json"
    base = json.loads((ROOT / "config.json").read_text())["advanced_learning"]
    for key, value in learning_overrides.items():
        base[key] = {**base.get(key, {}), **value}
    overlay.write_text(json.dumps({"timeframe": "5m", "user_data_dir": str(user_dir), "dry_run_wallet": START,
                                   "exchange": {"pair_whitelist": PAIRS},
                                   "advanced_learning": base}))
    run = freqtrade_backtest(configs=[ROOT / "config.json", overlay], overlay=exchange.overlay,
                             datadir=market_data_dir, timerange=TIMERANGE, fee=FEE,
                             result_dir=tmp_path / "results", timeout=900)
    assert run.returncode == 0, run.output[-4000:]
    trades = run.trades("AdvancedLearning")
    curve = equity_curve(trades, market_data_dir, PAIRS, "5m", START, FEE, FIRST, LAST)
    return run, trades, curve, user_dir


def assert_stakes_within_cap(trades, curve, cap: float) -> int:
    checked = 0
    for fill, stake in stake_after_entries(trades):
        equity = equity_before(curve, fill.time)
        assert stake <= cap * equity * 1.005, (fill, stake, equity)
        checked += 1
    return checked


def daily_breaches(curve: pd.Series, limit: float) -> dict:
    """First time per UTC day that equity fell `limit` below that day's opening mark."""
    out = {}
    for day, part in curve.groupby(curve.index.floor("D")):
        opening = part.iloc[0]
        hit = part[part <= opening * (1 - limit - 0.0001)]
        if len(hit):
            out[day] = hit.index[0]
    return out


def test_backtest_with_default_limits_trades_within_the_position_cap(exchange, market_data_dir,
                                                                    tmp_path):
    run, trades, curve, user_dir = run_backtest(exchange, market_data_dir, tmp_path, {})
    assert len(trades) >= 20, "the strategy trades on 3 months of 3 pairs"
    assert assert_stakes_within_cap(trades, curve, 0.20) == sum(
        len([o for o in t if o["ft_is_entry"]]) for t in trades["orders"])
    peak = curve.cummax()
    assert ((peak - curve) / peak).max() < 0.15 + 0.02
    # At each add the position's market value plus the add stays within 20% of equity, as
    # freqtrade's own wallet export values them (not the strategy's bookkeeping).
    adds = adds_against_wallet(trades, wallet_export(run.result_dir, "AdvancedLearning"))
    assert len(adds) >= 5, "the run must scale in for this check to mean much"
    worst = max(adds, key=lambda a: a.share)
    assert worst.share <= 0.20 * 1.005, worst
    assert all(a.held_value > 0 for a in adds)
    stats = run.stats("AdvancedLearning")
    assert stats["total_trades"] == len(trades)
    # The guard's and the brain's state were written under the backtest namespace only, and
    # the learned state reloads: every closed trade reached the tiers.
    state_dir = user_dir / "learning/default/backtest"
    assert (state_dir / "risk.json").exists()
    assert not (user_dir / "learning/default/dry_run").exists()
    data = json.loads((state_dir / "brain.json").read_text())["data"]
    brain = Brain(load_learning_config(json.loads((ROOT / "config.json").read_text())), data)
    assert brain.state.closed_trades == len(trades)
    assert sum(r["trades"] for r in brain.report()["regime_performance"]["regimes"].values()) \
        == len(trades)
    decisions = brain.recent_decisions()
    assert decisions and {"regime", "learner", "weights", "scores", "overall"} <= set(decisions[0])


def test_backtest_with_tight_daily_limit_never_enters_after_a_breach(exchange, market_data_dir,
                                                                    tmp_path):
    limit = 0.0015
    _, trades, curve, _ = run_backtest(exchange, market_data_dir, tmp_path, {
        "risk": {"max_daily_loss_pct": limit, "max_drawdown_pct": 0.9},
        "pyramiding": {"add_min_profit": 0.002}})
    breaches = daily_breaches(curve, limit)
    assert len(breaches) >= 3, "the tight limit must actually be hit for this test to mean much"
    fills = fills_from_trades(trades)
    assert any(not f.is_entry for f in fills)
    assert_stakes_within_cap(trades, curve, 0.20)
    for day, when in breaches.items():
        late_entries = [f for f in fills if f.is_entry and when < f.time < day + pd.Timedelta("1D")]
        assert not late_entries, (day, when, late_entries[:3])
        # Positions open at the breach are exited at the next candle open.
        for _, t in trades.iterrows():
            if t["open_date"] <= when < t["close_date"]:
                assert t["close_date"] <= when + STEP, (when, t["pair"], t["close_date"])
    assert (trades["exit_reason"] == "risk_daily_loss").any()


def test_backtest_with_tight_drawdown_limit_flattens_and_halts(exchange, market_data_dir, tmp_path):
    limit = 0.02
    _, trades, curve, user_dir = run_backtest(exchange, market_data_dir, tmp_path, {
        "risk": {"max_drawdown_pct": limit, "max_daily_loss_pct": 0.9}})
    peak = curve.cummax()
    dd = (peak - curve) / peak
    risk = json.loads((user_dir / "learning/default/backtest/risk.json").read_text())["data"]
    trips = [e for e in risk["events"] if e["kind"] == "max_drawdown"]
    assert trips, "the drawdown limit must be reached for this test to mean much"
    when = pd.Timestamp(trips[0]["time"])  # the candle whose loop saw the breach
    # The independent ledger values open positions as the guard does (liquidation value,
    # marked at the last close): it agrees that the limit was reached by then, to rounding, and
    # not earlier than 0.05% before.
    assert dd[dd.index <= when].max() >= limit - 0.0005, (when, dd[dd.index <= when].max())
    assert dd[dd.index < when].max() < limit + 0.0005
    fills = fills_from_trades(trades)
    assert not [f for f in fills if f.is_entry and f.time > when]
    assert trades["close_date"].max() <= when + STEP
    assert dd.max() < limit + 0.02, "flattened within a candle of the breach"
    # The guard itself tripped (a position open at the breach would have been closed with
    # exit reason risk_max_drawdown; the breach may also come from a trade's own exit).
    assert risk["drawdown_halt"]
    open_at_breach = trades[(trades["open_date"] <= when) & (trades["close_date"] > when)]
    assert (open_at_breach["exit_reason"] == "risk_max_drawdown").all()
