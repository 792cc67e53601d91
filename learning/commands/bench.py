"""``ftlearn bench``: the walk-forward benchmark (the rules and variants:
:mod:`learning.bench.runner`).

The bench is a grid of jobs (variant x seed x pair universe x period, :mod:`learning.bench.grid`)
run on a local process pool (``--workers``) or a Ray cluster (``--ray``); it prints progress per
job, writes ``report.md``, ``results.json``, ``summary.md`` and PNG plots into the results folder,
then prints a summary ready to paste into the README.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

import pandas as pd

from learning.core.errors import ConfigError, DataError


def _csv(values: list[str] | None) -> list[str]:
    return [x.strip() for v in values or [] for x in v.split(",") if x.strip()]


#: The evidence bench (issue 12): a 1h walk-forward over the pairs with years of history.
EVIDENCE_PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT")
EVIDENCE_PERIODS = (("validation", "20230101-20241231"), ("test", "20250101-20260219"))
EVIDENCE_SEEDS = "0"


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
    g = p.add_argument_group("grid and execution")
    g.add_argument("--period", action="append", default=None, metavar="NAME=YYYYMMDD-YYYYMMDD",
                   help="a named evaluation period (repeatable; replaces --timerange), e.g. "
                   "--period valid=20230101-20250101 --period test=20250101-20260201")
    g.add_argument("--universe", action="append", default=None, metavar="NAME=PAIR,PAIR",
                   help="a named pair universe (repeatable; replaces --pairs)")
    g.add_argument("--evidence", action="store_true",
                   help="the documented evidence bench: 1h, " + ",".join(EVIDENCE_PAIRS)
                   + ", " + " and ".join(f"{n} {r}" for n, r in EVIDENCE_PERIODS)
                   + f", seeds {EVIDENCE_SEEDS} (defaults were chosen on the validation period "
                   "only; the test period is reported, never tuned on). Other flags override")
    g.add_argument("--seeds", default="0", metavar="S,S,..",
                   help="job seeds, e.g. 0,1,2 (default 0); a job's seed seeds the decision "
                   "sampler and the FreqAI model")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="parallel jobs on this machine (default: the number of cores; 1 runs "
                   "them in this process)")
    g.add_argument("--ray", default=None, metavar="ADDRESS|auto",
                   help="run the jobs as Ray tasks on this cluster (pip install "
                   "'.[distributed]'); e.g. auto or 10.0.0.5:6379")
    g.add_argument("--ray-shared-data", action="store_true",
                   help="with --ray: the data dir is on shared storage at the same path on "
                   "every node (default: ship the candle files with the jobs)")
    g.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the bench in DIR with its own settings: finished jobs are "
                   "skipped (--workers and --ray may change)")
    g.add_argument("--freqai-cache", type=Path, default=None, metavar="DIR",
                   help="folder of trained FreqAI windows shared between variants and benches "
                   "(default: <out>/freqai-cache)")
    p.add_argument("--list", action="store_true", help="print the variants and exit")
    p.add_argument("--json", action="store_true", help="print results.json (or the list) as JSON")
    p.set_defaults(func=cmd_bench, parser=p)


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


def _resumed(args: argparse.Namespace) -> argparse.Namespace:
    """The settings of the bench in ``--resume DIR`` with this call's execution flags."""
    from learning.bench.pool import MANIFEST, ensure_new_or_resumed

    out = args.resume.resolve()
    ensure_new_or_resumed(out, resume=True)
    saved = json.loads((out / MANIFEST).read_text())["argv"]
    again = args.parser.parse_args(saved[1:])
    again.out, again.resume = out, out
    again.workers, again.ray, again.ray_shared_data = args.workers, args.ray, args.ray_shared_data
    again.json, again.verbose = args.json, getattr(args, "verbose", False)
    return again


