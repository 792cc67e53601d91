"""Causal, scale-free window features for the TSA-MAE encoder, and the window datasets.

A *window ending at candle t* covers candles ``t-W+1 .. t`` (``W = window``) and also reads the
close of candle ``t-W`` for the first log return, so its features use candles ``<= t`` only.
Each candle gives six channels (:data:`FEATURES`):

* ``log_return``: ``log(close_i / close_{i-1})``
* ``range``: ``(high - low) / close``
* ``body``: ``(close - open) / close``
* ``upper_wick``: ``(high - max(open, close)) / close``
* ``lower_wick``: ``(min(open, close) - low) / close``
* ``volume_z``: ``log1p(volume)`` as a z-score within the window

The five price channels are divided by the window's standard deviation of log returns (one
common scale keeps the ratio between range and return, which a per-channel z-score would
erase), so the same encoder serves BTC and a small cap, calm and wild markets alike. The scale
itself is returned as ``log_scale`` for heads that need the volatility level. Values are clipped
to ``±clip`` so one broken print cannot dominate a loss.

A window is *invalid* (zero-filled, ``valid=False``, never an exception) when any of its candles
(or the previous close) is NaN/inf, a price is not positive, volume is negative, or its returns
have (numerically) zero variance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from learning.core.errors import DataError

FEATURES: tuple[str, ...] = (
    "log_return", "range", "body", "upper_wick", "lower_wick", "volume_z")
N_FEATURES = len(FEATURES)
_PRICE = slice(0, 5)  # channels scaled by the window's return std
_MIN_STD = 1e-10  # below this the window's returns are constant: nothing to normalize by
_CHUNK = 4096  # windows gathered at once when scanning a whole series (bounds memory)


@dataclass(frozen=True)
class CandleArrays:
    """Per-candle raw (un-normalized) features of one series; built by :func:`candle_arrays`."""

    base: np.ndarray  # (N, C) float64; rows with bad[i] are zero
    bad: np.ndarray  # (N,) bool: candle i (or the close before it) is unusable
    dates: np.ndarray  # (N,) datetime64[ns] UTC, naive

    def __len__(self) -> int:
        return len(self.bad)


@dataclass(frozen=True)
class WindowBatch:
    """Normalized windows ready for the encoder."""

    x: np.ndarray  # (B, W, C) float32, zero where not valid
    valid: np.ndarray  # (B,) bool
    log_scale: np.ndarray  # (B,) float32: log std of the window's log returns (NaN if invalid)


def candle_arrays(df: pd.DataFrame) -> CandleArrays:
    """Per-candle features of a candle frame (columns open/high/low/close/volume[, date]).

    Candle ``i`` only looks at candles ``i`` and ``i-1`` (the previous close), so anything built
    on these arrays over candles ``<= t`` is causal. The first candle is always ``bad`` (no
    previous close).
    """
    missing = [c for c in ("open", "high", "low", "close", "volume") if c not in df.columns]
    if missing:
        raise DataError(f"candles lack column(s) {', '.join(missing)}")
    o, h, lo, c, v = (df[k].to_numpy(dtype="float64") for k in ("open", "high", "low", "close",
                                                                "volume"))
    n = len(df)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ok = (np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & np.isfinite(v)
              & (o > 0) & (h > 0) & (lo > 0) & (c > 0) & (v >= 0))
        prev_c = np.concatenate([[np.nan], c[:-1]])
        prev_ok = np.concatenate([[False], ok[:-1]])
        bad = ~(ok & prev_ok)
        base = np.stack([
            np.log(c / prev_c),
            (h - lo) / c,
            (c - o) / c,
            (h - np.maximum(o, c)) / c,
            (np.minimum(o, c) - lo) / c,
            np.log1p(v),
        ], axis=1) if n else np.zeros((0, N_FEATURES))
    base[bad] = 0.0
    if "date" in df.columns:
        dates = pd.to_datetime(df["date"], utc=True).dt.tz_localize(None).to_numpy()
    else:
        dates = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    return CandleArrays(base=base, bad=bad, dates=dates.astype("datetime64[ns]"))


def gather_windows(ca: CandleArrays, ends: np.ndarray, window: int,
                   clip: float = 20.0) -> WindowBatch:
    """Normalized windows ending at candle indices ``ends`` (any order, repeats allowed).

    Ends with fewer than ``window`` candles (plus the previous close) before them are invalid.
    """
    ends = np.asarray(ends, dtype=np.int64)
    b, n = len(ends), len(ca)
    x = np.zeros((b, window, N_FEATURES), dtype=np.float32)
    valid = np.zeros(b, dtype=bool)
    log_scale = np.full(b, np.nan, dtype=np.float32)
    full = (ends >= window) & (ends < n)  # candle ends-window holds the first previous close
    if not full.any() or n < window:
        return WindowBatch(x, valid, log_scale)
    idx = np.flatnonzero(full)
    starts = ends[idx] - window + 1
    base_w = sliding_window_view(ca.base, window, axis=0)  # (N-W+1, C, W), a view
    bad_w = sliding_window_view(ca.bad, window)  # (N-W+1, W)
    w = base_w[starts].transpose(0, 2, 1)  # (b', W, C) float64 copy
    ok = ~bad_w[starts].any(axis=1)
    sigma = w[:, :, 0].std(axis=1)  # (b',)
    ok &= sigma > _MIN_STD
    lv = w[:, :, 5]
    lv_std = lv.std(axis=1, keepdims=True)
    safe_sigma = np.where(ok, sigma, 1.0)[:, None, None]
    out = np.empty_like(w)
    out[:, :, _PRICE] = w[:, :, _PRICE] / safe_sigma
    # Constant volume (e.g. synthetic data) is not a reason to drop the window: z-score 0.
    out[:, :, 5] = np.where(lv_std > 0, (lv - lv.mean(axis=1, keepdims=True))
                            / np.where(lv_std > 0, lv_std, 1.0), 0.0)
    np.clip(out, -clip, clip, out=out)
    out[~ok] = 0.0
    x[idx] = out.astype(np.float32)
    valid[idx] = ok
    log_scale[idx] = np.where(ok, np.log(np.where(ok, sigma, 1.0)), np.nan)
    return WindowBatch(x, valid, log_scale)


def window_features(df: pd.DataFrame, window: int, clip: float = 20.0,
                    ends: np.ndarray | None = None) -> WindowBatch:
    """Windows ending at every candle of ``df`` (or at ``ends``): row t uses candles <= t only."""
    ca = candle_arrays(df)
    return gather_windows(ca, np.arange(len(ca)) if ends is None else ends, window, clip)


def valid_window_ends(ca: CandleArrays, window: int, clip: float = 20.0) -> np.ndarray:
    """Indices of the candles that end a complete, valid window (scanned in bounded chunks)."""
    out = []
    for lo in range(window, len(ca), _CHUNK):
        ends = np.arange(lo, min(lo + _CHUNK, len(ca)))
        out.append(ends[gather_windows(ca, ends, window, clip).valid])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class WindowSet:
    """A set of windows over one or more series: rows of ``(series id, end index)``."""

    series: tuple[CandleArrays, ...]
    index: np.ndarray  # (M, 2) int64
    window: int
    clip: float = 20.0

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, rows: np.ndarray) -> WindowBatch:
        """Gather the windows of ``rows`` (indices into :attr:`index`), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        sid, ends = self.index[rows, 0], self.index[rows, 1]
        x = np.zeros((len(rows), self.window, N_FEATURES), dtype=np.float32)
        valid = np.zeros(len(rows), dtype=bool)
        scale = np.full(len(rows), np.nan, dtype=np.float32)
        for s in np.unique(sid):
            pick = np.flatnonzero(sid == s)
            wb = gather_windows(self.series[s], ends[pick], self.window, self.clip)
            x[pick], valid[pick], scale[pick] = wb.x, wb.valid, wb.log_scale
        return WindowBatch(x, valid, scale)


