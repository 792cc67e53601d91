"""``ftlearn demo``: the main job of the README. Picks the data (real candles from
``$ADVL_DATA_DIR`` when present, else a synthetic market it generates once), starts the local
exchange, runs ``freqtrade backtesting --strategy AdvancedLearning`` over the last months of the
data and prints freqtrade's result table."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from learning.core.errors import DataError
from learning.core.ftconfig import load_ft_config
from learning.data.candles import default_data_dir, list_pairs, load_candles
from learning.exchange.localrun import REPO_ROOT, freqtrade_backtest, local_exchange

SYNTH_DIR = Path("user_data/data/synthetic")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="backtest AdvancedLearning on the default data")
    p.add_argument("-c", "--config", action="append", default=None,
                   help="freqtrade config file(s) (default: config.json)")
    p.add_argument("--datadir", type=Path, default=None,
                   help="candle folder (default: $ADVL_DATA_DIR, else a synthetic market)")
    p.add_argument("--days", type=int, default=90, help="backtest length in days (default 90)")
    p.add_argument("--fee", type=float, default=0.001,
                   help="fee per side (default 0.001 = Binance spot taker 0.1%%)")
    p.set_defaults(func=cmd_demo)


def pick_data(datadir: Path | None) -> tuple[Path, str]:
    if datadir:
        return datadir, f"candles from {datadir}"
    real = default_data_dir()
    if real:
        return real, f"real Binance candles from {real} ($ADVL_DATA_DIR)"
    if not (SYNTH_DIR / "synthetic.json").exists():
        from learning.cli import main as ftlearn

        print(f"No real data ($ADVL_DATA_DIR unset): generating a synthetic market in {SYNTH_DIR}")
        if ftlearn(["make-data", "--out", str(SYNTH_DIR)]) != 0:
            raise DataError("could not generate the synthetic market")
    return SYNTH_DIR, f"a SYNTHETIC market in {SYNTH_DIR} (prices are not real)"


def pick_timerange(datadir: Path, pairs: list[str], timeframe: str, days: int) -> str:
    """The last ``days`` whole days that every pair covers."""
    available = list_pairs(datadir)
    missing = [p for p in pairs if timeframe not in available.get(p, [])]
    if missing:
        raise DataError(f"{datadir} has no {timeframe} candles for {', '.join(missing)}; "
                        f"available: {', '.join(sorted(available))}")
    frames = [load_candles(datadir, p, timeframe) for p in pairs]
    first = max(f["date"].iloc[0] for f in frames) + pd.Timedelta(days=2)  # startup candles
    last = min(f["date"].iloc[-1] for f in frames).floor("D")
    start = max(first.ceil("D"), last - pd.Timedelta(days=days))
    if start >= last:
        raise DataError(f"{datadir} holds too little common history for a backtest "
                        f"({first.date()} .. {last.date()})")
    return f"{start:%Y%m%d}-{last:%Y%m%d}"


def cmd_demo(args: argparse.Namespace) -> int:
    configs = args.config or [str(REPO_ROOT / "config.json")]
    ft = load_ft_config(configs)
    pairs = ft["exchange"]["pair_whitelist"]
    datadir, label = pick_data(args.datadir)
    timerange = pick_timerange(datadir, pairs, ft.get("timeframe", "5m"), args.days)
    print(f"AdvancedLearning demo: {label}\n  pairs {', '.join(pairs)}, timerange {timerange}, "
          f"fee {args.fee:.2%} per side, wallet {ft.get('dry_run_wallet')} "
          f"{ft['stake_currency']}")
    result_dir = Path(ft.get("user_data_dir", "user_data")) / "backtest_results"
    with tempfile.TemporaryDirectory(prefix="ftlearn-demo-") as work, \
            local_exchange(datadir, work) as ex:
        print(f"  local exchange on {ex.url}")
        run = freqtrade_backtest(configs=configs, overlay=ex.overlay, datadir=datadir,
                                 timerange=timerange, result_dir=result_dir, fee=args.fee,
                                 echo=True)
    if run.returncode != 0:
        raise DataError(f"freqtrade backtesting failed (exit {run.returncode})")
    stats = run.stats("AdvancedLearning")
    summary = {k: stats.get(k) for k in ("total_trades", "profit_total", "max_drawdown_account",
                                         "winrate", "profit_factor", "sharpe")}
    print("\nAdvancedLearning demo finished on", label)
    print(json.dumps(summary, indent=2, default=str))
    print(f"Results: {result_dir} (open them in FreqUI or with `freqtrade backtesting-show`)")
    return 0
