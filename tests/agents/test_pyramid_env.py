"""PyramidEnv: accounting (fees, tranches, caps, average entry, realized/unrealized PnL) checked
against hand-computed numbers, the reward, masks, NaN rows and episode handling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from learning.agents.pyramid_env import (
    N_STATE,
    Action,
    Book,
    PyramidEnv,
    PyramidEnvConfig,
    apply_action,
    buy,
    is_valid,
    sell,
)
from learning.core.errors import ConfigError

FEE = 0.001
CFG = PyramidEnvConfig(tranches=4, max_position_pct=0.20)


def _rl_config(**rl) -> dict:
    return {"stake_amount": "unlimited", "timeframe": "1h", "freqai": {"rl_config": {
        "max_training_drawdown_pct": 0.5, **rl}}}


def _env(opens, market=None, reward=None, training=False, pyramid=None, **rl) -> PyramidEnv:
    opens = np.asarray(opens, dtype=float)
    prices = pd.DataFrame({"open": opens, "high": opens, "low": opens, "close": opens})
    if market is None:
        market = pd.DataFrame({"m0": np.linspace(0, 1, len(opens)), "m1": 0.5})
    return PyramidEnv(df=market, prices=prices, reward_kwargs=reward or {}, window_size=1,
                      config=_rl_config(**rl), fee=FEE, df_raw=market, seed=3,
                      training=training, pyramid=pyramid or CFG)


# -- accounting, by hand --------------------------------------------------------------------------

def test_buy_first_tranche_charges_fee_and_sets_average_entry():
    book = Book(cash=10_000.0)
    book = apply_action(book, Action.INCREASE, 100.0, FEE, CFG, tick=7)
    # tranche = 5 % of 10 000 = 500 -> 5 units; cash pays 500 + 0.1 % fee.
    assert book.qty == pytest.approx(5.0)
    assert book.cash == pytest.approx(10_000 - 500 - 0.5)
    assert book.fees_paid == pytest.approx(0.5)
    assert book.avg_entry == pytest.approx(100.0)
    assert (book.tranches, book.entry_tick, book.fills) == (1, 7, 1)
    assert book.equity(100.0) == pytest.approx(9_999.5)


def test_second_tranche_sized_from_current_equity_and_averages_entry():
    book = buy(Book(cash=10_000.0), 100.0, 500.0, FEE, tick=0)
    book = apply_action(book, Action.INCREASE, 125.0, FEE, CFG, tick=3)
    # equity at 125 = 9499.5 + 5 * 125 = 10124.5 -> tranche 506.225 -> 4.0498 units.
    assert book.qty == pytest.approx(5 + 4.0498)
    assert book.avg_entry == pytest.approx((500 + 506.225) / (5 + 4.0498))
    assert book.cash == pytest.approx(9_499.5 - 506.225 * 1.001)
    assert book.fees_paid == pytest.approx(0.5 + 0.506225)
    assert (book.tranches, book.entry_tick) == (2, 0), "the trade's first entry is kept"


def test_decrease_then_close_realize_pnl_with_both_fees():
    book = buy(Book(cash=10_000.0), 100.0, 500.0, FEE, tick=0)
    book = buy(book, 125.0, 506.225, FEE, tick=1)
    avg = (500 + 506.225) / (5 + 4.0498)
    book = apply_action(book, Action.DECREASE, 120.0, FEE, CFG, tick=2)
    half = (5 + 4.0498) / 2
    assert book.tranches == 1 and book.qty == pytest.approx(half)
    assert book.avg_entry == pytest.approx(avg), "a sale leaves the average entry unchanged"
    assert book.realized_pnl == pytest.approx(half * (120 * 0.999 - avg * 1.001))
    assert book.cash == pytest.approx(8_992.768775 + half * 120 * 0.999)
    # unrealized PnL and freqtrade's profit ratio of the rest, at 110
    assert book.unrealized_pnl(110.0, FEE) == pytest.approx(half * (110 * 0.999 - avg * 1.001))
    assert book.profit_ratio(110.0, FEE) == pytest.approx(110 * 0.999 / (avg * 1.001) - 1)
    book = apply_action(book, Action.CLOSE, 90.0, FEE, CFG, tick=3)
    assert (book.tranches, book.qty, book.entry_tick, book.avg_entry) == (0, 0.0, -1, 0.0)
    assert book.realized_pnl == pytest.approx(half * (120 * 0.999 - avg * 1.001)
                                              + half * (90 * 0.999 - avg * 1.001))
    # flat: all PnL is realized, so cash = start + realized; four fills each paid their fee.
    assert book.cash == pytest.approx(10_000 + book.realized_pnl)
    assert book.fees_paid == pytest.approx(0.5 + 0.506225 + half * 120e-3 + half * 90e-3)
    assert book.fills == 4


def test_cash_identity_holds_with_an_open_position():
    book = buy(Book(cash=1_000.0), 10.0, 50.0, FEE, tick=0)
    book = buy(book, 12.0, 60.0, FEE, tick=1)
    book = sell(book, 11.0, book.qty / 2, FEE, tranches=1)
    # cash = start - held qty * avg * (1 + fee) + realized
    assert book.cash == pytest.approx(1_000 - book.qty * book.avg_entry * 1.001
                                      + book.realized_pnl)


def test_increase_invalid_at_the_tranche_cap():
    book = Book(cash=10_000.0)
    for tick in range(4):
        assert is_valid(book, Action.INCREASE, 100.0, CFG, FEE)
        book = apply_action(book, Action.INCREASE, 100.0, FEE, CFG, tick)
    assert book.tranches == 4
    # fees shrank equity, so the last tranche was clamped to the room left: exactly the cap,
    # fee of that fill included
    assert book.stake == pytest.approx(0.20 * book.equity(100.0))
    assert book.stake <= 0.20 * book.equity(100.0) * (1 + 1e-12)
    assert not is_valid(book, Action.INCREASE, 100.0, CFG, FEE)


def test_increase_after_a_loss_is_clamped_to_the_value_cap():
    book = Book(cash=10_000.0)
    for tick in range(3):
        book = apply_action(book, Action.INCREASE, 100.0, FEE, CFG, tick)
    # at 50: equity = cash + 15 units * 50 ~ 9248.5; room = 0.2 * equity - stake ~ 349.8
    # is less than a 5 % tranche (462.4) but more than half of one: the add is clamped to
    # n = room / (1 + 0.2 * fee), so that after paying its fee stake = 0.2 * equity.
    equity = book.equity(50.0)
    assert equity == pytest.approx(book.cash + book.qty * 50)
    assert is_valid(book, Action.INCREASE, 50.0, CFG, FEE)
    after = apply_action(book, Action.INCREASE, 50.0, FEE, CFG, tick=4)
    n = (0.2 * equity - book.stake) / (1 + 0.2 * FEE)
    assert after.stake - book.stake == pytest.approx(n)
    assert after.stake == pytest.approx(0.20 * after.equity(50.0))
    assert n < 0.05 * equity


def test_increase_invalid_when_less_than_half_a_tranche_fits():
    book = Book(cash=10_000.0)
    for tick in range(3):
        book = apply_action(book, Action.INCREASE, 100.0, FEE, CFG, tick)
    # at 4: equity ~ 8558.5, room = 1711.7 - 1499.9 = 211.8 < half a tranche (213.96)
    assert 0.2 * book.equity(4.0) - book.stake < 0.5 * 0.05 * book.equity(4.0)
    assert not is_valid(book, Action.INCREASE, 4.0, CFG, FEE)
    assert book.tranches == 3


def test_decrease_and_close_invalid_when_flat():
    book = Book(cash=1.0)
    assert [is_valid(book, a, 1.0, CFG) for a in Action] == [True, True, False, False]


# -- environment ----------------------------------------------------------------------------------

def test_step_reward_is_equity_change_net_of_fees_minus_penalties():
    env = _env([100, 100, 102, 102, 99, 99, 99],
               reward={"scale": 100, "drawdown_penalty": 0.5, "drawdown_free": 0.0,
                       "churn_penalty": 2e-4})
    env.reset()
    _, r1, *_ = env.step(Action.INCREASE)  # fill at 100, marked at the next open 102
    # 0.05 notional -> 0.0005 units, cash 1 - 0.05005; equity 0.94995 + 0.0005 * 102
    assert r1 == pytest.approx(100 * ((0.94995 + 0.051 - 1.0) - 2e-4))
    _, r2, *_ = env.step(Action.HOLD)
    assert r2 == pytest.approx(0.0)
    _, r3, _, _, info = env.step(Action.HOLD)  # 102 -> 99: a new drawdown from the peak
    before, after = 0.94995 + 0.051, 0.94995 + 0.0005 * 99
    dd = 1 - after / before
    assert r3 == pytest.approx(100 * ((after - before) / before - 0.5 * dd))
    assert info["equity"] == pytest.approx(after) and info["tranches"] == 1
    assert info["drawdown"] == pytest.approx(dd)


def test_drawdown_within_free_band_is_not_penalized_beyond_it_is():
    opens = [100, 100, 100, 100, 100, 90, 70, 70]
    env = _env(opens, reward={"drawdown_penalty": 2.0, "drawdown_free": 0.01,
                              "churn_penalty": 0.0})
    env.reset()
    for _ in range(3):
        env.step(Action.INCREASE)  # ~15 % of equity at 100
    eq = [env.book.equity(p) for p in (100, 90, 70)]
    _, r_small, *_ = env.step(Action.HOLD)  # 100 -> 90: ~1.5 % drawdown, 0.5 % beyond the band
    assert env._peak == 1.0, "fees only lowered equity: the start is the peak"
    dd90 = 1 - eq[1]
    assert 0.01 < dd90 < 0.02
    assert r_small == pytest.approx(100 * ((eq[1] - eq[0]) / eq[0] - 2.0 * (dd90 - 0.01)))
    _, r_big, *_ = env.step(Action.HOLD)  # 90 -> 70: all of the added drawdown is penalized
    dd70 = 1 - eq[2]
    assert r_big == pytest.approx(100 * ((eq[2] - eq[1]) / eq[1] - 2.0 * (dd70 - dd90)))


def test_invalid_action_is_held_and_penalized():
    env = _env([100] * 6, reward={"invalid_penalty": 0.25})
    env.reset()
    assert env.action_masks() == [True, True, False, False]
    _, reward, _, _, info = env.step(Action.CLOSE)
    assert reward == pytest.approx(-0.25) and info["action"] == Action.HOLD
    assert env.tensorboard_metrics["actions"]["invalid"] == 1


def test_nan_market_row_forces_hold_and_is_counted():
    market = pd.DataFrame({"m0": [0.1, np.nan, 0.2, 0.3, 0.4], "m1": 1.0})
    env = _env([100, 100, 100, 100, 100], market=market)
    obs, _ = env.reset()
    env.step(Action.INCREASE)  # acts on row 0: fine
    obs, _, _, _, info = env.step(Action.INCREASE)  # acts on row 1 (NaN): held
    assert info["action"] == Action.HOLD and info["tranches"] == 1
    assert env.tensorboard_metrics["actions"]["nan_hold"] == 1
    assert np.isfinite(obs).all()


def test_observation_holds_market_row_and_position_state():
    market = pd.DataFrame({"m0": [1.0, 2.0, 3.0, 4.0, 5.0], "m1": -1.0})
    env = _env([100, 100, 110, 110, 110], market=market,
               pyramid=PyramidEnvConfig(tranches=4, pnl_scale=0.05, duration_scale=4))
    obs, _ = env.reset()
    assert env.observation_space.shape == (2 + N_STATE,) == obs.shape
    assert obs.tolist() == [1.0, -1.0, 0.0, 0.0, 0.0]  # last closed candle (row 0), flat
    obs, *_ = env.step(Action.INCREASE)  # at tick 1 (open 100); now tick 2, open 110
    ratio = 110 * 0.999 / (100 * 1.001) - 1
    assert obs[:2].tolist() == [2.0, -1.0]
    assert obs[2:] == pytest.approx([0.25, np.tanh(ratio / 0.05), 1 / 4], rel=1e-5)


def test_episode_end_liquidates_and_charges_exit_fee():
    env = _env([100, 100, 100, 100], reward={"drawdown_penalty": 0.0, "churn_penalty": 0.0})
    env.reset()
    env.step(Action.INCREASE)
    _, reward, terminated, truncated, info = env.step(Action.HOLD)
    assert terminated and not truncated
    assert info["tranches"] == 0
    # bought 0.05 at 100 and sold at 100: both fees lost
    assert info["equity"] == pytest.approx(1 - 0.05 * 0.001 - 0.05 * 0.001)
    assert reward == pytest.approx(100 * (info["equity"] - (1 - 0.05 * 0.001)) / (1 - 5e-5))


def test_drawdown_beyond_training_limit_terminates():
    env = _env([100, 100, 100, 100, 100, 50, 50, 50], max_training_drawdown_pct=0.05)
    env.reset()
    for _ in range(4):
        env.step(Action.INCREASE)
    _, _, terminated, _, info = env.step(Action.HOLD)  # ~ -10 % of equity at 50
    assert terminated and info["equity"] < 0.95


def test_training_episodes_start_randomly_and_truncate_reproducibly():
    cfg = PyramidEnvConfig(max_episode_candles=10, random_start=True)
    starts = []
    for _ in range(2):
        env = _env(np.full(200, 100.0), training=True, pyramid=cfg)
        env.reset(seed=11)
        starts.append([env._start_tick] + [env.reset()[0] is not None and env._start_tick
                                           for _ in range(3)])
    assert starts[0] == starts[1] and len(set(starts[0])) > 1
    env = _env(np.full(200, 100.0), training=True, pyramid=cfg)
    env.reset(seed=11)
    steps, done = 0, False
    while not done:
        *_, terminated, truncated, _ = env.step(Action.HOLD)
        done, steps = terminated or truncated, steps + 1
    assert steps == 10 and truncated and not terminated


def _round_trip_rewards(hold: int, reward: dict) -> tuple[list[float], PyramidEnv]:
    env = _env([100.0] * (hold + 5), reward=reward)
    env.reset()
    rewards = [env.step(Action.INCREASE)[1]]
    rewards += [env.step(Action.HOLD)[1] for _ in range(hold - 1)]
    rewards.append(env.step(Action.CLOSE)[1])
    return rewards, env


def test_round_trip_rewards_sum_to_both_real_fees_without_penalties():
    flat = {"drawdown_penalty": 0.0, "churn_penalty": 0.0, "short_hold_penalty": 0.0}
    rewards, env = _round_trip_rewards(3, flat)
    # 0.05 of equity bought and sold at a flat 100: entry and exit fee, nothing else
    assert env.book.fees_paid == pytest.approx(2 * 0.05 * FEE, rel=1e-3)
    assert sum(rewards) == pytest.approx(-100 * 2 * 0.05 * FEE, rel=1e-2)


def test_sale_within_min_hold_pays_short_hold_penalty_falling_linearly_to_zero():
    base = {"drawdown_penalty": 0.0, "churn_penalty": 0.0, "min_hold": "4h"}
    costs = {}
    for hold in (1, 2, 4, 6):  # candles of 1h between the entry and the close
        free, _ = _round_trip_rewards(hold, {**base, "short_hold_penalty": 0.0})
        paid, env = _round_trip_rewards(hold, {**base, "short_hold_penalty": 3.0})
        costs[hold] = sum(free) - sum(paid)
        assert env.tensorboard_metrics["actions"].get("short_hold_sale", 0) == (hold < 4)
    sold = 0.05 / (1 - 0.05 * FEE)  # notional over equity before the sale
    assert costs[1] == pytest.approx(100 * 3.0 * 2 * FEE * sold * (1 - 1 / 4), rel=1e-6)
    assert costs[2] == pytest.approx(100 * 3.0 * 2 * FEE * sold * (1 - 2 / 4), rel=1e-6)
    assert costs[4] == pytest.approx(0.0, abs=1e-12) and costs[6] == pytest.approx(0.0, abs=1e-12)


def test_decrease_within_min_hold_pays_for_the_tranche_sold_only():
    reward = {"drawdown_penalty": 0.0, "churn_penalty": 0.0, "min_hold": "10h",
              "short_hold_penalty": 1.0}
    env = _env([100.0] * 8, reward=reward)
    env.reset()
    env.step(Action.INCREASE)
    env.step(Action.INCREASE)
    equity_before = env.book.equity(100.0)
    sold = env.book.qty / 2 * 100.0
    _, r, *_ = env.step(Action.DECREASE)  # two candles after the first entry
    expected = (env.book.equity(100.0) - equity_before) / equity_before
    assert r == pytest.approx(100 * (expected - 2 * FEE * sold / equity_before * (1 - 2 / 10)))


def test_reward_config_refuses_a_min_hold_that_is_not_a_duration():
    with pytest.raises(ConfigError, match="min_hold"):
        _env([100] * 5, reward={"min_hold": 12})
    with pytest.raises(ConfigError, match="min_hold"):
        _env([100] * 5, reward={"min_hold": "12 hours"})


def test_reward_config_refuses_unknown_key():
    with pytest.raises(ConfigError, match="drawdown_penalti"):
        _env([100] * 5, reward={"drawdown_penalti": 1.0})
