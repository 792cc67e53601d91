"""Reading and checking freqtrade candle files (``<BASE>_<QUOTE>-<tf>.feather``).

One loader for the exchange, the generator's tests, the encoder and the benchmarks. Errors name
the file and the problem; nothing here silently drops or repairs data (the strategy decides what
to do with bad rows, see :func:`bad_row_mask`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from learning.core.errors import DataError

OHLCV = ["date", "open", "high", "low", "close", "volume"]
DATA_DIR_ENV = "ADVL_DATA_DIR"
# Spot files only: futures files carry a "-futures"/"-mark" suffix that we do not serve.
_FILE_RE = re.compile(r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)-(?P<tf>\d+[smhdwM])\.feather$")


_TF_UNITS = {"m": 1, "h": 60, "d": 1440, "w": 10080}


def timeframe_to_minutes(timeframe: str) -> int:
    """'5m' -> 5, '1h' -> 60, '1d' -> 1440 (freqtrade's notation; importing freqtrade for this
    would cost seconds at every CLI start)."""
    m = re.fullmatch(r"(\d+)([mhdw])", timeframe or "")
    if not m:
        raise DataError(f"unsupported timeframe {timeframe!r} (use e.g. 5m, 1h, 4h, 1d)")
    return int(m[1]) * _TF_UNITS[m[2]]


def pair_to_filename(pair: str, timeframe: str) -> str:
    """'BTC/USDT', '5m' -> 'BTC_USDT-5m.feather' (freqtrade's spot naming)."""
    return f"{pair.replace('/', '_')}-{timeframe}.feather"


def list_pairs(datadir: str | Path) -> dict[str, list[str]]:
    """Map each spot pair found in ``datadir`` to its timeframes, sorted by length."""
    datadir = Path(datadir)
    if not datadir.is_dir():
        raise DataError(f"data dir {datadir} does not exist")
    found: dict[str, list[str]] = {}
    for path in sorted(datadir.glob("*.feather")):
        m = _FILE_RE.match(path.name)
        if m:
            found.setdefault(f"{m['base']}/{m['quote']}", []).append(m["tf"])
    if not found:
        raise DataError(
            f"data dir {datadir} holds no candle files (expected e.g. BTC_USDT-5m.feather); "
            "run `ftlearn make-data` or `freqtrade download-data`")
    return {p: sorted(tfs, key=timeframe_to_minutes) for p, tfs in found.items()}


def load_candles(datadir: str | Path, pair: str, timeframe: str) -> pd.DataFrame:
    """Load one pair/timeframe as a DataFrame with a UTC ``date`` column, sorted and unique.

    Raises :class:`DataError` naming the file when it is missing, unreadable or lacks columns.
    NaN values and zero volume are kept (see :func:`bad_row_mask`).
    """
    path = Path(datadir) / pair_to_filename(pair, timeframe)
    if not path.is_file():
        available = ""
        try:
            tfs = list_pairs(datadir).get(pair)
            available = f"; available for {pair}: {', '.join(tfs)}" if tfs else (
                f"; {pair} is not in the data dir")
        except DataError:
            pass
        raise DataError(f"no candles for {pair} {timeframe}: {path} is missing{available}")
    try:
        df = pd.read_feather(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path} is not a readable feather file ({err})") from err
    missing = [c for c in OHLCV if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}")
    df = df[OHLCV].copy()
    df["date"] = pd.to_datetime(df["date"], utc=True)
    for col in OHLCV[1:]:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df = df.sort_values("date").drop_duplicates("date", keep="last").reset_index(drop=True)
    return df


def bad_row_mask(df: pd.DataFrame) -> np.ndarray:
    """True where a candle cannot be trusted: NaN/inf OHLCV, zero volume or inconsistent OHLC."""
    o, h, lo, c, v = (df[k].to_numpy(dtype="float64") for k in ("open", "high", "low", "close",
                                                                 "volume"))
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & np.isfinite(v)
        consistent = (h >= np.maximum(o, c)) & (lo <= np.minimum(o, c)) & (lo > 0)
        return ~(finite & consistent & (v > 0))


@dataclass(frozen=True)
class CandleReport:
    """What :func:`check_candles` found in one series."""

    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    bad_rows: int
    gaps: int
    largest_gap: pd.Timedelta

    @property
    def ok(self) -> bool:
        return self.rows > 0 and self.bad_rows == 0 and self.gaps == 0


def check_candles(df: pd.DataFrame, timeframe: str) -> CandleReport:
    """Count bad rows and gaps (missing candles) in a loaded series."""
    if df.empty:
        return CandleReport(0, None, None, 0, 0, pd.Timedelta(0))
    step = pd.Timedelta(minutes=timeframe_to_minutes(timeframe))
    diffs = df["date"].diff().dropna()
    gaps = diffs[diffs > step]
    return CandleReport(
        rows=len(df), first=df["date"].iloc[0], last=df["date"].iloc[-1],
        bad_rows=int(bad_row_mask(df).sum()), gaps=len(gaps),
        largest_gap=gaps.max() if len(gaps) else pd.Timedelta(0))


def default_data_dir() -> Path | None:
    """The test/benchmark data dir from ``$ADVL_DATA_DIR``, if set and present."""
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value) if value and Path(value).is_dir() else None
