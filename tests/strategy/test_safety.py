"""The strategy's safety behaviour around its own state and the exchange: the guard fails closed on
state it cannot trust, shipped API credentials stop start-up, an add counts what the position is
worth, an over-cap trim-back finishes within one lot, a decision waiting for its fill survives a
restart, and a backtest reads the live policy database without writing it."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freqtrade.enums import RunMode
from freqtrade.exceptions import OperationalException

from learning.core.control import Command, append_command
from learning.core.ftconfig import SHIPPED_JWT_SECRET, SHIPPED_PASSWORD
from learning.core.risk import SCHEMA_VERSION as RISK_SCHEMA
from learning.core.risk import RiskGuard
from learning.strategy.strategy import RISK_STATE_NAME
from tests.conftest import ROOT, make_strategy

T0 = datetime(2025, 6, 1, tzinfo=UTC)
TICK_SIZE = 4  # ccxt's precision mode of Binance: precision = the step itself


def live_strategy(tmp_path: Path, **overrides):
    """AdvancedLearning from config.json as freqtrade builds it for a dry-run."""
    from strategies.AdvancedLearning import AdvancedLearning

    config = json.loads((ROOT / "config.json").read_text())
    config.update({"user_data_dir": str(tmp_path), "runmode": RunMode.DRY_RUN, **overrides})
    return AdvancedLearning(config)


def start(strategy, monkeypatch) -> None:
    import atexit

    monkeypatch.setattr(atexit, "register", lambda *a, **k: None)  # no save at test exit
    strategy.bot_start()


def save_risk_twice(strategy, older: RiskGuard, newer: RiskGuard) -> None:
    strategy.store.save_json(RISK_STATE_NAME, older.state.to_state(), schema=RISK_SCHEMA)
    strategy.store.save_json(RISK_STATE_NAME, newer.state.to_state(), schema=RISK_SCHEMA)


def guards(strategy) -> tuple[RiskGuard, RiskGuard]:
    """A guard before and after a drawdown halt."""
    g = RiskGuard(strategy.learning.risk)
    g.observe(T0, 10_000)
    g.observe(T0 + timedelta(hours=1), 12_000)
    before = RiskGuard(g.config, dataclasses.replace(g.state, events=list(g.state.events)))
    assert g.observe(T0 + timedelta(hours=2), 10_000) == ["max_drawdown"]
    return before, g


# ---------------------------------------------------------------------------------- item 3
@pytest.mark.parametrize("damage", [b'{"schema": 1, "data": {"peak_equity": 120', b'{"schema": 7, '
                                    b'"data": {}}', b'{"schema": 1, "data": {"peak_equity": NaN}}'])
def test_bot_start_with_untrusted_newest_risk_state_starts_halted_naming_the_file(
        tmp_path, monkeypatch, caplog, damage):
    s = live_strategy(tmp_path)
    before, after = guards(s)
    save_risk_twice(s, before, after)  # .prev predates the drawdown halt
    (s.store.root / "risk.json").write_bytes(damage)
    with caplog.at_level(logging.ERROR):
        start(s, monkeypatch)
    now = datetime.now(UTC)
    assert "manual_halt" in s.guard.blocks(now), "entries must stay blocked"
    assert s.guard.state.peak_equity == 12_000, "the .prev values are kept, halted"
    text = caplog.text
    assert "risk.json" in text and "risk.json.prev" in text and "ftlearn resume" in text
    assert "ENTRIES AND ADDS ARE HALTED" in text
    # The halt is saved at once, so `ftlearn status` shows it.
    saved = json.loads((s.store.root / "risk.json").read_text())["data"]
    assert saved["manual_halt"] and "untrusted" in saved["manual_halt_reason"]


def test_bot_start_with_both_risk_copies_bad_starts_halted_without_claiming_a_fallback(
        tmp_path, monkeypatch, caplog):
    s = live_strategy(tmp_path)
    before, after = guards(s)
    save_risk_twice(s, before, after)
    for name in ("risk.json", "risk.json.prev"):
        (s.store.root / name).write_bytes(b"\x00torn")
    with caplog.at_level(logging.ERROR):
        start(s, monkeypatch)
    assert "manual_halt" in s.guard.blocks(datetime.now(UTC))
    assert "started without it" in caplog.text
    assert "using the previous" not in caplog.text


def test_bot_start_with_good_risk_state_is_not_halted(tmp_path, monkeypatch):
    s = live_strategy(tmp_path)
    before, after = guards(s)
    save_risk_twice(s, before, after)
    start(s, monkeypatch)
    assert s.guard.state.drawdown_halt and not s.guard.state.manual_halt


def test_untrusted_start_ignores_queued_resumes_and_a_later_resume_lifts_it(tmp_path,
                                                                           monkeypatch):
    s = live_strategy(tmp_path)
    before, after = guards(s)
    save_risk_twice(s, before, after)
    append_command(s.store.root, Command.new("resume", T0, reset_drawdown=True))  # sent earlier
    (s.store.root / "risk.json").write_bytes(b"torn")
    start(s, monkeypatch)
    now = datetime.now(UTC)
    s._poll_control(now)
    assert "manual_halt" in s.guard.blocks(now)
    append_command(s.store.root, Command.new("resume", now))
    s._poll_control(now)
    assert "manual_halt" not in s.guard.blocks(now)


# ---------------------------------------------------------------------------------- item 8
def test_dry_run_with_the_api_enabled_and_shipped_credentials_refuses_to_start(tmp_path):
    api = {**json.loads((ROOT / "config.json").read_text())["api_server"], "enabled": True}
    assert api["jwt_secret_key"] == SHIPPED_JWT_SECRET and api["password"] == SHIPPED_PASSWORD
    with pytest.raises(OperationalException) as err:
        live_strategy(tmp_path, api_server=api)
    text = str(err.value)
    assert "api_server.jwt_secret_key and api_server.password" in text
    assert "--config" in text and "secrets.token_hex" in text
    with pytest.raises(OperationalException, match="api_server.password is still"):
        live_strategy(tmp_path, api_server={**api, "jwt_secret_key": "k" * 40})
    live_strategy(tmp_path, api_server={**api, "jwt_secret_key": "k" * 40, "password": "own"})
    live_strategy(tmp_path, api_server={**api, "enabled": False})


def test_backtest_with_shipped_credentials_starts(tmp_path):
    make_strategy(tmp_path)  # a backtest starts no API server


# ---------------------------------------------------------------------------------- item 5
class FakeOrder:
    def __init__(self, stake: float) -> None:
        self.stake_amount = stake


class FakeTrade:
    id, pair, entry_side = 7, "BTC/USDT", "buy"
    has_open_orders = False
    nr_of_successful_exits = 0
    amount_precision, precision_mode, contract_size = 0.00001, TICK_SIZE, 1.0

    def __init__(self, stake: float, amount: float, entries: int = 1) -> None:
        self.stake_amount, self.amount = stake, amount
        self.nr_of_successful_entries = entries
        self.custom: dict = {}
        self.open_date_utc = T0

    def get_custom_data(self, key, default=None):
        return self.custom.get(key, default)

    def set_custom_data(self, key, value):
        self.custom[key] = value

    def select_filled_orders(self, side):
        return [FakeOrder(self.stake_amount)]


def adds_without_signal(tmp_path):
    s = make_strategy(tmp_path)
    s.learning = dataclasses.replace(s.learning, pyramiding=dataclasses.replace(
        s.learning.pyramiding, add_requires_signal=False, add_min_profit=0.0))
    s._equity, s._equity_time = 10_000.0, T0
    return s


def adjust(s, trade, rate, min_stake=None):
    # 3% open profit: an add is due (add_min_profit 0), a trim is not (trim_profit 6%).
    return s.adjust_trade_position(trade, T0, rate, 0.03, min_stake, 1e9, rate, rate, 0.03, 0.03)


def test_add_to_a_position_worth_more_than_it_cost_keeps_its_market_value_under_the_cap(
        tmp_path):
    s = adds_without_signal(tmp_path)
    # Bought for 1,500; the price rose 26.7%: the position is worth 1,900 of a 2,000 cap.
    trade = FakeTrade(stake=1_500.0, amount=0.019)
    amount, tag = adjust(s, trade, rate=100_000.0)
    assert tag == "add"
    assert trade.amount * 100_000.0 + amount <= 0.2 * 10_000 * (1 + 1e-12)
    assert amount == pytest.approx(100.0)


def test_add_to_a_position_worth_less_than_it_cost_keeps_its_cost_under_the_cap(tmp_path):
    s = adds_without_signal(tmp_path)
    trade = FakeTrade(stake=1_500.0, amount=0.019)  # worth 950 after a 50% fall
    amount, _ = adjust(s, trade, rate=50_000.0)
    assert trade.stake_amount + amount <= 2_000.0 * (1 + 1e-12)


# ---------------------------------------------------------------------------------- item 20
class FakeMarkets:
    def __init__(self, min_cost: float | None) -> None:
        self.min_cost = min_cost

    def market(self, pair):
        return {"limits": {"cost": {"min": self.min_cost}}}


def test_trim_back_within_one_lot_of_the_target_finishes_and_clears_the_mark(tmp_path):
    s = make_strategy(tmp_path)
    s.dp = FakeMarkets(min_cost=5.0)
    trade = FakeTrade(stake=1_997.17, amount=0.01997)  # one lot (0.00001 BTC) = 1 USDT
    trade.custom["trim_to"] = 1_996.95
    assert adjust(s, trade, rate=100_000.0) != (pytest.approx(-0.22), "over_cap")
    assert trade.custom["trim_to"] is None and s._trim_to[trade.id] is None


def test_trim_back_below_the_exchange_minimum_order_finishes(tmp_path):
    s = make_strategy(tmp_path)
    s.dp = FakeMarkets(min_cost=5.0)
    trade = FakeTrade(stake=1_999.0, amount=0.01999)
    trade.custom["trim_to"] = 1_996.0  # 3 USDT above: three lots, but under the 5 USDT minimum
    result = adjust(s, trade, rate=100_000.0)
    assert result is None or result[1] != "over_cap"
    assert trade.custom["trim_to"] is None


def test_trim_back_of_several_lots_above_the_minimum_still_exits(tmp_path):
    s = make_strategy(tmp_path)
    s.dp = FakeMarkets(min_cost=5.0)
    trade = FakeTrade(stake=2_500.0, amount=0.025)
    trade.custom["trim_to"] = 2_000.0
    amount, tag = adjust(s, trade, rate=100_000.0)
    assert tag == "over_cap" and amount == pytest.approx(-500.0)
    assert trade.custom["trim_to"] == 2_000.0


# ---------------------------------------------------------------------------------- item 19
class FakeFill:
    ft_order_side = "buy"


def decision(now: datetime) -> dict:
    return {"time": now.isoformat(), "pair": "BTC/USDT", "regime": "CHOPPY",
            "regime_confidence": 0.7, "learner": "Balanced", "mode": "learned",
            "weights": {"technical": 1.0}, "scores": {"technical": 0.5}, "overall": 0.5,
            "threshold": 0.3, "stake_share": 0.75, "take": True, "policy": ""}


def test_decision_of_an_entry_waiting_for_its_fill_survives_a_restart(tmp_path, monkeypatch):
    now = datetime.now(UTC).replace(microsecond=0)
    first = live_strategy(tmp_path)
    first._equity, first._equity_time = 10_000.0, now
    first._pending["BTC/USDT"] = decision(now)
    assert first.confirm_trade_entry("BTC/USDT", "limit", 0.01, 100_000.0, "GTC", now,
                                     "candidate", "long")
    # SIGKILL: nothing else of the first bot survives; the limit order fills after the restart.
    second = live_strategy(tmp_path)
    start(second, monkeypatch)
    trade = FakeTrade(stake=1_000.0, amount=0.01)
    trade.open_date_utc = now + timedelta(seconds=2)  # freqtrade opened it just after deciding
    second.order_filled("BTC/USDT", trade, FakeFill(), now + timedelta(minutes=3))
    assert trade.custom["decision"]["learner"] == "Balanced"
    assert trade.custom["decision"]["time"] == now.isoformat()
    # Used once: a third start has nothing waiting.
    third = live_strategy(tmp_path)
    assert third._waiting.load(now) == 0


def test_waiting_decision_of_another_order_is_not_given_to_a_later_trade(tmp_path, monkeypatch):
    now = datetime.now(UTC).replace(microsecond=0)
    first = live_strategy(tmp_path)
    first._equity, first._equity_time = 10_000.0, now
    first._pending["BTC/USDT"] = decision(now)
    assert first.confirm_trade_entry("BTC/USDT", "limit", 0.01, 100_000.0, "GTC", now,
                                     "candidate", "long")
    second = live_strategy(tmp_path)
    start(second, monkeypatch)
    trade = FakeTrade(stake=1_000.0, amount=0.01)
    trade.open_date_utc = now + timedelta(hours=3)  # that order was cancelled; this is another
    second.order_filled("BTC/USDT", trade, FakeFill(), now + timedelta(hours=3))
    assert "decision" not in trade.custom


# ---------------------------------------------------------------------------------- item 6
def test_backtest_reads_the_live_policy_database_without_migrating_or_journaling_it(tmp_path):
    from learning.router.registry import MIGRATIONS

    live = tmp_path / "policy_bandit.db"
    conn = sqlite3.connect(live)  # a version-1 registry in rollback-journal mode
    MIGRATIONS[0](conn)
    conn.execute("INSERT INTO policies (name, type, checkpoint, created, status, champion) "
                 "VALUES ('rules-v1', 'rule', NULL, '2025-01-01T00:00:00+00:00', 'active', 1)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    s = make_strategy(tmp_path / "bt")
    s.learning = dataclasses.replace(s.learning, router=dataclasses.replace(
        s.learning.router, enabled=True, db=str(live)))
    s._init_router(T0)
    assert s.router is not None and "rules-v1" in s._policy_types
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    conn = sqlite3.connect(f"{live.resolve().as_uri()}?mode=ro", uri=True)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
