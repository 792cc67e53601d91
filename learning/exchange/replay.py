"""Historical candles replayed as if they were live: the data side of the local exchange.

Every series is shifted by ONE global offset, a whole number of weeks, so weekdays, day boundaries
and weekly candles stay aligned and all pairs stay consistent with each other. The offset is the
smallest whole number of weeks that puts the newest base candle (across pairs) at or after the
replay's start time; it is fixed for the life of a :class:`Replay`.

At a given ``now`` a series shows its complete candles (open time before the bucket holding
``now``) plus one candle in progress, aggregated from the finest candles of the bucket that have
started; the last of these is interpolated open -> close (and partially towards its high/low) by
its elapsed fraction, so prices move between candle closes and every timeframe agrees with the
ticker. Later candles are hidden.

Past the end of the data (at most a week after start, less ``min_runway``), nothing new appears:
series end with their last real candle, which is served as complete, and the ticker stays at the
last close. Restart to re-anchor (the new offset is one week larger, so the served history of a
given date changes: use a fresh scratch data dir for the bot).

Data rules: rows with a NaN/inf price or volume are not served (they show as a gap: Binance never
sends NaN); zero-volume rows, gaps and inconsistent OHLC are served as they exist.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from learning.core.errors import DataError
from learning.data.candles import list_pairs, load_candles

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
# 1970-01-05 was a Monday: weekly candles open on Mondays (Binance, ccxt.round_timeframe).
_MONDAY_MS = 4 * DAY_MS
BINANCE_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
                     "1d", "3d", "1w", "1M")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": DAY_MS, "w": WEEK_MS, "M": 31 * DAY_MS}
_TF_RE = re.compile(r"^(\d+)([smhdwM])$")
# Columns of Series.values.
OPEN, HIGH, LOW, CLOSE, VOLUME, QUOTE_VOLUME = range(6)


@dataclass(frozen=True)
class Interval:
    """A candle length with Binance's alignment (epoch, Monday weeks, calendar months)."""

    name: str
    ms: int
    """Length in ms; for a month the nominal 31 days (ordering only)."""
    kind: str = "fixed"
    """'fixed' (epoch aligned), 'week' (Monday aligned) or 'month' (calendar)."""

    @property
    def nest_ms(self) -> int:
        """A finer candle fits inside this one's buckets when its length divides this."""
        return DAY_MS if self.kind in ("week", "month") else self.ms

    @property
    def week_shift_safe(self) -> bool:
        """Whether shifting by whole weeks keeps the candles aligned (not for 3d, 1M)."""
        return self.kind == "week" or (self.kind == "fixed" and WEEK_MS % self.ms == 0)

    def floor(self, t: np.ndarray) -> np.ndarray:
        """Open time (ms) of the candle holding each time ``t`` (int64 ms)."""
        if self.kind == "month":
            return t.astype("datetime64[ms]").astype("datetime64[M]").astype(
                "datetime64[ms]").astype(np.int64)
        if self.kind == "week":
            return (t - _MONDAY_MS) // WEEK_MS * WEEK_MS + _MONDAY_MS
        return t // self.ms * self.ms

    def end(self, start: np.ndarray) -> np.ndarray:
        """Open time of the next candle, for candle open times ``start``."""
        if self.kind == "month":
            months = start.astype("datetime64[ms]").astype("datetime64[M]") + 1
            return months.astype("datetime64[ms]").astype(np.int64)
        return start + self.ms

    def floor_one(self, t: int) -> int:
        return int(self.floor(np.array([t], dtype=np.int64))[0])

    def end_one(self, start: int) -> int:
        return int(self.end(np.array([start], dtype=np.int64))[0])


def parse_interval(name: str) -> Interval | None:
    """'5m' -> Interval; None for a malformed name or a multi-week/multi-month length."""
    m = _TF_RE.match(name)
    if not m or int(m[1]) == 0:
        return None
    amount, unit = int(m[1]), m[2]
    if unit in ("w", "M"):
        return Interval(name, amount * _UNIT_MS[unit], "week" if unit == "w" else "month") \
            if amount == 1 else None
    return Interval(name, amount * _UNIT_MS[unit])


@dataclass(frozen=True)
class Series:
    """Candles of one pair and interval in replay time: ascending, unique open times."""

    t: np.ndarray
    """(n,) int64 open times, ms."""
    values: np.ndarray
    """(n, 6) float64: open, high, low, close, volume, quote volume."""

    def __len__(self) -> int:
        return len(self.t)


def frame_to_series(df: pd.DataFrame, offset_ms: int) -> Series:
    """Loaded candles -> Series shifted by ``offset_ms``; rows with NaN/inf are dropped."""
    ohlcv = df[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64)
    keep = np.isfinite(ohlcv).all(axis=1)
    ohlcv = ohlcv[keep]
    t = df["date"].to_numpy(dtype="datetime64[ms]").astype(np.int64)[keep] + offset_ms
    # The files carry no quote volume: estimate it from the candle's mean price.
    quote = ohlcv[:, VOLUME] * ohlcv[:, :4].mean(axis=1)
    return Series(t, np.column_stack([ohlcv, quote]))


