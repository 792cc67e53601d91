"""The *theme* and *sentiment* component scores (each in [-1, 1], causal).

* **theme / momentum**: the pair's cross-sectional relative strength. Over a trailing window
  (default one day) the pair's log return is compared with the median of the other whitelisted
  pairs (in units of their cross-sectional spread) and with BTC's (in units of the pair's own
  volatility over the window). Strong relative performance scores positive.
* **sentiment**: a market fear/greed *proxy* computed from BTC candles only. It is not a survey
  index: greed = BTC's one-week momentum (in volatility units); fear = a volatility spike over its
  monthly baseline, a drawdown from the monthly high, and volume surges on down days. When a
  funding-rate series is supplied (futures data present), positive funding (crowded longs) adds
  to greed and negative funding to fear.

Every series is trailing (rolling windows, no centring, no whole-column statistics); other
series are aligned with a backward as-of join, so the value at t reads candles <= t only.
``tests/brain/test_components.py`` proves it with prefix tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.signal import lfilter

_EPS = 1e-12


def _log_return(close: pd.Series, window: int) -> pd.Series:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(close / close.shift(window))


def align_close(dates: pd.Series, other: pd.DataFrame) -> pd.Series:
    """``other``'s close as known at each of ``dates`` (backward as-of join, causal)."""
    left = pd.DataFrame({"date": pd.to_datetime(dates, utc=True).astype("datetime64[ns, UTC]")})
    right = other[["date", "close"]].copy()
    right["date"] = pd.to_datetime(right["date"], utc=True).astype("datetime64[ns, UTC]")
    merged = pd.merge_asof(left, right.sort_values("date"), on="date", direction="backward")
    return merged["close"].set_axis(dates.index)


