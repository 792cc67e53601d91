"""Tier 3's spaces and reward: the 27-d state, the 4-d action and its decoding under the risk
limits, the rule-based fallback parameters and the per-trade reward (see
:mod:`learning.agents.trade_agent` for the maths in full). Pure numpy: the agent (torch, sb3) lives
in
:mod:`learning.agents.trade_agent`."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from gymnasium import spaces

from learning.brain.bandit import finite_number
from learning.brain.meta import LearnerProfile
from learning.brain.regime import REGIMES
from learning.core.config import _f
from learning.core.durations import parse_duration
from learning.core.errors import ConfigError
from learning.data.candles import timeframe_to_minutes

#: The component scores in the agents' state: the four the state was designed with (issue 4's
#: 27-d state). The trend component (added later) is not in it: a new state field would need
#: retrained agents and a new checkpoint schema.
COMPONENTS: tuple[str, ...] = ("technical", "ai", "theme", "sentiment")

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

    ``regime_probs`` maps a :class:`~learning.brain.regime.Regime` (or its value) to a probability;
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
    short_hold_penalty: float = _f(
        1.0, "Churn: a trade closed within min_hold of its entry costs this many extra "
        "round-trip fees (2 x fee) of its stake, in full at the entry and falling linearly to "
        "0 at min_hold (its real fees are already in its profit ratio); 0 turns it off.",
        (0.0, 1000.0))
    min_hold: str = _f("4h", "Holding time after which a trade pays no churn penalty.",
                       duration=True)


def churn_cost(stake_frac: float, days_held: float, fee: float, config: RewardConfig) -> float:
    """The churn penalty of one trade as a fraction of equity (>= 0): ``short_hold_penalty``
    round-trip fees of the stake, times ``1 - held / min_hold`` (0 once held that long)."""
    min_days = parse_duration(config.min_hold) / timedelta(days=1)
    young = max(0.0, 1.0 - max(days_held, 0.0) / min_days)
    return config.short_hold_penalty * 2.0 * fee * max(stake_frac, 0.0) * young


def reward_terms(profit_ratio: float, stake_frac: float, size_frac: float,
                 drawdown_after: float, violations: Mapping[str, float] | None = None,
                 config: RewardConfig | None = None, days_held: float = 0.0,
                 fee: float = 0.001) -> dict[str, float]:
    """The reward's terms for one closed trade; ``stake_frac`` = stake / equity at entry,
    ``days_held`` = entry to exit in days, ``fee`` per side (``profit_ratio`` is already net
    of both fees; the fee here only sizes the churn penalty)."""
    cfg = config or RewardConfig()
    scale = cfg.return_scale
    if cfg.horizon_days > 0 and days_held > cfg.horizon_days:
        scale *= math.sqrt(days_held / cfg.horizon_days)
    z = stake_frac * profit_ratio / scale
    conviction = max(size_frac - cfg.conviction_threshold, 0.0) / (1 - cfg.conviction_threshold)
    terms = {"return": z, "downside": -0.5 * cfg.downside_aversion * min(z, 0.0) ** 2,
             "churn": -churn_cost(stake_frac, days_held, fee, cfg) / scale,
             "drawdown": -cfg.drawdown_penalty * max(drawdown_after, 0.0) ** 2,
             "violations": -cfg.violation_penalty * sum((violations or {}).values()),
             "conviction": cfg.conviction_bonus * conviction * float(profit_ratio > 0)}
    total = sum(terms.values())
    terms["total"] = _clip(total, -cfg.clip, cfg.clip) if math.isfinite(total) else math.nan
    return terms


def trade_reward(profit_ratio: float, stake_frac: float, size_frac: float,
                 drawdown_after: float, violations: Mapping[str, float] | None = None,
                 config: RewardConfig | None = None, days_held: float = 0.0,
                 fee: float = 0.001) -> float:
    """The total of :func:`reward_terms`."""
    return reward_terms(profit_ratio, stake_frac, size_frac, drawdown_after, violations,
                        config, days_held, fee)["total"]


# ---------------------------------------------------------------------------------- config
