"""Speed of the learning brain inside the strategy (FreqAI model excluded).

1. ``populate_indicators`` of AdvancedLearning for 12 months of 5m on one pair, with its
   informative frames (goal: at most 10 s).
2. The per-candle decision (scores lookup, regime, learner, Thompson weights, guard check) per
   pair: p50 / p99 (goal: p99 at most 5 ms).
3. Live cadence: ``populate_indicators`` on a sliding 4900-candle frame each new candle
   (what freqtrade does in dry/live), p50 / p99.

    python benchmarks/bench_brain.py [--datadir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from freqtrade.enums import RunMode

from learning.data.candles import default_data_dir, load_candles
from learning.exchange.localrun import REPO_ROOT

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


class DP:
    def __init__(self, frames, end):
        self.frames, self.end = frames, end

    def get_pair_dataframe(self, pair, timeframe):
        df = self.frames[(pair, timeframe)]
        step = pd.Timedelta(timeframe.replace("m", "min"))
        return df[df["date"] + step <= self.end]


def strategy(tmp: Path):
    from strategies.AdvancedLearning import AdvancedLearning

    cfg = json.loads((REPO_ROOT / "config.json").read_text())
    cfg.update({"user_data_dir": str(tmp), "runmode": RunMode.BACKTEST})
    return AdvancedLearning(cfg)


def main() -> None:
    import sys

    sys.path.insert(0, str(REPO_ROOT))
    ap = argparse.ArgumentParser()
    ap.add_argument("--datadir", type=Path, default=default_data_dir())
    args = ap.parse_args()
    start, end = pd.Timestamp("2025-02-01", tz="UTC"), pd.Timestamp("2026-02-01", tz="UTC")
    frames = {}
    for p in PAIRS:
        for tf, pad in (("5m", 17), ("1h", 204)):
            df = load_candles(args.datadir, p, tf)
            frames[(p, tf)] = df[(df["date"] >= start - timedelta(days=pad))
                                 & (df["date"] < end)].reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp:
        s = strategy(Path(tmp))
        s.dp = DP(frames, end)
        df = frames[("ETH/USDT", "5m")].copy()
        t0 = time.perf_counter()
        out = s.populate_indicators(df, {"pair": "ETH/USDT"})
        t_full = time.perf_counter() - t0
        for p in PAIRS:
            if p != "ETH/USDT":
                s.populate_indicators(frames[(p, "5m")].copy(), {"pair": p})
        print(f"populate_indicators, 12 months of 5m ({len(out)} rows incl. startup), one pair "
              f"(first pair: includes the regime walk-forward on 1h): {t_full:.2f} s "
              "(goal <= 10 s)")
        # Decisions at random candles of the year, as custom_stake_amount takes them.
        rng = np.random.default_rng(0)
        dates = out["date"].iloc[5000:].sample(2000, random_state=1).sort_values()
        s.guard.observe(dates.iloc[0].to_pydatetime(), 10_000.0)
        lat = []
        for d in dates:
            now = (d + timedelta(minutes=5)).to_pydatetime()
            pair = PAIRS[int(rng.integers(3))]
            t0 = time.perf_counter()
            dec = s.decide_entry(pair, now, None)
            s.guard.check_stake(now, 10_000.0, 1000.0, crisis=s.crisis(now))
            lat.append(time.perf_counter() - t0)
            assert dec is not None
        lat_ms = np.array(lat) * 1e3
        p50, p99 = np.percentile(lat_ms, 50), np.percentile(lat_ms, 99)
        print(f"per-candle decision (all tiers, FreqAI excluded): p50 {p50:.3f} ms, "
              f"p99 {p99:.3f} ms over {len(lat)} decisions (goal p99 <= 5 ms)")
        # Live cadence: a fresh strategy, frames growing candle by candle.
        s2 = strategy(Path(tmp) / "live")
        t_end = pd.Timestamp("2025-11-01", tz="UTC")
        lat2 = []
        for k in range(60):
            now = t_end + timedelta(minutes=5 * k)
            s2.dp = DP(frames, now)
            window = s2.dp.get_pair_dataframe("ETH/USDT", "5m").iloc[-4900:].copy()
            t0 = time.perf_counter()
            s2.populate_indicators(window, {"pair": "ETH/USDT"})
            lat2.append(time.perf_counter() - t0)
        lat2 = np.array(lat2[1:]) * 1e3  # the first call includes the regime walk-forward
        print(f"live populate_indicators per new candle (4900-candle frame, incremental regime):"
              f" p50 {np.percentile(lat2, 50):.1f} ms, p99 {np.percentile(lat2, 99):.1f} ms")


if __name__ == "__main__":
    main()
