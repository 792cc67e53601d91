"""The strategy's hooks on a strategy built from config.json: a refused FreqAI model leaves it
trading without one; a regressor's predictions become the *ai* component; the Tier 3 agent's
stop, take-profit and hold limit reach ``custom_stoploss`` and ``custom_exit``."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from freqtrade.strategy import stoploss_from_open

from learning.core.errors import StateError
from learning.data.synth import resample_candles
from learning.strategy.sizing import NOT_RL
from tests.conftest import make_ohlcv, make_strategy

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


class FrameProvider:
    def __init__(self, frames: dict) -> None:
        self.frames = frames

    def get_pair_dataframe(self, pair: str, timeframe: str) -> pd.DataFrame:
        return self.frames[(pair, timeframe)].copy()


class RefusingFreqAI:
    calls = 0

    def start(self, dataframe, metadata, strategy):
        self.calls += 1
        raise StateError("PPOPyramiding model was saved by schema version 0, this code reads "
                         "version 1")


class Trade:
    id, pair, stake_amount, open_rate = 1, "BTC/USDT", 100.0, 1.0
    open_date_utc = datetime(2025, 1, 1)

    def get_custom_data(self, key, default=None):
        return default


def market_frames(n: int, seed: int) -> dict:
    """Random-walk 5m candles per pair, and their 1h candles (the detector's timeframe)."""
    frames = {}
    for i, pair in enumerate(PAIRS):
        frames[(pair, "5m")] = make_ohlcv(n, seed=seed + i)
        frames[(pair, "1h")] = resample_candles(frames[(pair, "5m")], "1h")
    return frames


@pytest.fixture
def strategy(tmp_path):
    frames = market_frames(3000, seed=11)
    s = make_strategy(tmp_path)
    s.dp = FrameProvider(frames)
    s.config["freqai"] = {**s.config.get("freqai", {}), "enabled": True}
    s.freqai = RefusingFreqAI()
    return s, frames


def test_refused_freqai_model_leaves_no_ai_component_and_rule_sizing(strategy, caplog):
    s, frames = strategy
    with caplog.at_level(logging.ERROR, logger="learning.strategy.strategy"):
        for _ in range(2):  # e.g. two live candles: one error line, not one per candle
            df = s.populate_indicators(frames[("BTC/USDT", "5m")].copy(), {"pair": "BTC/USDT"})
    assert s.freqai.calls == 2
    assert df["score_ai"].isna().all()
    assert np.isfinite(df["score_technical"].iloc[-1])
    assert s._series["BTC/USDT"].pyr is None  # no grid columns: the pyramiding rules decide
    now = pd.Timestamp(frames[("BTC/USDT", "5m")]["date"].iloc[-1]).to_pydatetime()
    assert s.rl_adjustment(Trade(), now, 0.01, None, 1000.0) is NOT_RL
    refused = [r for r in caplog.records if "FreqAI model refused" in r.getMessage()]
    assert len(refused) == 1 and "schema version" in refused[0].getMessage()


def test_regressor_prediction_becomes_the_ai_component_in_units_of_its_spread(strategy):
    s, _ = strategy
    df = pd.DataFrame({"&-s_return": [0.01, -0.02, 0.01, 0.0],
                       "&-s_return_std": [0.01, 0.01, 0.0, 0.02],
                       "do_predict": [1, 1, 1, 0]})
    score = s.ai_score(df)
    assert score.iloc[0] == pytest.approx(np.tanh(1.0))
    assert score.iloc[1] == pytest.approx(np.tanh(-2.0))
    assert np.isnan(score.iloc[2]), "no spread: no scale, no score"
    assert np.isnan(score.iloc[3]), "the model abstained (do_predict 0)"


def test_agent_stop_take_profit_and_hold_limit_drive_the_exit_hooks(strategy):
    s, frames = strategy
    s.populate_indicators(frames[("BTC/USDT", "5m")].copy(), {"pair": "BTC/USDT"})
    trade = Trade()
    now = pd.Timestamp(frames[("BTC/USDT", "5m")]["date"].iloc[-1]).to_pydatetime()
    trade.open_date_utc = now - timedelta(minutes=5 * 10)  # ten candles in the trade
    s._init_sizing(None)  # what bot_start does (config.json: rule sizing, no agent set)
    s.agents = object()  # an agent set is configured; the trade's parameters are its output
    s._trade_params[trade.id] = {"stop_loss": 0.07, "take_profit": 0.15, "hold_candles": 12}
    assert s.custom_stoploss("BTC/USDT", trade, now, 1.0, 0.02, False) == pytest.approx(
        stoploss_from_open(-0.07, 0.02))
    assert s.custom_exit("BTC/USDT", trade, now, 1.0, 0.02) is None
    assert s.custom_exit("BTC/USDT", trade, now, 1.0, 0.15) == "agent_take_profit"
    later = now + timedelta(minutes=5 * 2)
    assert s.custom_exit("BTC/USDT", trade, later, 1.0, 0.02) == "agent_hold_limit"
    # Without agent parameters for the trade, the ATR stop and the other exits decide.
    s._trade_params[trade.id] = None
    assert s.custom_exit("BTC/USDT", trade, later, 1.0, 0.15) is None


def test_a_ppo_policy_with_an_agent_folder_sizes_its_entries_with_those_agents(tmp_path, caplog):
    from learning.agents.trade_agent import (
        AGENT_SCHEMA,
        AgentSet,
        PPOConfig,
        TradeLimits,
        agent_state_name,
    )
    from learning.agents.trade_space import STATE_DIM
    from learning.core.store import StateStore

    s = make_strategy(tmp_path)
    s.learning = dataclasses.replace(
        s.learning, sizing=dataclasses.replace(s.learning.sizing, agent="ppo"))
    start = datetime(2025, 2, 1, tzinfo=UTC)

    def save(folder, seed: int, data_end: str) -> AgentSet:
        agents = AgentSet.create(s.brain.meta.config.learners, PPOConfig(seed=seed))
        meta = {"data_end": data_end}
        for name, agent in agents.agents.items():
            StateStore(folder).save_torch(agent_state_name(name, offline=True),
                                          {"payload": agent.checkpoint(meta)},
                                          schema=AGENT_SCHEMA, meta=meta)
        return agents

    save(s.store.root, 1, "2025-01-15T00:00:00+00:00")
    v2 = save(tmp_path / "v2", 2, "2025-01-20T00:00:00+00:00")
    save(tmp_path / "late", 3, "2025-03-01T00:00:00+00:00")  # trained after the start
    s._init_sizing(start)
    s._policy_types = {"brain": "meta", "v2": "ppo", "late": "ppo", "gone": "ppo"}
    s._policy_checkpoints = {"brain": str(s.store.root), "v2": str(tmp_path / "v2"),
                             "late": str(tmp_path / "late"), "gone": str(tmp_path / "nope")}

    state = np.linspace(-0.8, 0.8, STATE_DIM)  # (all-zero inputs meet zero biases: no signal)

    def params(agents):
        return agents.decide("Balanced", state, TradeLimits(allowance=1000.0),
                             rng=np.random.default_rng(0)).params

    assert s.agents_for("brain") is s.agents and s.agents_for("") is s.agents
    chosen = s.agents_for("v2")
    assert chosen is not s.agents and s.agents_for("v2") is chosen, "loaded once"
    assert params(chosen) == params(v2) != params(s.agents)
    with caplog.at_level(logging.ERROR, logger="learning.strategy.sizing"):
        late, gone = s.agents_for("late"), s.agents_for("gone")
    assert all(a is None for a in late.agents.values()), "lookahead: refused, rule parameters"
    assert params(late).source == "rule"
    assert gone is s.agents
    text = caplog.text
    assert "of policy late was trained on data up to" in text and "nope not found" in text

    # Entries routed to v2 are sized by v2's agents; their outcomes do not train the run's.
    s._agent_state = lambda *args: state
    s.brain.rng_for = lambda *args: np.random.default_rng(0)
    sized = s.size_with_agent("BTC/USDT", start, 10_000.0, 1000.0, "Balanced", {}, "v2")
    assert sized["policy"] == "v2" and sized["stake"] == pytest.approx(params(v2).stake)
    trade = Trade()
    s._trade_params[trade.id] = sized

    def no_update(*args, **kwargs):
        raise AssertionError("a challenger's outcome reached the run's agents")

    s.agents.record_outcome = no_update
    s.agent_learn(trade, 0.02, start + timedelta(hours=5))


def test_corrupt_policy_database_at_start_trades_on_the_last_recorded_champion(tmp_path, caplog):
    from learning.router.router import Router

    db = tmp_path / "policy_bandit.db"
    first = make_strategy(tmp_path)
    first.learning = dataclasses.replace(
        first.learning, router=dataclasses.replace(first.learning.router, enabled=True,
                                                   db=str(db)))
    Router(db).register("rules-v1", "rule", None, datetime(2025, 1, 1, tzinfo=UTC))
    first._init_router(datetime(2025, 1, 2, tzinfo=UTC))
    assert first.router is not None
    assert first.select_policy("BTC/USDT", datetime(2025, 1, 2, 1, tzinfo=UTC)) == "rules-v1"

    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 100)
    second = make_strategy(tmp_path)
    second.learning = first.learning
    with caplog.at_level(logging.ERROR, logger="learning.strategy.brain_hooks"):
        second._init_router(datetime(2025, 1, 3, tzinfo=UTC))
    assert second.router is None
    assert "last champion rules-v1 (rule)" in caplog.text
    assert second.select_policy("ETH/USDT", datetime(2025, 1, 3, 1, tzinfo=UTC)) == "rules-v1"
    assert second._policy_types["rules-v1"] == "rule"  # so the rule-based path decides

    # Nothing recorded (a first start on a broken database): the rule-based policy.
    fresh = make_strategy(tmp_path / "other")
    fresh.learning = first.learning
    fresh._init_router(datetime(2025, 1, 3, tzinfo=UTC))
    assert fresh.select_policy("ETH/USDT", datetime(2025, 1, 3, 1, tzinfo=UTC)) == "rule"


