"""Soak: a dry-run bot on the local exchange for a long while, killed with SIGKILL and restarted,
with forced entries (market and resting limit orders), scale-ins, over-cap adds, forced exits
and confirmed halt/resume commands. Reports errors, log volume, lost decisions (trades closed
"unattributed") and whether learned state and open trades continue across each kill.

    python benchmarks/soak.py [--minutes 60] [--kills 3] [--datadir DIR] [--out DIR] [--seed 0]

Data: ``--datadir``, else ``$ADVL_DATA_DIR`` (real candles), else the synthetic market of
``ftlearn demo``. Goal: 0 errors, 0 unattributed trades, nothing lost. ``make soak`` runs the full
hour; it is not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import requests

from learning.commands.demo import pick_data
from learning.data.candles import list_pairs
from learning.exchange.localrun import REPO_ROOT, freqtrade_command, local_exchange

ERROR_RE = re.compile(r" - (ERROR|CRITICAL) - |Traceback \(most recent call last\)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bot:
    """One ``freqtrade trade`` process at a time, on fixed configs; its log appends to one file."""

    def __init__(self, configs: list[Path], log: Path, port: int, auth: tuple[str, str]) -> None:
        self.configs, self.log, self.port, self.auth = configs, log, port, auth
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}/api/v1"

    def start(self, timeout: float = 300) -> float:
        cmd = [*freqtrade_command(), "trade"]
        for c in self.configs:
            cmd += ["--config", str(c)]
        t0 = time.monotonic()
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out,
                                         stderr=subprocess.STDOUT, env={**os.environ})
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"freqtrade exited with {self.proc.returncode}; see {self.log}")
            try:
                if self.get("ping").get("status") == "pong":
                    return time.monotonic() - t0
            except (requests.RequestException, ValueError):
                pass
            time.sleep(1)
        raise RuntimeError(f"freqtrade did not answer within {timeout} s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL: nothing runs after it (no atexit, no final save)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.kill()

    def get(self, path: str, **params):
        r = requests.get(f"{self.url}/{path}", auth=self.auth, params=params, timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(f"{self.url}/{path}", auth=self.auth, json=body, timeout=30)


def ftlearn(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "learning.cli", *argv], capture_output=True,
                          text=True, timeout=120, cwd=REPO_ROOT, env={**os.environ})


def brain_state(state_dir: Path) -> dict:
    try:
        return json.loads((state_dir / "brain.json").read_text())["data"]["brain"]
    except (OSError, ValueError, KeyError):
        return {}


def act(bot: Bot, pairs: list[str], rng: np.random.Generator, counts: dict) -> None:
    """One random user action: a forced entry (market or a resting limit order), a forced add
    (sometimes far over the cap), or a forced exit."""
    try:
        open_trades = [t for t in bot.get("status") if t.get("is_open", True)]
    except (requests.RequestException, ValueError):
        counts["api_errors"] += 1
        return
    busy = {t["pair"] for t in open_trades}
    free = [p for p in pairs if p not in busy]
    # freqtrade refuses an add or an exit while the trade has an order open.
    open_trades = [t for t in open_trades if not t.get("has_open_orders")]
    u = rng.random()
    if free and (u < 0.45 or not open_trades):
        pair = free[int(rng.integers(len(free)))]
        kind = "market" if rng.random() < 0.5 else "limit"
        resp = bot.post("forceenter", {"pair": pair, "ordertype": kind})
        counts[f"forced_entries_{kind}"] += 1
    elif open_trades and u < 0.75:
        trade = open_trades[int(rng.integers(len(open_trades)))]
        balance = bot.get("balance")["total"]
        share = 0.5 if rng.random() < 0.3 else 0.03  # sometimes far over the 20% cap
        resp = bot.post("forceenter", {"pair": trade["pair"], "ordertype": "market",
                                       "stakeamount": round(share * balance, 2)})
        counts["forced_adds"] += 1
    elif open_trades:
        trade = open_trades[int(rng.integers(len(open_trades)))]
        resp = bot.post("forceexit", {"tradeid": str(trade["trade_id"]), "ordertype": "market"})
        counts["forced_exits"] += 1
    else:
        return
    if resp.status_code != 200:
        counts["refused_actions"] += 1


def control_round(cli: list[str], counts: dict) -> None:
    """A halt and a resume through the CLI, each of which must be confirmed by the bot."""
    for argv in (["halt", "--reason", "soak"], ["resume"]):
        done = ftlearn([*argv, "--timeout", "60", *cli])
        key = "controls_confirmed" if done.returncode == 0 else "controls_unconfirmed"
        counts[key] += 1


def trades_from_db(db: Path) -> list[dict]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id, pair, is_open, exit_reason FROM trades").fetchall()
        keys = conn.execute("SELECT ft_trade_id, cd_key FROM trade_custom_data").fetchall()
        # The first entry order of each trade: when it was placed and when it filled.
        first = conn.execute("""
            SELECT ft_trade_id, order_date, order_filled_date FROM orders o
            WHERE ft_order_side = 'buy' AND id = (SELECT MIN(id) FROM orders
                                                  WHERE ft_trade_id = o.ft_trade_id)""").fetchall()
    finally:
        conn.close()
    have: dict[int, set[str]] = {}
    for tid, key in keys:
        have.setdefault(tid, set()).add(key)
    entry = {tid: (placed, filled) for tid, placed, filled in first}
    return [{"id": r[0], "pair": r[1], "is_open": bool(r[2]), "exit_reason": r[3],
             "decision": "decision" in have.get(r[0], set()),
             "entry_placed": entry.get(r[0], (None, None))[0],
             "entry_filled": entry.get(r[0], (None, None))[1]} for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--datadir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--action-every", type=float, default=20.0, help="seconds between actions")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    datadir, label = pick_data(args.datadir)
    pairs = [p for p, tfs in list_pairs(datadir).items() if "5m" in tfs and "1h" in tfs][:5]
    work = args.out or Path(tempfile.mkdtemp(prefix="advl-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    user_dir = work / "user_data"
    user_dir.mkdir(exist_ok=True)
    state_dir = user_dir / "learning/default/dry_run"
    db = work / "trades.sqlite"
    port = free_port()
    auth = ("soak", secrets.token_urlsafe(12))
    print(f"soak: {args.minutes:g} min, {args.kills} SIGKILL restarts, {label}; pairs "
          f"{', '.join(pairs)}; work folder {work}", flush=True)
    counts = {k: 0 for k in ("forced_entries_market", "forced_entries_limit", "forced_adds",
                             "forced_exits", "refused_actions", "api_errors",
                             "controls_confirmed", "controls_unconfirmed")}
    restarts = []
    with local_exchange(datadir, work / "exchange") as ex:
        overlay = work / "soak-config.json"
        overlay.write_text(json.dumps({
            "user_data_dir": str(user_dir), "db_url": f"sqlite:///{db}", "dry_run": True,
            "force_entry_enable": True, "exchange": {"pair_whitelist": pairs},
            # Resting limit orders are part of the test, but should not block a pair for long.
            "unfilledtimeout": {"entry": 5, "exit": 5, "exit_timeout_count": 0,
                                "unit": "minutes"},
            "api_server": {"enabled": True, "listen_ip_address": "127.0.0.1",
                           "listen_port": port, "username": auth[0], "password": auth[1],
                           "jwt_secret_key": secrets.token_hex(32)},
            "advanced_learning": {"pyramiding": {"add_min_profit": -1.0,
                                                 "add_requires_signal": False}},
        }))
        configs = [REPO_ROOT / "config.json", ex.overlay, overlay]
        cli = sum((["-c", str(c)] for c in (REPO_ROOT / "config.json", overlay)), [])
        bot = Bot(configs, work / "freqtrade.log", port, auth)
        t_start = time.monotonic()
        startup = [bot.start()]
        end = t_start + args.minutes * 60
        kill_at = [t_start + args.minutes * 60 * (k + 1) / (args.kills + 1)
                   for k in range(args.kills)]
        next_action = time.monotonic()
        control_round(cli, counts)
        try:
            while time.monotonic() < end:
                if kill_at and time.monotonic() >= kill_at[0]:
                    kill_at.pop(0)
                    # Kill while a limit entry rests unfilled: its decision must survive.
                    busy = {t["pair"] for t in bot.get("status")}
                    free = [p for p in pairs if p not in busy]
                    if free:
                        bot.post("forceenter", {"pair": free[0], "ordertype": "limit"})
                        counts["forced_entries_limit"] += 1
                        time.sleep(2)
                    before_open = {t["trade_id"] for t in bot.get("status")}
                    before_closed = brain_state(state_dir).get("closed_trades", 0)
                    log_mark = bot.log.stat().st_size
                    killed_at = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
                    bot.kill()
                    startup.append(bot.start())
                    time.sleep(10)  # a loop or two: state restored, orders checked
                    after_open = {t["trade_id"] for t in bot.get("status")}
                    text = bot.log.read_bytes()[log_mark:].decode(errors="replace")
                    restarts.append({
                        "killed_at": killed_at,
                        "open_before": sorted(before_open), "open_after": sorted(after_open),
                        "open_trades_continue": before_open <= after_open | {
                            t["id"] for t in trades_from_db(db) if not t["is_open"]},
                        "closed_trades_before": before_closed,
                        "closed_trades_after": brain_state(state_dir).get("closed_trades", 0),
                        "risk_state_restored": "risk state restored" in text,
                        "learned_state_restored": "learned state restored" in text
                        or before_closed == 0,
                    })
                    print(f"soak: restart {len(restarts)}: {restarts[-1]}", flush=True)
                    control_round(cli, counts)
                if time.monotonic() >= next_action:
                    act(bot, pairs, rng, counts)
                    next_action = time.monotonic() + args.action_every
                time.sleep(1)
        finally:
            bot.stop()
        wall = time.monotonic() - t_start
    log = bot.log.read_text(errors="replace").splitlines()
    errors = [line for line in log if ERROR_RE.search(line)]
    trades = trades_from_db(db)
    closed = [t for t in trades if not t["is_open"]]
    # Entries whose order was placed before a kill and filled after it: the decision behind
    # them lived only in memory before pending decisions were persisted.
    across = [t for t in trades if t["entry_filled"] and any(
        t["entry_placed"] < r["killed_at"] < t["entry_filled"] for r in restarts)]
    brain = brain_state(state_dir)
    result = {
        "minutes": round(wall / 60, 1), "kills": len(restarts), "data": label, "pairs": pairs,
        "startup_s": [round(s, 1) for s in startup], "actions": counts,
        "trades": len(trades), "closed_trades": len(closed),
        "closed_without_decision": sum(1 for t in closed if not t["decision"]),
        "entries_filled_across_a_kill": len(across),
        "of_which_without_decision": sum(1 for t in across if not t["decision"]),
        "brain_closed_trades": brain.get("closed_trades"),
        "brain_unattributed_trades": brain.get("unattributed_trades"),
        "exit_reasons": {r: sum(1 for t in closed if t["exit_reason"] == r)
                         for r in sorted({t["exit_reason"] for t in closed})},
        "errors": len(errors), "error_lines": errors[:20],
        "log_lines": len(log), "log_bytes": bot.log.stat().st_size,
        "log_lines_per_hour": round(len(log) / (wall / 3600)),
        "zero_amount_exit_lines": sum("due to exchange limits" in line for line in log),
        "restarts": restarts,
        "open_trades_continue": all(r["open_trades_continue"] for r in restarts),
        "learned_state_continues": all(r["closed_trades_after"] >= r["closed_trades_before"]
                                       and r["learned_state_restored"] for r in restarts),
        "temp_files_left": len(list(state_dir.glob(".*.tmp"))),
    }
    (work / "soak.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "restarts"}, indent=2))
    ok = (result["errors"] == 0 and result["brain_unattributed_trades"] == 0
          and result["closed_without_decision"] == 0 and result["open_trades_continue"]
          and result["of_which_without_decision"] == 0
          and result["learned_state_continues"] and counts["controls_unconfirmed"] == 0)
    print(f"soak: {'PASS' if ok else 'FAIL'} (results in {work / 'soak.json'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
