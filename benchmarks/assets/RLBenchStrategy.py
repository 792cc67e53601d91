"""Minimal FreqAI RL strategy for benchmarks/bench_pyramid.py (long-only spot).

The same file serves freqtrade's ``ReinforcementLearner`` and ``PPOPyramiding`` so both runs
compute identical features and trade on the same rule: enter on ``&-action == 1`` (enter long /
increase), exit on ``&-action == 2`` (exit long; the pyramiding agent's flat-state action is never
2, so its trades end by ROI or stoploss). ``%-raw_open/high/low/close`` are what the RL
environments trade on.
"""

import talib.abstract as ta
from freqtrade.strategy import IStrategy
from pandas import DataFrame


class RLBenchStrategy(IStrategy):
    minimal_roi = {"0": 0.05, "240": -1}
    stoploss = -0.05
    timeframe = "5m"
    process_only_new_candles = True
    use_exit_signal = True
    startup_candle_count: int = 100
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
        for col in ("open", "high", "low", "close"):
            dataframe[f"%-raw_{col}"] = dataframe[col]
        return dataframe

    def set_freqai_targets(self, dataframe: DataFrame, metadata: dict, **kwargs) -> DataFrame:
        dataframe["&-action"] = 0
        return dataframe

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return self.freqai.start(dataframe, metadata, self)

    def populate_entry_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        df.loc[(df["do_predict"] == 1) & (df["&-action"] == 1), ["enter_long", "enter_tag"]] = (
            1, "rl")
        return df

    def populate_exit_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        df.loc[(df["do_predict"] == 1) & (df["&-action"] == 2), "exit_long"] = 1
        return df
