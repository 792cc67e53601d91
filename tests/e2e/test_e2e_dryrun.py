"""End to end: ``freqtrade trade`` (dry-run) with the REST API on 127.0.0.1 against the local
exchange replaying real (or synthetic) candles: ping, status, pair_candles with the strategy's columns, a forced
entry that fills, a rule-based position adjustment, a manual over-cap add trimmed back, a manual
halt from the CLI run in another folder (refused while no bot has run, acknowledged by the running
bot, not confirmed while it is down and applied when it starts again), then a restart after which
the trade and the learned (risk) state resume where they were."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from learning.brain.decision import Brain
from learning.cli import main as ftlearn
from learning.exchange.localrun import freqtrade_command, local_exchange
from learning.strategy.config import load_learning_config
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

AUTH = ("tester", "tester-password")
PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT"]


def ftlearn_json(argv: list[str]) -> dict:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert ftlearn(argv) == 0
    return json.loads(buf.getvalue())


def ftlearn_elsewhere(folder: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """``ftlearn`` as a user runs it from another folder (its own process, cwd ``folder``)."""
    folder.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "learning.cli", *argv], cwd=folder,
                          capture_output=True, text=True, timeout=120, env={**os.environ})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bot:
    def __init__(self, configs: list[Path], log: Path, port: int) -> None:
        self.configs, self.log, self.port = configs, log, port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self) -> None:
        cmd = [*freqtrade_command(), "trade"]
        for c in self.configs:
            cmd += ["--config", str(c)]
        with open(self.log, "a") as out:  # freqtrade logs to stderr
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ})
        self.wait_for(lambda: requests.get(f"{self.url}/ping", timeout=2).json()
                      .get("status") == "pong", 120, "the API server to answer /ping")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def get(self, path: str, **params):
        r = requests.get(f"{self.url}/{path}", auth=AUTH, params=params, timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict):
        return requests.post(f"{self.url}/{path}", auth=AUTH, json=body, timeout=30)

    def log_text(self) -> str:
        """The bot's log with whitespace collapsed: freqtrade's log file wraps long lines."""
        return " ".join(self.log.read_text().split())

    def wait_for(self, check, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"freqtrade exited ({self.proc.returncode}) while waiting "
                                     f"for {what}:\n{self.log_tail()}")
            try:
                result = check()
                if result:
                    return result
            except (requests.RequestException, ValueError, KeyError, IndexError) as err:
                last_err = err
            time.sleep(1)
        raise AssertionError(f"timed out waiting for {what} ({last_err}):\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text().splitlines()[-40:]) if self.log.exists() else ""


@pytest.fixture
def bot(market_data_dir, tmp_path):
    with local_exchange(market_data_dir, tmp_path / "exchange") as ex:
        user_dir = tmp_path / "user_data"
        user_dir.mkdir()
        port = free_port()
        test_cfg = tmp_path / "dryrun.json"
        test_cfg.write_text(json.dumps({
            "timeframe": "5m", "user_data_dir": str(user_dir),
            "db_url": f"sqlite:///{tmp_path / 'trades.sqlite'}",
            "dry_run": True,
            "force_entry_enable": True,
            "exchange": {"pair_whitelist": PAIRS},
            # Trades opened here should not close on the strategy's own exit signal mid-test.
            "use_exit_signal": False,
            # Market orders fill at once in dry-run (a resting limit order may wait while the
            # replayed price moves away from it).
            "entry_pricing": {"price_side": "other"},
            "exit_pricing": {"price_side": "other"},
            "order_types": {"entry": "market", "exit": "market", "emergency_exit": "market",
                            "force_entry": "market", "force_exit": "market",
                            "stoploss": "market", "stoploss_on_exchange": False},
            "api_server": {"enabled": True, "listen_ip_address": "127.0.0.1",
                           "listen_port": port, "username": AUTH[0], "password": AUTH[1],
                           "jwt_secret_key": "x" * 40},
            "advanced_learning": {"pyramiding": {"add_min_profit": -1.0,
                                                 "add_requires_signal": False,
                                                 "max_adds": 1}},
        }))
        b = Bot([ROOT / "config.json", ex.overlay, test_cfg], tmp_path / "freqtrade.log", port)
        b.user_dir, b.configs_for_cli = user_dir, [str(ROOT / "config.json"), str(test_cfg)]
        try:
            yield b
        finally:
            b.stop()


def free_pair(bot, taken=()) -> str:
    """A whitelisted pair with no open trade (the bot may have entered some on its own)."""
    busy = {t["pair"] for t in bot.get("status")} | set(taken)
    return next(p for p in PAIRS if p not in busy)


def open_trade(bot, pair):
    return bot.wait_for(lambda: [t for t in bot.get("status") if t["pair"] == pair
                                 and not t["has_open_orders"] and t["amount"] > 0],
                        90, f"the {pair} entry to fill")[0]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_dry_run_trades_adjusts_halts_and_resumes_after_restart(bot, market_data_dir, tmp_path):
    cli_cfg = sum((["-c", c] for c in bot.configs_for_cli), [])
    served_before = snapshot(market_data_dir)
    elsewhere = tmp_path / "elsewhere"
    # No bot has run on this user_data yet: the halt fails loudly and creates nothing.
    done = ftlearn_elsewhere(elsewhere, ["halt", "--timeout", "3", *cli_cfg])
    assert done.returncode == 2 and "no state folder" in done.stderr, done
    # The shipped config's relative user_data_dir is taken from the current folder, as
    # freqtrade takes it: from another folder it names a folder that does not exist.
    done = ftlearn_elsewhere(elsewhere, ["halt", "-c", str(ROOT / "config.json")])
    assert done.returncode == 2 and "does not exist" in done.stderr, done
    assert not (bot.user_dir / "learning").exists() and not list(elsewhere.iterdir())
    bot.start()
    assert bot.get("ping")["status"] == "pong"

    candles = bot.wait_for(lambda: (c := bot.get("pair_candles", pair="BTC/USDT",
                                                  timeframe="5m"))["length"] > 0 and c, 60,
                           "analyzed candles")
    for col in ("score_technical", "score_theme", "score_sentiment", "regime_id",
                "guard_state", "guard_drawdown", "data_ok"):
        assert col in candles["columns"], col
    assert {"Risk guard", "Regime", "Weights"} <= set(bot.get("plot_config")["subplots"])

    pair_a = free_pair(bot)
    resp = bot.post("forceenter", {"pair": pair_a})
    assert resp.status_code == 200, resp.text
    trade = open_trade(bot, pair_a)
    balance = bot.get("balance")["total"]
    # FreqUI's chart of the pair shows that decision at its candle, at once (not a candle later).
    chart = bot.get("pair_candles", pair=pair_a, timeframe="5m")
    decided = [r for r in (dict(zip(chart["columns"], row)) for row in chart["data"])
               if r["brain_overall"] is not None]
    assert decided and decided[-1]["decision_taken"] is not None, chart["columns"]
    assert decided[-1]["w_technical"] is not None and decided[-1]["brain_threshold"] is not None
    # The guard sized the entry: at most 20% of equity.
    assert trade["stake_amount"] <= 0.20 * balance * 1.001

    adjusted = bot.wait_for(lambda: [t for t in bot.get("status")
                                     if t["trade_id"] == trade["trade_id"]
                                     and t["nr_of_successful_entries"] >= 2
                                     and not t["has_open_orders"]],
                            90, "the rule-based scale-in")[0]
    assert adjusted["stake_amount"] > trade["stake_amount"]
    assert adjusted["stake_amount"] <= 0.20 * balance * 1.001
    # An add forced from FreqUI / the REST API never meets confirm_trade_entry (freqtrade asks
    # only for a trade's first order): the guard sees it fill and trims the trade back.
    resp = bot.post("forceenter", {"pair": pair_a, "stakeamount": round(0.5 * balance, 2)})
    assert resp.status_code == 200, resp.text
    adjusted = bot.wait_for(lambda: [t for t in bot.get("status")
                                     if t["trade_id"] == trade["trade_id"]
                                     and t["nr_of_successful_exits"] >= 1
                                     and not t["has_open_orders"]],
                            90, "the over-cap manual add to be trimmed back")[0]
    assert "trimming it back" in bot.log_text()
    assert adjusted["stake_amount"] <= 0.20 * bot.get("balance")["total"] * 1.02
    custom = bot.get(f"trades/{trade['trade_id']}/custom-data")
    decision = next(item for item in custom[0]["custom_data"] if item["key"] == "decision")
    assert {"regime", "learner", "weights", "scores"} <= set(json.loads(decision["value"])
                                                            if isinstance(decision["value"], str)
                                                            else decision["value"])

    # A manual halt from the CLI, in another folder, while the bot runs: the bot acknowledges
    # it before the command returns, and it vetoes new entries.
    done = ftlearn_elsewhere(elsewhere, ["halt", "--reason", "e2e", "--timeout", "60",
                                         *cli_cfg])
    assert done.returncode == 0 and "applied by the running bot" in done.stdout, done
    assert "manual_halt" in bot.log_text()
    pair_b = free_pair(bot)
    resp = bot.post("forceenter", {"pair": pair_b})
    time.sleep(3)
    assert not [t for t in bot.get("status") if t["pair"] == pair_b], resp.text
    # ... and says why, as a strategy message (Telegram; FreqUI's log), not only "Failed to
    # enter position".
    bot.wait_for(lambda: f"Sending rpc strategy_msg: AdvancedLearning: forced entry on {pair_b} "
                 "refused: manual_halt" in bot.log_text(), 30, "the refusal's message")
    done = ftlearn_elsewhere(elsewhere, ["resume", "--timeout", "60", *cli_cfg])
    assert done.returncode == 0 and "applied by the running bot" in done.stdout, done
    assert "manual_resume" in bot.log_text()

    # A trade that closes: its outcome reaches every tier and is saved at once.
    pair_c = free_pair(bot)
    resp = bot.post("forceenter", {"pair": pair_c})
    assert resp.status_code == 200, resp.text
    closing = open_trade(bot, pair_c)
    resp = bot.post("forceexit", {"tradeid": str(closing["trade_id"])})
    assert resp.status_code == 200, resp.text
    brain_file = bot.user_dir / "learning/default/dry_run/brain.json"
    bot.wait_for(lambda: brain_file.exists() and json.loads(brain_file.read_text())["data"]
                 ["brain"]["closed_trades"] >= 1, 90, "the closed trade to reach the brain")

    risk_file = bot.user_dir / "learning/default/dry_run/risk.json"
    bot.wait_for(lambda: risk_file.exists(), 90, "the risk state to be saved")
    bot.stop()
    saved = json.loads(risk_file.read_text())["data"]
    assert saved["peak_equity"] > 0 and saved["day"]
    learned = json.loads(brain_file.read_text())["data"]  # written at shutdown
    # No bot runs now: the halt is not confirmed and says so; the next bot applies it.
    done = ftlearn_elsewhere(elsewhere, ["halt", "--reason", "while down", "--timeout", "3",
                                         *cli_cfg])
    assert done.returncode == 2 and "NOT confirmed" in done.stderr, done

    bot.start()
    status = bot.wait_for(lambda: bot.get("status"), 60, "the open trades after restart")
    resumed = [t for t in status if t["trade_id"] == trade["trade_id"]]
    assert resumed and resumed[0]["nr_of_successful_entries"] == \
        adjusted["nr_of_successful_entries"]
    assert closing["trade_id"] not in {t["trade_id"] for t in status}
    bot.wait_for(lambda: "risk state restored" in bot.log_text(), 30,
                 "the risk state to be restored")
    bot.wait_for(lambda: "learned state restored" in bot.log_text(), 30,
                 "the learned state to be restored")
    # The learned weights survived the restart: what the bot reports now is what it saved.
    stats = ftlearn_json(["stats", "--json", *cli_cfg])
    assert stats["closed_trades"] == learned["brain"]["closed_trades"] >= 1
    before = Brain(load_learning_config(json.loads((ROOT / "config.json").read_text())), learned)
    assert stats["weights"] == json.loads(json.dumps(before.report()["weights"]))
    bot.wait_for(lambda: json.loads(risk_file.read_text())["data"]["manual_halt"], 60,
                 "the halt queued while the bot was down to be applied")
    restored = json.loads(risk_file.read_text())["data"]
    assert restored["peak_equity"] >= saved["peak_equity"]
    assert restored["reset_token_applied"] == saved["reset_token_applied"]
    assert restored["control_seen"] == saved["control_seen"] + 1
    # The replayed (time-shifted) candles went to a scratch folder, never into the served data.
    assert snapshot(market_data_dir) == served_before
