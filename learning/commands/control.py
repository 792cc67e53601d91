"""``ftlearn status | halt | resume``: inspect the risk guard and the learned state, and control a
running bot (the strategy re-reads ``control.json`` on its next loop, about every 5 seconds)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from learning.config import load_learning_config
from learning.control import halt, read_control, resume
from learning.ftconfig import load_ft_config, runmode_of, store_for
from learning.risk import SCHEMA_VERSION as RISK_SCHEMA
from learning.risk import RiskGuard, RiskState
from learning.strategy import RISK_STATE_NAME


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", action="append", default=None,
                   help="freqtrade config file(s), merged left to right (default: config.json)")
    p.add_argument("--runmode", choices=("dry_run", "live", "backtest"), default=None,
                   help="which run's state (default: from the config's dry_run flag)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("status", help="risk guard and learning state of a run")
    _common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("halt", help="stop new entries and adds of a running bot")
    _common(p)
    p.add_argument("--reason", default="manual halt", help="shown in status and logs")
    p.set_defaults(func=cmd_halt)

    p = subparsers.add_parser("resume", help="lift a manual halt")
    _common(p)
    p.add_argument("--reset-drawdown", action="store_true",
                   help="also lift a max-drawdown halt (the peak restarts from current equity)")
    p.set_defaults(func=cmd_resume)


def _context(args: argparse.Namespace):
    ft = load_ft_config(args.config or ["config.json"])
    cfg = load_learning_config(ft)
    runmode = runmode_of(ft, args.runmode)
    return ft, cfg, runmode, store_for(ft, runmode, cfg)


def status_dict(args: argparse.Namespace) -> dict:
    _, cfg, runmode, store = _context(args)
    data = store.load_json(RISK_STATE_NAME, schema=RISK_SCHEMA)
    guard = RiskGuard(cfg.risk, RiskState.from_state(data) if data else None)
    control = read_control(store)
    return {
        "identifier": cfg.identifier, "runmode": runmode, "state_dir": str(store.root),
        "state_found": data is not None,
        "risk": guard.status(datetime.now(UTC)),
        "control": {"halted": control.halted, "reason": control.reason,
                    "reset_token": control.reset_token, "updated_at": control.updated_at},
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
    rows = [
        ("equity", "-" if r["equity"] is None else f"{r['equity']:.2f}"),
        ("peak equity", "-" if r["peak_equity"] is None else f"{r['peak_equity']:.2f}"),
        ("drawdown", f"{_pct(r['drawdown'])} (limit {_pct(r['limits']['max_drawdown_pct'])})"),
        ("day P&L", f"{_pct(r['day_pnl'])} (limit -{_pct(r['limits']['max_daily_loss_pct'])})"),
        ("position cap", _pct(r["limits"]["max_position_pct"]) + " of equity"),
        ("daily-loss halt", "YES" if r["daily_halt"] else "no"),
        ("drawdown halt", f"YES since {r['drawdown_halt_since']}" if r["drawdown_halt"] else "no"),
        ("manual halt (guard)", r["manual_halt_reason"] if r["manual_halt"] else "no"),
        ("manual halt (requested)", info["control"]["reason"] if info["control"]["halted"]
         else "no"),
        ("last update", str(r["last_update"])),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    for ev in r["recent_events"]:
        print(f"  {ev['time']}  {ev['kind']}: {ev['detail']}")
    return 0


def cmd_halt(args: argparse.Namespace) -> int:
    _, cfg, runmode, store = _context(args)
    halt(store, args.reason, datetime.now(UTC))
    print(f"halt requested for {cfg.identifier}/{runmode} ({args.reason}); a running bot applies "
          "it on its next loop")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    _, cfg, runmode, store = _context(args)
    control = resume(store, datetime.now(UTC), reset_drawdown=args.reset_drawdown)
    extra = f", drawdown reset #{control.reset_token}" if args.reset_drawdown else ""
    print(f"resume requested for {cfg.identifier}/{runmode}{extra}")
    return 0
