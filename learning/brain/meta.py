"""Tier 4: a meta-learner that picks one of several risk personalities ("learners") per decision.

Learners
--------
Each :class:`LearnerProfile` is a risk personality (stake multiplier ``risk_tolerance``, hold-time
multiplier ``patience``) with its own :class:`~learning.brain.bandit.ComponentBandit`, whose
learning speed x scales the bandit's update size and discount (``BanditConfig.scaled``).

Meta-policy: discounted Thompson sampling on a Normal-Inverse-Gamma model
-------------------------------------------------------------------------
Per (regime, learner) the profit ratios r of the trades that learner opened are modelled as
r ~ N(μ, σ²), with the conjugate prior σ² ~ Scaled-Inv-χ²(ν₀, s₀²), μ | σ² ~ N(m₀, σ²/κ₀).
From discounted sufficient statistics n = Σ wᵢ, S₁ = Σ wᵢ rᵢ, S₂ = Σ wᵢ rᵢ² the posterior is

    κ = κ₀ + n,   m = (κ₀ m₀ + S₁) / κ,   a = (ν₀ + n) / 2,
    b = ν₀ s₀² / 2 + (S₂ + κ₀ m₀² − κ m²) / 2,   σ⁻² ~ Gamma(a, rate b),  μ | σ² ~ N(m, σ²/κ).

``select`` draws (μ, σ) for every learner of the regime, μ with its spread scaled by
``exploration`` c (c = 1 is plain Thompson sampling; c = 0.5 trades a little exploration for a
larger share of the best learner, Chapelle & Li 2011), and picks the largest sampled per-trade
Sharpe ratio μ/σ (objective ``sharpe``; ``mean`` uses μ). Why this model rather than a Beta on
wins: the reward is a real-valued return whose size matters, and the Sharpe objective is
risk-adjusted and invariant to the scale of returns, so a learner whose trades are merely bigger
and riskier does not win by that alone. Returns are clipped to ±``reward_clip`` first, so one
outlier cannot dominate the Normal fit.

Forgetting: on every closed trade of a regime, the statistics of *all* learners in that regime are
multiplied by γ before the trade's learner gets weight 1 (discounted Thompson sampling). A learner
that stops earning loses its lead within about 1/(1−γ) trades, and a learner that has not been
chosen for a while drifts back to the prior, its posterior widens, and it is tried again. So the
selection follows a change of the best learner within a handful of trades
(tests/brain/test_meta.py).

Credit assignment (a decision, documented here)
-----------------------------------------------
* The meta-posterior of (regime, learner) learns only from trades that learner opened: there is no
  counterfactual outcome for the others.
* With ``share_outcomes`` (default) every learner's bandit learns from every closed trade: a
  component's sign agreement with the outcome barely depends on who sized the trade, and each
  bandit would otherwise see a third of the data. Each still learns at its own speed. With
  ``share_outcomes = false`` only the opening learner's bandit learns.
* A trade whose learner is unknown (opened manually, or a learner since removed) updates no
  meta-posterior, is counted as ``unattributed``, and (when sharing) still teaches the bandits.

Learning is paused with ``MetaConfig.learn = False``; ``force_learner`` pins the choice (ablations
such as "Balanced only"). No I/O here: ``to_state()`` gives a JSON-able dict for the store module.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from learning.brain.bandit import (
    BanditConfig,
    BanditState,
    ComponentBandit,
    finite_number,
    regime_key,
)
from learning.core.config import _f
from learning.core.errors import ConfigError, StateError

SCHEMA = 1



def nig_posterior(n: float, s1: float, s2: float, prior_mean: float, prior_strength: float,
                  prior_std: float, prior_std_strength: float
                  ) -> tuple[float, float, float, float]:
    """Normal-Inverse-Gamma posterior (m, κ, a, b) from discounted sufficient statistics
    n = Σw, s1 = Σw·r, s2 = Σw·r² (see the module doc)."""
    kappa = prior_strength + n
    m = (prior_strength * prior_mean + s1) / kappa
    a = (prior_std_strength + n) / 2.0
    b0 = prior_std_strength * prior_std**2 / 2.0
    # The bracket is the (discounted) scatter around m, ≥ 0 up to rounding.
    b = b0 + max(s2 + prior_strength * prior_mean**2 - kappa * m * m, 0.0) / 2.0
    return m, kappa, a, b


@dataclass(frozen=True)
class LearnerProfile:
    """One risk personality of the meta-learner."""

    name: str = _f("", "Unique name of the learner (shown in reports and trade custom data).")
    risk_tolerance: float = _f(
        0.75, "Multiplier on the stake the risk limits allow (1 = the full stake).", (0.0, 1.0))
    patience: float = _f(
        1.0, "Multiplier on hold times and exit patience (>1 holds longer).", (0.1, 10.0))
    learning_rate: float = _f(
        1.0, "Learning speed x of this learner's bandit: update size × x, discount γ^x.",
        (0.05, 20.0))


DEFAULT_LEARNERS: tuple[LearnerProfile, ...] = (
    LearnerProfile("Conservative", risk_tolerance=0.50, patience=1.5, learning_rate=0.5),
    LearnerProfile("Aggressive", risk_tolerance=1.00, patience=0.6, learning_rate=2.0),
    LearnerProfile("Balanced", risk_tolerance=0.75, patience=1.0, learning_rate=1.0),
)


@dataclass(frozen=True)
class MetaConfig:
    """Tier 4: the meta-learner choosing among the learners."""

    learners: tuple[LearnerProfile, ...] = _f(DEFAULT_LEARNERS, "The learners to choose from.")
    force_learner: str | None = _f(
        None, "Always select this learner (ablation, e.g. Balanced only); null lets the "
        "meta-policy choose.")
    objective: str = _f(
        "sharpe", "What a Thompson draw is ranked by: sharpe (μ/σ, risk-adjusted) or mean (μ).",
        choices=("sharpe", "mean"))
    exploration: float = _f(
        0.5, "Scale c of the spread of the μ draws: 1 is plain Thompson sampling, smaller "
        "exploits more (tempered sampling, Chapelle & Li 2011); forgetting keeps it adaptive.",
        (0.0, 3.0))
    discount: float = _f(
        0.85, "γ: per closed trade in a regime, every learner's evidence there is multiplied by "
        "this, so the choice adapts within about 1/(1-γ) trades. 1 = never forget.", (0.5, 1.0))
    prior_mean: float = _f(0.0, "m₀: prior mean of a trade's profit ratio.", (-1.0, 1.0))
    prior_strength: float = _f(
        1.0, "κ₀: pseudo-trades behind the prior mean.", (0.01, 1000.0))
    prior_std: float = _f(
        0.02, "s₀: prior guess of the standard deviation of a trade's profit ratio.", (1e-4, 1.0))
    prior_std_strength: float = _f(
        4.0, "ν₀: pseudo-trades behind the prior standard deviation.", (0.1, 1000.0))
    reward_clip: float = _f(
        0.2, "Profit ratios are clipped to ±this before the meta-posterior learns from them.",
        (1e-3, 10.0))
    share_outcomes: bool = _f(
        True, "Every learner's bandit learns from every closed trade; false: only the bandit of "
        "the learner that opened it.")
    history_size: int = _f(5000, "Selections kept in the history (oldest dropped).", (0, 10**6))
    learn: bool = _f(True, "Learn from closed trades; false freezes the meta-learner and bandits.")

    def __post_init__(self) -> None:
        names = [p.name for p in self.learners]
        if not names or not all(names) or len(set(names)) != len(names):
            raise ConfigError(f"meta.learners: need unique non-empty names, got {names!r}")
        if self.force_learner is not None and self.force_learner not in names:
            raise ConfigError(
                f"meta.force_learner: {self.force_learner!r} is not one of {', '.join(names)}")


@dataclass(frozen=True)
class Selection:
    """The learner chosen for one decision, with the draws that chose it."""

    learner: str
    profile: LearnerProfile
    regime: str
    scores: dict[str, float]
    """Sampled objective per learner ({} when forced)."""
    forced: bool = False


@dataclass
class ArmRecord:
    """Meta statistics of one (regime, learner): discounted sufficient stats and raw counters."""

    n: float = 0.0
    """Discounted trade count Σ w."""
    s1: float = 0.0
    """Discounted Σ w·r (r: clipped profit ratio)."""
    s2: float = 0.0
    """Discounted Σ w·r²."""
    selections: int = 0
    trades: int = 0
    wins: int = 0
    total_return: float = 0.0
    """Undiscounted, unclipped Σ profit ratio (for reports)."""
    last_trade: str | None = None
    """ISO time of the latest closed trade recorded here."""


@dataclass
class MetaState:
    """Everything a :class:`MetaLearner` learns. Plain data, JSON-able via ``to_state``."""

    arms: dict[str, dict[str, ArmRecord]] = field(default_factory=dict)
    """regime -> learner -> statistics (kept for learners no longer configured)."""
    bandits: dict[str, BanditState] = field(default_factory=dict)
    """learner -> its bandit's state (kept for learners no longer configured)."""
    history: deque[dict[str, Any]] = field(default_factory=deque)
    """Recent selections: {time, regime, learner, scores, forced}."""
    unattributed: int = 0
    """Closed trades whose learner was unknown."""


