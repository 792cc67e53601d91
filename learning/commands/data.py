"""``ftlearn make-data | check-data``: write a synthetic market, and check any candle folder.

``make-data`` never overwrites real candles by accident: a folder holding candle files that no
``synthetic.json`` claims is refused unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from learning.core.errors import DataError
from learning.data.candles import check_candles, default_data_dir, list_pairs, load_candles
from learning.data.synth import (
    DEFAULT_TIMEFRAMES,
    MARKER_FILE,
    NOTE,
    REGIMES_FILE,
    SynthConfig,
    check_timeframes,
    generate_market,
    read_marker,
    real_candle_files,
    write_market,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = SynthConfig()
    p = subparsers.add_parser(
        "make-data", help="write a deterministic synthetic market (freqtrade feather files)",
        description="Simulate candles with known regimes (BULL_MOMENTUM, BEAR_DEFENSIVE, CHOPPY, "
        "CRISIS, THEME_DRIVEN) for machines without real data. Prices are not real.")
    p.add_argument("--out", required=True, type=Path, help="folder to write into (created)")
    p.add_argument("--days", type=int, default=defaults.days,
                   help=f"length in days (default {defaults.days})")
    p.add_argument("--seed", type=int, default=defaults.seed,
                   help=f"random seed (default {defaults.seed}); same seed, same files")
    p.add_argument("--pairs", nargs="+", default=list(defaults.pairs), metavar="PAIR",
                   help="pairs as BASE/QUOTE (default: %(default)s)")
    p.add_argument("--start", default=defaults.start,
                   help="first candle, YYYY-MM-DD UTC (default %(default)s)")
    p.add_argument("--timeframes", nargs="+", default=list(DEFAULT_TIMEFRAMES), metavar="TF",
                   help="timeframes to write, resampled from 5m (default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="write even if the folder holds candle files that are not synthetic")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(func=cmd_make_data)

    p = subparsers.add_parser(
        "check-data", help="rows, range, bad rows and gaps of every pair/timeframe in a folder")
    p.add_argument("--datadir", type=Path, default=None,
                   help="candle folder (default: $ADVL_DATA_DIR)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_check_data)


def _normalise_pair(pair: str) -> str:
    return pair.strip().upper().replace("_", "/")


def cmd_make_data(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cfg = SynthConfig(pairs=tuple(_normalise_pair(p) for p in args.pairs), start=args.start,
                      days=args.days, seed=args.seed)
    timeframes = list(dict.fromkeys(args.timeframes))
    check_timeframes(cfg.timeframe, timeframes)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    real = real_candle_files(out)
    if real and not args.force:
        names = ", ".join(p.name for p in real[:5]) + (" ..." if len(real) > 5 else "")
        raise DataError(
            f"{out} holds {len(real)} candle file(s) not written by the synthetic generator "
            f"(no {MARKER_FILE} claims them: {names}); they may be real data. Choose an empty "
            "folder, or pass --force to write synthetic files beside (and over) them")
    console = Console(stderr=True, quiet=args.json)
    n_files = len(cfg.pairs) * len(timeframes) + 1
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("simulating", total=n_files + 1)
        market = generate_market(cfg)
        progress.update(task, advance=1, description="writing")
        written = write_market(market, out, timeframes,
                               on_file=lambda path: progress.update(
                                   task, advance=1, description=f"writing {path.name}"))
        progress.update(task, description="done")
    share = market.regimes["regime"].value_counts(normalize=True)
    summary = {
        "out": str(out), "seed": cfg.seed, "days": cfg.days, "pairs": list(cfg.pairs),
        "timeframes": timeframes, "files": [str(p) for p in written],
        "first": str(market.regimes["date"].iloc[0]), "last": str(market.regimes["date"].iloc[-1]),
        "regime_share": {k: round(float(v), 4) for k, v in share.items()},
        "crashes": len(market.crashes),
        "real_files_left": [p.name for p in real_candle_files(out)],
        "note": NOTE,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    out_console = Console()
    out_console.print(f"Wrote {len(written)} files to [bold]{out}[/] (seed {cfg.seed}, "
                      f"{_short(summary['first'])} .. {_short(summary['last'])} UTC):",
                      highlight=False)
    for pair in cfg.pairs:
        out_console.print(f"  {pair.replace('/', '_')}-{{{','.join(timeframes)}}}.feather",
                          highlight=False)
    out_console.print(f"  {REGIMES_FILE} (true regimes), {MARKER_FILE}", highlight=False)
    out_console.print("Regime share: " + ", ".join(f"{k} {100 * v:.1f}%"
                                                     for k, v in summary["regime_share"].items())
                      + f"; {summary['crashes']} crash episode(s)")
    if summary["real_files_left"]:
        out_console.print(f"[yellow]warning:[/] {len(summary['real_files_left'])} non-synthetic "
                          f"candle file(s) remain in {out}: "
                          f"{', '.join(summary['real_files_left'][:5])}")
    out_console.print(f"[dim]{NOTE}[/]")
    return 0


def _short(iso: str | None) -> str:
    return "-" if iso is None else iso[:16].replace("T", " ")


def check_dict(datadir: Path) -> dict:
    """What ``check-data`` reports: one row per pair/timeframe plus the synthetic marker."""
    rows = []
    for pair, timeframes in list_pairs(datadir).items():
        for tf in timeframes:
            rep = check_candles(load_candles(datadir, pair, tf), tf)
            rows.append({
                "pair": pair, "timeframe": tf, "rows": rep.rows,
                "first": rep.first.isoformat() if rep.first is not None else None,
                "last": rep.last.isoformat() if rep.last is not None else None,
                "bad_rows": rep.bad_rows, "gaps": rep.gaps,
                "largest_gap": str(rep.largest_gap), "ok": rep.ok,
            })
    marker = read_marker(datadir)
    return {"datadir": str(datadir), "synthetic": marker is not None,
            "seed": marker.get("seed") if marker else None,
            "ok": all(r["ok"] for r in rows), "series": rows}


def cmd_check_data(args: argparse.Namespace) -> int:
    datadir = args.datadir or default_data_dir()
    if datadir is None:
        raise DataError("no --datadir given and $ADVL_DATA_DIR is not set to a folder")
    info = check_dict(datadir)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0 if info["ok"] else 1
    from rich import box
    from rich.console import Console
    from rich.table import Table

    kind = f"synthetic, seed {info['seed']}" if info["synthetic"] else "no synthetic marker"
    table = Table(title=f"{datadir} ({kind})", box=box.SIMPLE_HEAD)
    for col in ("pair", "tf", "rows", "first", "last", "bad rows", "gaps", "largest gap", "ok"):
        table.add_column(col, no_wrap=True,
                         justify="right" if col in ("rows", "bad rows", "gaps") else "left")
    for r in info["series"]:
        table.add_row(r["pair"], r["timeframe"], str(r["rows"]), _short(r["first"]),
                      _short(r["last"]), str(r["bad_rows"]), str(r["gaps"]),
                      r["largest_gap"] if r["gaps"] else "-",
                      "[green]yes[/]" if r["ok"] else "[red]NO[/]")
    console = Console()
    if not console.is_terminal:  # a pipe or file: do not squeeze the table into 80 columns
        console = Console(width=120)
    console.print(table)
    return 0 if info["ok"] else 1
