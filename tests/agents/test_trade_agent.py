"""Tier 3 trade-parameter agent (learning/agents/trade_agent.py) and its simulator (learning/agents/trade_sim.py)."""

from __future__ import annotations

import dataclasses
import logging
import math

import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings

from learning.agents.trade_agent import (
    ACTION_DIM,
    HOLD_DAYS_RANGE,
    SCHEMA_VERSION,
    SIZE_RANGE,
    STATE_DIM,
    STATE_NAMES,
    STOP_RANGE,
    TAKE_PROFIT_RANGE,
    AgentSet,
    PPOConfig,
    RewardConfig,
    TradeLimits,
    TradeParamAgent,
    build_state,
    churn_cost,
    decode_action,
    encode_params,
    loss_at_stop,
    performance_stats,
    reward_terms,
)
from learning.agents.trade_sim import (
    MarketData,
    SimConfig,
    TradeParamEnv,
    align_regime_probs,
    pair_features,
    profit_ratio,
    run_policy,
    simulate_trade,
    train_offline,
)
from learning.brain.meta import DEFAULT_LEARNERS, LearnerProfile
from learning.brain.regime import PROB_COLUMNS
from learning.core.errors import StateError
from learning.core.store import StateStore
from tests.conftest import make_ohlcv

BALANCED = DEFAULT_LEARNERS[2]
PORTFOLIO = {"cash_frac": 0.5, "open_positions": 2, "exposure": 0.5, "pnl": 0.05,
             "open_pnl": 0.01, "drawdown": 0.02, "day_pnl": 0.0}
MARKET = {"btc_trend": 1.5, "btc_vol": math.sqrt(0.005 * 0.2), "breadth": 0.6,
          "pair_trend": -0.3, "pair_vol": 0.04, "pair_drawdown": 0.1}
FAST = PPOConfig(n_steps=256, batch_size=64, n_envs=8, n_epochs=10, learning_rate=1e-3)


def state(**over: float) -> np.ndarray:
    return build_state({**PORTFOLIO, **over}, MARKET, scores={"technical": 0.4})


def candles(close: np.ndarray, spread: float = 0.001, freq: str = "1h") -> pd.DataFrame:
    open_ = np.concatenate([[close[0]], close[:-1]])
    return pd.DataFrame({
        "date": pd.date_range("2025-01-01", periods=len(close), freq=freq, tz="UTC"),
        "open": open_, "high": np.maximum(open_, close) * (1 + spread),
        "low": np.minimum(open_, close) * (1 - spread), "close": close, "volume": 1.0})


def signal_market(n_slots: int = 240, slot: int = 192, seed: int = 0):
    """1h candles in 8-day slots. At each slot's first candle the 'theme' score s = ±1 says what
    follows the entry: s = +1 dips 8 % within 4 candles, then rallies to +30 % by candle 30;
    s = -1 slides to -40 % by candle 30. Best: full size with a stop wider than 8 % and a take
    profit at most 30 % when s = +1; no stake when s = -1."""
    rng = np.random.default_rng(seed)
    sig = rng.choice([-1.0, 1.0], n_slots)
    close, score = np.empty(n_slots * slot), np.zeros(n_slots * slot)
    j = np.arange(slot - 1)
    for k in range(n_slots):
        knots = ([0, 4, 30, slot], [1.0, 0.92, 1.30, 1.30]) if sig[k] > 0 else (
            [0, 30, slot], [1.0, 0.60, 0.60])
        close[k * slot] = 100.0
        close[k * slot + 1:(k + 1) * slot] = 100.0 * np.interp(j, *knots)
        score[k * slot] = sig[k]
    close *= 1 + 0.0005 * rng.standard_normal(len(close))  # finite volatility features
    return candles(close), score


SIGNAL_SIM = SimConfig(entry_threshold=None, entry_every_hours=192, warmup_days=0,
                       episode_trades=32)


@pytest.fixture(scope="module")
def signal_env() -> tuple[TradeParamEnv, TradeParamEnv]:
    df, score = signal_market()
    market = MarketData.from_candles({"BTC/USDT": df}, "1h", config=SIGNAL_SIM,
                                     scores={"BTC/USDT": {"theme": score}})
    evaluation = dataclasses.replace(SIGNAL_SIM, halt_on_drawdown=False, episode_trades=10**6)
    return TradeParamEnv(market, BALANCED, SIGNAL_SIM), TradeParamEnv(market, BALANCED, evaluation)


