"""BOCD changepoint alarms against the regime detector's CRISIS flag: delay and false alarms.

1. Synthetic market (learning.data.synth, crashes known by construction), 1h: for every complete
   crash, hours from its first candle to the close of the first candle with an alarm (BOCD above
   ``block_above``, BOCD above ``exit_above``, CRISIS), and false alarms per month (alarm onsets
   outside every crash's window: its first candle to its crisis segment's end plus a day).
   Seeds 2 3 4 (the regime detector was tuned on seed 1).
2. Real BTC/USDT 1h since 2021: every episode where the close fell more than 10% below its
   highest close of the last 48 h (the episode starts at the candle after that high; it ends at
   the last candle still 10% down, merged when less than 48 h apart). Delay of the first alarm
   (up to the episode's end plus 48 h, else a miss) and false alarms per month (onsets outside
   every episode's window), per period: 2021-06..2022-12, validation 2023-01..2024-12, test
   2025-01..2026-02.
3. ``--sweep``: hazard, window and the downside filter on the validation period only (that is
   where the defaults come from; the test period is reported, never tuned on).
4. ``--frontier``: the delay / false-alarm trade-off of plain price-drop rules (close ``x``
   below its ``h``-hour high) on the same real episodes: where the goal of issue 14 sits.

    python benchmarks/bench_changepoint.py [--datadir DIR] [--seeds 2 3 4] [--days 400] [--sweep]
        [--frontier] [--skip-synthetic]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from learning.brain.changepoint import ChangepointConfig, ChangepointDetector  # noqa: E402
from learning.brain.config import RegimeSettings  # noqa: E402
from learning.brain.regime import RegimeDetector, regime_features  # noqa: E402
from learning.data.candles import default_data_dir, load_candles  # noqa: E402
from learning.data.synth import SynthConfig, generate_market, resample_candles  # noqa: E402

PERIODS = {"2021-06..2022-12": ("2021-01-01", "2023-01-01"),
           "validation 2023-01..2024-12": ("2023-01-01", "2025-01-01"),
           "test 2025-01..2026-02": ("2025-01-01", "2026-03-01")}
HOURS_PER_MONTH = 730.5


def episodes_real(close: np.ndarray, fall: float = 0.10, span: int = 48) -> list[tuple[int, int]]:
    """(first crash candle, last candle) of every fall of more than ``fall`` within ``span``."""
    peak = pd.Series(close).rolling(span + 1, min_periods=1).max().to_numpy()
    hit = np.flatnonzero(close <= peak * (1 - fall))
    out: list[list[int]] = []
    for t in hit:
        lo = max(0, t - span)
        start = lo + int(np.argmax(close[lo:t + 1])) + 1
        if out and start <= out[-1][1] + span:
            out[-1][1] = t
        else:
            out.append([start, t])
    return [(a, b) for a, b in out]


def score(alarm: np.ndarray, episodes: list[tuple[int, int]], lo: int, hi: int,
          grace: int) -> tuple[list[float], int, float]:
    """Delays (h; NaN = missed), false onsets and months of the rows [lo, hi)."""
    delays = []
    covered = np.zeros(len(alarm), dtype=bool)
    for a, b in episodes:
        if not lo <= a < hi:
            continue
        end = min(b + grace, len(alarm) - 1)
        covered[a:end + 1] = True
        hits = np.flatnonzero(alarm[a:end + 1])
        delays.append(float(hits[0] + 1) if hits.size else np.nan)  # close of the alarm candle
    onsets = np.flatnonzero(alarm & ~np.r_[False, alarm[:-1]])
    onsets = onsets[(onsets >= lo) & (onsets < hi)]
    false = int((~covered[onsets]).sum())
    return delays, false, (hi - lo) / HOURS_PER_MONTH


def line(name: str, delays: list[float], false: int, months: float) -> str:
    d = np.array(delays)
    hit = d[np.isfinite(d)]
    med = f"median {np.median(hit):.0f} h" if hit.size else "median -"
    return (f"  {name:<18} detected {hit.size}/{d.size}, {med}, delays "
            + ", ".join("miss" if np.isnan(x) else f"{x:.0f}" for x in d)
            + f"; false alarms {false} ({false / months:.2f}/month)")


def alarms(cp: np.ndarray, crisis: np.ndarray, cfg: ChangepointConfig) -> dict[str, np.ndarray]:
    p = np.nan_to_num(cp, nan=0.0)
    return {f"BOCD > {cfg.block_above}": p > cfg.block_above,
            f"BOCD > {cfg.exit_above}": p > cfg.exit_above,
            "CRISIS": crisis,
            "BOCD or CRISIS": (p > cfg.block_above) | crisis}


def synthetic(args: argparse.Namespace, cfg: ChangepointConfig) -> None:
    reg = RegimeSettings().detector
    print(f"== synthetic market: {args.days} days, 1h, seeds {args.seeds}")
    total: dict[str, list] = {}
    for seed in args.seeds:
        market = generate_market(SynthConfig(seed=seed, days=args.days))
        c1 = {p: resample_candles(df, "1h") for p, df in market.candles.items()}
        btc = c1["BTC/USDT"]
        out = RegimeDetector(reg).detect(regime_features(
            btc, {p: d for p, d in c1.items() if p != "BTC/USDT"}, reg))
        crisis = (out["regime"] == "CRISIS").to_numpy()
        cp = ChangepointDetector(cfg, "1h").probabilities(btc)
        dates = btc["date"]
        segs = market.regimes.set_index("date")
        eps = []
        for _, ep in market.crashes.iterrows():
            if not ep["complete"]:
                continue
            seg = segs.loc[ep["start"]:, "segment"].iloc[0]
            seg_end = segs.index[(segs["segment"] == seg).to_numpy()][-1]
            a = int(np.searchsorted(dates, ep["start"].floor("1h")))
            b = int(np.searchsorted(dates, seg_end.floor("1h")))
            eps.append((a, b))
        for name, alarm in alarms(cp, crisis, cfg).items():
            d, f, m = score(alarm, eps, 0, len(btc), grace=24)
            acc = total.setdefault(name, [[], 0, 0.0])
            acc[0] += d
            acc[1] += f
            acc[2] += m
    for name, (d, f, m) in total.items():
        print(line(name, d, f, m))


def real(args: argparse.Namespace, cfg: ChangepointConfig) -> None:
    btc = load_candles(args.datadir, "BTC/USDT", "1h")
    btc = btc[btc["date"] >= "2021-01-01"].reset_index(drop=True)
    others = {}
    for p in ("ETH/USDT", "SOL/USDT", "XRP/USDT"):
        try:
            others[p] = load_candles(args.datadir, p, "1h")
        except Exception:  # a pair missing from the folder: fewer peers in the dispersion
            continue
    reg = RegimeSettings().detector
    t0 = time.perf_counter()
    out = RegimeDetector(reg).detect(regime_features(btc, others, reg))
    t1 = time.perf_counter()
    crisis = (out["regime"] == "CRISIS").to_numpy()
    cp = ChangepointDetector(cfg, "1h").probabilities(btc)
    t2 = time.perf_counter()
    print(f"\n== real BTC/USDT 1h {btc['date'].iloc[0]:%Y-%m-%d} .. "
          f"{btc['date'].iloc[-1]:%Y-%m-%d} ({len(btc)} candles; regime walk-forward "
          f"{t1 - t0:.0f} s, BOCD {t2 - t1:.1f} s)")
    close = btc["close"].to_numpy(dtype="float64")
    eps = episodes_real(close)
    dates = btc["date"]
    for period, (a, b) in PERIODS.items():
        lo, hi = int(np.searchsorted(dates, pd.Timestamp(a, tz="UTC"))), \
            int(np.searchsorted(dates, pd.Timestamp(b, tz="UTC")))
        starts = [f"{dates.iloc[s]:%Y-%m-%d %H}h" for s, _ in eps if lo <= s < hi]
        print(f" {period}: {len(starts)} episodes ({', '.join(starts)})")
        for name, alarm in alarms(cp, crisis, cfg).items():
            print(line(name, *score(alarm, eps, lo, hi, grace=48)))


def sweep(args: argparse.Namespace, base: ChangepointConfig) -> None:
    btc = load_candles(args.datadir, "BTC/USDT", "1h")
    btc = btc[btc["date"] >= "2021-01-01"].reset_index(drop=True)
    close = btc["close"].to_numpy(dtype="float64")
    eps = episodes_real(close)
    a, b = PERIODS["validation 2023-01..2024-12"]
    lo = int(np.searchsorted(btc["date"], pd.Timestamp(a, tz="UTC")))
    hi = int(np.searchsorted(btc["date"], pd.Timestamp(b, tz="UTC")))
    print("\n== sweep on the validation period only (BOCD > block_above)")
    for hazard in ("3d", "10d", "30d"):
        for window in ("3h", "6h", "12h"):
            for down in (True, False):
                cfg = dataclasses.replace(base, hazard=hazard, window=window, downside_only=down)
                cp = np.nan_to_num(ChangepointDetector(cfg, "1h").probabilities(btc), nan=0.0)
                d, f, m = score(cp > cfg.block_above, eps, lo, hi, grace=48)
                print(line(f"h={hazard} w={window} down={int(down)}", d, f, m))


def frontier(args: argparse.Namespace) -> None:
    """What a plain price rule reaches: an alarm while BTC's close is ``x`` below its high of
    the last ``h`` hours, per period. Any causal detector that fires earlier must fire on
    smaller falls, and most small falls do not become a crash: the delay / false-alarm
    trade-off of this rule shows where the issue's goal sits."""
    btc = load_candles(args.datadir, "BTC/USDT", "1h")
    btc = btc[btc["date"] >= "2021-01-01"].reset_index(drop=True)
    close = btc["close"].to_numpy(dtype="float64")
    eps = episodes_real(close)
    print("\n== frontier: alarm while the close is x below its h-hour high")
    for period, (a, b) in PERIODS.items():
        lo = int(np.searchsorted(btc["date"], pd.Timestamp(a, tz="UTC")))
        hi = int(np.searchsorted(btc["date"], pd.Timestamp(b, tz="UTC")))
        print(f" {period}")
        for h in (6, 12, 48):
            peak = pd.Series(close).rolling(h + 1, min_periods=1).max().to_numpy()
            for x in (0.02, 0.03, 0.04, 0.05, 0.06):
                print(line(f"{x:.0%} below {h}h high", *score(close <= peak * (1 - x), eps,
                                                               lo, hi, grace=48)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datadir", type=Path, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--days", type=int, default=400)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--frontier", action="store_true",
                    help="also the delay / false-alarm trade-off of plain price-drop rules")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    cfg = ChangepointConfig(enabled=True)
    print(f"BOCD settings: {dataclasses.asdict(cfg)}")
    if not args.skip_synthetic:
        synthetic(args, cfg)
    args.datadir = args.datadir or default_data_dir()
    if args.datadir is None or not Path(args.datadir).is_dir():
        print("no real candles ($ADVL_DATA_DIR or --datadir): real-data part skipped")
        return 0
    real(args, cfg)
    if args.sweep:
        sweep(args, cfg)
    if args.frontier:
        frontier(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
