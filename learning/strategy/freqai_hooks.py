"""FreqAI hooks of AdvancedLearning: features, targets and the *ai* component score.

Active only when the config enables FreqAI (``freqai.enabled``) and names a model
(``--freqaimodel``). The targets follow the model family:

* regressors (e.g. ``TSAMAERegressor``, ``LightGBMRegressor``): ``&-s_return`` (log return over
  the next ``label_period_candles``), ``&-s_vol`` (realized volatility over them) and the
  ``&-anomaly`` placeholder the TSA-MAE model fills with its reconstruction error;
* reinforcement learners (``BaseReinforcementLearningModel`` subclasses): the neutral ``&-action``.

Targets look ahead by definition; FreqAI only ever fits them on each training window. Features
are trailing indicators, computed per ``indicator_periods_candles``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import talib.abstract as ta
from freqtrade.strategy import IStrategy

logger = logging.getLogger(__name__)

#: Prediction columns that carry the *ai* component (first found wins).
AI_RETURN_LABEL = "&-s_return"
AI_ACTION_PREF = "&-pyr_flat_increase"  # PPOPyramiding: P(increase) at the flat state


class FreqAIHooks(IStrategy):
    """Mixin for the strategy; expects ``self.config`` and ``self.freqai`` (set by freqtrade)."""

    config: dict

    @property
    def freqai_enabled(self) -> bool:
        return bool(self.config.get("freqai", {}).get("enabled", False))

    def _freqai_is_rl(self) -> bool:
        from freqtrade.freqai.RL.BaseReinforcementLearningModel import (
            BaseReinforcementLearningModel,
        )

        return isinstance(getattr(self, "freqai", None), BaseReinforcementLearningModel)

    def feature_engineering_expand_all(self, dataframe: pd.DataFrame, period: int,
                                       metadata: dict, **kwargs: Any) -> pd.DataFrame:
        dataframe["%-rsi-period"] = ta.RSI(dataframe, timeperiod=period)
        dataframe["%-roc-period"] = ta.ROC(dataframe, timeperiod=period)
        dataframe["%-natr-period"] = ta.NATR(dataframe, timeperiod=period)
        dataframe["%-adx-period"] = ta.ADX(dataframe, timeperiod=period)
        return dataframe

    def feature_engineering_expand_basic(self, dataframe: pd.DataFrame, metadata: dict,
                                         **kwargs: Any) -> pd.DataFrame:
        dataframe["%-pct-change"] = dataframe["close"].pct_change()
        vol = np.log1p(dataframe["volume"].clip(lower=0))
        dataframe["%-volume-z"] = (vol - vol.rolling(288, min_periods=48).mean()) / \
            vol.rolling(288, min_periods=48).std()
        return dataframe

    def feature_engineering_standard(self, dataframe: pd.DataFrame, metadata: dict,
                                     **kwargs: Any) -> pd.DataFrame:
        # Raw prices: required by FreqAI's RL base; TSA-MAE can read them too.
        for col in ("open", "high", "low", "close", "volume"):
            dataframe[f"%-raw_{col}"] = dataframe[col]
        dates = pd.to_datetime(dataframe["date"], utc=True)
        dataframe["%-hour_of_day"] = np.sin(2 * np.pi * dates.dt.hour / 24)
        dataframe["%-day_of_week"] = np.sin(2 * np.pi * dates.dt.dayofweek / 7)
        return dataframe

    def set_freqai_targets(self, dataframe: pd.DataFrame, metadata: dict,
                           **kwargs: Any) -> pd.DataFrame:
        if self._freqai_is_rl():
            dataframe["&-action"] = 0
            return dataframe
        n = int(self.config["freqai"]["feature_parameters"].get("label_period_candles", 24))
        logret = np.log(dataframe["close"] / dataframe["close"].shift(1))
        dataframe["&-s_return"] = np.log(dataframe["close"].shift(-n) / dataframe["close"])
        dataframe["&-s_vol"] = logret.rolling(n).std().shift(-n)
        dataframe["&-anomaly"] = 0.0
        return dataframe

    def ai_interval(self, dataframe: pd.DataFrame) -> None:
        """Conformal interval of the predicted return (``ai_lo``, ``ai_hi``; NaN where the model
        emits none) by adaptive conformal inference over the window-calibrated half-widths, and
        ``ai_abstain`` (1 where it contains zero). With ``conformal.abstain`` the *ai* score is
        NaN there: the component contributes nothing (:mod:`learning.encoder.conformal`)."""
        from learning.encoder.conformal import COLUMNS, aci_intervals, contains_zero

        dataframe["ai_lo"], dataframe["ai_hi"], dataframe["ai_abstain"] = np.nan, np.nan, 0
        if AI_RETURN_LABEL not in dataframe or not all(c in dataframe for c in COLUMNS):
            return
        cfg = self.learning.conformal
        pred = dataframe[AI_RETURN_LABEL].to_numpy(dtype="float64")
        if "do_predict" in dataframe:
            pred = np.where(dataframe["do_predict"].to_numpy() == 1, pred, np.nan)
        horizon = int(self.config["freqai"]["feature_parameters"].get("label_period_candles",
                                                                       24))
        lo, hi = aci_intervals(pred, dataframe[list(COLUMNS)].to_numpy(dtype="float64"),
                               dataframe["close"].to_numpy(dtype="float64"), horizon,
                               cfg.coverage, cfg.aci_gamma)
        zero = contains_zero(lo, hi)
        dataframe["ai_lo"], dataframe["ai_hi"] = lo, hi
        dataframe["ai_abstain"] = zero.astype(int)
        if cfg.abstain:
            dataframe.loc[zero, "score_ai"] = np.nan

    @staticmethod
    def ai_score(dataframe: pd.DataFrame) -> pd.Series:
        """The *ai* component in [-1, 1] from the model's predictions; NaN where it abstains.

        Regressors: the predicted return in units of the label's spread over its training
        window (``&-s_return_std``), squashed by tanh. RL pyramiding: 2·P(increase | flat) - 1.
        """
        ok = dataframe["do_predict"] == 1 if "do_predict" in dataframe else True
        if AI_ACTION_PREF in dataframe:
            score = 2.0 * dataframe[AI_ACTION_PREF].astype(float) - 1.0
        elif AI_RETURN_LABEL in dataframe:
            std = dataframe.get(f"{AI_RETURN_LABEL}_std")
            scale = std.where(std > 0) if std is not None else np.nan
            score = np.tanh(dataframe[AI_RETURN_LABEL].astype(float) / scale)
        else:
            return pd.Series(np.nan, index=dataframe.index)
        return score.where(ok).clip(-1.0, 1.0)
