"""Guard events reach the user as strategy messages (dp.send_msg: Telegram and other handlers
with allow_custom_messages) and in the log: limit trips, manual halt and resume, CRISIS on and
off, and a refused forced entry with the reason."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

from freqtrade.enums import RunMode

from learning.core.control import Command, append_command
from strategies.AdvancedLearning import AdvancedLearning
from tests.conftest import ROOT

T0 = datetime(2025, 6, 2, 12, tzinfo=UTC)


def halt(store, reason, now):
    append_command(store.root, Command.new("halt", now, reason))


def resume(store, now):
    append_command(store.root, Command.new("resume", now))


class Messages:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_msg(self, message: str, *, always_send: bool = False) -> None:
        self.sent.append(message)


def live_strategy(tmp_path):
    config = json.loads((ROOT / "config.json").read_text())
    config.update({"user_data_dir": str(tmp_path), "runmode": RunMode.DRY_RUN})
    s = AdvancedLearning(config)
    s.dp = Messages()
    s.crisis = lambda now: False
    return s


def test_guard_events_with_dry_run_go_out_as_strategy_messages(tmp_path, caplog):
    s = live_strategy(tmp_path)
    equity = iter([10_000.0, 9_700.0])
    s.compute_equity = lambda now: next(equity)
    s.bot_loop_start(T0)
    with caplog.at_level(logging.WARNING, logger="learning.strategy.strategy"):
        s.bot_loop_start(T0 + timedelta(minutes=5))  # -3%: the daily loss limit
    assert any("risk limit hit: daily_loss_limit (entries and adds blocked" in m
               for m in s.dp.sent), s.dp.sent
    assert "daily_loss_limit (entries and adds blocked" in caplog.text

    s.compute_equity = lambda now: 9_700.0
    halt(s.store, "news", T0)
    s.bot_loop_start(T0 + timedelta(minutes=10))
    assert "manual_halt (new entries and adds stopped" in s.dp.sent[-1]
    assert s.dp.sent[-1].endswith("reason: news")
    resume(s.store, T0 + timedelta(minutes=11))
    s.bot_loop_start(T0 + timedelta(minutes=15))
    assert "manual_resume (the manual halt is lifted)" in s.dp.sent[-1]

    s.crisis = lambda now: True
    s.bot_loop_start(T0 + timedelta(minutes=20))
    assert "CRISIS regime: cash only" in s.dp.sent[-1]
    n = len(s.dp.sent)
    s.bot_loop_start(T0 + timedelta(minutes=25))
    assert len(s.dp.sent) == n, "once per change"
    s.crisis = lambda now: False
    s.bot_loop_start(T0 + timedelta(minutes=30))
    assert "CRISIS regime over" in s.dp.sent[-1]


def test_forced_entry_refused_by_the_guard_says_why(tmp_path):
    s = live_strategy(tmp_path)
    s.compute_equity = lambda now: 10_000.0
    s.bot_loop_start(T0)
    s.guard.apply_command(T0, "halt", "maintenance")

    ok = s.confirm_trade_entry("ETH/USDT", "market", 1.0, 2000.0, "GTC", T0, "force_entry",
                               "long")

    assert not ok
    assert s.dp.sent[-1].startswith("AdvancedLearning: forced entry on ETH/USDT refused: "
                                    "manual_halt (new entries and adds stopped")
    # The bot's own (non-forced) entries refused by the guard do not flood the messages.
    n = len(s.dp.sent)
    s.confirm_trade_entry("ETH/USDT", "market", 1.0, 2000.0, "GTC", T0, "candidate", "long")
    assert len(s.dp.sent) == n


def test_risk_state_with_a_halt_applied_is_saved_within_the_same_loop(tmp_path):
    """`ftlearn status` reads risk.json: it must not lag the bot by up to a minute."""
    s = live_strategy(tmp_path)
    s.compute_equity = lambda now: 10_000.0
    s.bot_loop_start(T0)
    halt(s.store, "news", T0 + timedelta(seconds=3))
    s.bot_loop_start(T0 + timedelta(seconds=5))  # the next loop applies it
    saved = json.loads(s.store.path("risk").read_text())["data"]
    assert saved["manual_halt"] and saved["manual_halt_reason"] == "news"
    s.compute_equity = lambda now: 10_250.0
    s.bot_loop_start(T0 + timedelta(seconds=10))
    assert json.loads(s.store.path("risk").read_text())["data"]["peak_equity"] == 10_250.0