def cmd_bench(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args)
    if args.resume is not None:
        args = _resumed(args)
    if not getattr(args, "verbose", False):
        # freqtrade's loaders log every file they read; the bench prints its own progress.
        for name in ("freqtrade", "matplotlib"):
            logging.getLogger(name).setLevel(logging.WARNING)
    from learning.bench import grid as G
    from learning.bench import runner as B
    from learning.bench import variants as BV
    from learning.bench.pool import ensure_new_or_resumed, run_bench
    from learning.bench.report import summary_text, to_json, write_outputs
    from learning.core.ftconfig import load_ft_config
    from learning.data.candles import default_data_dir

    if args.evidence:
        args.timeframe = args.timeframe or "1h"
        if not (args.universe or args.pairs):
            args.universe = ["majors=" + ",".join(EVIDENCE_PAIRS)]
        if not (args.period or args.timerange):
            args.period = [f"{n}={r}" for n, r in EVIDENCE_PERIODS]
        if args.seeds == "0":
            args.seeds = EVIDENCE_SEEDS
    datadir = args.datadir or default_data_dir()
    if datadir is None:
        raise DataError("no candle folder: pass --datadir or set $ADVL_DATA_DIR (real data), "
                        "or make a synthetic market with `ftlearn make-data --out "
                        "user_data/data/synthetic` and pass --datadir user_data/data/synthetic")
    datadir = Path(datadir).resolve()
    if not datadir.is_dir():
        raise DataError(f"data dir {datadir} does not exist")
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: at least 1")
    configs = [Path(c).resolve() for c in (args.config or [B.REPO_ROOT / "config.json"])]
    ft = load_ft_config([str(c) for c in configs])
    pairs = tuple(G.normalize_pair(p) for p in _csv(args.pairs)) or tuple(
        ft["exchange"]["pair_whitelist"])
    universes = [G.parse_universe(u) for u in args.universe or []] or [G.Universe("main", pairs)]
    G.unique_names(universes, "--universe")
    pairs = universes[0].pairs
    timeframe = args.timeframe or ft.get("timeframe", "5m")
    variants = BV.select_variants(_csv(args.only))
    seeds = G.parse_seeds(args.seeds)
    info = B.data_info(datadir, pairs, timeframe)
    periods = [G.parse_period(x) for x in args.period or []]
    G.unique_names(periods, "--period")
    if args.period and args.timerange:
        raise ConfigError("--timerange and --period: give one or the other")
    if periods:
        timerange = periods[0].timerange
    elif args.timerange:
        timerange = args.timerange
    else:
        train = B.train_days_needed(variants, args.quick)
        timerange = B.default_timerange(info, timeframe, args.days, train)
    periods = periods or [G.Period("main", timerange)]
    if args.fee < 0 or args.fee >= 0.1:
        raise ConfigError(f"--fee {args.fee} is not a plausible fee per side (0 <= fee < 0.1)")
    wallet = float(args.wallet or ft.get("dry_run_wallet", 10_000))
    now = pd.Timestamp.now(tz="UTC")
    out = (args.out or Path(ft.get("user_data_dir", "user_data")) / "bench"
           / f"{now:%Y%m%d-%H%M%S}").resolve()
    ensure_new_or_resumed(out, resume=args.resume is not None)
    backend = None
    if args.ray:
        from learning.bench.ray_backend import RayBackend

        backend = RayBackend.connect(args.ray, shared_data=args.ray_shared_data)
    spec = B.BenchSpec(datadir=datadir, pairs=pairs, timeframe=timeframe, timerange=timerange,
                       fee=args.fee, wallet=wallet, out=out, configs=tuple(configs),
                       quick=args.quick, seed=args.seed, timeout=args.timeout or None,
                       share_predictions=not args.retrain)
    argv = ["bench", "--datadir", str(datadir), "--timeframe", timeframe,
            "--fee", f"{args.fee:g}", "--wallet", f"{wallet:g}"]
    argv += ([x for u in universes for x in ("--universe", f"{u.name}={','.join(u.pairs)}")]
             if args.universe else ["--pairs", *pairs])
    argv += ([x for p in periods for x in ("--period", f"{p.name}={p.timerange}")]
             if args.period else ["--timerange", timerange])
    argv += ["--seeds", ",".join(map(str, seeds))] if seeds != (0,) else []
    argv += ["--only", ",".join(v.name for v in variants)] if args.only else []
    argv += ["--quick"] if args.quick else []
    argv += ["--retrain"] if args.retrain else []
    argv += ["--seed", str(args.seed)] if args.seed else []
    argv += ["--freqai-cache", str(args.freqai_cache.resolve())] if args.freqai_cache else []
    argv += [x for c in args.config or [] for x in ("--config", str(Path(c).resolve()))]
    progress = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (
        lambda m: print(m, flush=True))
    progress(f"ftlearn bench -> {out}\n  data {datadir}, "
             f"{'; '.join(f'{u.name}: {chr(44).join(u.pairs)}' for u in universes)} "
             f"{timeframe}, {'; '.join(f'{p.name} {p.timerange}' for p in periods)}, "
             f"fee {args.fee:.2%}/side, wallet {wallet:g}")
    try:
        result = run_bench(spec, variants, now, progress=progress, argv=argv, seeds=seeds,
                             universes=universes, periods=periods, workers=args.workers,
                             backend=backend, resume=args.resume is not None,
                             freqai_cache=args.freqai_cache, show_bar=not args.json)
    finally:
        if backend is not None:
            backend.shutdown()
    paths = write_outputs(result)
    if args.json:
        print(json.dumps(to_json(result), indent=2))
    else:
        print(f"\nReport: {paths['report']}\nResults: {paths['results']}\n")
        print(f"Reproduce: ftlearn {shlex.join(argv)}  (continue an interrupted run: "
              f"ftlearn bench --resume {out})\n")
        print(summary_text(result))
    return 0 if any(r.status == "ok" for r in result.results) else 1
