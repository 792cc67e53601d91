"""Durations in configuration ("90m", "36h", "2d", "1w") and their length in candles.

Every window, horizon and warm-up of the plugin is a duration, so one configuration means the same
thing at 5m, 15m, 1h and 4h; it is turned into a number of candles of the timeframe in force once
that timeframe is final (freqtrade applies the config's ``timeframe`` after the strategy's
``__init__``).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from learning.core.errors import ConfigError

_UNITS = {"m": 1, "h": 60, "d": 1440, "w": 10080}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([mhdw])$")


def parse_duration(text: str) -> timedelta:
    """``"36h"`` -> 36 hours. Raises :class:`ConfigError` naming the text when it is not one."""
    m = _DURATION.match(str(text).strip())
    if not m or float(m[1]) <= 0:
        raise ConfigError(f"{text!r} is not a duration like 90m, 36h, 2d or 1w")
    return timedelta(minutes=float(m[1]) * _UNITS[m[2]])


def minutes_of(timeframe: str) -> int:
    """'5m' -> 5, '1h' -> 60, '4h' -> 240, '1d' -> 1440."""
    m = re.fullmatch(r"(\d+)([mhdw])", timeframe or "")
    if not m or int(m[1]) <= 0:
        raise ConfigError(f"unsupported timeframe {timeframe!r} (use e.g. 5m, 1h, 4h, 1d)")
    return int(m[1]) * _UNITS[m[2]]


def candles(duration: str | timedelta, timeframe: str, minimum: int = 1) -> int:
    """Candles of ``timeframe`` that cover ``duration`` (rounded up, at least ``minimum``)."""
    span = parse_duration(duration) if isinstance(duration, str) else duration
    return max(minimum, math.ceil(span / timedelta(minutes=minutes_of(timeframe)) - 1e-9))