def test_bad_rows_get_no_entry_and_one_log_line(tmp_path, caplog):
    frames = market_frames(6000, seed=21)
    clean = make_strategy(tmp_path / "a")
    clean.dp = FrameProvider(frames)
    pair = "BTC/USDT"
    df = clean.populate_indicators(frames[(pair, "5m")].copy(), {"pair": pair})
    df = clean.populate_entry_trend(df, {"pair": pair})
    late = df.index >= clean.startup_candle_count
    entries = df.index[(df["enter_long"] == 1) & late][:5]
    assert len(entries) == 5, "the clean frame has candidates to spoil"

    spoiled = frames[(pair, "5m")].copy()
    spoiled.loc[entries[:3], "volume"] = 0.0
    spoiled.loc[entries[3:], "close"] = np.nan
    s = make_strategy(tmp_path / "b")
    s.dp = FrameProvider({**frames, (pair, "5m"): spoiled})
    with caplog.at_level(logging.WARNING, logger="learning.strategy.strategy"):
        for _ in range(2):
            out = s.populate_indicators(spoiled.copy(), {"pair": pair})
            out = s.populate_entry_trend(out, {"pair": pair})
    assert not out.loc[entries, "data_ok"].any()
    assert (out.loc[entries, "enter_long"] != 1).all()
    lines = [r for r in caplog.records if "zero volume or inconsistent prices" in r.getMessage()]
    assert len(lines) == 1 and "has 5 candles" in lines[0].getMessage()


