"""End to end: AdvancedLearning with the PPOPyramiding FreqAI model through the real freqtrade
CLI: the agent's grid columns drive scale-ins, trims and closes, every add within the cap."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from learning.exchange.localrun import freqtrade_backtest, local_exchange
from tests.conftest import ROOT
from tests.ledger import equity_before, equity_curve, stake_after_entries

pytestmark = pytest.mark.slow


def test_pyramiding_agent_adjusts_positions_through_the_guard(market_data_dir, tmp_path):
    user_dir = tmp_path / "user_data"
    user_dir.mkdir()
    overlay = tmp_path / "tiny.json"
    overlay.write_text(json.dumps({
        "timeframe": "5m", "user_data_dir": str(user_dir), "exchange": {"pair_whitelist": ["BTC/USDT"]},
        "freqai": {"train_period_days": 10, "backtest_period_days": 7,
                   "model_training_parameters": {"n_steps": 256, "n_epochs": 2},
                   "rl_config": {"train_cycles": 1, "net_arch": [32, 32]}}}))
    with local_exchange(market_data_dir, tmp_path / "ex") as ex:
        run = freqtrade_backtest(
            configs=[ROOT / "config.json", ROOT / "configs/freqai-ppo.json", overlay],
            overlay=ex.overlay, datadir=market_data_dir, timerange="20250901-20250915",
            result_dir=tmp_path / "res", timeout=1200)
    assert run.returncode == 0, run.output[-3000:]
    preds = sorted((user_dir / "models/advl-ppo-v1/backtesting_predictions").glob("*.feather"))
    frame = pd.concat(pd.read_feather(p) for p in preds)
    grid = [c for c in frame.columns if c.startswith("&-pyr_a_t") and not c.endswith(("_mean", "_std"))]
    young = [c for c in grid if c.endswith("_young")]
    # configs/freqai-ppo.json queries every held state at two times in trade (young_time_in_trade)
    assert "&-pyr_flat_increase" in frame and len(young) == 4 * 3, "4 tranches x 3, young"
    assert len(grid) == 1 + 2 * 4 * 3, "flat + 4 tranches x 3 buckets x 2 ages"
    trades = run.trades("AdvancedLearning")
    assert len(trades) > 0
    tags = {o.get("ft_order_tag") for orders in trades["orders"] for o in orders}
    assert tags & {"pyr_increase", "pyr_decrease", "pyr_close"}, tags
    assert tags <= {"candidate", "pyr_increase", "pyr_decrease", "pyr_close", "score_exit",
                    "trailing_stop_loss", "stop_loss", "force_exit", "risk_daily_loss",
                    "risk_crisis", "risk_max_drawdown"}
    curve = equity_curve(trades, market_data_dir, ["BTC/USDT"], "5m", 10_000.0, 0.001,
                         pd.Timestamp("2025-09-01", tz="UTC"), pd.Timestamp("2025-09-15", tz="UTC"))
    for fill, stake in stake_after_entries(trades):
        assert stake <= 0.20 * equity_before(curve, fill.time) * 1.005
