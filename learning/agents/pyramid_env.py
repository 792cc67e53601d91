"""The pyramiding environment: one pair, long-only, a position held in tranches.

Four actions (:class:`Action`): hold, increase (buy one tranche), decrease (sell one of the held
tranches, pro rata) and close (sell everything). A tranche is ``max_position_pct / tranches`` of
the account equity at the fill, so ``tranches`` of them reach the per-trade cap of the risk
limits (``advanced_learning.risk.max_position_pct``, 20 % -> 4 tranches of 5 %). An increase is
also refused when it would lift the position's cost above the cap of the *current* equity (after
losses four tranches may no longer fit).

Accounting (:class:`Book`, pure functions :func:`buy` / :func:`sell`), in quote currency:

* every fill pays ``fee`` on its notional; buys move ``notional * (1 + fee)`` out of cash, sells
  move ``qty * price * (1 - fee)`` in;
* ``avg_entry`` is the quantity-weighted average fill price of the held quantity (fees excluded,
  like freqtrade's ``open_rate``) and does not change on sells;
* ``realized_pnl`` of a sale is ``qty * (price * (1 - fee) - avg_entry * (1 + fee))``: both fees
  of the sold part, so ``cash = start - qty_held * avg_entry * (1 + fee) + realized_pnl``;
* ``profit_ratio`` is freqtrade's ``calc_profit_ratio``: ``price (1-fee) / (avg (1+fee)) - 1``;
  it is the ``current_profit`` the strategy sees in ``adjust_trade_position``.

Time: the action chosen at tick ``t`` fills at the **open** of candle ``t``; the observation
holds the market features of candle ``t - 1`` (the last *closed* candle) plus the position state
marked at that open. The reward of the step is the change of equity (cash + qty * open) from
before the fill to the next open, relative to the equity before, minus penalties for drawdown
added beyond a tolerated band, per fill, and for selling within ``min_hold`` of the trade's
first entry (churn), times ``reward.scale``. At the end of the data the position is liquidated
(its exit fee is charged in the last reward). An episode terminates early when equity falls
``rl_config.max_training_drawdown_pct`` below the start.

Fees: every fill pays the real fee, so a round trip's rewards sum to its equity change net of
both fees (the entry fee at the buy, the exit fee at the sale). That alone did not stop the
agent closing trades an hour after the strategy opened them (README, January 2026: the entry
fee was sunk when it decided, and an hour's drift pays more than one exit fee): the
short-hold penalty charges ``short_hold_penalty`` round-trip fees of the sold notional for a
sale right at the entry, falling linearly to nothing at ``min_hold``.

Market rows holding NaN (no valid encoder window) cannot be acted on: the agent holds, the
observation's market part is zeroed and the event is counted (TensorBoard ``actions/nan_hold``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
import pandas as pd
from freqtrade.freqai.RL.BaseEnvironment import BaseEnvironment, Positions
from gymnasium import spaces

from learning.core.config import _f, parse_section
from learning.core.durations import candles
from learning.core.risk import risk_config

logger = logging.getLogger(__name__)


class Action(IntEnum):
    """The agent's actions (their values are the policy's output ids)."""

    HOLD = 0
    INCREASE = 1
    DECREASE = 2
    CLOSE = 3


N_STATE = 3  # position features appended to the market features: tranches, pnl, time in trade
_EPS = 1e-9


@dataclass(frozen=True)
class PyramidEnvConfig:
    """Position sizing, observation scaling and episode settings of :class:`PyramidEnv`."""

    tranches: int = _f(4, "Tranches that make up a full position (the cap).", (1, 20))
    max_position_pct: float = _f(
        0.20, "Position cap as a fraction of equity; the model fills it from "
        "advanced_learning.risk.max_position_pct.", (0.001, 1.0))
    pnl_scale: float = _f(0.05, "Open profit ratio is observed as tanh(pnl / pnl_scale).",
                          (1e-4, 10.0))
    duration_scale: int = _f(288, "Time in trade is observed as min(candles / this, 1).",
                             (1, 100_000))
    max_episode_candles: int = _f(2016, "Training episode length in candles (0: run to the end "
                                  "of the data).", (0, 10**7))
    random_start: bool = _f(True, "Training episodes start at a random candle (seeded).")

    @property
    def tranche_pct(self) -> float:
        return self.max_position_pct / self.tranches


@dataclass(frozen=True)
class RewardConfig:
    """``rl_config.model_reward_parameters`` of the pyramiding agent.

    ``rr``, ``profit_aim`` and ``win_reward_factor`` belong to freqtrade's example reward (its
    config schema injects the first two); they are accepted and ignored.
    """

    scale: float = _f(100.0, "Multiplier of the per-step reward (equity change 1 % -> 1.0).",
                      (1e-6, 1e6))
    drawdown_penalty: float = _f(
        0.5, "Extra penalty per unit of drawdown (from the equity peak) added beyond "
        "drawdown_free.", (0.0, 100.0))
    drawdown_free: float = _f(
        0.01, "Drawdown tolerated without penalty (ordinary noise of a capped position is "
        "not punished, deep drawdowns are).", (0.0, 1.0))
    churn_penalty: float = _f(
        2e-5, "Penalty per fill as a fraction of equity, on top of the fee.", (0.0, 1.0))
    short_hold_penalty: float = _f(
        1.0, "Selling within min_hold of the trade's first entry costs this many round-trip "
        "fees (2 x fee) of the sold notional, in full right at the entry and falling linearly "
        "to 0 at min_hold; 0 turns it off.", (0.0, 1000.0))
    min_hold: str = _f("4h", "Holding time after which a sale pays no short-hold penalty "
                       "(a duration, turned into candles of the timeframe).", duration=True)
    invalid_penalty: float = _f(
        0.01, "Penalty (reward units) for an invalid action, which is then treated as hold.",
        (0.0, 100.0))
    rr: float = _f(1.0, "Ignored (freqtrade's example reward).")
    profit_aim: float = _f(0.025, "Ignored (freqtrade's example reward).")
    win_reward_factor: float = _f(2.0, "Ignored (freqtrade's example reward).")


# ----------------------------------------------------------------------------------------------
# Accounting


@dataclass(frozen=True)
class Book:
    """Account state for one pair: cash and the open position (quote currency)."""

    cash: float
    qty: float = 0.0
    avg_entry: float = 0.0  # quantity-weighted average fill price of the held qty, fees excluded
    tranches: int = 0
    entry_tick: int = -1  # tick of the first entry of the open trade; -1 while flat
    realized_pnl: float = 0.0  # net of the sold part's entry and exit fees
    fees_paid: float = 0.0
    fills: int = 0

    def equity(self, price: float) -> float:
        """Cash plus the position marked at ``price`` (no exit fee)."""
        return self.cash + self.qty * price

    @property
    def stake(self) -> float:
        """Cost of the held quantity at the average entry (fees excluded)."""
        return self.qty * self.avg_entry

    def unrealized_pnl(self, price: float, fee: float) -> float:
        """PnL of closing the position at ``price``, entry and exit fees included."""
        return self.qty * (price * (1.0 - fee) - self.avg_entry * (1.0 + fee))

    def profit_ratio(self, price: float, fee: float) -> float:
        """freqtrade's ``calc_profit_ratio`` of the open position (0 when flat)."""
        if self.qty <= 0:
            return 0.0
        return price * (1.0 - fee) / (self.avg_entry * (1.0 + fee)) - 1.0

    def duration(self, tick: int) -> int:
        return tick - self.entry_tick if self.tranches > 0 else 0