def mean_action(agent: TradeParamAgent):
    return lambda obs: agent.policy_output(obs)[0]


# -- state ------------------------------------------------------------------------------------
def test_state_fields_with_issue_groups_have_27_unique_names():
    assert STATE_DIM == 27 and len(set(STATE_NAMES)) == 27
    for name in ("cash_frac", "drawdown", "regime_crisis", "btc_trend", "breadth",
                 "score_ai", "win_rate", "sharpe", "trades_per_week"):
        assert name in STATE_NAMES


def test_build_state_with_complete_inputs_scales_by_hand():
    s = state()
    assert s.shape == (27,) and s.dtype == np.float32 and np.all(np.abs(s) <= 1)
    assert s[STATE_NAMES.index("cash_frac")] == pytest.approx(0.0)       # 0.5 of [0, 1]
    assert s[STATE_NAMES.index("btc_trend")] == pytest.approx(0.5)       # 1.5 of [-3, 3]
    assert s[STATE_NAMES.index("btc_vol")] == pytest.approx(0.0, abs=1e-6)  # log midpoint
    assert s[STATE_NAMES.index("open_positions")] == pytest.approx(-0.6)  # 2 of [0, 10]


def test_build_state_with_missing_optional_inputs_uses_defaults():
    s = build_state(PORTFOLIO, MARKET, scores={"technical": 0.4, "ai": float("nan")})
    regimes = [STATE_NAMES.index(n) for n in STATE_NAMES if n.startswith("regime_")]
    assert np.allclose(s[regimes], 2 * 0.2 - 1)                  # unknown regime: uniform
    assert s[STATE_NAMES.index("score_ai")] == 0.0
    assert s[STATE_NAMES.index("ai_available")] == -1.0           # 0 of [0, 1]
    assert s[STATE_NAMES.index("win_rate")] == 0.0                # 0.5 of [0, 1]
    with_ai = build_state(PORTFOLIO, MARKET, scores={"ai": -0.5},
                          regime_probs={"CRISIS": 2.0, "CHOPPY": 2.0})
    assert with_ai[STATE_NAMES.index("ai_available")] == 1.0
    assert with_ai[STATE_NAMES.index("regime_crisis")] == pytest.approx(0.0)  # normalised 0.5


def test_build_state_with_nan_required_value_or_unknown_key_flags_it():
    s = build_state({**PORTFOLIO, "drawdown": float("nan")}, MARKET)
    assert np.isnan(s[STATE_NAMES.index("drawdown")])
    assert np.isnan(build_state(PORTFOLIO, {})[STATE_NAMES.index("btc_vol")])
    with pytest.raises(ValueError, match="cash_pct"):
        build_state({"cash_pct": 1.0}, MARKET)


def test_performance_stats_by_hand():
    out = performance_stats([0.02, -0.01, 0.03, float("nan")], trades_last_week=3)
    assert out["win_rate"] == pytest.approx(2 / 3)
    assert out["sharpe"] == pytest.approx(np.mean([0.02, -0.01, 0.03]) / np.std([0.02, -0.01,
                                                                                  0.03]))
    assert performance_stats([], 0) == {"trades_per_week": 0.0, "recent_trades": 0.0}


# -- actions ----------------------------------------------------------------------------------
def test_decode_action_at_extremes_hits_the_range_ends():
    limits = TradeLimits(allowance=100.0)
    lo = decode_action([-1, -1, -1, -1], BALANCED, limits)
    hi = decode_action([1, 1, 1, 1], BALANCED, limits)
    assert (lo.size_frac, lo.stop_loss, lo.hold_candles) == (0.0, 0.05, 288)
    assert lo.take_profit == pytest.approx(0.10)
    assert (hi.size_frac, hi.stake, hi.stop_loss, hi.hold_candles) == (1.0, 100.0, 0.25, 8640)
    assert hi.take_profit == pytest.approx(1.0)
    assert decode_action([0, 1, 0, 0], BALANCED, limits, timeframe="1h").hold_candles == 720


def test_encode_params_round_trips_through_decode():
    raw = encode_params(0.6, 2.0, 0.08, 0.15, BALANCED)
    p = decode_action(raw, BALANCED, TradeLimits(allowance=50.0))
    assert (p.size_frac, p.hold_days, p.stop_loss, p.take_profit) == pytest.approx(
        (0.6, 2.0, 0.08, 0.15))


