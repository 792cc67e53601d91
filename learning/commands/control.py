"""``ftlearn status | halt | resume``: inspect the risk guard and the learned state, and control a
running bot. ``halt`` and ``resume`` append a command to the run's command log and wait until the
bot acknowledges it (``learning.core.control``); ``status``, ``stats`` and ``report`` only read.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

from learning.brain.decision import SCHEMA_VERSION as BRAIN_SCHEMA
from learning.brain.decision import Brain
from learning.core.control import Command, append_command, find_ack, read_acks, read_commands
from learning.core.errors import StateError
from learning.core.ftconfig import load_ft_config, runmode_of, store_for
from learning.core.risk import SCHEMA_VERSION as RISK_SCHEMA
from learning.core.risk import RiskGuard, RiskState
from learning.strategy.brain_hooks import BRAIN_STATE_NAME
from learning.strategy.config import load_learning_config
from learning.strategy.strategy import RISK_STATE_NAME


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", action="append", default=None,
                   help="freqtrade config file(s), merged left to right (default: config.json)")
    p.add_argument("--userdir", "--user-data-dir", dest="userdir", default=None,
                   help="user_data folder, as freqtrade's --userdir (default: the config's "
                   "user_data_dir, relative to the current folder)")
    p.add_argument("--runmode", choices=("dry_run", "live", "backtest"), default=None,
                   help="which run's state (default: from the config's dry_run flag)")


def _control_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-wait", action="store_true",
                   help="do not wait for the running bot to acknowledge the command")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds to wait for the acknowledgement (default: %(default)s; the bot "
                   "applies commands once per loop, every process_throttle_secs)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("status", help="risk guard and learning state of a run")
    _common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("stats", help="what each learning tier has learned")
    _common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_stats)

    p = subparsers.add_parser("report", help="HTML page with plots of the learned state")
    _common(p)
    p.add_argument("--datadir", type=str, default=None,
                   help="candle folder for the regime timeline (default: $ADVL_DATA_DIR)")
    p.add_argument("--backtest", type=str, default=None,
                   help="a freqtrade backtest result (file or folder) to summarise")
    p.add_argument("--out", type=str, default="user_data/learning/report",
                   help="output folder (default: %(default)s)")
    p.add_argument("--models", type=str, default=None,
                   help="a FreqAI models folder (user_data/models/<identifier>) whose windows "
                   "carry SHAP shares (LightGBMConformal): per-regime feature importance")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("config-reference",
                              help="print the advanced_learning keys as a markdown table")
    p.set_defaults(func=cmd_config_reference)

    p = subparsers.add_parser("halt", help="stop new entries and adds of a running bot")
    _common(p)
    p.add_argument("--reason", default="manual halt", help="shown in status and logs")
    _control_args(p)
    p.set_defaults(func=cmd_halt)

    p = subparsers.add_parser("resume", help="lift a manual halt")
    _common(p)
    p.add_argument("--reset-drawdown", action="store_true",
                   help="also lift a max-drawdown halt (the peak restarts from current equity)")
    _control_args(p)
    p.set_defaults(func=cmd_resume)


def _context(args: argparse.Namespace, read_only: bool = True):
    ft = load_ft_config(args.config or ["config.json"])
    cfg = load_learning_config(ft)
    runmode = runmode_of(ft, args.runmode)
    return ft, cfg, runmode, store_for(ft, runmode, cfg, userdir=getattr(args, "userdir", None),
                                       read_only=read_only)


def load_brain(cfg, store) -> Brain | None:
    data = store.load_json(BRAIN_STATE_NAME, schema=BRAIN_SCHEMA)
    return Brain(cfg, data) if data else None


def status_dict(args: argparse.Namespace) -> dict:
    _, cfg, runmode, store = _context(args)
    loaded = store.load_json_checked(RISK_STATE_NAME, schema=RISK_SCHEMA,
                                     check=RiskState.from_state)
    problems = list(loaded.problems)
    guard = RiskGuard(cfg.risk, RiskState.from_state(loaded.data) if loaded.data else None)
    brain = load_brain(cfg, store)
    risk = guard.status(datetime.now(UTC))
    breakers = brain.report(risk["drawdown"])["circuit_breakers"] if brain else None
    commands = read_commands(store.root)
    pending = [c.command for c in commands[guard.state.control_seen:] if c is not None]
    acks = read_acks(store)
    return {
        "circuit_breakers": breakers,
        "identifier": cfg.identifier, "runmode": runmode, "state_dir": str(store.root),
        "state_found": loaded.data is not None,
        "state_file": str(loaded.source) if loaded.source else None,
        "state_problems": problems,
        "risk": risk,
        "control": {"commands": len(commands), "pending": pending,
                    "last_applied": acks[-1] if acks else None},
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def cmd_status(args: argparse.Namespace) -> int:
    info = status_dict(args)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    r = info["risk"]
    table = Table(title=f"AdvancedLearning {info['identifier']} / {info['runmode']}")
    table.add_column("item")
    table.add_column("value")
    if not info["state_found"]:
        table.add_row("state", f"none yet in {info['state_dir']}")
    for problem in info["state_problems"]:
        table.add_row("STATE PROBLEM", problem)
    if info["state_problems"] and info["state_file"]:
        table.add_row("state shown from", info["state_file"])
    rows = [
        ("equity", "-" if r["equity"] is None else f"{r['equity']:.2f}"),
        ("peak equity", "-" if r["peak_equity"] is None else f"{r['peak_equity']:.2f}"),
        ("drawdown", f"{_pct(r['drawdown'])} (limit {_pct(r['limits']['max_drawdown_pct'])})"),
        ("day P&L", f"{_pct(r['day_pnl'])} (limit -{_pct(r['limits']['max_daily_loss_pct'])})"),
        ("position cap", _pct(r["limits"]["max_position_pct"]) + " of equity"),
        ("daily-loss halt", "YES" if r["daily_halt"] else "no"),
        ("drawdown halt", f"YES since {r['drawdown_halt_since']}" if r["drawdown_halt"] else "no"),
        ("manual halt", r["manual_halt_reason"] if r["manual_halt"] else "no"),
        ("commands not yet applied", ", ".join(info["control"]["pending"]) or "none"),
        ("last update", str(r["last_update"])),
    ]
    for row in rows:
        table.add_row(*row)
    b = info["circuit_breakers"]
    if b:
        sharpe = "-" if b["rolling_sharpe"] is None else f"{b['rolling_sharpe']:.2f}"
        table.add_row("risk cut", f"{'YES' if b['risk_cut'] else 'no'} (Sharpe of last "
                      f"{b['breaker_trades']} trades: {sharpe}; learning never pauses)")
        table.add_row("rule-based fallback", f"{'YES' if b['fallback'] else 'no'} (applies "
                      f"while drawdown exceeds {_pct(b['fallback_drawdown'])}; now "
                      f"{_pct(r['drawdown'])})")
    Console().print(table)
    for ev in r["recent_events"]:
        print(f"  {ev['time']}  {ev['kind']}: {ev['detail']}")
    return 0


def stats_dict(args: argparse.Namespace) -> dict:
    _, cfg, runmode, store = _context(args)
    brain = load_brain(cfg, store)
    if brain is None:
        return {"identifier": cfg.identifier, "runmode": runmode, "state_found": False,
                "state_dir": str(store.root)}
    risk = store.load_json(RISK_STATE_NAME, schema=RISK_SCHEMA)
    dd = RiskGuard(cfg.risk, RiskState.from_state(risk)).status()["drawdown"] if risk else None
    decisions = brain.recent_decisions()
    timeline = _regime_timeline(decisions)
    return {"identifier": cfg.identifier, "runmode": runmode, "state_found": True,
            "state_dir": str(store.root), **brain.report(dd), "regime_timeline": timeline}


def _regime_timeline(decisions: list[dict]) -> dict:
    """Regime transitions seen by the recorded decisions (time-ordered)."""
    segments: list[dict] = []
    for d in decisions:
        if segments and segments[-1]["regime"] == d["regime"]:
            segments[-1]["end"] = d["time"]
            segments[-1]["decisions"] += 1
        else:
            segments.append({"regime": d["regime"], "start": d["time"], "end": d["time"],
                             "decisions": 1})
    transitions: dict[str, int] = {}
    for a, b in zip(segments, segments[1:]):
        key = f"{a['regime']} -> {b['regime']}"
        transitions[key] = transitions.get(key, 0) + 1
    return {"segments": segments[-50:], "transitions": transitions}


def cmd_stats(args: argparse.Namespace) -> int:
    info = stats_dict(args)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    if not info["state_found"]:
        print(f"no learned state yet in {info['state_dir']}")
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    b = info["circuit_breakers"]
    console.print(f"[bold]AdvancedLearning {info['identifier']} / {info['runmode']}[/bold]: "
                  f"{info['closed_trades']} closed trades ({info['unattributed_trades']} "
                  f"unattributed); risk cut: {b['risk_cut']}; fallback: {b['fallback']}")
    events = info.get("learning_events") or {}
    if events:
        table = Table(title="Learning events per tier (real trades / shadow outcomes)")
        for col in ("tier", "real", "shadow", "shadow per real"):
            table.add_column(col)
        for tier, n in events.items():
            ratio = f"{n['shadow'] / n['real']:.0f}x" if n.get("real") else "-"
            table.add_row(tier, str(n.get("real", 0)), str(n.get("shadow", 0)), ratio)
        console.print(table)
        console.print(f"shadow outcomes dropped unresolved at the end of the data: "
                      f"{info.get('shadow_unresolved', 0)}")
    for learner, regimes in info["weights"].items():
        table = Table(title=f"Tier 1 weights of {learner} (mean, 90% interval)")
        table.add_column("regime")
        comps = sorted({c for r in regimes.values() for c in r})
        for c in comps:
            table.add_column(c)
        for regime, per in sorted(regimes.items()):
            table.add_row(regime, *[f"{per[c][1]:.2f} [{per[c][0]:.2f}, {per[c][2]:.2f}]"
                                    if c in per else "-" for c in comps])
        console.print(table)
    table = Table(title="Tier 4 learners")
    for col in ("learner", "selections", "trades", "win rate", "mean return"):
        table.add_column(col)
    for name, rep in info["meta"].get("learners", {}).items():
        table.add_row(name, str(rep.get("selections")), str(rep.get("trades")),
                      _pct(rep.get("win_rate")), _pct(rep.get("mean_return")))
    console.print(table)
    table = Table(title="Tier 2 performance by regime (regime at entry)")
    for col in ("regime", "trades", "win rate", "sum of profit ratios"):
        table.add_column(col)
    for regime, row in info["regime_performance"]["regimes"].items():
        table.add_row(regime, str(row["trades"]), _pct(row["win_rate"]), f"{row['profit']:.4f}")
    console.print(table)
    tl = info["regime_timeline"]
    console.print("Regime transitions seen at decisions: " + (", ".join(
        f"{k}: {v}" for k, v in sorted(tl["transitions"].items())) or "none"))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from learning.brain.regime import RegimeDetector, regime_features
    from learning.brain.report import write_report
    from learning.core.errors import StateError
    from learning.data.candles import default_data_dir, load_candles

    ft, cfg, runmode, store = _context(args)
    info = stats_dict(args)
    if not info["state_found"]:
        raise StateError(f"no learned state in {info['state_dir']}: run a backtest or the bot "
                         "first")
    brain = load_brain(cfg, store)
    decisions, outcomes = brain.recent_decisions(), brain.to_state()["brain"]["outcomes"]
    times = [d["time"] for d in decisions] + [o["time"] for o in outcomes]
    btc = regimes = None
    datadir = Path(args.datadir) if args.datadir else default_data_dir()
    det = cfg.regime.detector
    if datadir and times:
        lo = pd.Timestamp(min(times)) - pd.Timedelta(hours=det.fit_window + det.warmup_candles)
        hi = pd.Timestamp(max(times))
        frames = {}
        for pair in ft["exchange"]["pair_whitelist"]:
            df = load_candles(datadir, pair, det.timeframe)
            frames[pair] = df[(df["date"] >= lo) & (df["date"] <= hi)].reset_index(drop=True)
        btc = frames.pop(cfg.regime.btc_pair, None)
        if btc is not None:
            regimes = RegimeDetector(det).detect(regime_features(btc, frames, det))
    backtest = None
    if args.backtest:
        from freqtrade.data.btanalysis import load_backtest_stats

        raw = load_backtest_stats(Path(args.backtest))
        backtest = {name: {k: s.get(k) for k in ("total_trades", "profit_total",
                                                  "max_drawdown_account", "winrate",
                                                  "profit_factor", "sharpe",
                                                  "backtest_start", "backtest_end")}
                    for name, s in raw["strategy"].items()}
    models = Path(args.models) if args.models else None
    if models is not None and not models.is_dir():
        raise StateError(f"--models {models}: no such folder")
    page = write_report(Path(args.out), info, decisions, outcomes, btc, regimes, backtest,
                        models)
    print(f"report written to {page}")
    return 0


def config_reference_markdown() -> str:
    from learning.core.config import reference_rows
    from learning.strategy.config import LearningConfig

    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, default, help_ in reference_rows(LearningConfig):
        lines.append(f"| `{key}` | `{default}` | {help_.replace('|', '/')} |")
    return "\n".join(lines)


def cmd_config_reference(args: argparse.Namespace) -> int:
    print(config_reference_markdown())
    return 0


def _send(args: argparse.Namespace, command: Command) -> tuple[dict | None, str]:
    """Append ``command`` and wait for the bot's acknowledgement (None with ``--no-wait``)."""
    _, cfg, runmode, store = _context(args)
    if not store.root.is_dir():
        raise StateError(
            f"no state folder {store.root}: no AdvancedLearning bot has run with this config "
            f"({cfg.identifier}/{runmode}) and user_data_dir. Check --config/--userdir (a "
            "relative user_data_dir is taken from the current folder, as freqtrade does); "
            "nothing was sent")
    append_command(store.root, command)
    where = f"{cfg.identifier}/{runmode} ({store.root})"
    if args.no_wait:
        return None, where
    deadline = time.monotonic() + args.timeout
    while True:
        ack = find_ack(store, command.id)
        if ack is not None:
            return ack, where
        if time.monotonic() >= deadline:
            raise StateError(
                f"{command.command} {command.id[:8]} was NOT confirmed: no running bot on "
                f"{where} acknowledged it within {args.timeout:g} s. Is the bot running with "
                "this config and user_data_dir? The command stays queued: a bot that starts "
                "on this folder applies it")
        time.sleep(0.2)


def cmd_halt(args: argparse.Namespace) -> int:
    command = Command.new("halt", datetime.now(UTC), args.reason)
    ack, where = _send(args, command)
    if ack is None:
        print(f"halt {command.id[:8]} queued for {where}; not confirmed (--no-wait)")
    else:
        print(f"halt {command.id[:8]} applied by the running bot at {ack['applied_at']} "
              f"({where}): entries and adds blocked")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    command = Command.new("resume", datetime.now(UTC), reset_drawdown=args.reset_drawdown)
    ack, where = _send(args, command)
    extra = " with drawdown reset" if args.reset_drawdown else ""
    if ack is None:
        print(f"resume{extra} {command.id[:8]} queued for {where}; not confirmed (--no-wait)")
        return 0
    still = " (a max-drawdown halt remains: --reset-drawdown lifts it)" \
        if ack.get("drawdown_halt") else ""
    print(f"resume{extra} {command.id[:8]} applied by the running bot at {ack['applied_at']} "
          f"({where}){still}")
    return 0