def test_plot_config_shows_the_freqai_model_outputs_when_freqai_is_on(strategy):
    s, _ = strategy  # FreqAI enabled, a (refusing) regressor-like model
    assert set(s.plot_config["subplots"]["FreqAI"]) == {"&-s_return", "&-anomaly"}
    s.config["freqai"]["enabled"] = False
    assert "FreqAI" not in s.plot_config["subplots"]


def test_score_exit_comes_from_custom_exit_after_the_guard_never_from_the_exit_signal(strategy):
    # freqtrade does not call custom_exit on a candle whose exit signal is set: a signal there
    # would hide the guard's exits behind one that confirm_trade_exit refuses for swing trades.
    s, frames = strategy
    df = s.populate_indicators(frames[("BTC/USDT", "5m")].copy(), {"pair": "BTC/USDT"})
    df = s.populate_exit_trend(df, {"pair": "BTC/USDT"})
    assert (df["exit_long"] == 0).all()
    low = df.index[(df["score_exit"] == 1)]
    high = df.index[(df["score_exit"] == 0) & df["data_ok"]]
    assert len(low) and len(high), "the random walk must have candles on both sides"
    step = timedelta(minutes=5)
    at = lambda i: pd.Timestamp(df["date"].iloc[i]).to_pydatetime() + step  # noqa: E731
    s._init_sizing(None)  # what bot_start does (config.json: rule sizing)
    trade = Trade()  # no exit profile: the score's exit applies
    trade.open_date_utc = at(0)
    assert s.custom_exit("BTC/USDT", trade, at(low[-1]), 1.0, 0.0) == "score_exit"
    assert s.custom_exit("BTC/USDT", trade, at(high[-1]), 1.0, 0.0) is None
    s.guard.state.drawdown_halt = True
    assert s.custom_exit("BTC/USDT", trade, at(low[-1]), 1.0, 0.0) == "risk_max_drawdown"
