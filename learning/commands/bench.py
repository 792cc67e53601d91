"""``ftlearn bench``: the walk-forward benchmark (the rules and variants:
:mod:`learning.bench.runner`).

Prints progress per variant, writes ``report.md``, ``results.json``, ``summary.md`` and PNG plots
into the results folder, then prints a summary ready to paste into the README.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

import pandas as pd

from learning.core.errors import ConfigError, DataError


def _csv(values: list[str] | None) -> list[str]:
    return [x.strip() for v in values or [] for x in v.split(",") if x.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="walk-forward benchmark: AdvancedLearning vs its ablations and baselines",
        description="Run AdvancedLearning, its ablations and baselines (buy-and-hold, "
        "SampleStrategy, FreqAI LightGBM, FreqAI ReinforcementLearner) through freqtrade "
        "backtesting against the local exchange on the same data, range, fee and wallet; "
        "write report.md, results.json and plots.")
    p.add_argument("--datadir", type=Path, default=None,
                   help="candle folder (default: $ADVL_DATA_DIR)")
    p.add_argument("--pairs", nargs="+", default=None, metavar="PAIR",
                   help="pairs, space- or comma-separated (default: the config's whitelist)")
    p.add_argument("--timerange", default=None, help="YYYYMMDD-YYYYMMDD (default: the last "
                   "--days days of the data, leaving start-up and training history)")
    p.add_argument("--days", type=int, default=90,
                   help="length of the default range in days (default 90)")
    p.add_argument("--timeframe", default=None, help="candle timeframe (default: the config's)")
    p.add_argument("--only", action="append", default=None, metavar="NAME[,NAME]",
                   help="run only these variants (see --list)")
    p.add_argument("--fee", type=float, default=0.001,
                   help="fee per side (default 0.001 = Binance spot taker 0.1%%)")
    p.add_argument("--wallet", type=float, default=None,
                   help="starting wallet (default: the config's dry_run_wallet)")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default: user_data/bench/<UTC timestamp>/)")
    p.add_argument("-c", "--config", action="append", default=None,
                   help="base freqtrade config file(s) (default: config.json)")
    p.add_argument("--quick", action="store_true", help="tiny FreqAI settings (7-day windows, "
                   "small models): a smoke run, not for conclusions")
    p.add_argument("--retrain", action="store_true",
                   help="train FreqAI models for every variant, even where an earlier variant "
                   "has the same strategy, model and FreqAI settings (default: reuse its "
                   "predictions)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--timeout", type=float, default=6 * 3600,
                   help="seconds per variant before it is stopped (default 21600)")
    p.add_argument("--list", action="store_true", help="print the variants and exit")
    p.add_argument("--json", action="store_true", help="print results.json (or the list) as JSON")
    p.set_defaults(func=cmd_bench)


def _list(args: argparse.Namespace) -> int:
    from learning.bench.runner import REPO_ROOT, freqai_file
    from learning.bench.variants import VARIANTS

    rows = []
    for v in VARIANTS:
        avail = "yes"
        if v.freqai_config and not freqai_file(v.freqai_config).is_file():
            avail = ("no FreqAI (file missing)" if not v.freqai_required
                     else f"no: {v.freqai_config} missing")
        rows.append({"name": v.name, "kind": v.kind, "strategy": v.strategy,
                     "freqaimodel": v.freqaimodel, "freqai_config": v.freqai_config,
                     "config_overlay": v.config_overlay, "available": avail,
                     "description": v.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':16} {'kind':9} {'strategy':19} {'freqaimodel':21} available / overlay")
    for r in rows:
        extra = json.dumps(r["config_overlay"]) if r["config_overlay"] else ""
        print(f"{r['name']:16} {r['kind']:9} {r['strategy']:19} {r['freqaimodel'] or '-':21} "
              f"{r['available']} {extra}")
        print(f"{'':16} {r['description']}")
    print(f"(FreqAI config of the AdvancedLearning variants: {REPO_ROOT}/configs/"
          "freqai-tsamae.json)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args)
    if not getattr(args, "verbose", False):
        # freqtrade's loaders log every file they read; the bench prints its own progress.
        for name in ("freqtrade", "matplotlib"):
            logging.getLogger(name).setLevel(logging.WARNING)
    from learning.bench import runner as B
    from learning.bench import variants as BV
    from learning.bench.report import summary_text, to_json, write_outputs
    from learning.core.ftconfig import load_ft_config
    from learning.data.candles import default_data_dir

    datadir = args.datadir or default_data_dir()
    if datadir is None:
        raise DataError("no candle folder: pass --datadir or set $ADVL_DATA_DIR (real data), "
                        "or make a synthetic market with `ftlearn make-data --out "
                        "user_data/data/synthetic` and pass --datadir user_data/data/synthetic")
    datadir = Path(datadir).resolve()
    if not datadir.is_dir():
        raise DataError(f"data dir {datadir} does not exist")
    configs = [Path(c).resolve() for c in (args.config or [B.REPO_ROOT / "config.json"])]
    ft = load_ft_config([str(c) for c in configs])
    pairs = tuple(p.upper().replace("_", "/") for p in _csv(args.pairs)) or tuple(
        ft["exchange"]["pair_whitelist"])
    timeframe = args.timeframe or ft.get("timeframe", "5m")
    variants = BV.select_variants(_csv(args.only))
    info = B.data_info(datadir, pairs, timeframe)
    if args.timerange:
        timerange = args.timerange
    else:
        train = B.train_days_needed(variants, args.quick)
        timerange = B.default_timerange(info, timeframe, args.days, train)
    if args.fee < 0 or args.fee >= 0.1:
        raise ConfigError(f"--fee {args.fee} is not a plausible fee per side (0 <= fee < 0.1)")
    wallet = float(args.wallet or ft.get("dry_run_wallet", 10_000))
    now = pd.Timestamp.now(tz="UTC")
    out = (args.out or Path(ft.get("user_data_dir", "user_data")) / "bench"
           / f"{now:%Y%m%d-%H%M%S}").resolve()
    spec = B.BenchSpec(datadir=datadir, pairs=pairs, timeframe=timeframe, timerange=timerange,
                       fee=args.fee, wallet=wallet, out=out, configs=tuple(configs),
                       quick=args.quick, seed=args.seed, timeout=args.timeout or None,
                       share_predictions=not args.retrain)
    argv = ["bench", "--datadir", str(datadir), "--pairs", *pairs, "--timeframe", timeframe,
            "--timerange", timerange, "--fee", f"{args.fee:g}", "--wallet", f"{wallet:g}"]
    argv += ["--only", ",".join(v.name for v in variants)] if args.only else []
    argv += ["--quick"] if args.quick else []
    argv += ["--retrain"] if args.retrain else []
    argv += [x for c in args.config or [] for x in ("--config", c)]
    progress = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (
        lambda m: print(m, flush=True))
    progress(f"ftlearn bench -> {out}\n  data {datadir}, {', '.join(pairs)} {timeframe}, "
             f"{timerange}, fee {args.fee:.2%}/side, wallet {wallet:g}")
    result = B.run_bench(spec, variants, now, progress=progress, argv=argv)
    paths = write_outputs(result)
    if args.json:
        print(json.dumps(to_json(result), indent=2))
    else:
        print(f"\nReport: {paths['report']}\nResults: {paths['results']}\n")
        print(f"Reproduce: ftlearn {shlex.join(argv)}\n")
        print(summary_text(result))
    return 0 if any(r.status == "ok" for r in result.results) else 1
