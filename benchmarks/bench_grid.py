"""The bench grid on several workers: wall time of the same grid of rule/brain variants with 1
and 2 local worker processes (and, with --ray, a local Ray instance), same figures required.

The grid: AdvancedLearning's brain with rule sizing (with and without the meta-learner, no
FreqAI model) and freqtrade's SampleStrategy, on real candles, two seeds: six independent
freqtrade backtests. All runs happen in this process one after another, so the ratio compares
like with like; on a machine shared with other work the figure moves with their load (say so
when quoting it).

    ADVL_DATA_DIR=../shared/data/binance python benchmarks/bench_grid.py \
        [--timerange 20251201-20260101] [--ray]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from learning.bench import runner as B
from learning.bench import variants as BV
from learning.bench.pool import run_bench
from learning.data.candles import default_data_dir

PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def grid() -> list[BV.Variant]:
    """Rule sizing and no FreqAI model (no training before the backtests): the brain with the
    meta-learner, the brain with Balanced only, and SampleStrategy."""
    table = {v.name: v for v in BV.VARIANTS}
    return [table["full"], table["no_meta"], table["sample_strategy"]]


def figures(result: B.BenchResult) -> dict[str, dict]:
    return {r.job_id: {k: v for k, v in r.metrics.items() if not k.startswith("dsr")}
            for r in result.results}


def timed(label: str, spec: B.BenchSpec, **kw) -> tuple[float, dict]:
    t0 = time.perf_counter()
    result = run_bench(spec, grid(), pd.Timestamp.now(tz="UTC"), progress=lambda m: None,
                       seeds=(0, 1), **kw)
    wall = time.perf_counter() - t0
    bad = [r.job_id for r in result.results if r.status != "ok"]
    print(f"{label:28} {wall:7.1f} s  ({len(result.results)} jobs"
          + (f", FAILED: {bad})" if bad else ")"), flush=True)
    return wall, figures(result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datadir", type=Path, default=default_data_dir())
    ap.add_argument("--timerange", default="20251201-20260101")
    ap.add_argument("--ray", action="store_true", help="also a local Ray instance (2 CPUs)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        def spec(name: str) -> B.BenchSpec:
            return B.BenchSpec(Path(args.datadir).resolve(), PAIRS, "5m", args.timerange, 0.001,
                               10_000.0, Path(tmp) / name, timeout=3600)

        print(f"grid: {', '.join(v.name for v in grid())} x seeds 0,1 on {', '.join(PAIRS)} "
              f"5m {args.timerange}")
        one, f1 = timed("--workers 1", spec("w1"), workers=1)
        two, f2 = timed("--workers 2", spec("w2"), workers=2)
        print(f"speed-up 2 workers vs 1: {one / two:.2f}x; same figures: {f1 == f2}")
        if args.ray:
            from learning.bench.ray_backend import RayBackend

            backend = RayBackend.connect(None, num_cpus=2, include_dashboard=False)
            try:
                ray_wall, fr = timed("Ray (local, 2 CPUs)", spec("ray"), backend=backend)
            finally:
                backend.shutdown()
            print(f"Ray vs process pool (2): {ray_wall / two:.2f}x the wall time; same figures: "
                  f"{fr == f2}")


if __name__ == "__main__":
    main()