def test_decode_action_with_limits_clamps_stop_and_stake_and_reports_it():
    limits = TradeLimits(allowance=100.0, max_stop_loss=0.10, max_trade_loss=5.0)
    p = decode_action([1, 0, 1, 0], BALANCED, limits)
    assert p.stop_loss == 0.10
    assert p.stake * loss_at_stop(0.10, 0.001) == pytest.approx(5.0)
    assert p.violations["stop_limit"] == pytest.approx(0.75)
    assert p.violations["trade_loss"] == pytest.approx(1 - p.stake / 100.0)


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=400, deadline=None)
@given(raw=st.lists(finite_or_not, min_size=4, max_size=4),
       allowance=finite_or_not, max_stop=st.floats(0.05, 2.0),
       max_loss=st.none() | finite_or_not, fee=st.floats(0.0, 0.05),
       patience=st.floats(0.1, 10.0), tf=st.sampled_from(["5m", "15m", "1h", "4h"]))
def test_decode_action_never_leaves_ranges_or_limits(raw, allowance, max_stop, max_loss, fee,
                                                     patience, tf):
    profile = LearnerProfile("P", patience=patience)
    limits = TradeLimits(allowance, max_stop, max_loss, fee)
    p = decode_action(raw, profile, limits, timeframe=tf)
    per_day = {"5m": 288, "15m": 96, "1h": 24, "4h": 6}[tf]
    assert SIZE_RANGE[0] <= p.size_frac <= SIZE_RANGE[1]
    assert HOLD_DAYS_RANGE[0] <= p.hold_days <= HOLD_DAYS_RANGE[1]
    assert per_day <= p.hold_candles <= 30 * per_day
    assert STOP_RANGE[0] <= p.stop_loss <= min(STOP_RANGE[1], max_stop)
    assert TAKE_PROFIT_RANGE[0] <= p.take_profit <= TAKE_PROFIT_RANGE[1]
    assert p.stake >= 0 and math.isfinite(p.stake)
    if math.isfinite(allowance) and allowance > 0:
        assert p.stake <= allowance
    else:
        assert p.stake == 0
    if max_loss is not None and math.isfinite(max_loss):
        assert p.stake * loss_at_stop(p.stop_loss, fee) <= max(max_loss, 0) * (1 + 1e-9) + 1e-12
    assert p.source == ("policy" if all(map(math.isfinite, raw)) else "fallback")


@settings(max_examples=60, deadline=None)
@given(obs=st.lists(finite_or_not, min_size=27, max_size=27), allowance=st.floats(0, 1e6),
       seed=st.integers(0, 2**32 - 1))
def test_agent_act_on_any_state_stays_in_ranges(obs, allowance, seed):
    p = AGENT.act(np.array(obs), TradeLimits(allowance), rng=np.random.default_rng(seed)).params
    assert 0 <= p.stake <= allowance and 0 <= p.size_frac <= 1
    assert 288 <= p.hold_candles <= 8640 and 0.05 <= p.stop_loss <= 0.25
    assert 0.10 <= p.take_profit <= 1.0


AGENT = TradeParamAgent(BALANCED)


# -- agent ------------------------------------------------------------------------------------
def test_act_with_nan_state_returns_rule_params_and_logs_once(caplog):
    agent = TradeParamAgent(DEFAULT_LEARNERS[0])
    bad = state(drawdown=float("nan"))
    with caplog.at_level(logging.WARNING, logger="learning.agents.trade_agent"):
        d1 = agent.act(bad, TradeLimits(100.0))
        d2 = agent.act(np.full(5, 0.0), TradeLimits(100.0))
    assert d1.params.source == d2.params.source == "fallback"
    assert (d1.params.size_frac, d1.params.stop_loss, d1.params.take_profit) == (1.0, 0.08, 0.15)
    assert d1.params.hold_days == pytest.approx(1.5)              # 1 day × patience 1.5
    assert d1.to_record() is None and agent.record_outcome(d1, 1.0) is None
    assert len([r for r in caplog.records if "unusable state" in r.message]) == 1
    assert "drawdown" in caplog.text and agent.state.fallbacks == 2


