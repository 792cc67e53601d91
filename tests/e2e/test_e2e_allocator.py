"""End to end: the portfolio allocator, trained walk-forward with ``ftlearn train-allocator``,
sizes a later backtest through the real freqtrade CLI (sizing mode ``allocator``) under the risk
guard; a whitelist that changed since training stops the start with the pairs named; the
equal-weight policy runs through the same execution."""

from __future__ import annotations

import json

import pytest

from learning.cli import main as ftlearn
from learning.exchange.localrun import freqtrade_backtest, local_exchange
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def _overlay(tmp_path, name: str, user_dir, pairs=PAIRS, **allocator) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({
        "user_data_dir": str(user_dir), "timeframe": "1h", "max_open_trades": 5,
        "exchange": {"pair_whitelist": pairs},
        "advanced_learning": {"sizing": {"agent": "allocator"},
                              "allocator": {"policy": "ppo", **allocator}}}))
    return str(path)


def test_allocator_trained_before_the_backtest_rebalances_within_the_cap(market_data_dir,
                                                                        tmp_path):
    user_dir = tmp_path / "user_data"
    user_dir.mkdir()
    overlay = _overlay(tmp_path, "alloc", user_dir)
    cfg = ["-c", str(ROOT / "config.json"), "-c", overlay]
    assert ftlearn(["train-allocator", *cfg, "--runmode", "backtest", "--datadir",
                    str(market_data_dir), "--timerange", "20250901-20251001", "--train", "60d",
                    "--retrain", "15d", "--steps", "1024", "--no-regimes", "--curriculum",
                    "--crash-share", "0.2"]) == 0
    state = user_dir / "learning/default/backtest"
    names = sorted(p.name for p in state.glob("allocator_*.pt"))
    assert names == ["allocator_20250901.pt", "allocator_20250916.pt"]
    with local_exchange(market_data_dir, tmp_path / "ex") as ex:
        run = freqtrade_backtest(configs=[ROOT / "config.json", overlay], overlay=ex.overlay,
                                 datadir=market_data_dir, timerange="20250901-20251001",
                                 result_dir=tmp_path / "res", timeout=900)
        assert run.returncode == 0, run.output[-3000:]
        assert "2 allocator(s)" in run.output
        trades = run.trades("AdvancedLearning")
        assert len(trades) > 0
        # every entry and add went through the guard: no trade ever held more than the cap
        equity_high = 10_000 + trades["profit_abs"].clip(lower=0).sum()
        assert (trades["max_stake_amount"] <= 0.2 * equity_high * 1.001).all()
        tags = {o.get("ft_order_tag") for orders in trades["orders"] for o in orders}
        assert tags & {"alloc_add", "alloc_trim"} or (trades["exit_reason"] == "alloc_exit"
                                                      ).any(), tags

        # the whitelist changed since training: start-up stops naming the pairs
        changed = _overlay(tmp_path, "changed", user_dir,
                           pairs=["BTC/USDT", "ETH/USDT", "XRP/USDT"])
        bad = freqtrade_backtest(configs=[ROOT / "config.json", changed], overlay=ex.overlay,
                                 datadir=market_data_dir, timerange="20250901-20250910",
                                 result_dir=tmp_path / "res2", timeout=900)
        assert bad.returncode != 0
        assert "not trained on XRP/USDT" in bad.output and "SOL/USDT" in bad.output

        # equal weights through the same execution, no checkpoint needed
        equal = _overlay(tmp_path, "equal", tmp_path / "user_eq", policy="equal")
        (tmp_path / "user_eq").mkdir()
        run = freqtrade_backtest(configs=[ROOT / "config.json", equal], overlay=ex.overlay,
                                 datadir=market_data_dir, timerange="20250901-20250920",
                                 result_dir=tmp_path / "res3", timeout=900)
    assert run.returncode == 0, run.output[-3000:]
    trades = run.trades("AdvancedLearning")
    assert set(trades["pair"]) == set(PAIRS)
    assert (trades["max_stake_amount"] <= 0.2 * (10_000 + trades["profit_abs"].clip(
        lower=0).sum()) * 1.001).all()