@dataclass(frozen=True)
class TimeSplit:
    """Where a train/validation split by time fell."""

    split_time: np.datetime64 | None  # first candle time of the validation part
    first: np.datetime64 | None  # first and last candle seen (all series)
    last: np.datetime64 | None


def split_by_time(frames: Sequence[pd.DataFrame], window: int, val_frac: float,
                  stride: int = 1, clip: float = 20.0) -> tuple[WindowSet, WindowSet, TimeSplit]:
    """Train and validation windows: validation is the last ``val_frac`` of the time range.

    Every series is cut at the same timestamp ``T``. Train windows end before ``T``; validation
    windows start (previous close included) at or after ``T``, i.e. a gap of one window between
    the last train end and the first validation end, so no window straddles the cut and no
    candle is in both sets. ``stride`` keeps every stride-th window end (cheaper epochs).
    """
    series = tuple(candle_arrays(df) for df in frames)
    all_dates = [s.dates[~np.isnat(s.dates)] for s in series if len(s)]
    all_dates = [d for d in all_dates if len(d)]
    if not all_dates:
        raise DataError("no dated candles to split by time")
    first = min(d.min() for d in all_dates)
    last = max(d.max() for d in all_dates)
    split = None
    if val_frac > 0:
        split = first + (last - first) * (1.0 - val_frac)
    train_rows, val_rows = [], []
    for sid, s in enumerate(series):
        ends = valid_window_ends(s, window, clip)
        ends = ends[ends % stride == 0]
        if split is None:
            tr, va = ends, ends[:0]
        else:
            tr = ends[s.dates[ends] < split]
            va = ends[s.dates[ends - window] >= split]
        train_rows.append(np.stack([np.full(len(tr), sid), tr], axis=1))
        val_rows.append(np.stack([np.full(len(va), sid), va], axis=1))
    train = WindowSet(series, np.concatenate(train_rows).astype(np.int64), window, clip)
    val = WindowSet(series, np.concatenate(val_rows).astype(np.int64), window, clip)
    return train, val, TimeSplit(split, first, last)