def test_agents_with_same_seed_match_and_personalities_differ():
    s = state()
    a, b = TradeParamAgent(BALANCED), TradeParamAgent(BALANCED)
    other = TradeParamAgent(DEFAULT_LEARNERS[1])
    assert np.array_equal(a.policy_output(s)[0], b.policy_output(s)[0])
    assert not np.array_equal(a.policy_output(s)[0], other.policy_output(s)[0])
    da = a.act(s, TradeLimits(10.0), rng=np.random.default_rng(3))
    db = b.act(s, TradeLimits(10.0), rng=np.random.default_rng(3))
    assert da == db


def test_checkpoint_round_trip_via_bytes_and_store_gives_identical_actions(tmp_path):
    agent = TradeParamAgent(BALANCED)
    agent.state.decisions = 7
    s = state()
    loaded = TradeParamAgent.from_bytes(agent.to_bytes({"data_end": "2025-10-01"}))
    store = StateStore(tmp_path)
    store.save_torch("ppo_Balanced", agent.checkpoint(), schema=SCHEMA_VERSION)
    payload, _ = store.load_torch("ppo_Balanced", schema=SCHEMA_VERSION)
    stored = TradeParamAgent.from_checkpoint(payload, profile=BALANCED)
    for other in (loaded, stored):
        assert other.state.decisions == 7
        assert np.array_equal(agent.policy_output(s)[0], other.policy_output(s)[0])
        assert other.act(s, TradeLimits(10.0), explore=False) == agent.act(
            s, TradeLimits(10.0), explore=False)
        assert other.profile == BALANCED and other.config == agent.config


@pytest.mark.parametrize("change, message", [
    ({"schema_version": SCHEMA_VERSION + 1}, "schema version"),
    ({"format": "advl-tsamae"}, "not a trade-parameter agent"),
    ({"state_fields": [*STATE_NAMES[:-1], "mood"]}, "state_fields"),
    ({"config": {**dataclasses.asdict(PPOConfig()), "net_arch": [8]}}, "network weights"),
])
def test_checkpoint_from_another_version_is_refused_with_message(change, message, caplog):
    payload = {**TradeParamAgent(BALANCED).checkpoint(), **change}
    with pytest.raises(StateError, match=message):
        TradeParamAgent.from_checkpoint(payload)
    with caplog.at_level(logging.ERROR, logger="learning.agents.trade_agent"):
        agents = AgentSet.from_checkpoints({"Balanced": payload})
    assert agents.agents["Balanced"] is None and message in agents.errors["Balanced"]
    d = agents.decide("Balanced", state(), TradeLimits(100.0))
    assert d.params.source == "rule" and d.params.stop_loss == 0.08
    assert "rule-based" in caplog.text


def test_checkpoint_with_other_architecture_config_is_refused():
    payload = TradeParamAgent(BALANCED).checkpoint()
    with pytest.raises(StateError, match="net_arch"):
        TradeParamAgent.from_checkpoint(payload, config=PPOConfig(net_arch=(32,)))
    with pytest.raises(StateError, match="Aggressive"):
        TradeParamAgent.from_checkpoint(payload, profile=DEFAULT_LEARNERS[1])


def test_agent_set_holds_one_agent_per_personality_and_decides_for_each():
    agents = AgentSet.create()
    assert set(agents.agents) == {"Conservative", "Aggressive", "Balanced"}
    holds = {n: agents.decide(n, state(), TradeLimits(10.0), rng=np.random.default_rng(0))
             .params.source for n in agents.agents}
    assert set(holds.values()) == {"policy"}
    assert set(agents.checkpoints()) == set(agents.agents)


def test_online_update_runs_after_ten_trades_and_moves_policy_toward_rewarded_sizes():
    cfg = PPOConfig(online_learning_rate=1e-3)
    agent = TradeParamAgent(BALANCED, cfg)
    rng = np.random.default_rng(0)
    states = [state(cash_frac=c) for c in np.linspace(0.1, 0.9, 10)]
    before = np.mean([agent.policy_output(s)[0][0] for s in states])
    weights = [p.detach().clone() for p in agent.policy.parameters()]
    results = []
    for s in states:
        d = agent.act(s, TradeLimits(100.0), rng=rng)
        results.append(agent.record_outcome(d.to_record(), reward=d.raw[0]))  # bigger = better
    assert results[:9] == [None] * 9 and results[9] is not None
    assert agent.state.updates == 1 and agent.state.buffer == []
    assert any(not torch.equal(w, p) for w, p in zip(weights, agent.policy.parameters()))
    after = np.mean([agent.policy_output(s)[0][0] for s in states])
    assert after > before + 0.01
    assert agent.record_outcome({"obs": [0.0] * 27, "raw": [0.0] * 4}, 1.0) is None  # malformed