def buy(book: Book, price: float, notional: float, fee: float, tick: int) -> Book:
    """Buy ``notional`` of quote currency worth at ``price`` as one new tranche."""
    add = notional / price
    qty = book.qty + add
    return dataclasses.replace(
        book, cash=book.cash - notional * (1.0 + fee), qty=qty,
        avg_entry=(book.qty * book.avg_entry + notional) / qty, tranches=book.tranches + 1,
        entry_tick=tick if book.tranches == 0 else book.entry_tick,
        fees_paid=book.fees_paid + notional * fee, fills=book.fills + 1)


def sell(book: Book, price: float, qty: float, fee: float, tranches: int) -> Book:
    """Sell ``qty`` at ``price``, leaving ``tranches`` tranches (0 closes the trade)."""
    qty = min(qty, book.qty)
    left = book.qty - qty if tranches > 0 else 0.0
    return dataclasses.replace(
        book, cash=book.cash + qty * price * (1.0 - fee), qty=left,
        avg_entry=book.avg_entry if tranches > 0 else 0.0, tranches=tranches,
        entry_tick=book.entry_tick if tranches > 0 else -1,
        realized_pnl=book.realized_pnl + qty * (price * (1.0 - fee)
                                                - book.avg_entry * (1.0 + fee)),
        fees_paid=book.fees_paid + qty * price * fee, fills=book.fills + 1)