def theme_score(df: pd.DataFrame, others: Mapping[str, pd.DataFrame],
                btc: pd.DataFrame | None, window: int = 288) -> pd.Series:
    """Relative strength of ``df``'s pair against ``others`` (excluding itself) and ``btc``."""
    close = df["close"].astype("float64")
    r_pair = _log_return(close, window)
    logret = np.log(close / close.shift(1))
    own_vol = logret.rolling(window, min_periods=window // 2).std() * np.sqrt(window)
    parts = []
    if others:
        cross = pd.DataFrame({p: _log_return(align_close(df["date"], o), window)
                              for p, o in others.items()})
        everyone = pd.concat([cross, r_pair.rename("_self")], axis=1)
        spread = everyone.std(axis=1, ddof=0)
        parts.append((r_pair - cross.median(axis=1)) / (spread + _EPS))
    if btc is not None:
        r_btc = _log_return(align_close(df["date"], btc), window)
        parts.append((r_pair - r_btc) / (own_vol + _EPS))
    if not parts:
        return pd.Series(np.nan, index=df.index)
    z = sum(parts) / len(parts)
    return np.tanh(0.75 * z).clip(-1, 1)


def sentiment_score(btc: pd.DataFrame, funding: pd.DataFrame | None = None, *,
                    day: int = 24) -> pd.Series:
    """Fear (-1) / greed (+1) proxy on BTC candles of any timeframe with ``day`` candles a day."""
    close = btc["close"].astype("float64")
    logret = np.log(close / close.shift(1))
    week, month = 7 * day, 30 * day
    vol_day = logret.rolling(day, min_periods=day).std()
    vol_base = logret.rolling(month, min_periods=week).std()
    momentum = np.tanh(_log_return(close, week) / (vol_base * np.sqrt(week) + _EPS))
    vol_spike = -np.tanh(np.log((vol_day + _EPS) / (vol_base + _EPS)).clip(lower=0))
    drawdown = close / close.rolling(month, min_periods=week).max() - 1.0
    dd_fear = np.tanh(drawdown / 0.10)  # in [-1, 0]
    lv = np.log1p(btc["volume"].astype("float64").clip(lower=0))
    vol_z = (lv - lv.rolling(month, min_periods=week).mean()) / (
        lv.rolling(month, min_periods=week).std() + _EPS)
    surge = np.tanh(vol_z.clip(lower=0)) * np.sign(_log_return(close, day))
    score = 0.35 * momentum + 0.25 * vol_spike + 0.25 * dd_fear + 0.15 * surge
    if funding is not None and len(funding):
        rate = _aligned_value(btc["date"], funding, "funding_rate")
        # 0.01% per 8h is the neutral level on most venues; 0.05% is crowded.
        score = 0.85 * score + 0.15 * np.tanh((rate - 1e-4) / 4e-4).fillna(0.0)
    return score.clip(-1, 1)


def asof_merge(dates: pd.Series, timeframe: str, info: pd.DataFrame, info_timeframe: str,
               columns: Sequence[str]) -> pd.DataFrame:
    """``columns`` of ``info`` (candles of ``info_timeframe``) as known at the close of each
    candle of ``dates`` (``timeframe``): the newest informative candle that had closed by then.

    freqtrade's ``merge_informative_pair`` does the same but refuses an informative timeframe
    shorter than the strategy's (1h regimes on a 4h strategy); matching close times works for
    both directions and never uses a candle before it closed.
    """
    step = pd.Timedelta(minutes=_tf_minutes(timeframe))
    info_step = pd.Timedelta(minutes=_tf_minutes(info_timeframe))
    left = pd.DataFrame({"_close": (pd.to_datetime(dates, utc=True) + step).dt.as_unit("ns")})
    right = info[list(columns)].copy()
    right["_close"] = (pd.to_datetime(info["date"], utc=True) + info_step).dt.as_unit("ns")
    right = right.sort_values("_close")
    order = np.argsort(left["_close"].to_numpy(), kind="stable")
    merged = pd.merge_asof(left.iloc[order], right, on="_close", direction="backward")
    out = pd.DataFrame(index=left.index, columns=list(columns), dtype="float64")
    out.iloc[order] = merged[list(columns)].to_numpy()
    return out


def trend_score(dates: pd.Series, close: pd.Series, timeframe: str, daily: pd.DataFrame | None,
                days: int = 50, daily_close: bool = False) -> pd.Series:
    """Time-series momentum (Moskowitz, Ooi & Pedersen 2012) as a score in [-1, 1].

    x = log(close / mean of the last ``days`` completed daily closes), in units of what that
    distance spreads to on a driftless walk (σ_daily √(days / 3)); score = tanh(x). Positive
    while the price is above its ``days``-day mean: the textbook trend rule's signal, graded.
    The daily closes come from the pair's 1d candles and are known only once their day has
    closed (:func:`asof_merge`). With ``daily_close`` the distance is taken from the last
    completed daily close instead of the current price: the rule's own daily signal, which
    changes once a day (what trend exits use, so an intraday dip does not end a trend trade).
    """
    if daily is None or len(daily) < days + 1:
        return pd.Series(np.nan, index=close.index)
    dclose = daily["close"].astype("float64")
    dlog = np.log(dclose.where(dclose > 0))
    stats = pd.DataFrame({
        "date": daily["date"],
        "sma": dclose.rolling(days, min_periods=days).mean(),
        "vol": dlog.diff().rolling(days, min_periods=days // 2).std()})
    stats["dclose"] = dclose
    merged = asof_merge(dates, timeframe, stats, "1d", ["sma", "vol", "dclose"])
    price = merged["dclose"].to_numpy() if daily_close else close.astype("float64").to_numpy()
    x = np.log(price / merged["sma"].to_numpy())
    scale = merged["vol"].to_numpy() * math.sqrt(days / 3.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.tanh(x / scale)
    return pd.Series(score, index=close.index).clip(-1, 1)


def ewma_volatility(close: pd.Series, timeframe: str, halflife: pd.Timedelta,
                    halflives: float = 4.0) -> pd.Series:
    """Annualised volatility forecast: an EWMA of squared log returns (RiskMetrics), causal,
    truncated to the last ``halflives`` half-lives (the 6% of weight beyond is dropped and the
    rest renormalised), so a value depends on a fixed window and not on where the data starts
    (freqtrade's recursive-analysis checks this). NaN until the window is full."""
    step = pd.Timedelta(minutes=_tf_minutes(timeframe))
    per_year = 365.0 * 1440.0 / _tf_minutes(timeframe)
    h = max(1.0, halflife / step)
    window = max(2, math.ceil(halflives * h))
    lam = 0.5 ** (1.0 / h)
    c = close.astype("float64").to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.log(c[1:] / c[:-1])
    x = np.concatenate([[np.nan], r])
    ok = np.isfinite(x)
    x2 = np.where(ok, x * x, 0.0)
    # IIR sums S_t = x_t + lam S_{t-1}; the window's sum is S_t - lam^W S_{t-W}.
    num = lfilter([1.0], [1.0, -lam], x2)
    den = lfilter([1.0], [1.0, -lam], ok.astype("float64"))
    tail = lam ** window

    def lagged(a: np.ndarray) -> np.ndarray:  # a[t - window], 0 before the start
        out = np.zeros_like(a)
        out[window:] = a[:-window] if len(a) > window else out[window:]
        return out

    num_w = num - tail * lagged(num)
    den_w = den - tail * lagged(den)
    full = pd.Series(ok.astype("float64")).rolling(window, min_periods=window).sum().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(full >= window // 2, num_w / den_w, np.nan)
    return pd.Series(np.sqrt(var * per_year), index=close.index)


def _aligned_value(dates: pd.Series, frame: pd.DataFrame, column: str) -> pd.Series:
    renamed = frame.rename(columns={column: "close"})
    return align_close(dates, renamed)


def pair_features(df: pd.DataFrame, timeframe: str, trend_days: float = 3.0,
                  vol_days: float = 3.0, high_days: float = 7.0) -> pd.DataFrame:
    """Causal per-candle ``trend`` (log return over ``trend_days`` / (daily vol √days)), ``vol``
    (daily volatility from ``vol_days`` of log returns) and ``drawdown`` (1 - close / the highest
    high of ``high_days``). Row t uses candles <= t only."""
    per_day = 1440.0 / _tf_minutes(timeframe)
    close = pd.Series(df["close"].to_numpy(dtype=float))
    high = pd.Series(df["high"].to_numpy(dtype=float))
    logc = np.log(close.where(close > 0))
    wv = max(2, round(vol_days * per_day))
    vol = logc.diff().rolling(wv, min_periods=max(2, wv // 2)).std() * math.sqrt(per_day)
    wt = max(1, round(trend_days * per_day))
    trend = (logc - logc.shift(wt)) / (vol * math.sqrt(wt / per_day))
    hh = high.rolling(max(1, round(high_days * per_day)), min_periods=1).max()
    return pd.DataFrame({"trend": trend.to_numpy(), "vol": vol.to_numpy(),
                         "drawdown": (1.0 - close / hh).to_numpy()})


def _tf_minutes(timeframe: str) -> int:
    from learning.data.candles import timeframe_to_minutes

    return timeframe_to_minutes(timeframe)
