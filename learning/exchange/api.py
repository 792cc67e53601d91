"""The Binance responses of the local exchange, as Python objects (the HTTP layer is in
:mod:`learning.exchange.server`).

Each public method answers one endpoint for the pairs of a data dir as seen at ``now_fn()``;
requests Binance would refuse raise :class:`ApiError` with Binance's code and message.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from learning.core.errors import LearningError
from learning.exchange.market import MarketRules, fmt, kline_rows, symbol_info, synthetic_book
from learning.exchange.replay import (
    BINANCE_INTERVALS,
    CLOSE,
    DAY_MS,
    HIGH,
    LOW,
    OPEN,
    QUOTE_VOLUME,
    VOLUME,
    Replay,
    View,
    parse_interval,
)

log = logging.getLogger(__name__)

KLINES_DEFAULT, KLINES_MAX = 500, 1000
DEPTH_DEFAULT, DEPTH_MAX = 100, 5000
_CHUNK = 500  # formatted kline rows are cached in chunks of this many rows


class ApiError(LearningError):
    """A request Binance would refuse; answered as ``{"code": .., "msg": ..}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def invalid_symbol() -> ApiError:
    return ApiError(-1121, "Invalid symbol.")


class LocalExchange:
    """Binance responses for the pairs of ``datadir``, as seen at ``now_fn()``.

    The replay offset is fixed here, from the clock at construction. ``min_runway`` asks for at
    least that much data after the start (the offset grows by whole weeks); ``seed`` drives the
    synthetic order-book sizes.
    """

    def __init__(self, datadir: str | Path, now_fn: Callable[[], datetime] | None = None, *,
                 min_runway: timedelta = timedelta(0), seed: int = 0) -> None:
        self.now_fn = now_fn or (lambda: datetime.now(UTC))
        self.seed = seed
        self.replay = Replay(datadir, self.now(), min_runway)
        self.pairs = {p.replace("/", ""): p for p in self.replay.pairs}
        """Binance symbol id ('BTCUSDT') -> pair ('BTC/USDT')."""
        self.rules: dict[str, MarketRules] = {}
        for pair, data in self.replay.pairs.items():
            base = data.native[data.base.name]
            self.rules[pair] = MarketRules.from_price(float(base.values[-1, CLOSE]),
                                                      pair.split("/")[1])
        self._warned_end = False

    @property
    def offset(self) -> timedelta:
        """Replay time minus real time of every candle (a whole number of weeks)."""
        return self.replay.offset

    def now(self) -> datetime:
        now = self.now_fn()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now

    def now_ms(self) -> int:
        return int(self.now().timestamp() * 1000)

    # --- endpoints (each returns what the HTTP layer serialises) -----------------------------

    def server_time(self) -> dict:
        return {"serverTime": self.now_ms()}

    def exchange_info(self) -> dict:
        now = self.now_ms()
        symbols = []
        for symbol, pair in self.pairs.items():
            base, quote = pair.split("/")
            started = self.replay.last_price(pair, now) is not None
            symbols.append(symbol_info(symbol, base, quote, self.rules[pair],
                                       "TRADING" if started else "BREAK"))
        return {"timezone": "UTC", "serverTime": now, "rateLimits": [], "exchangeFilters": [],
                "symbols": symbols}

    def klines(self, symbol: str, interval: str, limit: int = KLINES_DEFAULT,
               start_ms: int | None = None, end_ms: int | None = None) -> list[list]:
        """Binance kline rows (see :meth:`klines_json`) as Python lists."""
        return json.loads(self.klines_json(symbol, interval, limit, start_ms, end_ms))

    def klines_json(self, symbol: str, interval: str, limit: int = KLINES_DEFAULT,
                    start_ms: int | None = None, end_ms: int | None = None) -> str:
        """With ``start_ms``: up to ``limit`` candles opened at/after it, ascending; without:
        the last ``limit`` up to ``end_ms``/now. The last candle at now is the one in progress.
        """
        pair = self._pair(symbol)
        iv = parse_interval(interval) if interval in BINANCE_INTERVALS else None
        if iv is None:
            raise ApiError(-1120, "Invalid interval.")
        now = self.now_ms()
        self._check_end(now)
        view = self.replay.view(pair, iv, now)
        if view is None:
            have = ", ".join(self.replay.pairs[pair].native)
            raise ApiError(-1120, f"Invalid interval. ({interval} cannot be built from the "
                                  f"{have} candles of {symbol})")
        limit = min(max(limit, 1), KLINES_MAX)
        hi = len(view) if end_ms is None else view.count_before(end_ms, inclusive=True)
        if start_ms is not None:
            lo = view.count_before(start_ms)
            hi = min(hi, lo + limit)
        else:
            lo = max(0, hi - limit)
        if lo >= hi:
            return "[]"
        rows = _complete_rows(view, lo, min(hi, view.complete))
        if hi > view.complete:
            t = np.array([view.progress_t], dtype=np.int64)
            rows += kline_rows(t, view.interval.end(t) - 1, view.progress[None, :])
        return "[" + ",".join(rows) + "]"

    def ticker_24hr(self, symbol: str) -> dict:
        """Rolling 24 h statistics at now, from the base candles (the last one in progress)."""
        pair = self._pair(symbol)
        now = self.now_ms()
        self._check_end(now)
        agg, prev_close = self.replay.window(pair, now - DAY_MS, now)
        last = self.replay.last_price(pair, now)
        if last is None:  # the pair has not started yet
            agg, last, prev_close = np.zeros(6), 0.0, 0.0
        elif agg is None:  # nothing traded for 24 h (the replay ran past the end of the data)
            agg, prev_close = np.array([last, last, last, last, 0.0, 0.0]), last
        book = self._book(pair, now, 1)
        vol, quote_vol = agg[VOLUME], agg[QUOTE_VOLUME]
        change = last - agg[OPEN]
        return {
            "symbol": symbol, "priceChange": fmt(change),
            "priceChangePercent": f"{100 * change / agg[OPEN] if agg[OPEN] else 0.0:.3f}",
            "weightedAvgPrice": fmt(quote_vol / vol if vol > 0 else last),
            "prevClosePrice": fmt(prev_close if np.isfinite(prev_close) else agg[OPEN]),
            "lastPrice": fmt(last), "lastQty": fmt(self.rules[pair].step),
            "bidPrice": book["bids"][0][0] if book["bids"] else fmt(0.0),
            "bidQty": book["bids"][0][1] if book["bids"] else fmt(0.0),
            "askPrice": book["asks"][0][0] if book["asks"] else fmt(0.0),
            "askQty": book["asks"][0][1] if book["asks"] else fmt(0.0),
            "openPrice": fmt(agg[OPEN]), "highPrice": fmt(agg[HIGH]), "lowPrice": fmt(agg[LOW]),
            "volume": fmt(vol), "quoteVolume": fmt(quote_vol),
            "openTime": now - DAY_MS, "closeTime": now, "firstId": -1, "lastId": -1, "count": 0,
        }

    def tickers_24hr(self, symbols: list[str] | None = None) -> list[dict]:
        return [self.ticker_24hr(s) for s in (symbols if symbols is not None else self.pairs)]

    def depth(self, symbol: str, limit: int = DEPTH_DEFAULT) -> dict:
        """A synthetic book around the price at now: one-tick spread, best price first."""
        pair = self._pair(symbol)
        now = self.now_ms()
        return self._book(pair, now, min(max(limit, 1), DEPTH_MAX))

    # --- helpers ------------------------------------------------------------------------------

    def _pair(self, symbol: str) -> str:
        pair = self.pairs.get(symbol)
        if pair is None:
            raise invalid_symbol()
        return pair

    def _book(self, pair: str, now: int, levels: int) -> dict:
        last = self.replay.last_price(pair, now)
        if last is None:
            return {"lastUpdateId": now, "bids": [], "asks": []}
        agg, _ = self.replay.window(pair, now - DAY_MS, now)
        per_minute = float(agg[VOLUME]) / 1440 if agg is not None else 0.0
        # Sizes change once a second and are the same for every caller in that second.
        seed = [self.seed, zlib.crc32(pair.encode()), now // 1000]
        book = synthetic_book(last, self.rules[pair], per_minute, levels, seed)
        return book.as_binance(now)

    def _check_end(self, now: int) -> None:
        if not self._warned_end and now > self.replay.end_ms + DAY_MS // 288:
            self._warned_end = True
            log.warning("the replay ran past the end of the data (%s): no new candles will "
                        "appear; restart the exchange (and use a fresh scratch datadir) to go on",
                        datetime.fromtimestamp(self.replay.end_ms / 1000, UTC))


def _complete_rows(view: View, lo: int, hi: int) -> list[str]:
    """Formatted rows view.series[lo:hi], cached by chunk (the series never changes)."""
    out: list[str] = []
    for chunk in range(lo // _CHUNK, (hi - 1) // _CHUNK + 1) if hi > lo else ():
        a = chunk * _CHUNK
        rows = view.cache.get(chunk)
        if rows is None:
            t = view.series.t[a:a + _CHUNK]
            rows = kline_rows(t, view.interval.end(t) - 1, view.series.values[a:a + _CHUNK])
            view.cache[chunk] = rows
        out.extend(rows[max(lo - a, 0):hi - a])
    return out
