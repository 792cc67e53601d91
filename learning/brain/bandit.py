"""Tier 1: Thompson-sampling weights for the entry score's components.

Model
-----
For each (regime, component) a Beta(α, β) posterior describes θ, the probability that the sign of
the component's score at entry agrees with the sign of the trade's outcome. A closed trade with
outcome ``o != 0`` and component score ``s`` (``|s| >= deadband``) is one Bernoulli observation:
a success when ``sign(s) == sign(o)``. Before it is added, every posterior of that regime is
discounted towards the prior,

    α ← α₀ + γ (α − α₀),    β ← β₀ + γ (β − β₀),

and the observation then adds ``learning_rate`` (η) to α or β. Evidence that is k trades old thus
weighs γᵏ, the posterior holds at most about η / (1 − γ) pseudo-trades and never collapses, so the
weights can follow a non-stationary market (discounted Thompson sampling, Raj & Kalyani 2017).
A learner's speed x maps to η·x and γˣ (:meth:`BanditConfig.scaled`): memory ≈ 1 / (x (1 − γ))
trades, while the steady-state confidence η x / (1 − γˣ) stays about the same.

Weights
-------
A draw θ_c ~ Beta(α_c, β_c) (Thompson sampling, :meth:`ComponentBandit.sample_weights`) or the
posterior mean (:meth:`ComponentBandit.mean_weights`) is mapped to a weight:

* ``logit`` (default): w_c ∝ max(log(θ_c / (1 − θ_c)), 0). For independent voters of accuracy θ_c
  the log-odds is the optimal weight in a weighted-majority vote (Nitzan & Paroush 1982), and a
  component no better than a coin gets no weight. If all map to 0 the weights are uniform.
* ``linear``: w_c ∝ θ_c, which stays close to uniform.

Then ``w ← (1 − ε) w + ε / K`` mixes in a little uniform weight, and the weights are normalised over
the components available for this decision (sum to 1; e.g. ``ai`` may be missing).

Every component's score is seen on every trade, so the feedback is full-information: what a
component learns does not depend on the weights used. Sampling hedges against an over-confident
posterior rather than being needed for exploration; ``mean_weights`` is the deterministic choice.

Learning is paused with ``BanditConfig.learn = False`` (``update`` is then a no-op). This module
does no I/O; ``to_state()`` returns a JSON-able dict for the store module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from scipy.stats import beta as beta_dist

from learning.core.config import _f
from learning.core.errors import ConfigError, StateError

COMPONENTS: tuple[str, ...] = ("technical", "ai", "theme", "sentiment", "trend")
SCHEMA = 1


def regime_key(regime: Any) -> str:
    """The dict key of a regime: an Enum's value, ``None`` as UNKNOWN, anything else as ``str``."""
    if regime is None:
        return "UNKNOWN"
    if isinstance(regime, Enum):
        return str(regime.value)
    return str(regime)


def finite_number(x: Any) -> bool:
    return (isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool)
            and math.isfinite(x))


def available_components(scores: Mapping[str, float | None],
                         components: Iterable[str] = COMPONENTS) -> list[str]:
    """The components with a finite score (a missing or NaN ``ai`` score drops out)."""
    return [c for c in components if finite_number(scores.get(c))]


def combine(weights: Mapping[str, float], scores: Mapping[str, float | None]) -> float:
    """The weighted score Σ w_c s_c over the weighted components that have a finite score."""
    return float(sum(w * float(scores[c]) for c, w in weights.items()
                     if finite_number(scores.get(c))))


@dataclass(frozen=True)
class BanditConfig:
    """Tier 1: the component-weight bandit."""

    components: tuple[str, ...] = _f(
        COMPONENTS, "Names of the entry score's components: they get a learned weight (equal "
        "weights with the bandit off); a component left out does not count.")
    prior_alpha: float = _f(
        2.0, "α₀ of the Beta prior on a component's sign-agreement rate (pseudo-successes).",
        (0.01, 1000.0))
    prior_beta: float = _f(
        2.0, "β₀ of the Beta prior (pseudo-failures). α₀ = β₀ centres the prior on a coin flip.",
        (0.01, 1000.0))
    learning_rate: float = _f(
        1.0, "Pseudo-count one closed trade adds to a posterior (the update size).", (0.01, 100.0))
    discount: float = _f(
        0.97, "γ: per trade in a regime, its posteriors are pulled towards the prior by this "
        "factor, so old evidence fades; memory is about 1/(1-γ) trades. 1 = never forget.",
        (0.5, 1.0))
    deadband: float = _f(
        0.05, "A component whose |score| at entry is below this made no call and is not updated.",
        (0.0, 1.0))
    weight_map: str = _f(
        "logit", "How a sampled agreement rate θ becomes a weight: logit (max(log-odds, 0), "
        "coin-flip components get none) or linear (θ itself, close to uniform).",
        choices=("logit", "linear"))
    uniform_mix: float = _f(
        0.1, "Share of uniform weight mixed into every weight vector, so no component is ever "
        "switched off entirely.", (0.0, 1.0))
    credible_mass: float = _f(
        0.9, "Probability mass of the reported equal-tailed credible intervals.", (0.5, 0.999))
    learn: bool = _f(
        True, "Update the posteriors from closed trades; false freezes the learned weights.")

    def __post_init__(self) -> None:
        comps = tuple(self.components)
        if not comps or len(set(comps)) != len(comps) or not all(comps):
            raise ConfigError(f"bandit.components: need unique non-empty names, got {comps!r}")

    def scaled(self, speed: float) -> BanditConfig:
        """This config for a learner of learning speed ``speed`` (update η·x, discount γˣ)."""
        if not (speed > 0 and math.isfinite(speed)):
            raise ConfigError(f"learning speed must be a positive number, got {speed!r}")
        return dataclasses.replace(self, learning_rate=self.learning_rate * speed,
                                   discount=self.discount ** speed)


