"""The RL example strategy of freqtrade's FreqAI docs, long-only (spot).

FreqAI's ``ReinforcementLearner`` trains a PPO agent per pair and training window on the ``%``
features below; its action per candle arrives in ``&-action`` (0 neutral, 1 enter long,
2 exit long, 3/4 short actions that a spot strategy ignores). ``%-raw_open/high/low/close`` are
required by the RL environment (it trades on raw prices).
"""

from functools import reduce

import talib.abstract as ta
from freqtrade.strategy import IStrategy
from pandas import DataFrame


class RLExampleStrategy(IStrategy):
    """Enter long on action 1, exit on action 2; ROI/stoploss as in the docs' example."""

    minimal_roi = {"0": 0.1, "240": -1}
    stoploss = -0.05
    timeframe = "5m"
    process_only_new_candles = True
    use_exit_signal = True
    startup_candle_count: int = 40
    can_short = False

    def feature_engineering_expand_all(self, dataframe: DataFrame, period: int,
                                       metadata: dict, **kwargs) -> DataFrame:
        dataframe["%-rsi-period"] = ta.RSI(dataframe, timeperiod=period)
        dataframe["%-mfi-period"] = ta.MFI(dataframe, timeperiod=period)
        dataframe["%-adx-period"] = ta.ADX(dataframe, timeperiod=period)
        dataframe["%-roc-period"] = ta.ROC(dataframe, timeperiod=period)
        return dataframe

    def feature_engineering_expand_basic(self, dataframe: DataFrame, metadata: dict,
                                         **kwargs) -> DataFrame:
        dataframe["%-pct-change"] = dataframe["close"].pct_change()
        dataframe["%-raw_volume"] = dataframe["volume"]
        return dataframe

    def feature_engineering_standard(self, dataframe: DataFrame, metadata: dict,
                                     **kwargs) -> DataFrame:
        dataframe["%-day_of_week"] = (dataframe["date"].dt.dayofweek + 1) / 7
        dataframe["%-hour_of_day"] = (dataframe["date"].dt.hour + 1) / 25
        # The environment prices its trades with these (not normalised).
        dataframe["%-raw_close"] = dataframe["close"]
        dataframe["%-raw_open"] = dataframe["open"]
        dataframe["%-raw_high"] = dataframe["high"]
        dataframe["%-raw_low"] = dataframe["low"]
        return dataframe

    def set_freqai_targets(self, dataframe: DataFrame, metadata: dict, **kwargs) -> DataFrame:
        # No label for RL: a neutral filler until the agent writes its action here.
        dataframe["&-action"] = 0
        return dataframe

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return self.freqai.start(dataframe, metadata, self)

    def populate_entry_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        enter = [df["do_predict"] == 1, df["&-action"] == 1]
        df.loc[reduce(lambda x, y: x & y, enter), ["enter_long", "enter_tag"]] = (1, "rl_long")
        return df

    def populate_exit_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        exit_ = [df["do_predict"] == 1, df["&-action"] == 2]
        df.loc[reduce(lambda x, y: x & y, exit_), "exit_long"] = 1
        return df
