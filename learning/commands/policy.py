"""``ftlearn policy``: the champion/challenger registry (the rules:
:mod:`learning.router.router`)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from learning.router.router import POLICY_TYPES, PolicyReport, Router, default_db_path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "policy", help="register, inspect and retire the policies the router A/B tests",
        description="The policy registry and Thompson-sampling router. The rules are in the "
        "docstring of learning.router.router.")
    parser.set_defaults(func=lambda _args: (parser.print_help(), 1)[1])
    actions = parser.add_subparsers(dest="policy_command", metavar="ACTION")

    where = argparse.ArgumentParser(add_help=False)
    group = where.add_mutually_exclusive_group()
    group.add_argument("--db", type=Path, help="the policy database file (default: "
                       "<userdir>/learning/policy_bandit.db)")
    group.add_argument("--userdir", type=Path, help="freqtrade user_data folder (default: "
                       "./user_data)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")

    p = actions.add_parser("register", parents=[where], help="add a policy (a challenger once "
                           "a champion exists)")
    p.add_argument("name", help="unique, permanent name, e.g. ppo-2026-01-15")
    p.add_argument("--type", required=True, choices=POLICY_TYPES, help="kind of policy")
    p.add_argument("--path", help="checkpoint file or folder (may be left out for type rule)")
    p.add_argument("--exist-ok", action="store_true",
                   help="succeed when the same name, type and path are already registered")
    p.set_defaults(func=_register)

    p = actions.add_parser("stats", parents=[where, as_json], help="allocations, posteriors "
                           "with 95%% intervals, trades and profit per policy")
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo P(best)")
    p.set_defaults(func=_stats)

    p = actions.add_parser("select", parents=[where, as_json], help="draw a policy as the "
                           "strategy would (stores nothing)")
    p.add_argument("--seed", type=int, help="seed of the draw (default: random)")
    p.set_defaults(func=_select)

    p = actions.add_parser("retire", parents=[where], help="retire a policy; retiring the "
                           "champion promotes the best active challenger")
    p.add_argument("name")
    p.add_argument("--reason", default="manual", help="stored with the retirement")
    p.set_defaults(func=_retire)

    p = actions.add_parser("list", parents=[where, as_json], help="all registered policies")
    p.set_defaults(func=_list)


def _db(args: argparse.Namespace) -> Path:
    return args.db if args.db is not None else default_db_path(args.userdir)


def _now() -> datetime:
    return datetime.now(UTC)  # the CLI is the edge where wall-clock time enters


def _role(r: PolicyReport) -> str:
    if r.status == "retired":
        return "retired"
    return "champion" if r.champion else "warm-up" if r.warmup else "challenger"


def _register(args: argparse.Namespace) -> int:
    router = Router(_db(args))
    info = router.register(args.name, args.type, args.path, _now(), exist_ok=args.exist_ok)
    role = "champion" if info.champion else "challenger"
    print(f"registered {info.name} ({info.type}) as {role} in {router.db.path}")
    return 0


def _retire(args: argparse.Namespace) -> int:
    router = Router(_db(args), create=False)
    router.retire(args.name, _now(), reason=args.reason)
    print(f"retired {args.name}; champion is now {router.champion() or 'none'}")
    return 0


def _select(args: argparse.Namespace) -> int:
    router = Router(_db(args), create=False)
    choice = router.select(np.random.default_rng(args.seed), _now(), rebalance=False)
    if args.json:
        print(json.dumps({"policy": choice, "seed": args.seed, "champion": router.champion()}))
    else:
        print(choice)
    return 0


def _list(args: argparse.Namespace) -> int:
    policies = Router(_db(args), create=False).policies()
    if args.json:
        print(json.dumps([{"name": p.name, "type": p.type, "status": p.status,
                           "champion": p.champion, "checkpoint": p.checkpoint,
                           "created": p.created.isoformat(),
                           "retired_reason": p.retired_reason} for p in policies], indent=2))
        return 0
    rows = [(p.name, "champion" if p.champion else "challenger" if p.status == "active"
             else "retired", p.type,
             f"{p.created:%Y-%m-%d %H:%M}", p.checkpoint or "-") for p in policies]
    _table(("NAME", "ROLE", "TYPE", "CREATED", "CHECKPOINT"), rows)
    return 0


def _stats(args: argparse.Namespace) -> int:
    router = Router(_db(args), create=False)
    reports = router.report(np.random.default_rng(args.seed))
    history = router.history(1)
    if args.json:
        snap = history[0] if history else None
        print(json.dumps({
            "db": str(router.db.path), "posterior": router.config.posterior,
            "last_snapshot": None if snap is None else {
                "at": snap.at.isoformat(), "reason": snap.reason,
                "outcome_seq": snap.outcome_seq},
            "policies": [r.to_json() for r in reports]}, indent=2))
        return 0
    what = "win rate" if router.config.posterior == "beta" else "mean return"
    print(f"{router.db.path}: posterior on {what}, 95% intervals")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    rows = [(r.name, _role(r), r.type, str(r.trades),
             pct(r.wins / r.trades if r.trades else None), f"{100 * r.mean_ratio:+.2f}%",
             f"{r.profit_abs:+.2f}",
             f"{r.posterior_mean:.4f} [{r.posterior_low:.4f}, {r.posterior_high:.4f}]",
             pct(r.p_best), pct(r.share)) for r in reports]
    _table(("NAME", "ROLE", "TYPE", "TRADES", "WIN", "MEAN", "PROFIT", "POSTERIOR",
            "P(BEST)", "SHARE"), rows)
    if history:
        print(f"last allocation snapshot: {history[0].at:%Y-%m-%d %H:%M} UTC "
              f"({history[0].reason}, after {history[0].outcome_seq} outcomes)")
    return 0


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    if not rows:
        print("no policies registered")
        return
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
