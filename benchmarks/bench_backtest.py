"""Backtest wall time of AdvancedLearning against freqtrade's SampleStrategy on the same data.

Both run through the real freqtrade CLI against the local exchange (same pairs, timerange, fee),
alternating, so machine noise hits both alike; the figure is the ratio of median wall times.

A third run, ``SampleCallbacks``, is SampleStrategy with position adjustment on and trivial
``custom_exit`` / ``custom_stoploss`` / ``adjust_trade_position`` (each returns "no change"). It
measures the floor freqtrade itself puts under any strategy that implements those callbacks:
freqtrade deep-copies the trade before calling each user callback (strategy_wrapper.py), once per
open trade per candle, whatever the callback does.

    python benchmarks/bench_backtest.py [--datadir DIR] [--timerange 20250201-20260201] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import freqtrade

from learning.data.candles import default_data_dir
from learning.exchange.localrun import REPO_ROOT, freqtrade_backtest, local_exchange, require_ok

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]

SAMPLE_CALLBACKS = '''
from sample_strategy import SampleStrategy


class SampleCallbacks(SampleStrategy):
    """SampleStrategy plus the three per-candle trade callbacks, each a no-op."""

    position_adjustment_enable = True
    use_custom_stoploss = True

    def custom_exit(self, pair, trade, current_time, current_rate, current_profit, **kwargs):
        return None

    def custom_stoploss(self, pair, trade, current_time, current_rate, current_profit,
                        after_fill, **kwargs):
        return None

    def adjust_trade_position(self, trade, current_time, current_rate, current_profit,
                              min_stake, max_stake, **kwargs):
        return None
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datadir", type=Path, default=default_data_dir())
    ap.add_argument("--timerange", default="20250201-20260201")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if args.datadir is None:
        raise SystemExit("set ADVL_DATA_DIR or pass --datadir")
    with tempfile.TemporaryDirectory(prefix="bench-bt-") as tmp:
        tmp = Path(tmp)
        sample_dir = tmp / "strategies"
        sample_dir.mkdir()
        shutil.copy(Path(freqtrade.__file__).parent / "templates/sample_strategy.py",
                    sample_dir / "sample_strategy.py")
        (sample_dir / "sample_callbacks.py").write_text(SAMPLE_CALLBACKS)
        user = tmp / "user_data"
        user.mkdir()
        overlay = tmp / "bench.json"
        overlay.write_text(json.dumps({"user_data_dir": str(user),
                                       "exchange": {"pair_whitelist": PAIRS}}))
        times: dict[str, list[float]] = {"AdvancedLearning": [], "SampleStrategy": [],
                                          "SampleCallbacks": []}
        trades: dict[str, int] = {}
        with local_exchange(args.datadir, tmp / "ex") as ex:
            for r in range(args.rounds):
                for name in times:
                    extra = ["--strategy-path", str(sample_dir)] \
                        if name.startswith("Sample") else []
                    t0 = time.perf_counter()
                    run = require_ok(freqtrade_backtest(
                        configs=[REPO_ROOT / "config.json", overlay], overlay=ex.overlay,
                        datadir=args.datadir, timerange=args.timerange, strategy=name,
                        result_dir=tmp / f"res-{name}-{r}", extra=extra))
                    times[name].append(time.perf_counter() - t0)
                    trades[name] = run.stats(name)["total_trades"]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"pairs {', '.join(PAIRS)}, 5m, timerange {args.timerange}, rounds {args.rounds}")
    for k, v in times.items():
        print(f"  {k:18s} wall {', '.join(f'{x:.1f}s' for x in v)}  (median {med[k]:.1f}s, "
              f"{trades[k]} trades)")
    ratio = med["AdvancedLearning"] / med["SampleStrategy"]
    print(f"ratio AdvancedLearning / SampleStrategy = {ratio:.2f}x (goal <= 1.5x)")
    floor = med["SampleCallbacks"] / med["SampleStrategy"]
    print(f"ratio SampleCallbacks / SampleStrategy = {floor:.2f}x (freqtrade's own cost of the "
          f"three per-candle callbacks, no strategy work)")
    print(f"ratio AdvancedLearning / SampleCallbacks = "
          f"{med['AdvancedLearning'] / med['SampleCallbacks']:.2f}x")


if __name__ == "__main__":
    main()
