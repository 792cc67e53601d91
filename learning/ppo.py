"""Tier 3: the trade-parameter agent. A PPO policy picks each trade's size, hold time, stop, TP.

Action (4-d, the policy's Gaussian sample clipped to [-1, 1], see :func:`decode_action`)
-------------------------------------------------------------------------------------------
=============  ================================================================================
size_frac      linear: -1 → 0 %, +1 → 100 % of the learner's allowance (risk_tolerance × the risk
               guard's max stake; the caller passes it in :class:`TradeLimits`)
hold           log-linear: -1 → patience × 1 day, +1 → patience × 30 days, clipped to 1..30
               days, then in candles of the strategy's timeframe (5m: 288..8640)
stop_loss      linear: -1 → 5 %, +1 → 25 % below the entry, never wider than the limits allow
take_profit    log-linear: -1 → 10 %, +1 → 100 % above the entry
=============  ================================================================================

State: the :data:`STATE_FIELDS` (27), each clipped to its range and scaled to [-1, 1] by
:func:`build_state`. Missing optional inputs take the documented default; a missing or NaN
required input leaves NaN in the vector, and the agent then returns the rule-based defaults and
logs once (it never acts on a state it cannot read).

Reward of one closed trade (:func:`reward_terms`, the same in the simulator and online)
-------------------------------------------------------------------------------------
With ``z = stake / equity × profit_ratio / (return_scale × √(days held / horizon))`` (the trade's
equity return in units of the volatility a position accrues over its holding time, i.e. a
per-trade Sharpe-like ratio; trades shorter than the horizon are not scaled up)::

    r = z − ½ κ min(z, 0)²              downside-penalised return (a Sortino-like utility:
                                         losses cost more than their size, wins are not taxed)
        − λ_dd · drawdown_after²          squared drawdown of equity once the trade is booked
        − λ_v · Σ violations              share of a proposal the limits had to cut, cash shortfall,
                                         the drawdown halt
        + β · conviction · [profit > 0]  conviction = how far size_frac exceeds the threshold

Online learning: sb3's ``PPO.learn`` wants fresh rollouts from an environment, but a real trade's
outcome exists only for the action that was executed, so a "replay env" could not answer the new
actions PPO would sample. We therefore keep (state, action, log-prob, value, reward) of each real
closed trade and, every ``online_batch`` trades, run PPO's clipped-surrogate update on exactly that
batch (the stored log-prob is the behaviour policy, so the ratio is the correct importance weight).
Each trade is one step (γ = 0, the advantage is ``reward − V(state)``), matching the offline
default ``gamma = 0``: a trade's whole outcome is in its own reward.

Checkpoints (:meth:`TradeParamAgent.checkpoint`) are plain dicts of tensors and JSON-able values
(format name, schema version, state/action field lists, config, profile, versions) that load with
``torch.load(weights_only=True)``; they fit ``StateStore.save_torch``. Never saved: the online
optimiser's moments (a restart begins them anew) and the exploration rng.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from learning import __version__
from learning.bandit import COMPONENTS, finite_number
from learning.config import _f
from learning.data import timeframe_to_minutes
from learning.errors import ConfigError, StateError
from learning.meta import DEFAULT_LEARNERS, LearnerProfile
from learning.regime import REGIMES

logger = logging.getLogger(__name__)

FORMAT = "advl-ppo-trade-params"
SCHEMA_VERSION = 1

SIZE_RANGE = (0.0, 1.0)
HOLD_DAYS_RANGE = (1.0, 30.0)
STOP_RANGE = (0.05, 0.25)
TAKE_PROFIT_RANGE = (0.10, 1.00)
ACTION_FIELDS: tuple[str, ...] = ("size_frac", "hold_days", "stop_loss", "take_profit")
ACTION_DIM = len(ACTION_FIELDS)


# ---------------------------------------------------------------------------------- state
@dataclass(frozen=True)
class StateField:
    """One entry of the state vector: natural-unit range, default when missing, scaling."""

    name: str
    group: str
    low: float
    high: float
    default: float | None
    """Used when the input is missing or NaN; None = required (NaN → rule-based fallback)."""
    log: bool = False
    """Scale log(x) instead of x (volatility-like quantities)."""
    help: str = ""


def _fields() -> tuple[StateField, ...]:
    P, M, S, R = "portfolio", "market", "scores", "performance"
    out = [
        StateField("cash_frac", P, 0.0, 1.0, None, help="free cash / equity"),
        StateField("open_positions", P, 0.0, 10.0, None, help="number of open trades"),
        StateField("exposure", P, 0.0, 1.0, None, help="value of open trades / equity"),
        StateField("pnl", P, -0.5, 0.5, None, help="equity / starting equity - 1"),
        StateField("open_pnl", P, -0.2, 0.2, None, help="unrealized PnL of open trades / equity"),
        StateField("drawdown", P, 0.0, 0.3, None, help="1 - equity / peak equity"),
        StateField("day_pnl", P, -0.05, 0.05, None,
                   help="equity / the UTC day's opening equity - 1"),
    ]
    out += [StateField(f"regime_{r.value.lower()}", M, 0.0, 1.0, 1.0 / len(REGIMES),
                       help=f"P({r.value}); all 1/5 when the regime is unknown") for r in REGIMES]
    out += [
        StateField("btc_trend", M, -3.0, 3.0, None,
                   help="BTC trailing log return over its volatility (t-statistic)"),
        StateField("btc_vol", M, 0.005, 0.2, None, log=True, help="BTC daily volatility"),
        StateField("breadth", M, 0.0, 1.0, None, help="share of pairs with a positive trend"),
        StateField("pair_trend", M, -3.0, 3.0, None, help="the pair's trend t-statistic"),
        StateField("pair_vol", M, 0.005, 0.2, None, log=True, help="the pair's daily volatility"),
        StateField("pair_drawdown", M, 0.0, 0.5, None,
                   help="1 - close / the pair's trailing 7-day high"),
    ]
    out += [StateField(f"score_{c}", S, -1.0, 1.0, 0.0, help=f"{c} component score (0 missing)")
            for c in COMPONENTS]
    out += [
        StateField("ai_available", S, 0.0, 1.0, 0.0, help="1 when the ai score is present"),
        StateField("win_rate", R, 0.0, 1.0, 0.5, help="win rate of the recent closed trades"),
        StateField("sharpe", R, -2.0, 2.0, 0.0, help="mean/std of recent trade profit ratios"),
        StateField("trades_per_week", R, 0.0, 50.0, 0.0, help="closed trades in the last 7 days"),
        StateField("recent_trades", R, 0.0, 20.0, 0.0, help="closed trades behind win_rate"),
    ]
    return tuple(out)


STATE_FIELDS: tuple[StateField, ...] = _fields()
STATE_NAMES: tuple[str, ...] = tuple(f.name for f in STATE_FIELDS)
STATE_DIM = len(STATE_FIELDS)
assert STATE_DIM == 27, STATE_DIM  # the state size; a change needs a new schema version
_INDEX = {f.name: i for i, f in enumerate(STATE_FIELDS)}
_INPUT_KEYS = {g: {f.name for f in STATE_FIELDS if f.group == g} for g in ("portfolio", "market")}
_PERF_KEYS = ("win_rate", "sharpe", "trades_per_week", "recent_trades")
_KEYS = {**_INPUT_KEYS, "score": frozenset(COMPONENTS), "performance": frozenset(_PERF_KEYS)}
# Vectorised scaling: clip to [low, high] (in log space for log fields), then map to [-1, 1].
_LOG = np.array([f.log for f in STATE_FIELDS])
_LOW = np.array([f.low for f in STATE_FIELDS])
_HIGH = np.array([f.high for f in STATE_FIELDS])
_LO_T = np.array([math.log(f.low) if f.log else f.low for f in STATE_FIELDS])
_HI_T = np.array([math.log(f.high) if f.log else f.high for f in STATE_FIELDS])
_DEFAULT = np.array([np.nan if f.default is None else f.default for f in STATE_FIELDS])
_REGIME_SLICE = slice(_INDEX[f"regime_{REGIMES[0].value.lower()}"],
                      _INDEX[f"regime_{REGIMES[-1].value.lower()}"] + 1)
OBSERVATION_SPACE = spaces.Box(-1.0, 1.0, (STATE_DIM,), np.float32)
ACTION_SPACE = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


def _check_keys(given: Mapping[str, Any] | None, what: str) -> None:
    allowed = _KEYS[what]
    if given and not allowed.issuperset(given):
        # A programming error, not market input: say which name is wrong.
        unknown = sorted(set(given) - allowed)
        raise ValueError(f"build_state: unknown {what} key(s) {unknown}; known: {sorted(allowed)}")


def _value(raw: Any) -> float:
    if isinstance(raw, (float, int, np.floating, np.integer)) and not isinstance(raw, bool):
        return float(raw)  # NaN/inf pass through and are handled below
    return math.nan


def build_state(portfolio: Mapping[str, float], market: Mapping[str, float], *,
                regime_probs: Mapping[Any, float] | None = None,
                scores: Mapping[str, float | None] | None = None,
                performance: Mapping[str, float | None] | None = None) -> np.ndarray:
    """The (27,) float32 state in [-1, 1] from natural-unit inputs (keys: :data:`STATE_FIELDS`).

    ``regime_probs`` maps a :class:`~learning.regime.Regime` (or its value) to a probability;
    None, all zero or non-finite means unknown (uniform). Missing or non-finite ``scores`` and
    ``performance`` entries take their defaults. A missing or non-finite portfolio/market value
    stays NaN, which makes :meth:`TradeParamAgent.act` fall back to the rule-based parameters.
    """
    for given, what in ((portfolio, "portfolio"), (market, "market"), (scores, "score"),
                        (performance, "performance")):
        _check_keys(given, what)
    vals = np.full(STATE_DIM, np.nan)
    for src in (portfolio, market):
        for k, v in src.items():
            vals[_INDEX[k]] = _value(v)
    vals[~np.isfinite(vals)] = np.nan  # inf is as unusable as NaN
    if regime_probs:
        probs = np.array([_value(regime_probs.get(r, regime_probs.get(r.value)))
                          for r in REGIMES])
        probs = np.where(np.isfinite(probs), np.clip(probs, 0.0, None), 0.0)
        if probs.sum() > 0:
            vals[_REGIME_SLICE] = probs / probs.sum()
    scores = scores or {}
    for c in COMPONENTS:
        x = _value(scores.get(c))
        vals[_INDEX[f"score_{c}"]] = x if math.isfinite(x) else np.nan
    vals[_INDEX["ai_available"]] = 1.0 if math.isfinite(_value(scores.get("ai"))) else 0.0
    for k in _PERF_KEYS:
        x = _value((performance or {}).get(k))
        vals[_INDEX[k]] = x if math.isfinite(x) else np.nan
    vals = np.where(np.isnan(vals), _DEFAULT, vals)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(_LOG, np.log(np.clip(vals, _LOW, _HIGH)), vals)
        out = 2.0 * (np.clip(x, _LO_T, _HI_T) - _LO_T) / (_HI_T - _LO_T) - 1.0
    return out.astype(np.float32)


def performance_stats(profits: Sequence[float], trades_last_week: int,
                      window: int = 20) -> dict[str, float]:
    """The ``performance`` input of :func:`build_state` from recent closed trades' profit ratios
    (oldest first; the last ``window`` count) and the number closed in the last 7 days."""
    recent = [float(p) for p in profits[-window:] if math.isfinite(_value(p))]
    out: dict[str, float] = {"trades_per_week": float(trades_last_week),
                             "recent_trades": float(len(recent))}
    n = len(recent)
    if n:
        out["win_rate"] = sum(p > 0 for p in recent) / n
        mean = sum(recent) / n
        std = math.sqrt(sum((p - mean) ** 2 for p in recent) / n)
        if n >= 2 and std > 0:
            out["sharpe"] = mean / std
    return out


# ---------------------------------------------------------------------------------- action
@dataclass(frozen=True)
class TradeLimits:
    """What one trade may do, from the risk guard and the learner (all in the quote currency)."""

    allowance: float
    """Most this learner may stake: risk_tolerance × the guard's max stake. Non-finite or
    negative means 0 (no trade)."""
    max_stop_loss: float = STOP_RANGE[1]
    """Widest stop allowed (e.g. the strategy's hard stoploss); at least STOP_RANGE[0]."""
    max_trade_loss: float | None = None
    """Most one trade may lose if its stop fills (fees included); None = no such cap."""
    fee: float = 0.001
    """Fee per side, for the loss at the stop."""

    def __post_init__(self) -> None:
        if not (STOP_RANGE[0] <= self.max_stop_loss):
            raise ConfigError(f"max_stop_loss {self.max_stop_loss!r} is below the smallest stop "
                              f"{STOP_RANGE[0]}; the agent cannot respect it")
        if not (0.0 <= self.fee < 0.5):
            raise ConfigError(f"fee {self.fee!r} is not in [0, 0.5)")


@dataclass(frozen=True)
class TradeParams:
    """One trade's parameters, every field inside its range and the limits."""

    size_frac: float
    """Share of the allowance staked (0..1), after the limits."""
    stake: float
    """Quote amount = size_frac × allowance; never above any stake limit."""
    hold_candles: int
    hold_days: float
    stop_loss: float
    """Positive fraction below the entry (freqtrade's custom_stoploss returns -stop_loss)."""
    take_profit: float
    """Positive fraction above the entry."""
    source: str = "policy"
    """policy, fallback (unusable state or action) or rule (no agent)."""
    violations: Mapping[str, float] = field(default_factory=dict)
    """Share of the proposal that a limit cut, per limit (trade_loss, stop_limit)."""


def loss_at_stop(stop_loss: float, fee: float) -> float:
    """Loss ratio of a stake whose stop fills exactly: 1 - (1 - stop)(1 - fee)/(1 + fee)."""
    return 1.0 - (1.0 - stop_loss) * (1.0 - fee) / (1.0 + fee)


def _lerp(a: float, lo: float, hi: float) -> float:
    return lo + (a + 1.0) * 0.5 * (hi - lo)


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def hold_candles(days: float, timeframe: str) -> int:
    return max(1, round(days * 1440.0 / timeframe_to_minutes(timeframe)))


def make_params(size_frac: float, hold_days: float, stop_loss: float, take_profit: float,
                limits: TradeLimits, *, timeframe: str = "5m", source: str = "policy",
                violations: Mapping[str, float] | None = None) -> TradeParams:
    """Clamp natural-unit parameters to their ranges and the limits (the one place that does)."""
    viol = dict(violations or {})
    size = _clip(size_frac, *SIZE_RANGE)
    days = _clip(hold_days, *HOLD_DAYS_RANGE)
    stop = _clip(stop_loss, *STOP_RANGE)
    max_stop = min(limits.max_stop_loss, STOP_RANGE[1])
    if stop > max_stop:
        viol["stop_limit"] = (stop - max_stop) / (STOP_RANGE[1] - STOP_RANGE[0])
        stop = max_stop
    tp = _clip(take_profit, *TAKE_PROFIT_RANGE)
    allowance = limits.allowance if finite_number(limits.allowance) else 0.0
    allowance = max(allowance, 0.0)
    stake = size * allowance
    cap = limits.max_trade_loss
    if cap is not None and finite_number(cap) and stake > 0:
        most = max(cap, 0.0) / loss_at_stop(stop, limits.fee)
        if stake > most:
            viol["trade_loss"] = (stake - most) / stake
            stake = most
    size = stake / allowance if allowance > 0 else 0.0
    # Rounding guard: the stake must never exceed the allowance by a float ulp.
    stake = min(stake, allowance)
    return TradeParams(float(size), float(stake), hold_candles(days, timeframe), float(days),
                       float(stop), float(tp), source, {k: float(v) for k, v in viol.items()})


def decode_action(raw: Sequence[float] | np.ndarray, profile: LearnerProfile,
                  limits: TradeLimits, *, timeframe: str = "5m",
                  fallback: FallbackParams | None = None) -> TradeParams:
    """Map a policy output to :class:`TradeParams` (module doc). Out-of-range values are clipped;
    any non-finite component makes the whole action the rule-based fallback."""
    a = np.asarray(raw, dtype=float).reshape(-1)
    if a.shape != (ACTION_DIM,) or not np.isfinite(a).all():
        return (fallback or FallbackParams()).params(profile, limits, timeframe, "fallback")
    a = np.clip(a, -1.0, 1.0)
    lo_d, hi_d = HOLD_DAYS_RANGE
    days = profile.patience * math.exp(_lerp(a[1], math.log(lo_d), math.log(hi_d)))
    tp = math.exp(_lerp(a[3], *map(math.log, TAKE_PROFIT_RANGE)))
    return make_params(_lerp(a[0], *SIZE_RANGE), days, _lerp(a[2], *STOP_RANGE), tp, limits,
                       timeframe=timeframe)


def encode_params(size_frac: float, hold_days: float, stop_loss: float, take_profit: float,
                  profile: LearnerProfile) -> np.ndarray:
    """The raw action that decodes to these parameters (inverse of :func:`decode_action` inside
    the ranges); used to run the rule-based parameters through the same simulator."""
    def inv(x: float, lo: float, hi: float) -> float:
        return _clip(2.0 * (x - lo) / (hi - lo) - 1.0, -1.0, 1.0)

    days = math.log(hold_days / profile.patience)
    return np.array([inv(size_frac, *SIZE_RANGE),
                     inv(days, *map(math.log, HOLD_DAYS_RANGE)),
                     inv(stop_loss, *STOP_RANGE),
                     inv(math.log(take_profit), *map(math.log, TAKE_PROFIT_RANGE))])


@dataclass(frozen=True)
class FallbackParams:
    """The rule-based parameters used without an agent, or when its state is unusable."""

    size_frac: float = _f(1.0, "Share of the allowance staked.", SIZE_RANGE)
    hold_days: float = _f(1.0, "Hold limit in days, multiplied by the learner's patience.",
                          HOLD_DAYS_RANGE)
    stop_loss: float = _f(0.08, "Stop loss below the entry.", STOP_RANGE)
    take_profit: float = _f(0.15, "Take profit above the entry.", TAKE_PROFIT_RANGE)

    def params(self, profile: LearnerProfile, limits: TradeLimits, timeframe: str = "5m",
               source: str = "rule") -> TradeParams:
        return make_params(self.size_frac, self.hold_days * profile.patience, self.stop_loss,
                           self.take_profit, limits, timeframe=timeframe, source=source)


# ---------------------------------------------------------------------------------- reward
@dataclass(frozen=True)
class RewardConfig:
    """Weights of the trade reward (module doc)."""

    return_scale: float = _f(0.01, "Equity return that counts as one reward unit.", (1e-5, 1.0))
    downside_aversion: float = _f(0.5, "κ: extra cost of losses, ½κ·min(z,0)².", (0.0, 100.0))
    drawdown_penalty: float = _f(20.0, "λ_dd on the squared equity drawdown after the trade.",
                                 (0.0, 1e4))
    violation_penalty: float = _f(1.0, "λ_v per unit of limit violation.", (0.0, 1e3))
    conviction_bonus: float = _f(0.2, "β: bonus of a winning trade at full size.", (0.0, 100.0))
    conviction_threshold: float = _f(
        0.75, "size_frac above which a win earns part of the conviction bonus.", (0.0, 0.999))
    clip: float = _f(10.0, "Rewards are clipped to ±clip (one freak trade cannot dominate).",
                     (0.1, 1e4))
    horizon_days: float = _f(
        1.0, "Holding time that the return scale refers to: a trade held d days is scaled by "
        "√(max(d, horizon)/horizon), like a Sharpe ratio (risk grows with √time); 0 turns "
        "the time scaling off.", (0.0, 365.0))


def reward_terms(profit_ratio: float, stake_frac: float, size_frac: float,
                 drawdown_after: float, violations: Mapping[str, float] | None = None,
                 config: RewardConfig | None = None, days_held: float = 0.0) -> dict[str, float]:
    """The reward's terms for one closed trade; ``stake_frac`` = stake / equity at entry,
    ``days_held`` = entry to exit in days."""
    cfg = config or RewardConfig()
    scale = cfg.return_scale
    if cfg.horizon_days > 0 and days_held > cfg.horizon_days:
        scale *= math.sqrt(days_held / cfg.horizon_days)
    z = stake_frac * profit_ratio / scale
    conviction = max(size_frac - cfg.conviction_threshold, 0.0) / (1 - cfg.conviction_threshold)
    terms = {"return": z, "downside": -0.5 * cfg.downside_aversion * min(z, 0.0) ** 2,
             "drawdown": -cfg.drawdown_penalty * max(drawdown_after, 0.0) ** 2,
             "violations": -cfg.violation_penalty * sum((violations or {}).values()),
             "conviction": cfg.conviction_bonus * conviction * float(profit_ratio > 0)}
    total = sum(terms.values())
    terms["total"] = _clip(total, -cfg.clip, cfg.clip) if math.isfinite(total) else math.nan
    return terms


def trade_reward(profit_ratio: float, stake_frac: float, size_frac: float,
                 drawdown_after: float, violations: Mapping[str, float] | None = None,
                 config: RewardConfig | None = None, days_held: float = 0.0) -> float:
    """The total of :func:`reward_terms`."""
    return reward_terms(profit_ratio, stake_frac, size_frac, drawdown_after, violations,
                        config, days_held)["total"]


# ---------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class PPOConfig:
    """Tier 3: the trade-parameter agent (network, offline PPO, online batch updates)."""

    net_arch: tuple[int, ...] = _f((64, 64), "Hidden layer widths of the policy and value nets.")
    activation: str = _f("tanh", "Hidden activation.", choices=("tanh", "relu"))
    log_std_init: float = _f(-0.5, "Initial log std of the Gaussian policy (raw action units).",
                             (-5.0, 1.0))
    learning_rate: float = _f(3e-4, "Adam learning rate of offline PPO.", (1e-7, 1.0))
    n_steps: int = _f(512, "Simulated trades per PPO rollout (all envs together).", (8, 10**6))
    n_envs: int = _f(8, "Simulated accounts stepped together in offline training.", (1, 256))
    batch_size: int = _f(64, "Minibatch size of the PPO update.", (2, 10**6))
    n_epochs: int = _f(5, "Passes over each rollout.", (1, 100))
    gamma: float = _f(0.0, "Discount between successive trades; 0: each trade's reward is its "
                      "whole outcome (a contextual bandit with portfolio state).", (0.0, 1.0))
    gae_lambda: float = _f(0.95, "GAE λ (no effect with gamma 0).", (0.0, 1.0))
    clip_range: float = _f(0.2, "PPO clipping of the probability ratio.", (0.01, 1.0))
    ent_coef: float = _f(0.0, "Entropy bonus.", (0.0, 1.0))
    vf_coef: float = _f(0.5, "Weight of the value loss.", (0.0, 10.0))
    max_grad_norm: float = _f(0.5, "Gradient norm clip.", (0.01, 100.0))
    total_timesteps: int = _f(20_000, "Simulated trades of offline training.", (1, 10**9))
    online_learning: bool = _f(True, "Update the policy from real closed trades.")
    online_batch: int = _f(10, "Closed trades per online update.", (1, 10_000))
    online_epochs: int = _f(4, "Gradient steps per online update.", (1, 1000))
    online_learning_rate: float = _f(
        1e-4, "Adam learning rate of online updates, × the learner's learning_rate.", (0.0, 1.0))
    online_clip_range: float = _f(0.2, "PPO ratio clipping of online updates.", (0.01, 1.0))
    explore: bool = _f(True, "Sample live actions from the policy (online updates need it; "
                       "false uses the mean, and the policy mean then cannot learn).")
    seed: int = _f(0, "Seed of the network initialisation, PPO and exploration.", (0, 2**31 - 1))
    torch_threads: int = _f(
        1, "Torch CPU threads while training (a small MLP is fastest on one; more threads on a "
        "busy machine made offline training 20x slower here).", (1, 256))
    fallback: FallbackParams = _f(FallbackParams(), "Rule-based parameters.")
    reward: RewardConfig = _f(RewardConfig(), "Reward weights.")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            rng, v = f.metadata.get("range"), getattr(self, f.name)
            if rng is not None and not (rng[0] <= v <= rng[1]):
                raise ConfigError(f"ppo.{f.name}: {v!r} is out of range [{rng[0]}, {rng[1]}]")
        if not self.net_arch or any(int(w) < 1 for w in self.net_arch):
            raise ConfigError(f"ppo.net_arch: need positive widths, got {self.net_arch!r}")
        if self.n_steps % self.n_envs:
            raise ConfigError(f"ppo.n_steps {self.n_steps} is not a multiple of n_envs "
                              f"{self.n_envs}")
        if self.batch_size > self.n_steps:
            raise ConfigError(f"ppo.batch_size {self.batch_size} exceeds n_steps {self.n_steps}")


_ARCH_FIELDS = ("net_arch", "activation")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads, restoring the previous setting after."""
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def make_policy(config: PPOConfig, seed: int | None = None) -> ActorCriticPolicy:
    """A fresh actor-critic policy; initialisation seeded without touching torch's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed if seed is None else seed)
        policy = ActorCriticPolicy(OBSERVATION_SPACE, ACTION_SPACE, lambda _: config.learning_rate,
                                   **policy_kwargs(config))
    policy.set_training_mode(False)
    return policy


def policy_kwargs(config: PPOConfig) -> dict[str, Any]:
    arch = [int(w) for w in config.net_arch]
    return {"net_arch": {"pi": arch, "vf": list(arch)}, "log_std_init": config.log_std_init,
            "activation_fn": nn.Tanh if config.activation == "tanh" else nn.ReLU}


# ---------------------------------------------------------------------------------- agent
@dataclass(frozen=True)
class Decision:
    """What the agent decided for one entry, and what the online update needs later."""

    params: TradeParams
    obs: tuple[float, ...] | None = None
    """The (27,) state; None for a fallback decision (nothing to learn from)."""
    raw: tuple[float, ...] | None = None
    """The sampled, unclipped action (its log-prob is under this action)."""
    log_prob: float = math.nan
    value: float = math.nan

    def to_record(self) -> dict[str, Any] | None:
        """JSON-able dict to keep with the open trade (e.g. freqtrade custom data)."""
        if self.obs is None or self.raw is None:
            return None
        return {"obs": list(self.obs), "raw": list(self.raw), "log_prob": self.log_prob,
                "value": self.value, "size_frac": self.params.size_frac,
                "violations": dict(self.params.violations)}


@dataclass
class AgentState:
    """What an agent accumulates besides its weights (JSON-able, saved in its checkpoint)."""

    buffer: list[dict[str, Any]] = field(default_factory=list)
    """Closed trades waiting for the next online update: obs, raw, log_prob, value, reward."""
    decisions: int = 0
    fallbacks: int = 0
    trades: int = 0
    updates: int = 0
    last_update: dict[str, float] = field(default_factory=dict)


def _versions() -> dict[str, str]:
    import stable_baselines3

    return {"learning": __version__, "torch": str(torch.__version__),
            "stable_baselines3": str(stable_baselines3.__version__)}


def _plain(value: Any) -> Any:
    """Tuples → lists and dataclasses → dicts, so weights_only loading accepts the payload."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _config_from(raw: Mapping[str, Any]) -> PPOConfig:
    kw = dict(raw)
    kw["net_arch"] = tuple(kw.get("net_arch", ()))
    kw["fallback"] = FallbackParams(**kw.get("fallback", {}))
    kw["reward"] = RewardConfig(**kw.get("reward", {}))
    return PPOConfig(**kw)


class TradeParamAgent:
    """One learner's PPO policy: act at entries, learn from closed trades in batches."""

    def __init__(self, profile: LearnerProfile, config: PPOConfig | None = None, *,
                 policy: ActorCriticPolicy | None = None, state: AgentState | None = None) -> None:
        self.profile = profile
        self.config = config or PPOConfig()
        self.policy = policy if policy is not None else make_policy(
            self.config, self.config.seed + learner_seed(profile.name))
        self.state = state if state is not None else AgentState()
        self._rng = np.random.default_rng([self.config.seed, learner_seed(profile.name)])
        self._optimizer: torch.optim.Optimizer | None = None
        self._logged: set[str] = set()

    def _log_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(msg, *args)

    # -- acting ------------------------------------------------------------------------------
    def policy_output(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(mean (4,), std (4,), value) of the policy at one state."""
        with torch.no_grad():
            obs_t = torch.as_tensor(np.clip(obs, -1, 1), dtype=torch.float32).reshape(1, -1)
            dist = self.policy.get_distribution(obs_t).distribution
            value = self.policy.predict_values(obs_t)
        return dist.mean[0].numpy(), dist.stddev[0].numpy(), float(value[0, 0])

    def act(self, state: np.ndarray | Sequence[float], limits: TradeLimits, *,
            timeframe: str = "5m", explore: bool | None = None,
            rng: np.random.Generator | None = None) -> Decision:
        """Trade parameters for one entry. Never raises on bad state: a state that is not a
        finite (27,) vector gives the rule-based parameters (``source='fallback'``), logged once."""
        self.state.decisions += 1
        with np.errstate(over="ignore", invalid="ignore"):  # huge values become inf: refused
            obs = np.asarray(state, dtype=np.float32).reshape(-1)
        if obs.shape != (STATE_DIM,) or not np.isfinite(obs).all():
            self.state.fallbacks += 1
            bad = ([STATE_NAMES[i] for i in np.flatnonzero(~np.isfinite(obs))]
                   if obs.shape == (STATE_DIM,) else [f"shape {obs.shape}"])
            self._log_once("nan-state", "trade-param agent %s: unusable state (%s); using the "
                           "rule-based parameters", self.profile.name, ", ".join(bad))
            return Decision(self.config.fallback.params(self.profile, limits, timeframe,
                                                        "fallback"))
        obs = np.clip(obs, -1.0, 1.0)
        mean, std, value = self.policy_output(obs)
        explore = self.config.explore if explore is None else explore
        raw = mean + std * (rng or self._rng).standard_normal(ACTION_DIM) if explore else mean
        raw = raw.astype(np.float32)
        with torch.no_grad():
            dist = self.policy.get_distribution(torch.as_tensor(obs).reshape(1, -1))
            log_prob = float(dist.log_prob(torch.as_tensor(raw).reshape(1, -1))[0])
        params = decode_action(raw, self.profile, limits, timeframe=timeframe,
                               fallback=self.config.fallback)
        return Decision(params, tuple(map(float, obs)), tuple(map(float, raw)), log_prob, value)

    # -- learning ----------------------------------------------------------------------------
    def reward_for(self, record: Decision | Mapping[str, Any], profit_ratio: float,
                   stake_frac: float, drawdown_after: float, days_held: float = 0.0) -> float:
        """:func:`trade_reward` of a closed trade from its decision record, its profit ratio,
        stake / equity at entry, the equity drawdown once it is booked and its duration."""
        if isinstance(record, Decision):
            record = record.to_record() or {"size_frac": record.params.size_frac,
                                            "violations": dict(record.params.violations)}
        return trade_reward(profit_ratio, stake_frac, float(record.get("size_frac", 0.0)),
                            drawdown_after, record.get("violations") or {}, self.config.reward,
                            days_held)

    def record_outcome(self, record: Decision | Mapping[str, Any] | None,
                       reward: float) -> dict[str, float] | None:
        """Add one closed trade (its decision record and :func:`trade_reward`); every
        ``online_batch`` trades run the batch update. Returns the update's stats when one ran.
        Fallback decisions, malformed records and non-finite rewards are skipped (logged once)."""
        if isinstance(record, Decision):
            record = record.to_record()
        if record is None or not self.config.online_learning:
            return None
        try:
            item = {"obs": [float(x) for x in record["obs"]],
                    "raw": [float(x) for x in record["raw"]],
                    "log_prob": float(record["log_prob"]), "value": float(record["value"]),
                    "reward": float(reward)}
            ok = (len(item["obs"]) == STATE_DIM and len(item["raw"]) == ACTION_DIM and all(
                math.isfinite(v) for v in (*item["obs"], *item["raw"], item["log_prob"],
                                           item["value"], item["reward"])))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            self._log_once("bad-record", "trade-param agent %s: closed trade with an unusable "
                           "decision record or reward skipped", self.profile.name)
            return None
        self.state.buffer.append(item)
        self.state.trades += 1
        if len(self.state.buffer) >= self.config.online_batch:
            return self.update()
        return None

    def update(self) -> dict[str, float] | None:
        """PPO's clipped-surrogate update on the buffered real trades (module doc); empties it."""
        batch, self.state.buffer = self.state.buffer, []
        if not batch:
            return None
        cfg = self.config
        obs = torch.tensor([b["obs"] for b in batch], dtype=torch.float32)      # (B, 27)
        act = torch.tensor([b["raw"] for b in batch], dtype=torch.float32)      # (B, 4)
        old_logp = torch.tensor([b["log_prob"] for b in batch])                  # (B,)
        rewards = torch.tensor([b["reward"] for b in batch])                     # (B,)
        adv = rewards - torch.tensor([b["value"] for b in batch])
        if len(batch) > 1 and adv.std() > 1e-8:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(
                self.policy.parameters(), lr=cfg.online_learning_rate * self.profile.learning_rate)
        self.policy.set_training_mode(True)
        with torch_threads(cfg.torch_threads):
            stats = self._ppo_steps(self._optimizer, obs, act, old_logp, rewards, adv)
        self.policy.set_training_mode(False)
        self.state.updates += 1
        self.state.last_update = {**stats, "n": float(len(batch)),
                                  "mean_reward": float(rewards.mean())}
        return self.state.last_update

    def _ppo_steps(self, optimizer: torch.optim.Optimizer, obs: torch.Tensor, act: torch.Tensor,
                   old_logp: torch.Tensor, rewards: torch.Tensor,
                   adv: torch.Tensor) -> dict[str, float]:
        cfg, stats = self.config, {}
        for _ in range(cfg.online_epochs):
            values, logp, entropy = self.policy.evaluate_actions(obs, act)
            ratio = torch.exp(logp - old_logp)
            clipped = torch.clamp(ratio, 1 - cfg.online_clip_range, 1 + cfg.online_clip_range)
            policy_loss = -torch.min(adv * ratio, adv * clipped).mean()
            value_loss = nn.functional.mse_loss(values.flatten(), rewards)
            ent = entropy.mean() if entropy is not None else torch.zeros(())
            loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * ent
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                stats = {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                         "approx_kl": ((ratio - 1) - torch.log(ratio)).mean().item()}
        return stats

    # -- persistence -------------------------------------------------------------------------
    def checkpoint(self, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Self-describing payload for ``StateStore.save_torch`` (module doc)."""
        return {"format": FORMAT, "schema_version": SCHEMA_VERSION,
                "state_fields": list(STATE_NAMES), "action_fields": list(ACTION_FIELDS),
                "config": _plain(self.config), "profile": _plain(self.profile),
                "versions": _versions(), "meta": _plain(dict(meta or {})),
                "agent_state": _plain(self.state),
                "policy": {k: v.detach().clone() for k, v in self.policy.state_dict().items()}}

    @classmethod
    def from_checkpoint(cls, payload: Any, *, profile: LearnerProfile | None = None,
                        config: PPOConfig | None = None,
                        source: str = "checkpoint") -> TradeParamAgent:
        """Rebuild an agent; :class:`StateError` names whatever does not match this version.

        The checkpoint's config defines the network; a ``config`` given here may change the
        other settings (online learning, exploration, reward) but not the architecture."""
        fmt = payload.get("format") if isinstance(payload, Mapping) else None
        if fmt != FORMAT:
            raise StateError(f"{source} is not a trade-parameter agent checkpoint "
                             f"(format {fmt!r}, expected {FORMAT!r})")
        if payload.get("schema_version") != SCHEMA_VERSION:
            raise StateError(f"{source}: schema version {payload.get('schema_version')!r} is not "
                             f"the supported version {SCHEMA_VERSION}; retrain the agent")
        for key, want in (("state_fields", STATE_NAMES), ("action_fields", ACTION_FIELDS)):
            got = tuple(payload.get(key) or ())
            if got != want:
                diff = sorted(set(got) ^ set(want)) or "order"
                raise StateError(f"{source}: its {key} differ from this version's ({diff}); "
                                 "retrain the agent")
        try:
            saved = _config_from(payload["config"])
            saved_profile = LearnerProfile(**payload["profile"])
            state = AgentState(**payload.get("agent_state", {}))
        except (KeyError, TypeError, ValueError, ConfigError) as err:
            raise StateError(f"{source}: config/profile is malformed ({err})") from err
        if profile is not None and profile.name != saved_profile.name:
            raise StateError(f"{source} belongs to learner {saved_profile.name!r}, "
                             f"not {profile.name!r}")
        if config is not None:
            for name in _ARCH_FIELDS:
                if getattr(config, name) != getattr(saved, name):
                    raise StateError(f"{source}: {name} {getattr(saved, name)!r} differs from "
                                     f"the configured {getattr(config, name)!r}; retrain")
        cfg = config or saved
        policy = make_policy(cfg)
        try:
            policy.load_state_dict(payload["policy"])
        except (KeyError, RuntimeError) as err:
            raise StateError(f"{source}: network weights do not fit ({err})") from err
        policy.set_training_mode(False)
        return cls(profile or saved_profile, cfg, policy=policy, state=state)

    def to_bytes(self, meta: Mapping[str, Any] | None = None) -> bytes:
        buf = io.BytesIO()
        torch.save(self.checkpoint(meta), buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, **kwargs: Any) -> TradeParamAgent:
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for foreign or truncated files
            raise StateError(f"not a loadable agent checkpoint ({err})") from err
        return cls.from_checkpoint(payload, **kwargs)


def learner_seed(name: str) -> int:
    """A stable per-learner offset, so the three agents of one seed differ (not hash())."""
    return sum((i + 1) * ord(c) for i, c in enumerate(name)) % 10_007


class AgentSet:
    """One :class:`TradeParamAgent` per meta-learner personality; None = rule-based."""

    def __init__(self, agents: Mapping[str, TradeParamAgent | None],
                 profiles: Sequence[LearnerProfile] = DEFAULT_LEARNERS,
                 config: PPOConfig | None = None) -> None:
        self.config = config or PPOConfig()
        self.profiles = {p.name: p for p in profiles}
        self.agents = {name: agents.get(name) for name in self.profiles}
        self.errors: dict[str, str] = {}

    @classmethod
    def create(cls, profiles: Sequence[LearnerProfile] = DEFAULT_LEARNERS,
               config: PPOConfig | None = None) -> AgentSet:
        cfg = config or PPOConfig()
        return cls({p.name: TradeParamAgent(p, cfg) for p in profiles}, profiles, cfg)

    @classmethod
    def from_checkpoints(cls, payloads: Mapping[str, Any],
                         profiles: Sequence[LearnerProfile] = DEFAULT_LEARNERS,
                         config: PPOConfig | None = None) -> AgentSet:
        """Load each learner's checkpoint; a missing or refused one leaves that learner on the
        rule-based parameters, with the reason in ``errors`` and an error log line."""
        agents: dict[str, TradeParamAgent | None] = {}
        errors: dict[str, str] = {}
        for p in profiles:
            payload = payloads.get(p.name)
            if payload is None:
                agents[p.name] = None
                continue
            try:
                agents[p.name] = TradeParamAgent.from_checkpoint(
                    payload, profile=p, config=config, source=f"agent checkpoint of {p.name}")
            except StateError as err:
                agents[p.name], errors[p.name] = None, str(err)
                logger.error("%s; %s uses rule-based trade parameters", err, p.name)
        out = cls(agents, profiles, config)
        out.errors = errors
        return out

    def decide(self, learner: str, state: np.ndarray | Sequence[float], limits: TradeLimits, *,
               timeframe: str = "5m", rng: np.random.Generator | None = None) -> Decision:
        """The learner's decision; rule-based parameters when it has no agent."""
        agent = self.agents.get(learner)
        if agent is None:
            profile = self.profiles.get(learner) or LearnerProfile(learner or "unknown")
            return Decision(self.config.fallback.params(profile, limits, timeframe, "rule"))
        return agent.act(state, limits, timeframe=timeframe, rng=rng)

    def record_outcome(self, learner: str, record: Decision | Mapping[str, Any] | None,
                       reward: float) -> dict[str, float] | None:
        agent = self.agents.get(learner)
        return agent.record_outcome(record, reward) if agent is not None else None

    def checkpoints(self, meta: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        return {n: a.checkpoint(meta) for n, a in self.agents.items() if a is not None}
