"""The textbook time-series trend rule, as a small freqtrade strategy (an ``ftlearn bench``
baseline): long while the daily close is above its 50-day mean, flat otherwise; every pair gets
an equal share of the wallet, scaled down to a volatility target.

Moskowitz, Ooi & Pedersen, "Time series momentum", JFE 2012; the 50-day mean is the common
retail form. The signal is read from completed daily candles only (``merge_informative_pair``
shifts the daily candle to its close), so entries and exits happen on the first candle after a
daily close crosses the mean. No risk limits beyond the fee: it is the simplest known edge the
learning system has to beat inside its own limits.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from freqtrade.strategy import IStrategy, merge_informative_pair


class TrendRule(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1h"
    can_short = False
    minimal_roi = {"0": 100.0}  # exits come from the rule only
    stoploss = -0.99
    use_exit_signal = True
    process_only_new_candles = True
    startup_candle_count = 60 * 24  # 60 days of 1h candles: the 50-day mean plus slack

    sma_days = 50
    vol_days = 30
    #: annualised volatility each position is scaled to (at most its equal share)
    vol_target = 0.5

    def informative_pairs(self) -> list[tuple[str, str]]:
        return [(p, "1d") for p in self.dp.current_whitelist()]

    def populate_indicators(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        daily = self.dp.get_pair_dataframe(metadata["pair"], "1d")
        daily = daily[["date", "close"]].copy()
        daily["sma"] = daily["close"].rolling(self.sma_days, min_periods=self.sma_days).mean()
        logret = np.log(daily["close"] / daily["close"].shift(1))
        daily["vol"] = logret.rolling(self.vol_days, min_periods=self.vol_days // 2).std() \
            * math.sqrt(365.0)
        daily["up"] = (daily["close"] > daily["sma"]).astype(float)
        merged = merge_informative_pair(dataframe, daily[["date", "close", "sma", "vol", "up"]],
                                        self.timeframe, "1d", ffill=True)
        dataframe["trend_up"] = merged["up_1d"].to_numpy()
        dataframe["trend_vol"] = merged["vol_1d"].to_numpy()
        dataframe["daily_sma"] = merged["sma_1d"].to_numpy()
        return dataframe

    def populate_entry_trend(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        dataframe.loc[dataframe["trend_up"] == 1, ["enter_long", "enter_tag"]] = (1, "trend")
        return dataframe

    def populate_exit_trend(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        dataframe.loc[dataframe["trend_up"] == 0, ["exit_long", "exit_tag"]] = (1, "trend_off")
        return dataframe

    def custom_stake_amount(self, pair: str, current_time: datetime, current_rate: float,
                            proposed_stake: float, min_stake: float | None, max_stake: float,
                            leverage: float, entry_tag: str | None, side: str,
                            **kwargs: Any) -> float:
        """An equal share of the wallet (freqtrade's proposal with ``stake_amount:
        unlimited``) times min(1, target / forecast volatility)."""
        df, _ = self.dp.get_analyzed_dataframe(pair, self.timeframe)
        vol = float(df["trend_vol"].iloc[-1]) if len(df) else float("nan")
        scale = min(1.0, self.vol_target / vol) if math.isfinite(vol) and vol > 0 else 1.0
        return proposed_stake * scale