def tranche_notional(book: Book, price: float, cfg: PyramidEnvConfig, fee: float) -> float:
    """Notional of the next tranche: ``tranche_pct`` of equity, clamped to the room left under
    the cap (as the strategy's risk guard clamps an add). The room accounts for the fill's fee,
    which lowers equity: after the fill ``stake <= max_position_pct * equity`` still holds."""
    equity = book.equity(price)
    room = (cfg.max_position_pct * equity - book.stake) / (1.0 + cfg.max_position_pct * fee)
    return min(cfg.tranche_pct * equity, room)


def is_valid(book: Book, action: int, price: float, cfg: PyramidEnvConfig,
             fee: float = 0.0) -> bool:
    """Whether ``action`` can be executed at ``price`` (the action mask).

    An increase needs a free tranche and room under the cap for at least half a tranche (fees
    and price moves make the last tranche a little smaller or larger than the others).
    """
    if action == Action.HOLD:
        return True
    if action == Action.INCREASE:
        equity = book.equity(price)
        return (book.tranches < cfg.tranches and equity > 0
                and tranche_notional(book, price, cfg, fee)
                >= (0.5 - _EPS) * cfg.tranche_pct * equity)
    return book.tranches > 0  # DECREASE, CLOSE


def apply_action(book: Book, action: int, price: float, fee: float, cfg: PyramidEnvConfig,
                 tick: int) -> Book:
    """Execute a *valid* action at ``price`` (see :func:`is_valid`)."""
    if action == Action.INCREASE:
        return buy(book, price, tranche_notional(book, price, cfg, fee), fee, tick)
    if action == Action.DECREASE:
        return sell(book, price, book.qty / book.tranches, fee, book.tranches - 1)
    if action == Action.CLOSE:
        return sell(book, price, book.qty, fee, 0)
    return book


