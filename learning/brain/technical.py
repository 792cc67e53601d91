"""The *technical* component score: a TA-Lib composite of trend, momentum and volatility.

Every indicator is a trailing (causal) computation, so the score at candle t depends only on
candles up to t; ``tests/brain/test_technical.py`` proves it with a prefix test. The score is in
[-1, 1]: positive = conditions favour a long entry.

* trend: EMA(21) over EMA(55), in units of ATR, and ADX-weighted directional movement;
* momentum: RSI(14) centred, MACD histogram in units of ATR;
* volatility: ATR% relative to its trailing one-day median; unusually high volatility lowers the
  score (long-only spot entries into a volatility spike are the classic way to get stopped out).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib.abstract as ta

from learning.data.candles import bad_row_mask

#: Candles the longest indicator needs before its value is meaningful (see startup_candle_count).
WARMUP_CANDLES = 300

INDICATOR_COLUMNS = ("ema_fast", "ema_slow", "rsi", "macdhist", "atr", "atr_pct", "adx",
                     "plus_di", "minus_di", "tech_trend", "tech_momentum", "tech_volatility",
                     "score_technical", "data_ok")


def _clean_prices(df: pd.DataFrame) -> pd.DataFrame:
    """OHLCV with unusable rows replaced by the previous good row (a causal forward fill).

    TA-Lib's recursive indicators (EMA, ATR, ...) would otherwise carry one NaN candle into every
    later value and silence the score for the rest of the series.
    """
    cols = ["open", "high", "low", "close", "volume"]
    clean = df[cols].astype("float64")
    prices = clean[["open", "high", "low", "close"]].to_numpy()
    with np.errstate(invalid="ignore"):
        unusable = ~np.isfinite(prices).all(axis=1) | (prices[:, 2] <= 0) | (
            prices[:, 1] < prices[:, 2])
    if unusable.any():
        clean.loc[unusable, cols] = np.nan
        clean = clean.ffill()
    return clean


def add_technical(df: pd.DataFrame, vol_window: int = 288) -> pd.DataFrame:
    """Add the indicator columns and ``score_technical`` to ``df`` (in place; returns it)."""
    px = _clean_prices(df)
    df["ema_fast"] = ta.EMA(px, timeperiod=21)
    df["ema_slow"] = ta.EMA(px, timeperiod=55)
    df["rsi"] = ta.RSI(px, timeperiod=14)
    macd = ta.MACD(px, fastperiod=12, slowperiod=26, signalperiod=9)
    df["macdhist"] = macd["macdhist"]
    df["atr"] = ta.ATR(px, timeperiod=14)
    df["atr_pct"] = df["atr"] / px["close"]
    df["adx"] = ta.ADX(px, timeperiod=14)
    df["plus_di"] = ta.PLUS_DI(px, timeperiod=14)
    df["minus_di"] = ta.MINUS_DI(px, timeperiod=14)

    atr = df["atr"].where(df["atr"] > 0)
    ema_gap = (df["ema_fast"] - df["ema_slow"]) / atr
    di = (df["plus_di"] - df["minus_di"]) / (df["plus_di"] + df["minus_di"]).where(
        lambda s: s > 0)
    trend_strength = (df["adx"] / 25.0).clip(0, 2) / 2.0
    df["tech_trend"] = 0.6 * np.tanh(ema_gap / 2.0) + 0.4 * di.fillna(0) * trend_strength

    rsi_c = (df["rsi"] - 50.0) / 50.0
    df["tech_momentum"] = 0.5 * rsi_c + 0.5 * np.tanh(df["macdhist"] / atr)

    # Trailing median: min_periods keeps early candles NaN instead of using a shorter window.
    vol_ref = df["atr_pct"].rolling(vol_window, min_periods=vol_window // 2).median()
    df["tech_volatility"] = -np.tanh(np.log(df["atr_pct"] / vol_ref).clip(lower=0))

    score = 0.45 * df["tech_trend"] + 0.35 * df["tech_momentum"] + 0.20 * df["tech_volatility"]
    df["score_technical"] = score.clip(-1.0, 1.0)
    df["data_ok"] = ~bad_row_mask(df) & df["score_technical"].notna()
    return df
