"""``ftlearn status``, ``halt``, ``resume``, ``stats`` and ``report`` on the state a strategy
writes: the CLI reads it without writing, its commands reach the strategy's risk guard, and the
strategy's acknowledgement is what confirms them."""

from __future__ import annotations

import json
import multiprocessing
import threading
from datetime import UTC, datetime, timedelta

import pytest

from learning.brain.decision import SCHEMA_VERSION as BRAIN_SCHEMA
from learning.cli import main as ftlearn
from learning.core.control import Command, append_command, read_acks, read_commands
from learning.core.risk import SCHEMA_VERSION as RISK_SCHEMA
from learning.strategy.brain_hooks import BRAIN_STATE_NAME
from learning.strategy.strategy import RISK_STATE_NAME
from tests.conftest import ROOT, make_strategy

T0 = datetime(2025, 6, 1, tzinfo=UTC)
STRONG = {"technical": 0.9, "ai": None, "theme": 0.8, "sentiment": 0.7}


@pytest.fixture
def setup(tmp_path):
    overlay = tmp_path / "overlay.json"
    overlay.write_text(json.dumps({"timeframe": "5m", "user_data_dir": str(tmp_path)}))
    cli = ["-c", str(ROOT / "config.json"), "-c", str(overlay), "--runmode", "backtest"]
    return make_strategy(tmp_path), cli