def test_online_learning_rate_scales_with_learner_speed():
    moves = {}
    for profile in (DEFAULT_LEARNERS[0], DEFAULT_LEARNERS[1]):   # speed 0.5 and 2.0
        agent = TradeParamAgent(dataclasses.replace(profile, name="X"), PPOConfig())
        s = state()
        before = agent.policy_output(s)[0][0]
        rng = np.random.default_rng(1)
        for _ in range(10):
            d = agent.act(s, TradeLimits(100.0), rng=rng)
            agent.record_outcome(d, reward=d.raw[0])
        moves[profile.learning_rate] = agent.policy_output(s)[0][0] - before
    assert moves[2.0] > moves[0.5] > 0


# -- reward -----------------------------------------------------------------------------------
def test_reward_terms_by_hand():
    cfg = RewardConfig()
    win = reward_terms(0.10, 0.15, 1.0, 0.0, {}, cfg, days_held=1.0)
    assert win["return"] == pytest.approx(1.5) and win["downside"] == 0
    assert win["churn"] == 0, "held past min_hold (4h): no churn penalty"
    assert win["conviction"] == pytest.approx(0.2) and win["total"] == pytest.approx(1.7)
    loss = reward_terms(-0.05, 0.2, 0.5, 0.1, {"cash": 0.5}, cfg, days_held=0.125)
    assert loss["return"] == pytest.approx(-1.0) and loss["downside"] == pytest.approx(-0.25)
    # closed after 3 h of a 4 h min_hold: 1 round trip x 0.1 % x 0.2 of equity x (1 - 3/4)
    assert loss["churn"] == pytest.approx(-1 * 2 * 0.001 * 0.2 * 0.25 / 0.01)
    assert loss["drawdown"] == pytest.approx(-20 * 0.01) and loss["violations"] == -0.5
    assert loss["conviction"] == 0 and loss["total"] == pytest.approx(-1.95 - 0.01)
    assert reward_terms(-10.0, 1.0, 1.0, 0.9)["total"] == -cfg.clip
    # Held 4 days against a 1-day horizon: the return counts √4 = 2 times less, like a Sharpe.
    slow = reward_terms(0.10, 0.15, 1.0, 0.0, {}, cfg, days_held=4.0)
    assert slow["return"] == pytest.approx(0.75)
    assert reward_terms(0.10, 0.15, 1.0, 0.0, {}, cfg, days_held=0.5)["return"] == pytest.approx(
        1.5)


def test_churn_penalty_scales_with_fee_and_stake_and_vanishes_at_min_hold():
    cfg = RewardConfig(short_hold_penalty=1.0, min_hold="1d")
    at_entry = churn_cost(0.2, 0.0, 0.001, cfg)
    assert at_entry == pytest.approx(2 * 0.001 * 0.2)
    assert churn_cost(0.2, 0.5, 0.001, cfg) == pytest.approx(at_entry / 2)
    assert churn_cost(0.2, 0.5, 0.002, cfg) == pytest.approx(at_entry)
    assert churn_cost(0.2, 1.0, 0.001, cfg) == 0 == churn_cost(0.2, 3.0, 0.001, cfg)
    assert churn_cost(0.2, 0.0, 0.001, RewardConfig(short_hold_penalty=0.0)) == 0
    quick = reward_terms(0.01, 0.2, 0.5, 0.0, {}, cfg, days_held=0.0)
    later = reward_terms(0.01, 0.2, 0.5, 0.0, {}, cfg, days_held=1.0)
    assert quick["total"] < later["total"], "the same profit pays less when taken at once"


# -- simulator --------------------------------------------------------------------------------
def arrays(rows):
    o, h, lo, c = (np.array(x, dtype=float) for x in zip(*rows))
    return o, h, lo, c