# ----------------------------------------------------------------------------------------------
# Augmentations (training only; applied to normalized windows, randomness from the passed rng)

AUGMENTATIONS: tuple[str, ...] = ("jitter", "scale", "timewarp", "mixup")


def _smooth_curves(rng: np.random.Generator, b: int, length: int, knots: int, sigma: float,
                   channels: int) -> np.ndarray:
    """(b, length, channels) smooth random curves around 1 (linear between ``knots`` points)."""
    grid = np.linspace(0, length - 1, knots)
    pts = rng.normal(1.0, sigma, (b, knots, channels))
    t = np.arange(length)
    out = np.empty((b, length, channels))
    for i in range(b):
        for c in range(channels):
            out[i, :, c] = np.interp(t, grid, pts[i, :, c])
    return out


def augment(x: np.ndarray, valid: np.ndarray, kinds: Sequence[str],
            rng: np.random.Generator) -> np.ndarray:
    """Return an augmented copy of ``x`` (B, W, C); invalid rows stay zero.

    jitter: Gaussian noise (σ 0.05); scale: magnitude warping by a smooth curve per channel
    (σ 0.1); timewarp: resample each window along a smooth monotone time warp; mixup: convex
    mix with another valid window of the batch (λ ~ Beta(0.4, 0.4), kept ≥ 0.5 so the window
    stays mostly itself).
    """
    unknown = sorted(set(kinds) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; known: {', '.join(AUGMENTATIONS)}")
    out = x.astype(np.float64, copy=True)
    b, w, c = out.shape
    if "timewarp" in kinds:
        speed = _smooth_curves(rng, b, w, 4, 0.2, 1)[:, :, 0].clip(0.2, None)
        warp = np.cumsum(speed, axis=1)
        warp = (warp - warp[:, :1]) / (warp[:, -1:] - warp[:, :1]) * (w - 1)
        t = np.arange(w)
        for i in range(b):
            for ch in range(c):
                out[i, :, ch] = np.interp(t, warp[i], out[i, :, ch])
    if "scale" in kinds:
        out *= _smooth_curves(rng, b, w, 4, 0.1, c)
    if "jitter" in kinds:
        out += rng.normal(0.0, 0.05, out.shape)
    if "mixup" in kinds and valid.sum() > 1:
        pool = np.flatnonzero(valid)
        partner = rng.choice(pool, size=b)
        lam = rng.beta(0.4, 0.4, size=b)
        lam = np.maximum(lam, 1.0 - lam)[:, None, None]
        out = lam * out + (1.0 - lam) * out[partner]
    out[~valid] = 0.0
    return out.astype(np.float32)