def _iso(now: Any) -> str | None:
    if now is None:
        return None
    return now.isoformat() if hasattr(now, "isoformat") else str(now)


class MetaLearner:
    """Chooses a learner per decision and learns from closed trades (see the module doc)."""

    def __init__(self, config: MetaConfig | None = None,
                 bandit_config: BanditConfig | None = None,
                 state: MetaState | None = None) -> None:
        self.config = config or MetaConfig()
        self.bandit_config = bandit_config or BanditConfig()
        self.state = state if state is not None else MetaState()
        self.state.history = deque(self.state.history, maxlen=self.config.history_size)
        self._profiles = {p.name: p for p in self.config.learners}
        self._bandits = {
            p.name: ComponentBandit(self.bandit_config.scaled(p.learning_rate),
                                    self.state.bandits.setdefault(p.name, BanditState()))
            for p in self.config.learners}

    # -- access ------------------------------------------------------------------------------
    @property
    def learner_names(self) -> list[str]:
        return [p.name for p in self.config.learners]

    def profile(self, name: str) -> LearnerProfile:
        return self._profiles[name]

    def bandit(self, learner_name: str) -> ComponentBandit:
        """The component bandit of a configured learner (KeyError for an unknown name)."""
        try:
            return self._bandits[learner_name]
        except KeyError:
            raise KeyError(f"unknown learner {learner_name!r}; known: "
                           f"{', '.join(self.learner_names)}") from None

    def _arm(self, regime: str, learner: str) -> ArmRecord:
        arm = self.state.arms.get(regime, {}).get(learner)
        return arm if arm is not None else ArmRecord()

    def posterior(self, regime: Any, learner: str) -> tuple[float, float, float, float]:
        """NIG posterior (m, κ, a, b) of one (regime, learner); see the module doc."""
        cfg, arm = self.config, self._arm(regime_key(regime), learner)
        return nig_posterior(arm.n, arm.s1, arm.s2, cfg.prior_mean, cfg.prior_strength,
                             cfg.prior_std, cfg.prior_std_strength)

    # -- deciding ----------------------------------------------------------------------------
    def select(self, regime: Any, rng: np.random.Generator, now: Any = None) -> Selection:
        """Pick the learner for one decision by Thompson sampling (or ``force_learner``)."""
        key = regime_key(regime)
        names = self.learner_names
        if self.config.force_learner is not None:
            learner, scores, forced = self.config.force_learner, {}, True
        else:
            post = np.array([self.posterior(key, n) for n in names])  # (L, 4): m, κ, a, b
            m, kappa, a, b = post.T
            precision = rng.gamma(a, 1.0 / b)                # σ⁻² ~ Gamma(a, rate b)
            z = rng.standard_normal(len(names))
            mu = m + self.config.exploration * z / np.sqrt(kappa * precision)
            draws = mu * np.sqrt(precision) if self.config.objective == "sharpe" else mu
            scores = dict(zip(names, draws.tolist()))
            learner, forced = names[int(np.argmax(draws))], False
        self.state.arms.setdefault(key, {}).setdefault(learner, ArmRecord()).selections += 1
        if self.config.history_size > 0:
            self.state.history.append({"time": _iso(now), "regime": key, "learner": learner,
                                       "scores": scores, "forced": forced})
        return Selection(learner, self._profiles[learner], key, scores, forced)

    def expected_return(self, regime: Any, learner: str) -> tuple[float, float]:
        """(posterior mean trade return, trades' worth of evidence) of one (regime, learner)."""
        m, _, _, _ = self.posterior(regime_key(regime), learner)
        return float(m), float(self._arm(regime_key(regime), learner).n)

    def sample(self, regime: Any, rng: np.random.Generator) -> str:
        """The learner a Thompson draw picks now, without recording a selection (shadow
        decisions of the router's policies)."""
        if self.config.force_learner is not None:
            return self.config.force_learner
        names = self.learner_names
        post = np.array([self.posterior(regime_key(regime), n) for n in names])
        m, kappa, a, b = post.T
        precision = rng.gamma(a, 1.0 / b)
        mu = m + self.config.exploration * rng.standard_normal(len(names)) / np.sqrt(
            kappa * precision)
        draws = mu * np.sqrt(precision) if self.config.objective == "sharpe" else mu
        return names[int(np.argmax(draws))]

    # -- learning ----------------------------------------------------------------------------
    def record_outcome(self, learner: str | None, regime: Any,
                       scores: Mapping[str, float | None], profit_ratio: float,
                       now: Any = None, weight: float = 1.0,
                       share: bool | None = None, bandits: bool = True) -> dict[str, Any]:
        """Learn from one closed trade opened by ``learner`` in ``regime`` (both as at entry).

        ``scores`` are the component scores at entry and ``profit_ratio`` the trade's result,
        signed like the scores (see :meth:`ComponentBandit.update`). Never raises on bad input:
        an unknown learner, a NaN profit or a paused config are recorded or ignored. Returns what
        was updated: ``{"meta": bool, "bandits": {learner: {component: credited}}}``.

        ``weight`` is what this outcome counts as, in trades: a real trade 1, a shadow
        (counterfactual) outcome a fraction (evidence ages by γ^weight, as by a fraction of a
        trade). ``share`` overrides ``share_outcomes``; ``bandits=False`` teaches the
        meta-policy only (shadow trades of one learner measure that learner; the bandits learn
        from unconditional probes instead, see :meth:`learning.brain.decision.Brain.learn_shadow`).
        """
        cfg = self.config
        result: dict[str, Any] = {"meta": False, "bandits": {}}
        if not cfg.learn or not finite_number(profit_ratio):
            return result
        key = regime_key(regime)
        known = learner in self._profiles
        if not weight > 0:
            return result
        if known:
            arms = self.state.arms.setdefault(key, {})
            g = cfg.discount ** weight
            for name in self.learner_names:          # every learner's evidence here ages
                rec = arms.setdefault(name, ArmRecord())
                rec.n, rec.s1, rec.s2 = g * rec.n, g * rec.s1, g * rec.s2
            r = float(np.clip(profit_ratio, -cfg.reward_clip, cfg.reward_clip))
            rec = arms[learner]
            rec.n, rec.s1, rec.s2 = rec.n + weight, rec.s1 + weight * r, rec.s2 + weight * r * r
            rec.trades += 1
            rec.wins += int(profit_ratio > 0)
            rec.total_return += float(profit_ratio)
            rec.last_trade = _iso(now)
            result["meta"] = True
        else:
            self.state.unattributed += 1
        # Sharing: every bandit learns; otherwise only the opener's, and nobody's if unknown.
        sharing = cfg.share_outcomes if share is None else share
        learners = self.learner_names if sharing else [learner] if known else []
        if not bandits:
            learners = []
        for name in learners:
            result["bandits"][name] = self._bandits[name].update(key, scores, profit_ratio,
                                                                 weight)
        return result

    # -- reporting ---------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """Per learner: profile, selections, trades, win rate, mean return, per-regime posteriors
        (mean μ and its std, typical σ, Sharpe m/σ, effective trades) and the bandit's report."""
        learners: dict[str, Any] = {}
        for name in self.learner_names:
            regimes, sel, trades, wins, total = {}, 0, 0, 0, 0.0
            for key in sorted(self.state.arms):
                if name not in self.state.arms[key]:
                    continue
                rec = self.state.arms[key][name]
                m, kappa, a, b = self.posterior(key, name)
                sigma = math.sqrt(b / a)
                regimes[key] = {"selections": rec.selections, "trades": rec.trades,
                                "mean": m, "mean_std": sigma / math.sqrt(kappa), "sigma": sigma,
                                "sharpe": m / sigma, "n_eff": rec.n,
                                "last_trade": rec.last_trade}
                sel, trades, wins = sel + rec.selections, trades + rec.trades, wins + rec.wins
                total += rec.total_return
            learners[name] = {
                "profile": dataclasses.asdict(self._profiles[name]), "selections": sel,
                "trades": trades, "win_rate": wins / trades if trades else None,
                "mean_return": total / trades if trades else None, "regimes": regimes,
                "bandit": self._bandits[name].report()}
        return {"learners": learners, "unattributed": self.state.unattributed,
                "force_learner": self.config.force_learner, "history": len(self.state.history)}

    # -- persistence -------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """JSON-able state; the configs ride along for reference (the caller's configs win)."""
        s = self.state
        return {"schema": SCHEMA, "config": dataclasses.asdict(self.config),
                "bandit_config": dataclasses.asdict(self.bandit_config),
                "arms": {r: {n: dataclasses.asdict(a) for n, a in arms.items()}
                         for r, arms in s.arms.items()},
                "bandits": {n: b.to_state() for n, b in s.bandits.items()},
                "history": list(s.history), "unattributed": s.unattributed}

    @classmethod
    def from_state(cls, raw: Mapping[str, Any], config: MetaConfig | None = None,
                   bandit_config: BanditConfig | None = None) -> MetaLearner:
        """Inverse of :meth:`to_state`; raises :class:`StateError` on anything malformed."""
        try:
            if raw.get("schema") != SCHEMA:
                raise StateError(f"meta state: schema {raw.get('schema')!r}, expected {SCHEMA}")
            arms = {str(r): {str(n): ArmRecord(**a) for n, a in
                             learners.items()} for r, learners in raw.get("arms", {}).items()}
            bandits = {str(n): BanditState.from_state(b)
                       for n, b in raw.get("bandits", {}).items()}
            history = deque(dict(h) for h in raw.get("history", []))
            state = MetaState(arms=arms, bandits=bandits, history=history,
                              unattributed=int(raw.get("unattributed", 0)))
        except StateError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise StateError(f"meta state is malformed: {err!r}") from err
        for r, learners in arms.items():
            for n, a in learners.items():
                if not all(finite_number(v) for v in (a.n, a.s1, a.s2)) or a.n < 0 or a.s2 < 0:
                    raise StateError(f"meta state: {r}/{n} has invalid statistics {a}")
        return cls(config, bandit_config, state)