def run_json(capsys, argv):
    capsys.readouterr()
    assert ftlearn(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_status_shows_a_drawdown_halt_and_resume_reset_lifts_it_in_the_strategy(setup, capsys):
    strategy, cli = setup
    assert run_json(capsys, ["status", "--json", *cli])["state_found"] is False
    g = strategy.guard
    g.observe(T0, 10_000)
    g.observe(T0 + timedelta(days=1), 12_000)
    assert g.observe(T0 + timedelta(days=2), 10_000) == ["max_drawdown"]
    strategy.store.save_json(RISK_STATE_NAME, g.state.to_state(), schema=RISK_SCHEMA)
    info = run_json(capsys, ["status", "--json", *cli])
    assert info["state_found"] and info["risk"]["drawdown_halt"]
    assert info["risk"]["drawdown"] == pytest.approx(1 - 10_000 / 12_000)

    assert ftlearn(["resume", "--reset-drawdown", "--no-wait", *cli]) == 0
    assert "not confirmed (--no-wait)" in capsys.readouterr().out
    assert run_json(capsys, ["status", "--json", *cli])["control"]["pending"] == ["resume"]
    now = T0 + timedelta(days=3)
    assert "max_drawdown_halt" in g.blocks(now)
    strategy._equity = 10_000.0
    strategy._poll_control(now)  # what the running bot does on its next loop
    assert g.blocks(now) == () and g.state.peak_equity == 10_000
    info = run_json(capsys, ["status", "--json", *cli])
    assert info["control"]["pending"] == [] and info["risk"]["drawdown_halt"] is False
    assert info["control"]["last_applied"]["events"] == ["drawdown_reset"]


class BotLoop:
    """What the running bot does: poll the command log every ``period`` seconds."""

    def __init__(self, strategy, period: float = 0.1) -> None:
        self.strategy, self.period = strategy, period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        k = 0
        while not self.stop.wait(self.period):
            k += 1
            self.strategy._poll_control(T0 + timedelta(minutes=k))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_halt_and_resume_with_a_running_bot_are_acknowledged_by_it(setup, capsys):
    strategy, cli = setup
    strategy.store.root.mkdir(parents=True)  # a bot has run here
    with BotLoop(strategy):
        assert ftlearn(["halt", "--reason", "news", "--timeout", "10", *cli]) == 0
        out = capsys.readouterr().out
        assert "applied by the running bot" in out and "entries and adds blocked" in out
        assert strategy.guard.blocks(T0) == ("manual_halt",)
        assert strategy.guard.state.manual_halt_reason == "news"
        assert ftlearn(["resume", "--timeout", "10", *cli]) == 0
        assert "applied by the running bot" in capsys.readouterr().out
    assert strategy.guard.blocks(T0) == ()
    saved = json.loads((strategy.store.root / "risk.json").read_text())["data"]
    assert saved["control_seen"] == 2 and saved["manual_halt"] is False  # saved before the ack
    assert [a["command"] for a in read_acks(strategy.store)] == ["halt", "resume"]


def test_halt_with_no_running_bot_fails_loudly_and_a_later_bot_applies_it(setup, capsys):
    strategy, cli = setup
    strategy.store.root.mkdir(parents=True)
    assert ftlearn(["halt", "--timeout", "0.5", *cli]) == 2
    err = capsys.readouterr().err
    assert "NOT confirmed" in err and "no running bot" in err and "stays queued" in err
    strategy._poll_control(T0)  # a bot started later on this folder
    assert strategy.guard.blocks(T0) == ("manual_halt",)


@pytest.mark.parametrize("command", [["halt"], ["resume", "--reset-drawdown"]])
def test_control_command_from_another_folder_without_the_bots_state_fails_and_creates_nothing(
        tmp_path, monkeypatch, capsys, command):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # The shipped config names user_data relative to the folder freqtrade runs in.
    assert ftlearn([*command, "--no-wait", "-c", str(ROOT / "config.json")]) == 2
    err = capsys.readouterr().err
    assert f"user_data_dir {elsewhere / 'user_data'} does not exist" in err
    assert "--userdir" in err
    # A user_data folder on which no bot ever ran: no state folder is created for it.
    (elsewhere / "user_data").mkdir()
    assert ftlearn([*command, "--no-wait", "-c", str(ROOT / "config.json")]) == 2
    assert "no state folder" in capsys.readouterr().err
    assert list(elsewhere.rglob("*")) == [elsewhere / "user_data"]


def test_userdir_flag_resolves_user_data_as_freqtrade_does(setup, tmp_path, monkeypatch, capsys):
    strategy, _ = setup
    strategy.store.root.mkdir(parents=True)
    monkeypatch.chdir(tmp_path.parent)
    assert ftlearn(["halt", "--no-wait", "--runmode", "backtest", "-c", str(ROOT / "config.json"),
                    "--userdir", tmp_path.name]) == 0
    assert [c.command for c in read_commands(strategy.store.root)] == ["halt"]


def _send_resets(root: str, n: int) -> None:
    from pathlib import Path

    for _ in range(n):
        append_command(Path(root), Command.new("resume", T0, reset_drawdown=True))


def test_concurrent_commands_from_many_processes_are_all_kept_and_applied_once(setup):
    strategy, _ = setup
    root = strategy.store.root
    root.mkdir(parents=True)
    procs = [multiprocessing.get_context("fork").Process(target=_send_resets,
                                                         args=(str(root), 25))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    commands = read_commands(root)
    assert len(commands) == 100 and len({c.id for c in commands}) == 100
    strategy._poll_control(T0)
    assert strategy.guard.state.reset_token_applied == 100
    assert len(read_acks(strategy.store)) == 100
    strategy._control_key = None  # force a re-read: nothing is applied twice
    strategy._poll_control(T0 + timedelta(minutes=1))
    assert strategy.guard.state.reset_token_applied == 100


def test_a_halt_racing_a_resume_is_not_lost(setup):
    strategy, _ = setup
    root = strategy.store.root
    root.mkdir(parents=True)
    append_command(root, Command.new("halt", T0, "first"))
    append_command(root, Command.new("resume", T0))
    append_command(root, Command.new("halt", T0, "last"))
    strategy._poll_control(T0)
    events = [e["kind"] for e in strategy.guard.state.events]
    assert events == ["manual_halt", "manual_resume", "manual_halt"]
    assert strategy.guard.state.manual_halt_reason == "last"


def test_status_on_a_corrupt_risk_state_reports_it_and_renames_nothing(setup, capsys):
    strategy, cli = setup
    g = strategy.guard
    g.observe(T0, 10_000)
    strategy.store.save_json(RISK_STATE_NAME, g.state.to_state(), schema=RISK_SCHEMA)
    strategy.store.save_json(RISK_STATE_NAME, g.state.to_state(), schema=RISK_SCHEMA)
    (strategy.store.root / "risk.json").write_bytes(b'{"schema": 1, "data": {"peak_eq')
    before = {p.name: p.read_bytes() for p in strategy.store.root.iterdir()}
    info = run_json(capsys, ["status", "--json", *cli])
    assert info["state_problems"] and "left in place" in info["state_problems"][0]
    assert info["state_file"].endswith("risk.json.prev")
    assert ftlearn(["status", *cli]) == 0 and "STATE PROBLEM" in capsys.readouterr().out
    assert ftlearn(["stats", *cli]) == 0
    assert {p.name: p.read_bytes() for p in strategy.store.root.iterdir()} == before


def test_stats_and_report_read_the_learned_state(setup, capsys, tmp_path, monkeypatch):
    strategy, cli = setup
    monkeypatch.delenv("ADVL_DATA_DIR", raising=False)  # the report without a price timeline
    assert ftlearn(["stats", *cli]) == 0
    assert "no learned state yet" in capsys.readouterr().out
    brain = strategy.brain
    for i in range(6):
        t = T0 + timedelta(hours=6 * i)
        d = brain.decide(t, "BTC/USDT", STRONG, "BULL_MOMENTUM", 0.8, 0.0, 0.3)
        brain.record_close(t + timedelta(hours=2), "BTC/USDT", d.to_dict(), 0.01 * (-1) ** i)
    strategy.store.save_json(BRAIN_STATE_NAME, brain.to_state(), schema=BRAIN_SCHEMA)

    stats = run_json(capsys, ["stats", "--json", *cli])
    assert stats["closed_trades"] == 6
    assert ftlearn(["stats", *cli]) == 0
    text = capsys.readouterr().out
    assert "BULL_MOMENTUM" in text
    out = tmp_path / "report"
    assert ftlearn(["report", *cli, "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    for name in ("weights", "by_regime", "by_learner"):
        assert f"{name}.png" in html and (out / f"{name}.png").stat().st_size > 1_000


def test_status_with_fallback_off_names_the_trigger_and_the_drawdown_now(setup, capsys,
                                                                        monkeypatch):
    strategy, cli = setup
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps the table to the terminal
    g = strategy.guard
    g.observe(T0, 10_000)
    g.observe(T0 + timedelta(hours=1), 9_700)  # 3% below the peak
    strategy.store.save_json(RISK_STATE_NAME, g.state.to_state(), schema=RISK_SCHEMA)
    strategy.store.save_json(BRAIN_STATE_NAME, strategy.brain.to_state(), schema=BRAIN_SCHEMA)
    capsys.readouterr()
    assert ftlearn(["status", *cli]) == 0
    text = " ".join(capsys.readouterr().out.split())
    # Not "no (drawdown above 10.00%)", which read as if the drawdown were above 10%.
    assert "applies while drawdown exceeds 10.00%; now 3.00%" in text, text
