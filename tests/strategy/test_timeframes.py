"""Any timeframe: start-up history from durations once freqtrade has applied the config's
timeframe, and volatility-targeted stakes that never leave the guard's cap."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import hypothesis.strategies as st
from hypothesis import given

from learning.core.risk import RiskConfig, RiskGuard
from learning.strategy.strategy import MAX_STARTUP_CANDLES, vol_target_scale
from tests.conftest import make_strategy


def test_startup_candles_follow_the_timeframe_freqtrade_applies_after_init(tmp_path):
    strategy = make_strategy(tmp_path)
    needs = {}
    for tf in ("5m", "15m", "1h", "4h"):
        strategy.timeframe = tf  # what freqtrade's resolver does after __init__
        needs[tf] = strategy.startup_candle_count
    # the regime detector needs ~505 hours of history: about 21 days at every timeframe
    assert needs["1h"] == 505 and needs["15m"] == 4 * 505
    assert needs["5m"] == MAX_STARTUP_CANDLES, "capped at what freqtrade fetches at start-up"
    assert needs["4h"] == 300, "the TA-Lib warm-up (candles) dominates at 4h"


def test_startup_candles_from_the_config_win(tmp_path):
    import json

    from freqtrade.enums import RunMode

    from strategies.AdvancedLearning import AdvancedLearning
    from tests.conftest import ROOT

    config = json.loads((ROOT / "config.json").read_text())
    config.update({"user_data_dir": str(tmp_path), "runmode": RunMode.BACKTEST,
                   "startup_candle_count": 777})
    assert AdvancedLearning(config).startup_candle_count == 777


@given(target=st.floats(allow_nan=True, allow_infinity=True),
       forecast=st.floats(allow_nan=True, allow_infinity=True),
       share=st.floats(0.0, 1.0), equity=st.floats(1.0, 1e9))
def test_volatility_targeted_stake_never_leaves_the_guard_cap(target, forecast, share, equity):
    scale = vol_target_scale(target, forecast)
    assert 0.0 <= scale <= 1.0 and math.isfinite(scale)
    guard = RiskGuard(RiskConfig())
    room = guard.max_stake(equity) * 0.5
    verdict = guard.check_stake(datetime(2025, 1, 1, tzinfo=UTC), equity,
                                min(room * share * scale, room))
    assert verdict.amount <= 0.2 * equity * (1 + 1e-12)


def test_volatility_targeting_halves_the_stake_of_a_pair_twice_as_wild():
    assert vol_target_scale(0.5, 1.0) == 0.5 and vol_target_scale(0.5, 0.25) == 1.0
    assert vol_target_scale(0.0, 1.0) == 1.0, "off"


def test_volatility_forecast_takes_the_models_volatility_head_where_it_predicts(tmp_path):
    import numpy as np
    import pandas as pd

    from tests.conftest import make_ohlcv

    strategy = make_strategy(tmp_path)
    strategy.timeframe = "1h"
    df = make_ohlcv(600, freq="1h")
    ewma = strategy.volatility_forecast(df)
    df["&-s_vol"] = 0.01  # 1% per hour
    df["do_predict"] = np.where(np.arange(len(df)) % 2 == 0, 1, 0)
    both = strategy.volatility_forecast(df)
    per_year = 365 * 24
    np.testing.assert_allclose(both[::2], 0.01 * np.sqrt(per_year))
    np.testing.assert_array_equal(both[1::2], ewma[1::2])
    assert pd.isna(ewma[:100]).all() and np.isfinite(ewma[-100:]).all()
