"""Offline training of the trade-parameter agent (:mod:`learning.agents.trade_agent`) on simulated
trades.

:class:`MarketData` aligns the candles of several pairs on BTC's dates and precomputes causal
per-candle features (:func:`pair_features`: trend t-statistic, daily volatility, drawdown from the
trailing high; breadth across pairs; the technical score; optional extra component scores and
regime probabilities).

Entry opportunities (documented choice): every ``entry_every_hours`` per pair, the candles whose
technical score exceeds ``entry_threshold`` (the strategy's own entry rule, so the agent trains on
the kind of entries it will size live); ``entry_threshold = None`` takes every checked candle.
An opportunity on a pair that still holds a simulated trade is skipped, like freqtrade's one
trade per pair.

:class:`TradeParamEnv` (gymnasium): one step = one trade. The observation is the 27-d state at
the decision (the close of candle t); the action is decoded with the same limits the strategy
uses (allowance = risk_tolerance × max_position_pct × equity, daily-loss cap on the loss at the
stop); :func:`simulate_trade` then plays the trade forward:

* entry at the next candle's open (freqtrade enters on the candle after the signal);
* the stop fills when a candle's low reaches it (at the stop price, or at the open when the candle
  gaps below it), the take profit when the high reaches it (at the TP price, conservatively even
  on a gap up); when both lie inside one candle the stop is assumed first (we cannot know the
  order inside a candle, so assume the worse);
* otherwise the exit is the close of the last candle of the hold (or of the data);
* fees of ``fee`` per side: profit = exit (1 - fee) / (entry (1 + fee)) - 1, freqtrade's ratio.

The trade's outcome becomes the step's reward (:func:`learning.agents.trade_agent.reward_terms`) at
once, while the simulated portfolio books it when its exit candle has passed, so cash, exposure,
drawdown and
the recent win rate/Sharpe in later observations evolve as they would live. An episode is
``episode_trades`` trades from a random opportunity; it ends early when the drawdown after a
trade reaches the halt limit (the risk guard would stop trading).
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from learning.agents.trade_agent import (
    ACTION_SPACE,
    OBSERVATION_SPACE,
    RewardConfig,
    TradeLimits,
    TradeParamAgent,
    build_state,
    decode_action,
    learner_seed,
    performance_stats,
    policy_class,
    policy_kwargs,
    reward_terms,
    torch_threads,
)
from learning.brain.components import pair_features  # noqa: F401  (re-exported)
from learning.brain.meta import LearnerProfile
from learning.brain.regime import PROB_COLUMNS, REGIMES
from learning.brain.technical import add_technical
from learning.core.config import _f
from learning.core.errors import ConfigError, DataError
from learning.data.candles import timeframe_to_minutes

NS_PER_DAY = 86_400 * 10**9


@dataclass(frozen=True)
class SimConfig:
    """The trade simulator behind offline training."""

    fee: float = _f(0.001, "Fee per side (Binance spot: 0.1 %).", (0.0, 0.05))
    entry_threshold: float | None = _f(
        0.30, "An opportunity is a checked candle whose technical score exceeds this; null: "
        "every checked candle.", (-1.0, 1.0))
    entry_every_hours: float = _f(1.0, "Hours between checks of one pair.", (0.0, 24.0 * 30))
    warmup_days: float = _f(7.0, "Days at the start without opportunities (features warm up).",
                            (0.0, 365.0))
    episode_trades: int = _f(64, "Trades (steps) per episode.", (1, 10**7))
    random_start: bool = _f(True, "Episodes start at a random opportunity (else the first).")
    max_position_pct: float = _f(0.20, "The risk guard's max stake per trade / equity.",
                                 (0.001, 1.0))
    max_trade_loss_pct: float | None = _f(
        0.02, "Most one trade may lose at its stop / equity (the daily loss limit); null: none.",
        (0.0, 1.0))
    max_stop_loss: float = _f(0.25, "Widest stop (e.g. the strategy's hard stoploss).",
                              (0.05, 1.0))
    max_drawdown_pct: float = _f(0.15, "Drawdown after a trade that halts the episode.",
                                 (0.001, 1.0))
    halt_on_drawdown: bool = _f(True, "End the episode at max_drawdown_pct (evaluation: false).")
    perf_window: int = _f(20, "Closed trades behind the recent win rate and Sharpe.", (1, 10_000))
    trend_days: float = _f(3.0, "Window of the trend features in days.", (0.01, 365.0))
    vol_days: float = _f(3.0, "Window of the volatility features in days.", (0.01, 365.0))
    high_days: float = _f(7.0, "Window of the trailing high in days.", (0.01, 365.0))
    btc_pair: str = _f("BTC/USDT", "The market's reference pair.")


# ---------------------------------------------------------------------------------- features
def align_regime_probs(dates: np.ndarray, timeframe: str, regimes: pd.DataFrame,
                       regime_timeframe: str) -> np.ndarray:
    """(N, 5) regime probabilities known at each candle's close, from a detector frame with
    ``date`` and the ``regime_prob_*`` columns. A regime row is used from its own candle's close
    on (no lookahead); rows before the first, or UNKNOWN (all zero), are NaN."""
    tf = np.timedelta64(timeframe_to_minutes(timeframe), "m")
    rtf = pd.Timedelta(minutes=timeframe_to_minutes(regime_timeframe))
    left = pd.DataFrame({"t": pd.to_datetime(dates + tf, utc=True)})
    right = pd.DataFrame({"t": pd.to_datetime(regimes["date"], utc=True) + rtf})
    right[list(PROB_COLUMNS)] = regimes[list(PROB_COLUMNS)].to_numpy(dtype=float)
    left["t"], right["t"] = left["t"].astype("datetime64[ns, UTC]"), right["t"].astype(
        "datetime64[ns, UTC]")
    merged = pd.merge_asof(left, right.sort_values("t"), on="t", direction="backward")
    probs = merged[list(PROB_COLUMNS)].to_numpy(dtype=float)
    probs[~(np.nansum(probs, axis=1) > 0)] = np.nan
    return probs


@dataclass(frozen=True)
class MarketData:
    """Aligned candles and causal features of several pairs ((P, N) arrays, pairs × candles)."""

    pairs: tuple[str, ...]
    timeframe: str
    dates: np.ndarray        # (N,) datetime64[ns], candle open times
    open: np.ndarray         # (P, N), gaps forward-filled flat
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    valid: np.ndarray        # (P, N) bool: a real candle with finite features
    trend: np.ndarray
    vol: np.ndarray
    drawdown: np.ndarray
    breadth: np.ndarray      # (N,)
    scores: dict[str, np.ndarray]    # component -> (P, N)
    regime_probs: np.ndarray | None  # (N, 5) or None (unknown)
    btc: int

    @classmethod
    def from_candles(cls, candles: Mapping[str, pd.DataFrame], timeframe: str, *,
                     config: SimConfig | None = None,
                     scores: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                     regimes: pd.DataFrame | None = None,
                     regime_timeframe: str | None = None) -> MarketData:
        """Align ``candles`` (pair → freqtrade frame) on the reference pair's dates. ``scores``
        (pair → component → array on that pair's rows) adds component scores besides the
        computed ``technical``; ``regimes`` is a detector frame on ``regime_timeframe``."""
        cfg = config or SimConfig()
        if not candles:
            raise DataError("no candles given to the trade simulator")
        pairs = tuple(candles)
        ref = cfg.btc_pair if cfg.btc_pair in candles else pairs[0]
        dates = pd.to_datetime(candles[ref]["date"], utc=True)
        arrays: dict[str, list[np.ndarray]] = {k: [] for k in (
            "open", "high", "low", "close", "valid", "trend", "vol", "drawdown", "technical")}
        extra: dict[str, np.ndarray] = {}
        for i, pair in enumerate(pairs):
            df = candles[pair].copy()
            df["date"] = pd.to_datetime(df["date"], utc=True)
            df = df.drop_duplicates("date").set_index("date").reindex(dates).reset_index()
            df = df.rename(columns={"index": "date"})
            real = df["close"].notna().to_numpy()
            add_technical(df)
            feats = pair_features(df, timeframe, cfg.trend_days, cfg.vol_days, cfg.high_days)
            close = df["close"].ffill().to_numpy(dtype=float)
            for k in ("open", "high", "low"):
                arrays[k].append(np.where(real, df[k].to_numpy(dtype=float), close))
            arrays["close"].append(close)
            for k in ("trend", "vol", "drawdown"):
                arrays[k].append(feats[k].to_numpy())
            arrays["technical"].append(df["score_technical"].to_numpy(dtype=float))
            ok = real & df["data_ok"].to_numpy(dtype=bool) & feats.notna().all(axis=1).to_numpy()
            arrays["valid"].append(ok)
            for name, values in (scores or {}).get(pair, {}).items():
                src = pd.Series(np.asarray(values, dtype=float),
                                index=pd.to_datetime(candles[pair]["date"], utc=True))
                extra.setdefault(name, np.full((len(pairs), len(dates)), np.nan))[i] = (
                    src[~src.index.duplicated()].reindex(dates).to_numpy())
        a = {k: np.vstack(v) for k, v in arrays.items()}
        known = np.isfinite(a["trend"]).sum(axis=0)
        up = (np.nan_to_num(a["trend"]) > 0).sum(axis=0)
        breadth = np.where(known > 0, up / np.maximum(known, 1), np.nan)
        np_dates = dates.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        probs = (align_regime_probs(np_dates, timeframe, regimes, regime_timeframe or timeframe)
                 if regimes is not None else None)
        return cls(pairs, timeframe, np_dates, a["open"], a["high"], a["low"], a["close"],
                   a["valid"].astype(bool), a["trend"], a["vol"], a["drawdown"], breadth,
                   {"technical": a["technical"], **extra}, probs, pairs.index(ref))

    def index_of(self, when: Any) -> int:
        """First candle at or after ``when``."""
        ts = pd.Timestamp(when)
        ts = ts.tz_convert(None) if ts.tzinfo else ts
        return int(np.searchsorted(self.dates, ts.to_datetime64()))

    def opportunities(self, config: SimConfig, start: Any = None,
                      end: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(t, pair index) of the entry opportunities in [start, end), in time order."""
        n = len(self.dates)
        per_hour = 60.0 / timeframe_to_minutes(self.timeframe)
        every = max(1, round(config.entry_every_hours * per_hour))
        lo = max(round(config.warmup_days * 24 * per_hour), 0)
        lo = max(lo, self.index_of(start)) if start is not None else lo
        hi = min(n - 1, self.index_of(end)) if end is not None else n - 1  # need a next candle
        t_idx = np.arange(lo, hi)
        t_idx = t_idx[t_idx % every == 0]
        ok = self.valid[:, t_idx]                                   # (P, T)
        if config.entry_threshold is not None:
            with np.errstate(invalid="ignore"):
                ok &= self.scores["technical"][:, t_idx] > config.entry_threshold
        p, k = np.nonzero(ok)
        order = np.lexsort((p, t_idx[k]))
        return t_idx[k][order], p[order]


# ---------------------------------------------------------------------------------- trades
@dataclass(frozen=True)
class TradeOutcome:
    entry_index: int
    exit_index: int
    entry_price: float
    exit_price: float
    profit_ratio: float
    reason: str  # stop_loss, take_profit, hold_limit, end_of_data


def profit_ratio(entry: float, exit_: float, fee: float) -> float:
    return exit_ * (1.0 - fee) / (entry * (1.0 + fee)) - 1.0


def simulate_trade(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                   t: int, hold: int, stop_loss: float, take_profit: float,
                   fee: float) -> TradeOutcome:
    """One long trade decided at the close of candle ``t`` (module doc for the fill rules)."""
    e = t + 1
    if e >= len(open_):
        raise DataError(f"no candle after {t} to enter on")
    entry = float(open_[e])
    last = min(e + hold - 1, len(open_) - 1)
    sp, tpp = entry * (1.0 - stop_loss), entry * (1.0 + take_profit)
    lows, highs = low[e:last + 1], high[e:last + 1]
    hit_s, hit_t = lows <= sp, highs >= tpp
    js = int(np.argmax(hit_s)) if hit_s.any() else None
    jt = int(np.argmax(hit_t)) if hit_t.any() else None
    if js is not None and (jt is None or js <= jt):  # same candle: the stop first
        j = e + js
        price, reason = min(float(open_[j]), sp), "stop_loss"
    elif jt is not None:
        j, price, reason = e + jt, tpp, "take_profit"
    else:
        j = last
        price = float(close[j])
        reason = "hold_limit" if last == e + hold - 1 else "end_of_data"
    return TradeOutcome(e, j, entry, price, profit_ratio(entry, price, fee), reason)


@dataclass
class SimPosition:
    pair: int
    stake: float
    entry_price: float
    exit_index: int
    profit_ratio: float


@dataclass
class SimPortfolio:
    """The simulated account (equity in units of the starting balance)."""

    cash: float = 1.0
    start: float = 1.0
    peak: float = 1.0
    day: int = -1
    day_open: float = 1.0
    positions: list[SimPosition] = field(default_factory=list)
    closed_profits: list[float] = field(default_factory=list)
    closed_times: list[int] = field(default_factory=list)  # ns, ascending

    def settle(self, t: int, dates: np.ndarray) -> None:
        """Book every trade whose exit candle is <= t."""
        done = sorted((p for p in self.positions if p.exit_index <= t),
                      key=lambda p: p.exit_index)
        for p in done:
            self.cash += p.stake * (1.0 + p.profit_ratio)
            self.closed_profits.append(p.profit_ratio)
            self.closed_times.append(int(dates[p.exit_index].astype("int64")))
        self.positions = [p for p in self.positions if p.exit_index > t]

    def marks(self, close_t: np.ndarray, fee: float) -> tuple[float, float]:
        """(value, unrealized PnL) of the open trades at the closes ``close_t`` (P,)."""
        value = sum(p.stake * (1 + profit_ratio(p.entry_price, close_t[p.pair], fee))
                    for p in self.positions)
        return value, value - sum(p.stake for p in self.positions)


class TradeParamEnv(gym.Env):
    """One step = one simulated trade of one learner (module doc)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, market: MarketData, profile: LearnerProfile,
                 config: SimConfig | None = None, reward: RewardConfig | None = None, *,
                 start: Any = None, end: Any = None) -> None:
        self.market, self.profile = market, profile
        self.config, self.reward_config = config or SimConfig(), reward or RewardConfig()
        self.observation_space, self.action_space = OBSERVATION_SPACE, ACTION_SPACE
        self.range = (start, end)
        # Trades never use candles at or after ``end``: a training range must not peek into
        # the evaluation range that follows it (a trade still open there exits at end_of_data).
        self.limit = market.index_of(end) if end is not None else len(market.dates)
        self.opp_t, self.opp_p = market.opportunities(self.config, start, end)
        if len(self.opp_t) == 0:
            raise DataError("the trade simulator found no entry opportunities in this range")
        self._k, self._steps = 0, 0
        self.portfolio = SimPortfolio()
        self.last_trade: dict[str, Any] = {}

    # -- internals ---------------------------------------------------------------------------
    def _equity(self, t: int) -> tuple[float, float, float]:
        value, upnl = self.portfolio.marks(self.market.close[:, t], self.config.fee)
        return self.portfolio.cash + value, value, upnl

    def _advance(self) -> bool:
        """Move to the next opportunity whose pair is free; False when there is none."""
        pf = self.portfolio
        while self._k < len(self.opp_t):
            t, p = int(self.opp_t[self._k]), int(self.opp_p[self._k])
            pf.settle(t, self.market.dates)
            if all(pos.pair != p for pos in pf.positions):
                eq = self._equity(t)[0]
                pf.peak = max(pf.peak, eq)
                day = int(self.market.dates[t].astype("int64") // NS_PER_DAY)
                if day != pf.day:
                    pf.day, pf.day_open = day, eq
                return True
            self._k += 1
        return False

    def observe(self) -> np.ndarray:
        m, pf = self.market, self.portfolio
        t, p = int(self.opp_t[self._k]), int(self.opp_p[self._k])
        eq, value, upnl = self._equity(t)
        now = int(m.dates[t].astype("int64"))
        week = len(pf.closed_times) - bisect.bisect_left(pf.closed_times, now - 7 * NS_PER_DAY)
        regimes = (dict(zip(REGIMES, m.regime_probs[t])) if m.regime_probs is not None
                   else None)
        return build_state(
            {"cash_frac": pf.cash / eq, "open_positions": len(pf.positions),
             "exposure": value / eq, "pnl": eq / pf.start - 1, "open_pnl": upnl / eq,
             "drawdown": 1 - eq / pf.peak, "day_pnl": eq / pf.day_open - 1},
            {"btc_trend": m.trend[m.btc, t], "btc_vol": m.vol[m.btc, t],
             "breadth": m.breadth[t], "pair_trend": m.trend[p, t], "pair_vol": m.vol[p, t],
             "pair_drawdown": m.drawdown[p, t]},
            regime_probs=regimes,
            scores={c: float(a[p, t]) for c, a in m.scores.items()},
            performance=performance_stats(pf.closed_profits[-self.config.perf_window:], week,
                                          self.config.perf_window))

    # -- gymnasium ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        n, cfg = len(self.opp_t), self.config
        if options and "start" in options:
            self._k = int(options["start"])
        elif cfg.random_start and n > cfg.episode_trades:
            self._k = int(self.np_random.integers(0, n - cfg.episode_trades))
        else:
            self._k = 0
        self._steps = 0
        self.portfolio = SimPortfolio()
        self._advance()
        return self.observe(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        m, cfg, pf = self.market, self.config, self.portfolio
        t, p = int(self.opp_t[self._k]), int(self.opp_p[self._k])
        eq = self._equity(t)[0]
        max_loss = cfg.max_trade_loss_pct * eq if cfg.max_trade_loss_pct is not None else None
        limits = TradeLimits(self.profile.risk_tolerance * cfg.max_position_pct * eq,
                             cfg.max_stop_loss, max_loss, cfg.fee)
        params = decode_action(action, self.profile, limits, timeframe=m.timeframe)
        violations = dict(params.violations)
        stake = params.stake
        if stake > pf.cash:
            violations["cash"] = (stake - pf.cash) / limits.allowance
            stake = max(pf.cash, 0.0)
        outcome = None
        if stake > 0:
            lim = self.limit
            outcome = simulate_trade(m.open[p, :lim], m.high[p, :lim], m.low[p, :lim],
                                     m.close[p, :lim], t, params.hold_candles, params.stop_loss,
                                     params.take_profit, cfg.fee)
        ratio = outcome.profit_ratio if outcome else 0.0
        after = eq + stake * ratio
        dd_after = max(0.0, 1.0 - after / max(pf.peak, after))
        halt = cfg.halt_on_drawdown and dd_after >= cfg.max_drawdown_pct
        if halt:
            violations["drawdown_halt"] = 1.0
        size = stake / limits.allowance if limits.allowance > 0 else 0.0
        days = ((outcome.exit_index - t) * timeframe_to_minutes(m.timeframe) / 1440.0
                if outcome is not None else 0.0)
        terms = reward_terms(ratio, stake / eq, size, dd_after, violations, self.reward_config,
                             days, cfg.fee)
        if outcome is not None:
            pf.cash -= stake
            pf.positions.append(SimPosition(p, stake, outcome.entry_price, outcome.exit_index,
                                            ratio))
        # Details go to an attribute, not the info dict: sb3's vec env deep-copies infos.
        self.last_trade = {"t": t, "pair": m.pairs[p], "params": params,
                           "stake_frac": stake / eq, "outcome": outcome, "equity": eq,
                           "reward_terms": terms}
        self._steps += 1
        self._k += 1
        more = self._advance()
        truncated = not more or self._steps >= cfg.episode_trades
        if not more:
            self._k = len(self.opp_t) - 1  # observe() needs a valid index; the episode is over
        return self.observe(), float(terms["total"]), bool(halt), bool(truncated and not halt), {}

    @property
    def decision_index(self) -> int:
        """Candle index of the current decision (the opportunity the next step acts on)."""
        return int(self.opp_t[self._k])

    def clone(self) -> TradeParamEnv:
        """A fresh env on the same market, learner, settings and range (for vectorised PPO)."""
        return TradeParamEnv(self.market, self.profile, self.config, self.reward_config,
                             start=self.range[0], end=self.range[1])

    def final_equity(self) -> float:
        """Equity once every open trade has been booked (for evaluation)."""
        self.portfolio.settle(self.limit - 1, self.market.dates)
        return self.portfolio.cash + self.portfolio.marks(self.market.close[:, self.limit - 1],
                                                          self.config.fee)[0]


# ---------------------------------------------------------------------------------- training
def train_offline(agent: TradeParamAgent, env: TradeParamEnv, total_timesteps: int | None = None,
                  *, progress_bar: bool = False,
                  tensorboard: str | None = None) -> dict[str, float]:
    """Continue training ``agent``'s policy with sb3 PPO on ``env``; returns timing figures.

    sb3 runs the rollouts and clipped updates; the agent's weights are copied in before and out
    after, so a trained agent is an ordinary :class:`TradeParamAgent` (no sb3 object is kept).
    ``config.n_envs`` clones of ``env`` step together, so one policy forward serves several
    trades (the per-call overhead of a small MLP dominates otherwise).
    """
    if env.profile.name != agent.profile.name:
        raise ConfigError(f"env simulates {env.profile.name!r}, agent is {agent.profile.name!r}")
    cfg = agent.config
    steps = total_timesteps or cfg.total_timesteps
    members = [env] + [env.clone() for _ in range(cfg.n_envs - 1)]
    envs = DummyVecEnv([lambda e=e: e for e in members])
    model = PPO(policy_class(cfg), envs, learning_rate=cfg.learning_rate,
                n_steps=max(1, cfg.n_steps // cfg.n_envs),
                batch_size=cfg.batch_size, n_epochs=cfg.n_epochs, gamma=cfg.gamma,
                gae_lambda=cfg.gae_lambda, clip_range=cfg.clip_range, ent_coef=cfg.ent_coef,
                vf_coef=cfg.vf_coef, max_grad_norm=cfg.max_grad_norm,
                policy_kwargs=policy_kwargs(cfg), seed=cfg.seed + learner_seed(agent.profile.name),
                device="cpu", verbose=0, tensorboard_log=tensorboard)
    model.policy.load_state_dict(agent.policy.state_dict())
    t0 = time.perf_counter()
    with torch_threads(cfg.torch_threads):
        model.learn(steps, progress_bar=progress_bar, tb_log_name=agent.profile.name)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        agent.policy.load_state_dict(model.policy.state_dict())
    agent.policy.set_training_mode(False)
    return {"timesteps": float(model.num_timesteps), "seconds": seconds,
            "steps_per_s": model.num_timesteps / max(seconds, 1e-9)}


def run_policy(env: TradeParamEnv, act: Callable[[np.ndarray], np.ndarray], *,
               start: int = 0, max_steps: int | None = None,
               on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Play ``act`` (state → raw action) from opportunity ``start`` to the end (or max_steps);
    returns the metrics of the simulated trades. ``on_step`` sees each step's trade record
    (``env.last_trade``), e.g. to feed closed trades to an online learner."""
    obs, _ = env.reset(options={"start": start})
    rewards, contrib, profits, stakes, curve, steps = [], [], [], [], [], 0
    chosen: list[tuple[float, float, float, float]] = []
    while True:
        obs, r, term, trunc, _ = env.step(act(obs))
        info = env.last_trade
        if on_step is not None:
            on_step(info)
        steps += 1
        rewards.append(r)
        curve.append((info["t"], info["equity"]))
        if info["outcome"] is not None:
            contrib.append(info["stake_frac"] * info["outcome"].profit_ratio)
            stakes.append(info["stake_frac"])
            p = info["params"]
            chosen.append((p.size_frac, p.hold_days, p.stop_loss, p.take_profit))
            profits.append(info["outcome"].profit_ratio)
        if term or trunc or (max_steps is not None and steps >= max_steps):
            break
    final = env.final_equity()
    eq = np.array([e for _, e in curve] + [final])
    dd = float(np.max(1 - eq / np.maximum.accumulate(eq)))
    c = np.asarray(contrib)
    dates = env.market.dates[[t for t, _ in curve]]
    daily = pd.Series(eq[:-1], index=pd.to_datetime(dates)).resample("1D").last().ffill()
    dret = daily.pct_change().dropna()
    return {"steps": steps, "trades": len(c), "mean_reward": float(np.mean(rewards)),
            "trade_sharpe": float(c.mean() / c.std()) if len(c) > 1 and c.std() > 0 else 0.0,
            "daily_sharpe_ann": float(dret.mean() / dret.std() * math.sqrt(365))
            if len(dret) > 1 and dret.std() > 0 else 0.0,
            "win_rate": float((np.asarray(profits) > 0).mean()) if profits else 0.0,
            "total_return": float(final - 1.0), "max_drawdown": dd,
            "mean_stake_frac": float(np.mean(stakes)) if stakes else 0.0,
            "mean_params": dict(zip(("size_frac", "hold_days", "stop_loss", "take_profit"),
                                    np.mean(chosen, axis=0).tolist() if chosen else [0.0] * 4))}
