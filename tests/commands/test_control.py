"""``ftlearn status``, ``resume --reset-drawdown``, ``stats`` and ``report`` on the state a
strategy writes: the CLI reads it, and what it writes reaches the strategy's risk guard."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from learning.brain.decision import SCHEMA_VERSION as BRAIN_SCHEMA
from learning.cli import main as ftlearn
from learning.core.risk import SCHEMA_VERSION as RISK_SCHEMA
from learning.strategy.brain_hooks import BRAIN_STATE_NAME
from learning.strategy.strategy import RISK_STATE_NAME
from tests.conftest import ROOT, make_strategy

T0 = datetime(2025, 6, 1, tzinfo=UTC)
STRONG = {"technical": 0.9, "ai": None, "theme": 0.8, "sentiment": 0.7}


@pytest.fixture
def setup(tmp_path):
    overlay = tmp_path / "overlay.json"
    overlay.write_text(json.dumps({"user_data_dir": str(tmp_path)}))
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

    assert ftlearn(["resume", "--reset-drawdown", *cli]) == 0
    assert "drawdown reset #1" in capsys.readouterr().out
    now = T0 + timedelta(days=3)
    assert "max_drawdown_halt" in g.blocks(now)
    strategy._equity = 10_000.0
    strategy._poll_control(now)  # what the running bot does on its next loop
    assert g.blocks(now) == () and g.state.peak_equity == 10_000
    assert run_json(capsys, ["status", "--json", *cli])["control"]["reset_token"] == 1


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