def resample(src: Series, interval: Interval) -> Series:
    """Aggregate finer candles into ``interval`` candles labelled by their open time.

    A first bucket that the source does not cover from its start is dropped (it would be a
    truncated candle); the last one is kept (the replay replaces it while it is in progress).
    """
    if not len(src):
        return src
    buckets = interval.floor(src.t)
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(src)]
    x = src.values
    out = np.column_stack([
        x[starts, OPEN], np.maximum.reduceat(x[:, HIGH], starts),
        np.minimum.reduceat(x[:, LOW], starts), x[ends - 1, CLOSE],
        np.add.reduceat(x[:, VOLUME], starts), np.add.reduceat(x[:, QUOTE_VOLUME], starts)])
    t = buckets[starts]
    first = 1 if src.t[0] > t[0] else 0
    return Series(t[first:], out[first:])


def merge(native: Series, extra: Series) -> Series:
    """Rows of ``native`` plus those of ``extra`` at open times ``native`` lacks."""
    add = ~np.isin(extra.t, native.t)
    t = np.concatenate([native.t, extra.t[add]])
    order = np.argsort(t, kind="stable")
    return Series(t[order], np.concatenate([native.values, extra.values[add]])[order])


def partial_candle(src: Series, src_interval: Interval, start_ms: int,
                   now_ms: int) -> np.ndarray | None:
    """One candle aggregated from ``src`` rows opened in [start_ms, now_ms], as seen at now.

    The last row is built from its open by the elapsed fraction f: close = open + f (close -
    open), high/low move from max/min(open, close) towards the real high/low by f, volumes scale
    by f. At f = 1 it is the real candle. Returns (6,) values or None when no row has started.
    """
    i0 = int(np.searchsorted(src.t, start_ms, "left"))
    i1 = int(np.searchsorted(src.t, now_ms, "right"))
    if i0 >= i1:
        return None
    last_t = int(src.t[i1 - 1])
    span = src_interval.end_one(last_t) - last_t
    f = min(1.0, max(0.0, (now_ms - last_t) / span))
    o, h, lo, c, v, qv = src.values[i1 - 1]
    close = o + f * (c - o)
    row = np.array([
        o, max(o, close) + f * (h - max(o, c)), min(o, close) - f * (min(o, c) - lo), close,
        f * v, f * qv])
    if i1 - i0 > 1:
        head = src.values[i0:i1 - 1]
        row[OPEN] = head[0, OPEN]
        row[HIGH] = max(row[HIGH], head[:, HIGH].max())
        row[LOW] = min(row[LOW], head[:, LOW].min())
        row[VOLUME] += head[:, VOLUME].sum()
        row[QUOTE_VOLUME] += head[:, QUOTE_VOLUME].sum()
    return row


def replay_offset(newest: datetime, now: datetime, min_runway: timedelta = timedelta(0)) -> int:
    """Smallest whole-week offset (ms) putting ``newest`` at or after ``now + min_runway``."""
    gap_ms = (now + min_runway - newest) / timedelta(milliseconds=1)
    return math.ceil(gap_ms / WEEK_MS) * WEEK_MS


@dataclass
class View:
    """What one pair/interval shows at ``now``: complete rows, then maybe one in progress."""

    series: Series
    interval: Interval
    complete: int
    """Rows series[:complete] are complete (open before the bucket holding now)."""
    progress_t: int
    """Open time (ms) of the candle in progress (the bucket holding now)."""
    progress: np.ndarray | None
    """(6,) values of the candle in progress, or None (no data in that bucket)."""
    cache: dict[int, list[str]]
    """Formatted rows of this series by chunk (filled by the exchange)."""

    def __len__(self) -> int:
        return self.complete + (self.progress is not None)

    def count_before(self, t_ms: int, inclusive: bool = False) -> int:
        """Rows with open time < t_ms (<= with inclusive)."""
        side = "right" if inclusive else "left"
        n = min(int(np.searchsorted(self.series.t, t_ms, side)), self.complete)
        started = self.progress_t <= t_ms if inclusive else self.progress_t < t_ms
        return n + int(self.progress is not None and started)