@dataclass
class ArmStats:
    """The posterior Beta(alpha, beta) of one (regime, component), plus raw hit counts."""

    alpha: float
    beta: float
    wins: int = 0
    """Undiscounted count of trades whose sign the component called right (for reports)."""
    losses: int = 0


@dataclass
class BanditState:
    """Everything a :class:`ComponentBandit` learns. Plain data, JSON-able via ``to_state``."""

    arms: dict[str, dict[str, ArmStats]] = field(default_factory=dict)
    """regime -> component -> posterior. Created lazily at the prior on the first update."""
    trades: dict[str, int] = field(default_factory=dict)
    """regime -> closed trades learned from."""

    def to_state(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "trades": dict(self.trades),
                "arms": {r: {c: dataclasses.asdict(a) for c, a in arms.items()}
                         for r, arms in self.arms.items()}}

    @classmethod
    def from_state(cls, raw: Mapping[str, Any]) -> BanditState:
        """Inverse of :meth:`to_state`; raises :class:`StateError` on anything malformed."""
        try:
            if raw.get("schema") != SCHEMA:
                raise StateError(f"bandit state: schema {raw.get('schema')!r}, expected {SCHEMA}")
            arms = {str(r): {str(c): ArmStats(alpha=float(a["alpha"]), beta=float(a["beta"]),
                                              wins=int(a.get("wins", 0)),
                                              losses=int(a.get("losses", 0)))
                             for c, a in comps.items()}
                    for r, comps in raw.get("arms", {}).items()}
            trades = {str(r): int(n) for r, n in raw.get("trades", {}).items()}
        except StateError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise StateError(f"bandit state is malformed: {err!r}") from err
        for r, comps in arms.items():
            for c, a in comps.items():
                if not (a.alpha > 0 and a.beta > 0 and math.isfinite(a.alpha + a.beta)):
                    raise StateError(f"bandit state: {r}/{c} has invalid Beta({a.alpha}, {a.beta})")
        return cls(arms=arms, trades=trades)