def state_features(tranches: Any, profit_ratio: Any, duration: Any,
                   cfg: PyramidEnvConfig) -> np.ndarray:
    """Position part of the observation, (..., N_STATE) float32; shared with the grid queries."""
    t = np.asarray(tranches, dtype=np.float64) / cfg.tranches
    p = np.tanh(np.asarray(profit_ratio, dtype=np.float64) / cfg.pnl_scale)
    d = np.minimum(np.asarray(duration, dtype=np.float64) / cfg.duration_scale, 1.0)
    if t.ndim == p.ndim == d.ndim == 0:  # one env step: skip the broadcasting machinery
        return np.array([t, p, d], dtype=np.float32)
    return np.stack(np.broadcast_arrays(t, p, d), axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Environment


@dataclass(frozen=True)
class Transition:
    """What the last step did (read by :meth:`PyramidEnv.calculate_reward`)."""

    equity_before: float
    equity_after: float
    drawdown_before: float
    drawdown_after: float
    fills: int
    invalid: bool
    short_hold: float = 0.0  # sold notional / equity before x (1 - held / min_hold), >= 0


class PyramidEnv(BaseEnvironment):
    """FreqAI RL environment of the pyramiding agent; see the module docstring.

    ``df`` holds the market features (one row per candle, NaN where the encoder has no valid
    window) and ``prices`` the raw OHLC of the same rows. Besides freqtrade's keyword arguments
    it takes ``pyramid`` (a :class:`PyramidEnvConfig`; default: its defaults with the cap from the
    config's ``advanced_learning.risk``) and ``training`` (False for evaluation: episodes run the
    whole data from its start).
    """

    def __init__(self, *, pyramid: PyramidEnvConfig | None = None, training: bool = True,
                 **kwargs: Any) -> None:
        config = kwargs["config"]
        if pyramid is None:
            risk = risk_config(config)
            pyramid = PyramidEnvConfig(max_position_pct=risk.max_position_pct)
        self.pyr = pyramid
        self.training = training
        super().__init__(**kwargs)
        self.actions = Action

    # -- set-up -----------------------------------------------------------------------------
    def reset_env(self, df: pd.DataFrame, prices: pd.DataFrame, window_size: int,
                  reward_kwargs: dict, starting_point: bool = True) -> None:
        """Replaces the base version: our observation is one market row plus the state."""
        self.reward = parse_section(RewardConfig, reward_kwargs,
                                    "freqai.rl_config.model_reward_parameters")
        self.rr, self.profit_aim = self.reward.rr, self.reward.profit_aim
        self.min_hold_candles = candles(self.reward.min_hold,
                                        self.config.get("timeframe") or "5m")
        self.signal_features = df
        self.prices = prices
        self.window_size = 1  # the encoder features already summarize their window
        self.starting_point = starting_point
        market = df.to_numpy(dtype=np.float32)
        self._valid = np.isfinite(market).all(axis=1)
        self._market = np.where(self._valid[:, None], market, 0.0).astype(np.float32)
        self._open = prices["open"].to_numpy(dtype=np.float64)
        if len(self._open) != len(market):
            raise ValueError(f"PyramidEnv: {len(market)} feature rows but {len(self._open)} "
                             "price rows")
        if len(self._open) < 3:
            raise ValueError("PyramidEnv needs at least 3 candles")
        self.total_features = market.shape[1] + N_STATE
        self.shape = (self.total_features,)
        self.set_action_space()
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=self.shape, dtype=np.float32)
        self._start_tick = 1
        self._end_tick = len(self._open) - 1
        self._current_tick = self._start_tick
        self._episode_end = self._end_tick
        self._done = False
        self._last_trade_tick = None
        self._position = Positions.Neutral
        self._position_history = [None]
        self.total_reward = 0.0
        self._total_profit = 1.0
        self._total_unrealized_profit = 1.0
        self.history = {}
        self.trade_history = []
        self.book = Book(cash=1.0)
        self._peak = 1.0
        self._last: Transition | None = None

    def set_action_space(self) -> None:
        self.action_space = spaces.Discrete(len(Action))

    # -- episode ----------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.seed(seed)
        self.reset_tensorboard_log()
        length = self.pyr.max_episode_candles if self.training else 0
        start = 1
        if self.training and self.pyr.random_start:
            high = self._end_tick - length if length else self._end_tick // 2
            start = int(self.np_random.integers(1, max(2, high + 1)))
        self._start_tick = self._current_tick = start
        self._episode_end = min(self._end_tick, start + length) if length else self._end_tick
        self._done = False
        self._last_trade_tick = None
        self._position = Positions.Neutral
        self.book = Book(cash=1.0)
        self._peak = 1.0
        self._last = None
        self.total_reward = 0.0
        self._total_profit = 1.0
        self._total_unrealized_profit = 1.0
        self.history = {}
        self.trade_history = []
        return self._get_observation(), {}

    def _get_observation(self) -> np.ndarray:
        t = self._current_tick
        price = self._open[t]
        state = state_features(self.book.tranches, self.book.profit_ratio(price, self.fee),
                               self.book.duration(t), self.pyr)
        return np.concatenate([self._market[t - 1], state])

    def _is_valid(self, action: int) -> bool:
        return is_valid(self.book, action, self._open[self._current_tick], self.pyr, self.fee)

    def is_tradesignal(self, action: int) -> bool:
        return action != Action.HOLD and self._is_valid(action)

    def get_unrealized_profit(self) -> float:
        return self.book.profit_ratio(self._open[self._current_tick], self.fee)

    def step(self, action: int):
        t = self._current_tick
        price = self._open[t]
        action = int(action)
        taken, invalid = action, False
        if not self._valid[t - 1]:
            taken = Action.HOLD
            self.tensorboard_log("nan_hold", category="actions")
        elif not self._is_valid(action):
            taken, invalid = Action.HOLD, True
            self.tensorboard_log("invalid", category="actions")
        self.tensorboard_log(Action(taken).name.lower(), category="actions")
        before = self.book.equity(price)
        dd_before = 1.0 - before / self._peak
        fills_before = self.book.fills
        short_hold = 0.0
        if taken in (Action.DECREASE, Action.CLOSE) and before > 0:
            sold = self.book.qty / self.book.tranches if taken == Action.DECREASE \
                else self.book.qty
            young = max(0.0, 1.0 - self.book.duration(t) / self.min_hold_candles)
            short_hold = sold * price / before * young
            if young > 0:
                self.tensorboard_log("short_hold_sale", category="actions")
        self.book = apply_action(self.book, taken, price, self.fee, self.pyr, t)
        if taken in (Action.INCREASE, Action.DECREASE, Action.CLOSE):
            self._last_trade_tick = t if self.book.tranches else None
            self.trade_history.append({"price": price, "tick": t, "type": Action(taken).name,
                                       "tranches": self.book.tranches})
        fills = self.book.fills - fills_before
        self._current_tick = t + 1
        terminal = self._current_tick >= self._end_tick
        nxt = self._open[self._current_tick]
        if terminal and self.book.tranches:  # end of data: liquidate, the exit fee counts
            self.book = sell(self.book, nxt, self.book.qty, self.fee, 0)
        after = self.book.equity(nxt)
        self._peak = max(self._peak, after)
        self._last = Transition(before, after, dd_before, 1.0 - after / self._peak, fills,
                                invalid, short_hold)
        reward = self.calculate_reward(taken)
        self.total_reward += reward
        self._position = Positions.Long if self.book.tranches else Positions.Neutral
        self._total_profit = after
        self._total_unrealized_profit = after
        if after <= self.max_drawdown:  # base: 1 - rl_config.max_training_drawdown_pct
            terminal = True
        truncated = not terminal and self._current_tick >= self._episode_end
        self._done = terminal or truncated
        info = {
            "tick": self._current_tick, "action": int(taken), "total_reward": self.total_reward,
            "equity": after, "tranches": self.book.tranches,
            "profit_ratio": self.book.profit_ratio(nxt, self.fee),
            "trade_duration": self.book.duration(self._current_tick),
            "drawdown": self._last.drawdown_after, "fees": self.book.fees_paid,
        }
        self._update_history(info)
        return self._get_observation(), reward, terminal, truncated, info

    def calculate_reward(self, action: int) -> float:
        """Reward of the transition just made (``step`` records it before calling this).

        ``scale * (equity change / equity before - drawdown_penalty * drawdown added beyond
        drawdown_free - churn_penalty * fills - short_hold_penalty * 2 fee * short_hold) -
        invalid_penalty`` (the last only for an invalid action; ``short_hold`` is the sold
        notional over equity times ``1 - held / min_hold``, 0 for a sale after min_hold).
        """
        tr, r = self._last, self.reward
        if tr is None:
            return 0.0
        change = (tr.equity_after - tr.equity_before) / tr.equity_before \
            if tr.equity_before > 0 else 0.0
        deeper = max(0.0, tr.drawdown_after - max(tr.drawdown_before, r.drawdown_free))
        value = r.scale * (change - r.drawdown_penalty * deeper - r.churn_penalty * tr.fills
                           - r.short_hold_penalty * 2.0 * self.fee * tr.short_hold)
        if tr.invalid:
            value -= r.invalid_penalty
        return float(value) if math.isfinite(value) else 0.0