@dataclass
class _Entry:
    series: Series
    source: Series
    source_interval: Interval
    cache: dict[int, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class PairData:
    """One pair's candle files, shifted into replay time."""

    pair: str
    base: Interval
    """The finest week-shift-safe timeframe: drives the ticker and the offset."""
    native: dict[str, Series]
    """Every week-shift-safe timeframe file by name (3d/1M files are resampled instead)."""


class Replay:
    """All pairs of a data dir, shifted once so the newest candle lies just after ``start``."""

    def __init__(self, datadir: str | Path, start: datetime,
                 min_runway: timedelta = timedelta(0)) -> None:
        self.datadir = Path(datadir)
        frames = _load_pairs(self.datadir)
        newest = max(_last_date(f[base.name]) for base, f in frames.values())
        self.offset_ms = replay_offset(newest, start, min_runway)
        self.pairs: dict[str, PairData] = {}
        for pair, (base, tf_frames) in frames.items():
            native = {tf: frame_to_series(df, self.offset_ms) for tf, df in tf_frames.items()
                      if (iv := parse_interval(tf)) and iv.week_shift_safe}
            self.pairs[pair] = PairData(pair, base, native)
        self.end_ms = int(newest.timestamp() * 1000) + self.offset_ms
        """Open time of the newest base candle, in replay time."""
        self._entries: dict[tuple[str, str], _Entry | None] = {}
        self._lock = threading.Lock()

    @property
    def offset(self) -> timedelta:
        return timedelta(milliseconds=self.offset_ms)

    def view(self, pair: str, interval: Interval, now_ms: int) -> View | None:
        """The pair's candles of ``interval`` as seen at ``now_ms``; None if not derivable."""
        entry = self._entry(pair, interval)
        if entry is None:
            return None
        cur = interval.floor_one(now_ms)
        complete = min(int(np.searchsorted(entry.series.t, cur, "left")), len(entry.series))
        progress = partial_candle(entry.source, entry.source_interval, cur, now_ms)
        return View(entry.series, interval, complete, cur, progress, entry.cache)

    def window(self, pair: str, start_ms: int, now_ms: int) -> tuple[np.ndarray | None, float]:
        """(aggregate of the base candles opened in [start_ms, now_ms], last close before it)."""
        data = self.pairs[pair]
        base = data.native[data.base.name]
        prev_i = int(np.searchsorted(base.t, start_ms, "left")) - 1
        prev = float(base.values[prev_i, CLOSE]) if prev_i >= 0 else math.nan
        return partial_candle(base, data.base, start_ms, now_ms), prev

    def last_price(self, pair: str, now_ms: int) -> float | None:
        """Price at now: the close of the base candle in progress (or the last one)."""
        data = self.pairs[pair]
        base = data.native[data.base.name]
        i = int(np.searchsorted(base.t, now_ms, "right")) - 1
        if i < 0:
            return None
        row = partial_candle(base, data.base, int(base.t[i]), now_ms)
        return float(row[CLOSE]) if row is not None else None

    def _entry(self, pair: str, interval: Interval) -> _Entry | None:
        key = (pair, interval.name)
        if key not in self._entries:
            with self._lock:
                if key not in self._entries:
                    self._entries[key] = self._build(self.pairs[pair], interval)
        return self._entries[key]

    def _build(self, data: PairData, interval: Interval) -> _Entry | None:
        """Native candles of ``interval`` where present, the rest resampled from the finest."""
        sources = [parse_interval(tf) for tf in data.native]
        fitting = [iv for iv in sources if iv and interval.nest_ms % iv.ms == 0
                   and iv.ms <= interval.ms]
        if not fitting:
            return None
        src_iv = min(fitting, key=lambda iv: iv.ms)
        source = data.native[src_iv.name]
        native = data.native.get(interval.name) if interval.week_shift_safe else None
        if src_iv.name == interval.name:
            series = source
        else:
            resampled = resample(source, interval)
            series = merge(native, resampled) if native is not None else resampled
        return _Entry(series, source, src_iv)


def _last_date(df: pd.DataFrame) -> datetime:
    return df["date"].iloc[-1].to_pydatetime().astimezone(UTC)


def _load_pairs(datadir: Path) -> dict[str, tuple[Interval, dict[str, pd.DataFrame]]]:
    """Load every spot file; a pair with an unreadable file is skipped with a warning."""
    loaded: dict[str, tuple[Interval, dict[str, pd.DataFrame]]] = {}
    for pair, timeframes in list_pairs(datadir).items():
        frames: dict[str, pd.DataFrame] = {}
        try:
            for tf in timeframes:
                if parse_interval(tf) is None:
                    log.warning("ignoring %s: timeframe %s is not served", pair, tf)
                    continue
                df = load_candles(datadir, pair, tf)
                finite = np.isfinite(df[["open", "high", "low", "close", "volume"]].to_numpy())
                frames[tf] = df[finite.all(axis=1)]
        except DataError as err:
            log.warning("skipping %s: %s", pair, err)
            continue
        safe = [iv for tf in frames if (iv := parse_interval(tf)) and iv.week_shift_safe]
        base = min(safe, key=lambda iv: iv.ms) if safe else None
        if base is None or frames[base.name].empty:
            log.warning("skipping %s: no usable candles in %s", pair, datadir)
            continue
        loaded[pair] = (base, frames)
    if not loaded:
        raise DataError(f"data dir {datadir} holds no usable candle files (see warnings above)")
    return loaded