class ComponentBandit:
    """Per-regime Thompson-sampling weights over the score components (see the module doc)."""

    def __init__(self, config: BanditConfig | None = None,
                 state: BanditState | None = None) -> None:
        self.config = config or BanditConfig()
        self.state = state if state is not None else BanditState()

    # -- persistence -------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """JSON-able state; the config rides along for reference (the caller's config wins)."""
        return {**self.state.to_state(), "config": dataclasses.asdict(self.config)}

    @classmethod
    def from_state(cls, raw: Mapping[str, Any],
                   config: BanditConfig | None = None) -> ComponentBandit:
        return cls(config, BanditState.from_state(raw))

    # -- reading -----------------------------------------------------------------------------
    def _prior(self) -> ArmStats:
        return ArmStats(self.config.prior_alpha, self.config.prior_beta)

    def _arm(self, regime: str, component: str) -> ArmStats:
        """The posterior without creating it (reading never changes the state)."""
        arm = self.state.arms.get(regime, {}).get(component)
        return arm if arm is not None else self._prior()

    def _available(self, available: Sequence[str] | None) -> list[str]:
        # Config order, not the caller's, so a seeded draw does not depend on how it was asked.
        if available is None:
            return list(self.config.components)
        wanted = set(available)
        return [c for c in self.config.components if c in wanted]

    def _weights(self, comps: list[str], theta: np.ndarray) -> dict[str, float]:
        theta = np.clip(theta, 1e-9, 1.0 - 1e-9)
        if self.config.weight_map == "logit":
            raw = np.maximum(np.log(theta) - np.log1p(-theta), 0.0)
        else:
            raw = theta
        total = raw.sum()
        k = len(comps)
        w = raw / total if total > 0 else np.full(k, 1.0 / k)
        w = (1.0 - self.config.uniform_mix) * w + self.config.uniform_mix / k
        w = w / w.sum()
        return dict(zip(comps, w.tolist()))

    def sample_weights(self, regime: Any, rng: np.random.Generator,
                       available: Sequence[str] | None = None) -> dict[str, float]:
        """Thompson draw: θ_c ~ Beta(α_c, β_c) per available component, mapped to weights.

        ``available`` defaults to every configured component; unknown names are ignored.
        Returns ``{}`` when no component is available.
        """
        comps = self._available(available)
        if not comps:
            return {}
        key = regime_key(regime)
        a = np.array([self._arm(key, c).alpha for c in comps])
        b = np.array([self._arm(key, c).beta for c in comps])
        return self._weights(comps, rng.beta(a, b))

    def mean_weights(self, regime: Any,
                     available: Sequence[str] | None = None) -> dict[str, float]:
        """Deterministic weights from the posterior means α / (α + β)."""
        comps = self._available(available)
        if not comps:
            return {}
        key = regime_key(regime)
        arms = [self._arm(key, c) for c in comps]
        return self._weights(comps, np.array([a.alpha / (a.alpha + a.beta) for a in arms]))

    def intervals(self, regime: Any) -> dict[str, tuple[float, float, float]]:
        """Per component (lo, mean, hi): equal-tailed credible interval of the agreement rate θ."""
        key = regime_key(regime)
        comps = list(self.config.components)
        a = np.array([self._arm(key, c).alpha for c in comps])
        b = np.array([self._arm(key, c).beta for c in comps])
        tail = (1.0 - self.config.credible_mass) / 2.0
        lo, hi = beta_dist.ppf(tail, a, b), beta_dist.ppf(1.0 - tail, a, b)
        mean = a / (a + b)
        return {c: (float(lo[i]), float(mean[i]), float(hi[i])) for i, c in enumerate(comps)}

    def regimes(self) -> list[str]:
        return sorted(set(self.state.arms) | set(self.state.trades))

    def report(self) -> dict[str, Any]:
        """Per regime seen: trades learned from, mean weights and each component's posterior."""
        out: dict[str, Any] = {}
        for key in self.regimes():
            ivals = self.intervals(key)
            comps = {}
            for c, (lo, mean, hi) in ivals.items():
                arm = self._arm(key, c)
                comps[c] = {"alpha": arm.alpha, "beta": arm.beta, "mean": mean, "lo": lo,
                            "hi": hi, "wins": arm.wins, "losses": arm.losses}
            out[key] = {"trades": self.state.trades.get(key, 0),
                        "weights": self.mean_weights(key), "components": comps}
        return {"credible_mass": self.config.credible_mass, "regimes": out}

    # -- learning ----------------------------------------------------------------------------
    def update(self, regime: Any, scores: Mapping[str, float | None],
               outcome: float, weight: float = 1.0) -> dict[str, bool]:
        """Learn from one closed trade; returns ``{component: credited}`` for the arms updated.

        ``outcome`` must be signed like the scores: > 0 when the price moved the way a positive
        score predicts (a long trade's profit ratio; the negated profit of a short). A zero or
        non-finite outcome, scores that are missing, NaN or inside the deadband, unknown
        component names and a paused config (``learn = False``) teach nothing. Never raises on
        bad inputs: this runs on the trading path. ``weight``: what the outcome counts as, in
        trades (a shadow outcome a fraction: the update adds η·weight and ages by γ^weight).
        """
        cfg = self.config
        if not cfg.learn or not finite_number(outcome) or outcome == 0 or not weight > 0:
            return {}
        key = regime_key(regime)
        arms = self.state.arms.setdefault(key, {})
        a0, b0 = cfg.prior_alpha, cfg.prior_beta
        gamma, eta = cfg.discount ** weight, cfg.learning_rate * weight
        # Every arm of the regime ages by one trade, called or not: evidence fades per trade.
        for c in cfg.components:
            arm = arms.setdefault(c, self._prior())
            arm.alpha = a0 + gamma * (arm.alpha - a0)
            arm.beta = b0 + gamma * (arm.beta - b0)
        credited: dict[str, bool] = {}
        for c in cfg.components:
            s = scores.get(c)
            if not finite_number(s) or abs(s) < cfg.deadband:
                continue
            success = (s > 0) == (outcome > 0)
            arm = arms[c]
            if success:
                arm.alpha += eta
                arm.wins += 1
            else:
                arm.beta += eta
                arm.losses += 1
            credited[c] = success
        self.state.trades[key] = self.state.trades.get(key, 0) + 1
        return credited