def test_simulate_trade_hits_stop_on_the_low_with_fees():
    o, h, lo, c = arrays([(100, 100, 100, 100), (100, 101, 99, 100), (100, 100, 94, 96),
                          (96, 97, 90, 91)])
    out = simulate_trade(o, h, lo, c, t=0, hold=10, stop_loss=0.05, take_profit=0.2, fee=0.001)
    assert (out.entry_index, out.exit_index, out.reason) == (1, 2, "stop_loss")
    assert out.exit_price == pytest.approx(95.0)
    assert out.profit_ratio == pytest.approx(95 * 0.999 / (100 * 1.001) - 1)


def test_simulate_trade_hits_take_profit_on_the_high():
    o, h, lo, c = arrays([(100, 100, 100, 100), (100, 105, 99, 104), (104, 111, 103, 109)])
    out = simulate_trade(o, h, lo, c, t=0, hold=10, stop_loss=0.05, take_profit=0.1, fee=0.0)
    assert (out.exit_index, out.reason, out.exit_price) == (2, "take_profit", pytest.approx(110))
    assert out.profit_ratio == pytest.approx(0.1)


def test_simulate_trade_with_stop_and_tp_in_one_candle_assumes_the_stop():
    o, h, lo, c = arrays([(100, 100, 100, 100), (100, 100, 100, 100), (100, 112, 90, 100)])
    out = simulate_trade(o, h, lo, c, t=0, hold=10, stop_loss=0.05, take_profit=0.1, fee=0.0)
    assert (out.reason, out.exit_price) == ("stop_loss", pytest.approx(95))


def test_simulate_trade_gapping_below_the_stop_exits_at_the_open():
    o, h, lo, c = arrays([(100, 100, 100, 100), (100, 101, 99, 100), (90, 91, 88, 89)])
    out = simulate_trade(o, h, lo, c, t=0, hold=10, stop_loss=0.05, take_profit=0.1, fee=0.0)
    assert (out.reason, out.exit_price) == ("stop_loss", 90.0)


def test_simulate_trade_expires_at_the_hold_limit_or_end_of_data():
    o, h, lo, c = arrays([(100, 100, 100, 100)] + [(100, 102, 98, 101)] * 4)
    out = simulate_trade(o, h, lo, c, t=0, hold=2, stop_loss=0.05, take_profit=0.1, fee=0.001)
    assert (out.exit_index, out.reason, out.exit_price) == (2, "hold_limit", 101.0)
    assert out.profit_ratio == pytest.approx(profit_ratio(100, 101, 0.001))
    end = simulate_trade(o, h, lo, c, t=0, hold=50, stop_loss=0.05, take_profit=0.1, fee=0.001)
    assert (end.exit_index, end.reason) == (4, "end_of_data")


def test_env_books_trades_into_cash_and_rewards_by_hand(signal_env):
    env, _ = signal_env
    env.reset(options={"start": 0})
    action = encode_params(1.0, 1.0, 0.10, 0.25, BALANCED)
    env.step(action)
    r1 = env.last_trade["outcome"].profit_ratio
    assert env.last_trade["stake_frac"] == pytest.approx(0.75 * 0.20)  # tol × max position
    # The first trade exits inside its 8-day slot, so it is booked before the next entry.
    cash = 1 - 0.15 + 0.15 * (1 + r1)
    assert env.portfolio.cash == pytest.approx(cash) and env.portfolio.positions == []
    assert env.portfolio.peak == pytest.approx(max(1.0, cash))
    env.step(action)
    second = env.last_trade
    r2 = second["outcome"].profit_ratio
    assert second["equity"] == pytest.approx(cash) and second["stake_frac"] == pytest.approx(0.15)
    after = cash * (1 + 0.15 * r2)
    drawdown = max(0.0, 1 - after / max(1.0, cash, after))
    days = (second["outcome"].exit_index - second["t"]) / 24       # 1h candles
    want = reward_terms(r2, 0.15, 1.0, drawdown, days_held=days)
    assert second["reward_terms"] == pytest.approx(want)


def test_env_with_an_end_date_never_uses_later_candles(signal_env):
    env, _ = signal_env
    end = env.market.dates[192 * 20 + 10]                    # 10 candles into slot 20
    short = TradeParamEnv(env.market, BALANCED, SIGNAL_SIM, end=end)
    short.reset(options={"start": len(short.opp_t) - 1})
    short.step(encode_params(1.0, 30.0, 0.25, 1.0, BALANCED))  # would hold for 30 days
    out = short.last_trade["outcome"]
    assert out.exit_index == 192 * 20 + 9 and out.reason == "end_of_data"


