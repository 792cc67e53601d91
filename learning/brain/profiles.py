"""Exit profiles as options (hierarchical RL, seed 003): SCALP / SWING / RUNNER.

A trade's high-level choice is *how* it will be exited; the low-level execution is fixed per
profile and runs in the strategy's ``custom_stoploss`` / ``custom_exit`` (and, identically, in the
shadow book that resolves counterfactual trades, :mod:`learning.brain.shadow`):

* a stop ``stop_vol`` daily volatilities below the entry (clamped to the strategy's limits);
* a take profit ``take_profit_vol`` daily volatilities above it (0: none);
* a trailing stop ``trail_vol`` daily volatilities below the highest price since entry (0: none);
* a longest hold ``max_hold`` (a duration);
* with ``trend_exit``, an exit once a *daily* close falls below its trend mean (the trend has
  flipped; judged on completed days, as the trend rule does, not on every intraday dip).

Barriers in units of the pair's daily volatility at entry (the triple barrier of López de Prado,
*Advances in Financial Machine Learning*, ch. 3) mean the same thing on a quiet and a wild pair.

:class:`ProfileLearner` chooses a profile per (regime) by Thompson sampling on a
Normal-Inverse-Gamma posterior of each profile's trade return, like the meta-learner does for
learners (:func:`learning.brain.meta.nig_posterior`). Its feedback is full-information: every
shadow entry is resolved under every profile, so all profiles learn from every entry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from learning.brain.bandit import finite_number, regime_key
from learning.brain.meta import nig_posterior
from learning.core.config import _f
from learning.core.durations import parse_duration
from learning.core.errors import ConfigError, StateError

SCHEMA = 1


@dataclass(frozen=True)
class ExitProfile:
    """How one kind of trade is exited."""

    name: str = _f("", "Name (shown in the trade's custom data and reports).")
    stop_vol: float = _f(2.0, "Stop below the entry, in daily volatilities of the pair.",
                         (0.1, 50.0))
    take_profit_vol: float = _f(0.0, "Take profit above the entry in daily volatilities (0: "
                                "none).", (0.0, 100.0))
    trail_vol: float = _f(0.0, "Trailing stop below the highest price since entry, in daily "
                          "volatilities (0: none).", (0.0, 50.0))
    max_hold: str = _f("7d", "Longest hold (a duration).", duration=True)
    trend_exit: bool = _f(False, "Exit when the trend component turns negative.")


DEFAULT_PROFILES: tuple[ExitProfile, ...] = (
    ExitProfile("SCALP", stop_vol=1.0, take_profit_vol=1.5, max_hold="1d"),
    ExitProfile("SWING", stop_vol=2.0, take_profit_vol=4.0, max_hold="7d"),
    ExitProfile("RUNNER", stop_vol=3.0, trail_vol=4.0, max_hold="60d", trend_exit=True),
)


@dataclass(frozen=True)
class ProfileConfig:
    """Exit profiles and the learner that chooses among them."""

    enabled: bool = _f(True, "Choose an exit profile per trade; false: the strategy's ATR "
                       "trailing stop and exit signal only (an ablation).")
    profiles: tuple[ExitProfile, ...] = _f(DEFAULT_PROFILES, "The exit profiles.")
    rule_profile: str = _f("SWING", "Profile of rule-based (fallback) entries and of a run "
                           "whose profile learning is off.")
    learn: bool = _f(True, "Learn which profile pays per regime; false: always rule_profile.")
    min_stop: float = _f(0.01, "Narrowest stop (fraction of the entry price).", (0.001, 0.5))
    max_stop: float = _f(0.10, "Widest stop below the entry (the strategy's hard stoploss caps "
                         "it too).", (0.005, 0.5))
    max_trail: float = _f(0.25, "Widest trailing stop below the highest price since entry.",
                          (0.005, 0.9))
    discount: float = _f(0.995, "γ per learning event in a regime: older evidence fades.",
                         (0.5, 1.0))
    exploration: float = _f(0.5, "Spread of the Thompson draws (1: plain Thompson sampling).",
                            (0.0, 3.0))
    prior_std: float = _f(0.03, "Prior guess of the spread of one trade's return.",
                          (1e-4, 1.0))
    prior_strength: float = _f(2.0, "Pseudo-trades behind the prior (mean 0).", (0.01, 1000.0))
    reward_clip: float = _f(0.3, "Returns are clipped to ±this before learning.", (1e-3, 10.0))

    def __post_init__(self) -> None:
        names = [p.name for p in self.profiles]
        if not names or not all(names) or len(set(names)) != len(names):
            raise ConfigError(f"profiles.profiles: need unique non-empty names, got {names!r}")
        if self.rule_profile not in names:
            raise ConfigError(f"profiles.rule_profile: {self.rule_profile!r} is not one of "
                              f"{', '.join(names)}")
        if self.min_stop > self.max_stop:
            raise ConfigError("profiles.min_stop must not exceed max_stop")

    def profile(self, name: str) -> ExitProfile:
        for p in self.profiles:
            if p.name == name:
                return p
        raise KeyError(name)


@dataclass(frozen=True)
class ExitPlan:
    """A profile made concrete for one entry (fractions of the entry price, candles)."""

    profile: str
    stop: float
    take_profit: float  # inf: none
    trail: float  # 0: none
    hold: timedelta
    trend_exit: bool

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "stop": round(self.stop, 6),
                "take_profit": None if math.isinf(self.take_profit) else
                round(self.take_profit, 6), "trail": round(self.trail, 6),
                "hold_h": self.hold.total_seconds() / 3600.0, "trend_exit": self.trend_exit}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ExitPlan:
        tp = raw.get("take_profit")
        return cls(str(raw["profile"]), float(raw["stop"]),
                   math.inf if tp is None else float(tp), float(raw.get("trail") or 0.0),
                   timedelta(hours=float(raw["hold_h"])), bool(raw.get("trend_exit")))


def plan_for(profile: ExitProfile, daily_vol: float, config: ProfileConfig) -> ExitPlan | None:
    """The exit plan of ``profile`` for an entry where the pair's daily volatility is
    ``daily_vol`` (a fraction); None when the volatility is unknown."""
    if not finite_number(daily_vol) or daily_vol <= 0:
        return None

    def clamp(x: float) -> float:
        return min(max(x, config.min_stop), config.max_stop)

    return ExitPlan(
        profile=profile.name, stop=clamp(profile.stop_vol * daily_vol),
        take_profit=profile.take_profit_vol * daily_vol if profile.take_profit_vol > 0
        else math.inf,
        trail=min(max(profile.trail_vol * daily_vol, config.min_stop), config.max_trail)
        if profile.trail_vol > 0 else 0.0,
        hold=parse_duration(profile.max_hold), trend_exit=profile.trend_exit)


# ----------------------------------------------------------------------------------------------
# Learning which profile pays


@dataclass
class ProfileArm:
    n: float = 0.0  # discounted Σ w
    s1: float = 0.0  # discounted Σ w·r
    s2: float = 0.0  # discounted Σ w·r²
    events: int = 0
    total_return: float = 0.0


@dataclass
class ProfileState:
    arms: dict[str, dict[str, ProfileArm]] = field(default_factory=dict)  # regime -> profile
    real: int = 0
    shadow: int = 0


class ProfileLearner:
    """Thompson sampling over exit profiles per regime (see the module docstring)."""

    def __init__(self, config: ProfileConfig, state: ProfileState | None = None) -> None:
        self.config = config
        self.state = state if state is not None else ProfileState()
        self.names = [p.name for p in config.profiles]

    def _arm(self, regime: str, name: str) -> ProfileArm:
        return self.state.arms.get(regime, {}).get(name) or ProfileArm()

    def posterior(self, regime: Any, name: str) -> tuple[float, float, float, float]:
        c, arm = self.config, self._arm(regime_key(regime), name)
        return nig_posterior(arm.n, arm.s1, arm.s2, 0.0, c.prior_strength, c.prior_std,
                             c.prior_strength)

    def select(self, regime: Any, rng: np.random.Generator) -> str:
        """A profile for one entry: the largest sampled mean return (Thompson sampling)."""
        c = self.config
        if not c.enabled:
            return c.rule_profile
        if not c.learn:
            return c.rule_profile
        post = np.array([self.posterior(regime, n) for n in self.names])  # (P, 4)
        m, kappa, a, b = post.T
        precision = rng.gamma(a, 1.0 / b)
        mu = m + c.exploration * rng.standard_normal(len(self.names)) / np.sqrt(kappa * precision)
        return self.names[int(np.argmax(mu))]

    def best(self, regime: Any) -> str:
        """The profile with the highest posterior mean return (the choice for a real entry:
        every profile keeps learning from shadow trades whichever is chosen, so real entries
        need not explore)."""
        c = self.config
        if not (c.enabled and c.learn):
            return c.rule_profile
        means = [self.posterior(regime, n)[0] for n in self.names]
        if max(means) == min(means):
            return c.rule_profile
        return self.names[int(np.argmax(means))]

    def record(self, regime: Any, name: str, ret: float, weight: float = 1.0,
               shadow: bool = False) -> bool:
        """Learn one resolved trade (real: weight 1; shadow: a fraction). Never raises."""
        c = self.config
        if not (c.enabled and c.learn) or name not in self.names or not finite_number(ret) \
                or not weight > 0:
            return False
        arms = self.state.arms.setdefault(regime_key(regime), {})
        g = c.discount ** weight
        for n in self.names:  # every profile's evidence in this regime ages
            arm = arms.setdefault(n, ProfileArm())
            arm.n, arm.s1, arm.s2 = g * arm.n, g * arm.s1, g * arm.s2
        r = float(np.clip(ret, -c.reward_clip, c.reward_clip))
        arm = arms[name]
        arm.n, arm.s1, arm.s2 = arm.n + weight, arm.s1 + weight * r, arm.s2 + weight * r * r
        arm.events += 1
        arm.total_return += float(ret)
        if shadow:
            self.state.shadow += 1
        else:
            self.state.real += 1
        return True

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for regime in sorted(self.state.arms):
            out[regime] = {}
            for name in self.names:
                m, kappa, a, b = self.posterior(regime, name)
                arm = self._arm(regime, name)
                out[regime][name] = {"mean": m, "sigma": math.sqrt(b / a),
                                     "n_eff": arm.n, "events": arm.events}
        return {"regimes": out, "real": self.state.real, "shadow": self.state.shadow}

    def to_state(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "real": self.state.real, "shadow": self.state.shadow,
                "arms": {r: {n: dataclasses.asdict(a) for n, a in arms.items()}
                         for r, arms in self.state.arms.items()}}

    @classmethod
    def from_state(cls, raw: Mapping[str, Any], config: ProfileConfig) -> ProfileLearner:
        try:
            if raw.get("schema") != SCHEMA:
                raise StateError(f"profile state: schema {raw.get('schema')!r}, "
                                 f"expected {SCHEMA}")
            arms = {str(r): {str(n): ProfileArm(**a) for n, a in names.items()}
                    for r, names in raw.get("arms", {}).items()}
            state = ProfileState(arms, int(raw.get("real", 0)), int(raw.get("shadow", 0)))
        except StateError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise StateError(f"profile state is malformed: {err!r}") from err
        return cls(config, state)
