"""End to end: AdvancedLearning with the TSA-MAE FreqAI model (``--freqaimodel TSAMAERegressor``)
through the real freqtrade CLI against the local exchange, walk-forward on real (or synthetic)
candles."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from learning.exchange.localrun import freqtrade_backtest, local_exchange
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_tsamae_freqai_backtest_trains_per_window_and_predicts(market_data_dir, tmp_path):
    user_dir = tmp_path / "user_data"
    user_dir.mkdir()
    overlay = tmp_path / "tiny.json"
    overlay.write_text(json.dumps({
        "timeframe": "5m", "user_data_dir": str(user_dir),
        "exchange": {"pair_whitelist": ["BTC/USDT"]},
        "freqai": {"train_period_days": 10, "backtest_period_days": 7,
                   "model_training_parameters": {"train": {"epochs": 1,
                                                           "max_steps_per_epoch": 40}}},
    }))
    with local_exchange(market_data_dir, tmp_path / "ex") as ex:
        run = freqtrade_backtest(
            configs=[ROOT / "config.json", ROOT / "configs/freqai-tsamae.json", overlay],
            overlay=ex.overlay, datadir=market_data_dir, timerange="20250901-20250915",
            result_dir=tmp_path / "results", timeout=900)
    assert run.returncode == 0, run.output[-4000:]
    models = user_dir / "models/advl-tsamae-v1"
    preds = sorted((models / "backtesting_predictions").glob("*_prediction.feather"))
    assert len(preds) == 2, "one model per 7-day backtest window"
    frame = pd.concat(pd.read_feather(p) for p in preds)
    for col in ("&-s_return", "&-s_vol", "&-anomaly", "do_predict"):
        assert col in frame.columns, col
    assert (frame["do_predict"] == 1).mean() > 0.9
    assert frame["&-anomaly"].std() > 0, "the anomaly score varies with the window"
    assert len(list(models.glob("sub-train-BTC_*"))) == 2, "a model trained per window"
