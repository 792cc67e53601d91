"""Latency of the local exchange's klines endpoint on the real candles.

Starts the server in-process on 127.0.0.1 (any free port) and times, over one keep-alive HTTP
connection (as ccxt uses), requests of 1000 candles: the newest 1000 (what a dry-run asks at each
candle) and 1000 from a random startTime (download paging). References in the same process: the
same call without HTTP, and ccxt's fetch_ohlcv end to end.

    python benchmarks/bench_exchange.py [--datadir DIR] [--requests 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from learning.data.candles import DATA_DIR_ENV, default_data_dir
from learning.exchange.server import LocalExchange, serve


def timed(fn: Callable[[], object], n: int) -> np.ndarray:
    """Milliseconds of each of ``n`` calls."""
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - t0) * 1000
    return out


def summary(name: str, ms: np.ndarray) -> float:
    median, p99 = np.median(ms), np.percentile(ms, 99)
    print(f"{name:<44} n={len(ms):4d}  median {median:7.3f} ms  p99 {p99:7.3f} ms")
    return float(median)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datadir", type=Path, default=default_data_dir(),
                        help=f"candle files (default ${DATA_DIR_ENV})")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.datadir is None:
        print(f"set ${DATA_DIR_ENV} or pass --datadir", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    exchange = LocalExchange(args.datadir)
    print(f"loaded {len(exchange.pairs)} pairs from {args.datadir} in "
          f"{time.perf_counter() - t0:.2f} s (offset {exchange.offset.days // 7} weeks)")
    symbols = list(exchange.pairs)
    now = exchange.now_ms()

    with serve(exchange) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)

        def get(query: str) -> int:
            conn.request("GET", f"/api/v3/klines?{query}")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body[:200]
            return len(body)

        # Cold: the first request of each series formats its rows (cached afterwards).
        cold = np.concatenate([timed(lambda s=s, iv=iv: get(f"symbol={s}&interval={iv}"
                                                             "&limit=1000"), 1)
                               for s in symbols for iv in ("5m", "15m", "1h", "4h")])
        summary("cold: first 1000 of each pair x (5m,15m,1h,4h)", cold)

        n = args.requests
        picks = iter(rng.integers(0, len(symbols), 10 * n).tolist())
        latest = timed(lambda: get(f"symbol={symbols[next(picks)]}&interval=5m&limit=1000"), n)
        base = summary("HTTP klines 5m, newest 1000", latest)

        # Random pages over the last 300 days (mostly not yet formatted: cold chunks included).
        starts = iter((now - rng.integers(4, 300, n) * 86_400_000).tolist())
        paged = timed(lambda: get(f"symbol={symbols[next(picks)]}&interval=5m&limit=1000"
                                  f"&startTime={next(starts)}"), n)
        summary("HTTP klines 5m, 1000 from random startTime", paged)
        again = iter((now - rng.integers(4, 300, n) * 86_400_000).tolist())
        warm = timed(lambda: get(f"symbol={symbols[next(picks)]}&interval=5m&limit=1000"
                                 f"&startTime={next(again)}"), n)
        summary("HTTP klines 5m, random startTime, 2nd pass", warm)
        hourly = timed(lambda: get(f"symbol={symbols[next(picks)]}&interval=1h&limit=1000"), n)
        summary("HTTP klines 1h (native+resampled), newest", hourly)
        conn.close()

        inproc = timed(lambda: exchange.klines_json(symbols[next(picks)], "5m", 1000), n)
        ref = summary("reference: klines_json in-process (no HTTP)", inproc)

        import ccxt

        client = ccxt.binance({"urls": {"api": {"public": server.api_url}},
                               "enableRateLimit": False,
                               "options": {"fetchMarkets": {"types": ["spot"]}}})
        client.load_markets()
        pairs = list(exchange.pairs.values())
        via_ccxt = timed(lambda: client.fetch_ohlcv(pairs[next(picks)], "5m", limit=1000),
                         max(20, n // 5))
        ccxt_median = summary("reference: ccxt fetch_ohlcv 1000 (end to end)", via_ccxt)

    size = len(exchange.klines_json(symbols[0], "5m", 1000))
    print(f"response size: {size / 1024:.0f} KiB for 1000 candles")
    print(f"HTTP overhead: {base / ref:.1f}x the in-process call; ccxt end to end is "
          f"{ccxt_median / base:.1f}x the raw HTTP request")
    print(json.dumps({"median_ms": round(base, 3), "p99_ms": round(float(
        np.percentile(latest, 99)), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