def test_reward_for_a_closed_trade_uses_the_decision_record():
    agent = TradeParamAgent(BALANCED)
    d = agent.act(state(), TradeLimits(100.0, max_trade_loss=1.0), rng=np.random.default_rng(0))
    got = agent.reward_for(d.to_record(), 0.05, 0.1, 0.02, days_held=3.0)
    assert got == pytest.approx(reward_terms(0.05, 0.1, d.params.size_frac, 0.02,
                                             d.params.violations, days_held=3.0)["total"])


def test_env_passes_the_gymnasium_checker(signal_env):
    env, _ = signal_env
    check_env(env.clone(), skip_render_check=True)


def test_pair_features_are_causal_prefix():
    df = make_ohlcv(3000, freq="5min")
    full = pair_features(df, "5m", trend_days=1, vol_days=1, high_days=2)
    for t in (400, 1500, 2999):
        part = pair_features(df.iloc[:t + 1], "5m", trend_days=1, vol_days=1, high_days=2)
        pd.testing.assert_series_equal(part.iloc[t], full.iloc[t])


def test_align_regime_probs_uses_only_closed_regime_candles():
    regimes = pd.DataFrame({"date": pd.date_range("2025-01-01", periods=3, freq="1h", tz="UTC")})
    for i, col in enumerate(PROB_COLUMNS):
        regimes[col] = [1.0 if i == k else 0.0 for k in range(3)]
    dates = pd.date_range("2025-01-01", periods=36, freq="5min").to_numpy()
    probs = align_regime_probs(dates, "5m", regimes, "1h")
    assert np.isnan(probs[:11]).all()             # the first 1h candle closes at 01:00
    assert probs[11, 0] == 1 and probs[23, 1] == 1  # 5m candle 00:55 closes at 01:00


def test_market_data_on_real_candles_gives_finite_states(real_data_dir):
    from learning.data.candles import load_candles

    frames = {p: load_candles(real_data_dir, p, "1h").iloc[-24 * 40:]
              for p in ("BTC/USDT", "ETH/USDT")}
    market = MarketData.from_candles(frames, "1h")
    env = TradeParamEnv(market, BALANCED, SimConfig(entry_threshold=0.0, episode_trades=5))
    obs, _ = env.reset(seed=1)
    for _ in range(5):
        assert np.isfinite(obs).all()
        obs, r, term, trunc, _ = env.step(np.zeros(ACTION_DIM, dtype=np.float32))
        assert math.isfinite(r)
    assert trunc or term


# -- offline training -------------------------------------------------------------------------
def test_offline_training_with_same_seed_is_deterministic(signal_env):
    env, _ = signal_env
    cfg = PPOConfig(n_steps=64, batch_size=32, n_envs=4, n_epochs=2)
    a, b = TradeParamAgent(BALANCED, cfg), TradeParamAgent(BALANCED, cfg)
    train_offline(a, env, 128)
    train_offline(b, env, 128)
    s = state()
    assert np.array_equal(a.policy_output(s)[0], b.policy_output(s)[0])
    assert not np.array_equal(a.policy_output(s)[0], TradeParamAgent(BALANCED).policy_output(s)[0])


def test_offline_training_on_a_predictive_feature_beats_the_untrained_policy(signal_env):
    env, evaluation = signal_env
    agent = TradeParamAgent(BALANCED, FAST)
    before = run_policy(evaluation, mean_action(agent))
    train_offline(agent, env, 2048)
    after = run_policy(evaluation, mean_action(agent))
    # Untrained (policy mean: half size, 5.4-day hold, 15 % stop, 31.6 % TP) scores about -0.15
    # per trade; after 2048 steps seeds 0-4 scored 1.34-1.78. Demand a gain of at least 1.0.
    assert after["mean_reward"] > before["mean_reward"] + 1.0
    probe = evaluation.reset(options={"start": 3})[0]
    up, down = probe.copy(), probe.copy()
    up[STATE_NAMES.index("score_theme")], down[STATE_NAMES.index("score_theme")] = 1.0, -1.0
    size_up = agent.policy_output(up)[0][0]
    size_down = agent.policy_output(down)[0][0]
    assert size_up > size_down + 0.5
