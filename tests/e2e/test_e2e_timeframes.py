"""Every timeframe: the strategy backtests end to end at 15m, 1h and 4h (5m: the other end-to-end
tests) through the real CLI, with the
market proxy read whether or not it is whitelisted, and stops at start-up with the missing file
named when its candles are absent."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from learning.exchange.localrun import freqtrade_backtest, local_exchange
from tests.conftest import ROOT
from tests.ledger import equity_before, equity_curve, stake_after_entries

pytestmark = pytest.mark.slow

FEE, START = 0.001, 10_000.0


def backtest(datadir, tmp_path, timeframe: str, pairs: list[str], timerange: str):
    user = tmp_path / "user_data"
    user.mkdir()
    overlay = tmp_path / "overlay.json"
    overlay.write_text(json.dumps({"user_data_dir": str(user), "timeframe": timeframe,
                                   "dry_run_wallet": START, "max_open_trades": len(pairs),
                                   "exchange": {"pair_whitelist": pairs}}))
    with local_exchange(datadir, tmp_path / "exchange") as ex:
        return freqtrade_backtest(configs=[ROOT / "config.json", overlay], overlay=ex.overlay,
                                  datadir=datadir, timerange=timerange, fee=FEE,
                                  result_dir=tmp_path / "results", timeout=900), user


@pytest.mark.parametrize(("timeframe", "timerange"), [("15m", "20250301-20250601"),
                                                      ("1h", "20250301-20250601"),
                                                      ("4h", "20250301-20250901")])
def test_backtest_at_slower_timeframes_trades_inside_the_cap_and_learns_from_shadows(
        market_data_dir, tmp_path, timeframe, timerange):
    pairs = ["ETH/USDT", "SOL/USDT", "XRP/USDT"]  # BTC only as the informative market proxy
    run, user = backtest(market_data_dir, tmp_path, timeframe, pairs, timerange)
    assert run.returncode == 0, run.output[-4000:]
    start = pd.Timestamp(timerange[:8], tz="UTC")
    # freqtrade began at the requested start: the start-up history fitted the timeframe
    assert f"Backtesting with data from {start:%Y-%m-%d} 00:00:00" in " ".join(run.output.split()), \
        run.output[-3000:]
    trades = run.trades("AdvancedLearning")
    assert len(trades) > 0
    curve = equity_curve(trades, market_data_dir, pairs, timeframe, START, FEE, start,
                         pd.Timestamp(timerange[9:], tz="UTC"))
    for fill, stake in stake_after_entries(trades):
        assert stake <= 0.2 * equity_before(curve, fill.time) * 1.005
    state = json.loads((user / "learning/default/backtest/brain.json").read_text())["data"]
    events = state["brain"]["events"]
    assert events["meta"]["shadow"] >= 20 * max(1, events["meta"]["real"]), events
    decisions = state["brain"]["decisions"]
    assert decisions and all(d["regime"] for d in decisions)
    assert any(d["regime"] != "UNKNOWN" for d in decisions), "regimes at this timeframe"


def test_missing_market_proxy_candles_stop_start_up_naming_the_file(market_data_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for pair in ("ETH_USDT", "SOL_USDT"):
        for tf in ("1h", "1d"):
            shutil.copy(market_data_dir / f"{pair}-{tf}.feather", data)
    run, _ = backtest(data, tmp_path, "1h", ["ETH/USDT", "SOL/USDT"], "20250301-20250401")
    assert run.returncode != 0
    assert "BTC_USDT-1h.feather is missing" in " ".join(run.output.split()), run.output[-3000:]
