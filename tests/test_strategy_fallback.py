"""The strategy trades on when its FreqAI model is refused (a saved model from another version
or architecture): no ai component and rule-based pyramiding, with one error line per pair."""

from __future__ import annotations

import logging
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from learning.errors import StateError
from learning.strategy_sizing import NOT_RL
from tests.conftest import make_ohlcv
from tests.test_strategy_causal import make_strategy

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


class FrameProvider:
    def __init__(self, frames: dict) -> None:
        self.frames = frames

    def get_pair_dataframe(self, pair: str, timeframe: str) -> pd.DataFrame:
        return self.frames[(pair, timeframe)].copy()


class RefusingFreqAI:
    calls = 0

    def start(self, dataframe, metadata, strategy):
        self.calls += 1
        raise StateError("PPOPyramiding model was saved by schema version 0, this code reads "
                         "version 1")


class Trade:
    id, pair, stake_amount, open_rate = 1, "BTC/USDT", 100.0, 1.0
    open_date_utc = datetime(2025, 1, 1)


@pytest.fixture
def strategy(tmp_path):
    frames = {}
    for i, pair in enumerate(PAIRS):
        df = make_ohlcv(3000, seed=11 + i)
        frames[(pair, "5m")] = df
        frames[(pair, "1h")] = (df.set_index("date").resample("1h", label="left")
                                .agg({"open": "first", "high": "max", "low": "min",
                                      "close": "last", "volume": "sum"})
                                .dropna().reset_index())
    s = make_strategy(tmp_path)
    s.dp = FrameProvider(frames)
    s.config["freqai"] = {**s.config.get("freqai", {}), "enabled": True}
    s.freqai = RefusingFreqAI()
    return s, frames


def test_refused_freqai_model_leaves_no_ai_component_and_rule_sizing(strategy, caplog):
    s, frames = strategy
    with caplog.at_level(logging.ERROR, logger="learning.strategy"):
        for _ in range(2):  # e.g. two live candles: one error line, not one per candle
            df = s.populate_indicators(frames[("BTC/USDT", "5m")].copy(), {"pair": "BTC/USDT"})
    assert s.freqai.calls == 2
    assert df["score_ai"].isna().all()
    assert np.isfinite(df["score_technical"].iloc[-1])
    assert s._series["BTC/USDT"].pyr is None  # no grid columns: the pyramiding rules decide
    now = pd.Timestamp(frames[("BTC/USDT", "5m")]["date"].iloc[-1]).to_pydatetime()
    assert s.rl_adjustment(Trade(), now, 0.01, None, 1000.0) is NOT_RL
    refused = [r for r in caplog.records if "FreqAI model refused" in r.getMessage()]
    assert len(refused) == 1 and "schema version" in refused[0].getMessage()
