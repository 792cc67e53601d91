"""The bench says when a variant was halted, how much each tier learned, and flags a fallback
that happened on every decision as an error."""

import json

import pandas as pd
import pytest

from learning.bench.diagnostics import diagnostics, notes

END = pd.Timestamp("2025-03-01", tz="UTC")


def write_state(user_data, risk_events, decisions, events=None):
    root = user_data / "learning" / "default" / "backtest"
    root.mkdir(parents=True)
    (root / "risk.json").write_text(json.dumps({"data": {"events": risk_events}}))
    (root / "brain.json").write_text(json.dumps({"data": {"brain": {
        "decisions": decisions, "events": events or {}, "shadow_unresolved": 7}}}))


def test_halts_with_and_without_an_end_are_reported_with_their_length(tmp_path):
    write_state(tmp_path, [
        {"time": "2025-01-01T00:00:00+00:00", "kind": "max_drawdown"},
        {"time": "2025-01-31T00:00:00+00:00", "kind": "drawdown_cool_off"},
        {"time": "2025-02-15T00:00:00+00:00", "kind": "max_drawdown"}], [])
    d = diagnostics(tmp_path, END)
    assert [(h["days"], h["until_end"]) for h in d["halts"]] == [(30.0, False), (14.0, True)]
    assert any("until the end of the range (14.0 days)" in n for n in notes(d))
    assert d["shadow_unresolved"] == 7


def test_fallback_on_every_decision_is_an_error(tmp_path):
    write_state(tmp_path, [], [{"mode": "fallback"}] * 12,
                {"meta": {"real": 3, "shadow": 300}})
    d = diagnostics(tmp_path, END)
    assert d["fallback_share"] == 1.0 and d["errors"]
    assert notes(d)[0].startswith("ERROR: every logged decision fell back")
    assert d["learning_events"]["meta"] == {"real": 3, "shadow": 300}


def test_agents_sizing_by_rule_on_every_entry_is_an_error(tmp_path):
    write_state(tmp_path, [], [{"mode": "learned"}] * 12, {"sizing": {"agent": 0, "rule": 40}})
    d = diagnostics(tmp_path, END)
    assert d["agent_rule_share"] == 1.0
    assert "the Tier 3 agents fell back to rule sizing on every entry" in d["errors"]


def test_a_baseline_without_learning_state_has_no_diagnostics(tmp_path):
    assert diagnostics(tmp_path, END) == {}


def test_volatility_report_compares_realised_with_forecast_position_volatility(tmp_path):
    from learning.bench.diagnostics import volatility
    from learning.data.synth import SynthConfig, generate_market, write_market

    write_market(generate_market(SynthConfig(days=60, pairs=("BTC/USDT",))), tmp_path, ["1h"])
    trades = pd.DataFrame({"pair": ["BTC/USDT"] * 2, "stake_amount": [1000.0, 2000.0],
                           "open_date": pd.to_datetime(["2025-02-01", "2025-02-10"], utc=True),
                           "close_date": pd.to_datetime(["2025-02-03", "2025-02-15"], utc=True)})
    equity = pd.Series([10_000.0, 10_000.0],
                       index=pd.to_datetime(["2025-01-01", "2025-02-05"], utc=True))
    v = volatility(trades, tmp_path, "1h", equity)
    assert v["trades"] == 2
    assert 0.1 < v["forecast_median"] < 3 and 0.1 < v["realised_median"] < 3
    # a position's volatility is its share of equity times the pair's
    assert v["position_targeted_median"] == pytest.approx(0.15 * v["forecast_median"], rel=0.4)
    assert 0.2 < v["realised_over_forecast_median"] < 5
