"""The decision flow: regime → learner → weights → overall score → take / skip, and learning from
every closed trade.

:class:`Brain` holds the learning tiers (the meta-learner with one component-weight bandit per
learner, per-regime performance) and the state that must survive restarts (decision log, recent
outcomes). It has no freqtrade imports and no I/O: the strategy passes time,
scores and outcomes in and persists :meth:`Brain.to_state` through the store.

Rules (each documented in the README):

* **threshold** of a learner = ``entry_threshold × (2 − risk_tolerance)``: Aggressive (1.0)
  enters at the base threshold, Balanced (0.75) needs 1.25×, Conservative (0.5) 1.5×;
* **stake share** of a learner = its ``risk_tolerance`` (of the risk guard's allowance);
* **circuit breakers** cut risk, never learning: while the Sharpe ratio of the last
  ``breaker_trades`` closed trades is below 0, thresholds are raised (``risk_cut_threshold``)
  and stakes cut (``risk_cut_stake``); while drawdown exceeds ``fallback_drawdown`` the brain
  falls back to rules (technical score only, Balanced, the base threshold, no sampling). A
  learner that stopped learning whenever it lost could not learn its way out;
* **feedback**: every closed trade teaches every tier (weight 1); so do shadow outcomes
  (:mod:`learning.brain.shadow`, weight ``shadow.weight``): at every evaluated candle a *probe*
  entry (taken or not, the rule profile) teaches the bandits whether each component's sign
  called the move; each learner's own decision, where it would enter, teaches the meta-policy
  and the exit-profile learner; each router policy's decision teaches the router;
* **exit profile** of an entry: chosen per regime by :class:`~learning.brain.profiles.
  ProfileLearner` (rule-based entries take ``profiles.rule_profile``);
* **ablations**: ``bandit.enabled = false`` uses equal weights over the available
  components (those of ``bandit.params.components`` with a finite score);
  ``regime.enabled = false`` makes every regime UNKNOWN; ``meta.force_learner`` pins a learner.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from learning.brain.bandit import available_components, combine
from learning.brain.config import BrainSections
from learning.brain.meta import MetaLearner
from learning.brain.profiles import ProfileLearner
from learning.brain.regime import Regime, RegimePerformance
from learning.brain.shadow import ShadowOutcome

SCHEMA_VERSION = 1
FALLBACK_LEARNER = "Balanced"
COMPONENTS = ("technical", "ai", "theme", "sentiment", "trend")
TIERS = ("bandit", "meta", "profiles", "router")
POOLED = "ALL"  # the learning key of every regime when per-regime learning is off


@dataclass(frozen=True)
class Decision:
    """One entry decision, kept in the log and on the trade (custom data ``decision``)."""

    time: str
    pair: str
    regime: str
    regime_confidence: float
    learner: str
    mode: str  # "learned" | "cautious" (regime UNKNOWN) | "fallback" (drawdown)
    weights: dict[str, float]
    scores: dict[str, float | None]
    overall: float
    threshold: float
    stake_share: float
    take: bool
    policy: str = ""
    profile: str = ""
    risk_cut: bool = False
    expected: float | None = None  # the learner's learned mean trade return in the regime
    abstained: bool = False  # that mean was below brain.abstain_below: no entry
    learned_real: int = 0  # learning events behind this decision, from real trades ...
    learned_shadow: int = 0  # ... and from shadow outcomes (all tiers)
    #: weight × score per weighted component: they sum to ``overall`` (exactly, before rounding)
    contributions: dict[str, float] = field(default_factory=dict)
    changepoint: float | None = None  # P(changepoint within the window) of the market proxy
    ai_interval: tuple[float, float] | None = None  # conformal interval of the predicted return
    ai_abstained: bool = False  # the interval contained zero: the ai component abstained
    explanation: str = ""  # a short readable line (custom data in FreqUI)

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its recursive deep copy was most of a decision's cost.
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["weights"], out["scores"] = dict(self.weights), dict(self.scores)
        out["contributions"] = dict(self.contributions)
        out["ai_interval"] = list(self.ai_interval) if self.ai_interval is not None else None
        return out


@dataclass
class BrainState:
    decisions: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    rng: dict[str, Any] | None = None  # the shared stream of schema-1 files; unused
    closed_trades: int = 0
    unattributed_trades: int = 0
    #: learning events per tier: {"bandit": {"real": n, "shadow": m}, ...}
    events: dict[str, dict[str, int]] = field(default_factory=dict)
    shadow_unresolved: int = 0  # outcomes dropped unresolved at the end of a run


def decision_rng(seed: int, pair: str, candle: datetime, stream: str = "decision"
                 ) -> np.random.Generator:
    """The generator of one decision's random draws, seeded by (seed, pair, candle time).

    One stream shared by all pairs made a pair's decisions depend on how many draws other pairs
    made before it (so on the whitelist and on their order); seeded per decision, a candle's
    draws are the same in a backtest of one pair, of many, and live. ``stream`` keeps the
    router's and the sizing agents' draws independent of the learner's. The pair is hashed
    with blake2b, not ``hash()``, which Python salts per process."""
    def key(text: str) -> int:
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")

    seconds = int(candle.timestamp())
    return np.random.default_rng(np.random.SeedSequence([seed, key(pair), seconds, key(stream)]))


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def contributions(weights: dict[str, float], scores: dict[str, float | None]
                  ) -> dict[str, float]:
    """weight × score of every weighted component with a finite score: the terms of
    :func:`~learning.brain.bandit.combine`, so they sum to the overall score."""
    return {c: w * float(scores[c]) for c, w in weights.items() if _finite(scores.get(c))}


def explain(d: dict[str, Any]) -> str:
    """One readable line for a decision record (:meth:`Decision.to_dict`), e.g.
    ``technical +0.21, theme +0.08 = +0.29 vs 0.36 (Balanced, CHOPPY): skip; ai abstained
    (interval [-0.40%, +0.60%]); BOCD 0.12``. The terms are the contributions rounded to two
    decimals; their exact sum is the overall score."""
    parts = [f"{c} {v:+.2f}" for c, v in d.get("contributions", {}).items()]
    overall = d.get("overall")
    head = ", ".join(parts) or "no component"
    head += f" = {overall:+.2f}" if _finite(overall) else " = n/a"
    head += f" vs {d.get('threshold', float('nan')):.2f} ({d.get('learner')}, {d.get('regime')})"
    head += ": take" if d.get("take") else ": skip"
    if d.get("abstained"):
        head += " (learner abstains: learned mean below the gate)"
    tail = []
    interval = d.get("ai_interval")
    if d.get("ai_abstained") and interval:
        tail.append(f"ai abstained (interval [{interval[0]:+.2%}, {interval[1]:+.2%}])")
    elif interval:
        tail.append(f"ai interval [{interval[0]:+.2%}, {interval[1]:+.2%}]")
    if _finite(d.get("changepoint")):
        tail.append(f"BOCD {d['changepoint']:.2f}")
    return "; ".join([head, *tail])


def _round(d: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (round(float(v), 4) if _finite(v) else None) for k, v in d.items()}


class Brain:
    """Tiers 1, 2 (performance tracking) and 4 behind one decide / record interface."""

    def __init__(self, config: BrainSections, state: dict[str, Any] | None = None) -> None:
        self.config = config
        state = state or {}
        self.meta = (MetaLearner.from_state(state["meta"], config.meta, config.bandit.params)
                     if state.get("meta") else MetaLearner(config.meta, config.bandit.params))
        self.regime_perf = (RegimePerformance.from_state(state["regime_perf"])
                            if state.get("regime_perf") else RegimePerformance())
        self.profiles = (ProfileLearner.from_state(state["profiles"], config.profiles)
                         if state.get("profiles") else ProfileLearner(config.profiles))
        self._seen_profile_keys: deque[tuple] = deque(maxlen=4096)
        self._seen_profile_set: set[tuple] = set()
        raw = state.get("brain", {})
        self.state = BrainState(**{k: v for k, v in raw.items()
                                   if k in BrainState.__dataclass_fields__})
        n = config.brain.decision_log
        self._decisions: deque[dict[str, Any]] = deque(self.state.decisions[-n:] if n else [],
                                                       maxlen=max(n, 1))
        self._outcomes: deque[dict[str, Any]] = deque(self.state.outcomes[-1000:], maxlen=1000)
        for tier in TIERS:
            self.state.events.setdefault(tier, {"real": 0, "shadow": 0})

    # ------------------------------------------------------------------ breakers
    def rolling_sharpe(self) -> float | None:
        n = self.config.brain.breaker_trades
        recent = [o["profit_ratio"] for o in list(self._outcomes)[-n:]]
        if len(recent) < n:
            return None
        sd = float(np.std(recent, ddof=1))
        return float(np.mean(recent)) / sd if sd > 0 else 0.0

    def risk_cut(self) -> bool:
        """The rolling-Sharpe circuit breaker: cut risk (not learning) while recent trades lose."""
        sharpe = self.rolling_sharpe()
        return sharpe is not None and sharpe < 0

    def fallback(self, drawdown: float | None) -> bool:
        return drawdown is not None and drawdown > self.config.brain.fallback_drawdown

    def learning_key(self, regime: str) -> str:
        """The regime under which the tiers keep their posteriors: the regime itself, or one
        pooled key with ``regime.per_regime_learning = false`` (the regime still decides
        CRISIS = cash and the cautious start; only the evidence is shared across regimes)."""
        return regime if self.config.regime.per_regime_learning else POOLED

    # ------------------------------------------------------------------ decisions
    def _cautious(self, regime: str) -> bool:
        """UNKNOWN because the detector has too little history (not because it is switched off,
        and not when an ablation forces one learner)."""
        return (self.config.regime.enabled and regime == Regime.UNKNOWN.value
                and self.config.meta.force_learner is None)

    def rng_for(self, pair: str, candle: datetime, stream: str = "decision"
                ) -> np.random.Generator:
        """A decision's own generator (:func:`decision_rng` with this brain's seed)."""
        return decision_rng(self.config.brain.seed, pair, candle, stream)

    def decide(self, now: datetime, pair: str, scores: dict[str, float | None], regime: str,
               regime_confidence: float, drawdown: float | None, entry_threshold: float,
               policy: str = "", force_fallback: bool = False,
               candle: datetime | None = None,
               context: dict[str, Any] | None = None) -> Decision:
        """Decide whether to enter ``pair`` now. Never raises on bad scores: a component whose
        score is not finite is left out, and with none left the decision is "skip". The draws
        are seeded by (seed, pair, ``candle``: the time of the candle decided on, default
        ``now``). ``context`` (``changepoint``, ``ai_interval``, ``ai_abstained``) is recorded
        for the explanation only."""
        context = context or {}
        rng = self.rng_for(pair, candle or now)
        regime = regime if self.config.regime.enabled else Regime.UNKNOWN.value
        key = self.learning_key(regime)
        scores = {c: (float(scores[c]) if _finite(scores.get(c)) else None) for c in COMPONENTS}
        if force_fallback or self.fallback(drawdown):
            learner, mode = FALLBACK_LEARNER, "fallback"
            weights = {"technical": 1.0} if scores["technical"] is not None else {}
            threshold = entry_threshold
        else:
            if self._cautious(regime):
                # Too little history to name the regime: the most cautious learner decides
                # (highest bar, smallest stake); the meta-policy neither picks nor learns it.
                mode = "cautious"
                learner = min(self.meta.learner_names,
                              key=lambda n: self.meta.profile(n).risk_tolerance)
            else:
                mode = "learned"
                learner = self.meta.select(key, rng, now).learner
            available = available_components(scores, self.config.bandit.params.components)
            if not available:
                weights = {}
            elif self.config.bandit.enabled:
                weights = self.meta.bandit(learner).sample_weights(key, rng, available)
            else:
                weights = {c: 1.0 / len(available) for c in available}
            tolerance = self.meta.profile(learner).risk_tolerance
            threshold = entry_threshold * (2.0 - tolerance)
        overall = combine(weights, scores) if weights else float("nan")
        share = self.meta.profile(learner).risk_tolerance
        cut = self.risk_cut()
        if cut:
            threshold *= self.config.brain.risk_cut_threshold
            share *= self.config.brain.risk_cut_stake
        profile = ""
        if self.config.profiles.enabled:
            profile = (self.config.profiles.rule_profile if mode == "fallback"
                       else self.profiles.best(key))
        expected, abstained = None, False
        if mode == "learned":
            expected, evidence = self.meta.expected_return(key, learner)
            gate = self.config.brain.abstain_below
            abstained = (gate > -1.0 and evidence >= self.config.brain.abstain_evidence
                         and expected < gate)
        decision = Decision(
            time=now.isoformat(), pair=pair, regime=str(regime),
            regime_confidence=round(float(regime_confidence), 4) if _finite(regime_confidence)
            else 0.0, learner=learner, mode=mode, weights=_round(weights), scores=_round(scores),
            overall=round(overall, 4) if _finite(overall) else float("nan"),
            threshold=round(threshold, 4), stake_share=share,
            take=bool(_finite(overall) and overall > threshold and not abstained),
            policy=policy, profile=profile, risk_cut=cut,
            expected=round(expected, 6) if expected is not None else None,
            abstained=abstained,
            learned_real=sum(v.get("real", 0) for v in self.state.events.values()),
            learned_shadow=sum(v.get("shadow", 0) for v in self.state.events.values()),
            contributions={c: round(v, 6) for c, v in contributions(weights, scores).items()},
            changepoint=round(float(context["changepoint"]), 4)
            if _finite(context.get("changepoint")) else None,
            ai_interval=tuple(round(float(v), 6) for v in context["ai_interval"])
            if context.get("ai_interval") is not None else None,
            ai_abstained=bool(context.get("ai_abstained", False)))
        record = decision.to_dict()
        decision = dataclasses.replace(decision, explanation=explain(record))
        self._decisions.append(decision.to_dict())
        return decision

    def shadow_decision(self, learner: str, scores: dict[str, float | None], regime: str,
                        entry_threshold: float, rng: np.random.Generator
                        ) -> tuple[bool, float, str]:
        """What ``learner`` would decide at this candle: (take, overall score, exit profile).
        Nothing is logged or learned; the draws come from ``rng`` (the caller seeds it per pair
        and candle). Thresholds as in :meth:`decide`, without the circuit breakers (shadow
        trades measure the learner, not the account)."""
        regime = self.learning_key(regime if self.config.regime.enabled
                                   else Regime.UNKNOWN.value)
        available = available_components(scores, self.config.bandit.params.components)
        if not available:
            return False, float("nan"), ""
        if self.config.bandit.enabled:
            weights = self.meta.bandit(learner).sample_weights(regime, rng, available)
        else:
            weights = {c: 1.0 / len(available) for c in available}
        overall = combine(weights, scores)
        threshold = entry_threshold * (2.0 - self.meta.profile(learner).risk_tolerance)
        profile = self.profiles.best(regime) if self.config.profiles.enabled else ""
        return bool(_finite(overall) and overall > threshold), overall, profile

    def rule_decision(self, scores: dict[str, float | None], entry_threshold: float) -> bool:
        """The rule-based path's decision (technical score over the base threshold)."""
        tech = scores.get("technical")
        return bool(_finite(tech) and tech > entry_threshold)

    def count(self, tier: str, kind: str, n: int = 1) -> None:
        self.state.events.setdefault(tier, {"real": 0, "shadow": 0})
        self.state.events[tier][kind] = self.state.events[tier].get(kind, 0) + n

    def learn_shadow(self, outcome: ShadowOutcome) -> dict[str, Any]:
        """Learn from one resolved shadow outcome (called at or after its exit candle)."""
        trade, res = outcome.trade, outcome.resolution
        w = self.config.shadow.weight
        done: dict[str, Any] = {}
        if not _finite(res.ret):
            return done
        kind, _, name = trade.track.partition(":")
        regime = self.learning_key(trade.regime)
        if kind == "probe":
            # Tier 1: an entry at every evaluated candle, taken or not: whether each
            # component's sign called the move, without the selection bias of taken trades.
            if self.config.meta.learn:
                credited = [self.meta.bandit(n).update(regime, trade.scores, res.ret, w)
                            for n in self.meta.learner_names]
                if any(credited):
                    self.count("bandit", "shadow")
                    done["bandits"] = credited
            return done
        if kind == "learner" and outcome.chosen and name in self.meta.learner_names:
            # Tier 4: how this learner's own decisions would have paid.
            upd = self.meta.record_outcome(name, regime, trade.scores, res.ret,
                                           weight=w, bandits=False)
            if upd.get("meta"):
                self.count("meta", "shadow")
            done["meta"] = upd
        # Every learner may open the same entry: the profile learner learns each
        # (pair, candle, profile) once.
        key = (trade.pair, trade.entry_ns, outcome.profile)
        if kind == "learner" and key not in self._seen_profile_set:
            if len(self._seen_profile_keys) == self._seen_profile_keys.maxlen:
                self._seen_profile_set.discard(self._seen_profile_keys[0])
            self._seen_profile_keys.append(key)
            self._seen_profile_set.add(key)
            if self.profiles.record(regime, outcome.profile, res.ret, w, shadow=True):
                self.count("profiles", "shadow")
                done["profile"] = True
        return done

    def could_take(self, scores: dict[str, np.ndarray], unknown: np.ndarray,
                   entry_threshold: float, fallback_possible: bool) -> np.ndarray:
        """Per candle: whether some decision :meth:`decide` can make could take it, whatever
        the learned posteriors are (vectorised, for the strategy's entry candidates).

        A learner's overall score is a weighted mean of the available components whose weights
        keep ``uniform_mix`` spread evenly, so it is at most (1 - mix) · max + mix · mean; it
        must beat the lowest threshold of a learner that may decide (the most cautious one's
        while the regime is UNKNOWN). The rule-based path (drawdown fallback or a ``rule``
        policy) takes the technical score alone against ``entry_threshold``.
        """
        comps = [c for c in COMPONENTS if c in scores]
        s = np.column_stack([np.asarray(scores[c], dtype="float64") for c in comps])  # (N, C)
        s = np.where(np.isfinite(s), s, np.nan)
        if self.config.bandit.enabled:
            weighted = [i for i, c in enumerate(comps) if c in
                        self.config.bandit.params.components]
            s_w = s[:, weighted] if weighted else np.full((len(s), 1), np.nan)
            mix = self.config.bandit.params.uniform_mix
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no component
                bound = (1 - mix) * np.nanmax(s_w, axis=1) + mix * np.nanmean(s_w, axis=1)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                bound = np.nanmean(s, axis=1)
        force = self.config.meta.force_learner
        tolerances = [self.meta.profile(n).risk_tolerance for n in self.meta.learner_names]
        bold = self.meta.profile(force).risk_tolerance if force else max(tolerances)
        threshold = np.where(self._cautious_mask(unknown), entry_threshold * (2 - min(tolerances)),
                             entry_threshold * (2 - bold))
        out = np.nan_to_num(bound, nan=-np.inf) > threshold
        if fallback_possible and "technical" in scores:
            out |= np.nan_to_num(np.asarray(scores["technical"], dtype="float64"),
                                 nan=-np.inf) > entry_threshold
        return out

    def _cautious_mask(self, unknown: np.ndarray) -> np.ndarray:
        return np.asarray(unknown, dtype=bool) & (self.config.regime.enabled
                                                  and self.config.meta.force_learner is None)

    # ------------------------------------------------------------------ learning
    def record_close(self, now: datetime, pair: str, decision: dict[str, Any] | None,
                     profit_ratio: float, regime_at_close: str | None = None) -> dict[str, Any]:
        """Feed a closed trade's outcome to every tier. ``decision`` is None for a trade the
        brain never saw open (e.g. entered by hand in FreqUI): it is recorded as unattributed."""
        if not _finite(profit_ratio):
            return {"recorded": False, "reason": "profit not finite"}
        self.state.closed_trades += 1
        regime = (decision or {}).get("regime") or regime_at_close or Regime.UNKNOWN.value
        learner = (decision or {}).get("learner")
        scores = (decision or {}).get("scores") or {}
        mode = (decision or {}).get("mode", "unattributed")
        if decision is None:
            self.state.unattributed_trades += 1
        self.regime_perf.record_trade(regime, profit_ratio)
        key = self.learning_key(regime)
        cut = self.risk_cut()
        updated: dict[str, Any] = {}
        # Fallback trades were not the learners' choice: they teach the bandits (the component
        # signs still agreed or not) but not the meta-policy. Learning never pauses.
        if decision is not None:
            updated = self.meta.record_outcome(learner if mode == "learned" else None, key,
                                               scores, profit_ratio, now)
            if updated.get("meta"):
                self.count("meta", "real")
            if any(updated.get("bandits", {}).values()):
                self.count("bandit", "real")
            profile = decision.get("profile")
            if profile and self.profiles.record(key, profile, profit_ratio):
                self.count("profiles", "real")
        self._outcomes.append({"time": now.isoformat(), "pair": pair, "learner": learner,
                               "regime": regime, "mode": mode, "profit_ratio": profit_ratio,
                               "risk_cut": cut})
        return {"recorded": True, "risk_cut": cut, "updated": updated}

    # ------------------------------------------------------------------ state and reports
    def to_state(self) -> dict[str, Any]:
        self.state.decisions = list(self._decisions)
        self.state.outcomes = list(self._outcomes)
        self.state.rng = None  # draws are seeded per decision (rng_for); no stream to keep
        return {"brain": asdict(self.state), "meta": self.meta.to_state(),
                "regime_perf": self.regime_perf.to_state(),
                "profiles": self.profiles.to_state()}

    def recent_decisions(self) -> list[dict[str, Any]]:
        return list(self._decisions)

    def recent_outcomes(self) -> list[dict[str, Any]]:
        return list(self._outcomes)

    def report(self, drawdown: float | None = None) -> dict[str, Any]:
        weights: dict[str, Any] = {}
        for name in self.meta.learner_names:
            bandit = self.meta.bandit(name)
            weights[name] = {r: {c: list(v) for c, v in bandit.intervals(r).items()}
                             for r in bandit.regimes()}
        return {
            "closed_trades": self.state.closed_trades,
            "unattributed_trades": self.state.unattributed_trades,
            "learning_events": {t: dict(v) for t, v in self.state.events.items()},
            "shadow_unresolved": self.state.shadow_unresolved,
            "profiles": self.profiles.report(),
            "circuit_breakers": {"risk_cut": self.risk_cut(),
                                 "rolling_sharpe": self.rolling_sharpe(),
                                 "breaker_trades": self.config.brain.breaker_trades,
                                 "fallback": self.fallback(drawdown),
                                 "fallback_drawdown": self.config.brain.fallback_drawdown},
            "weights": weights,
            "meta": self.meta.report(),
            "regime_performance": self.regime_perf.to_state(),
            "recent_outcomes": list(self._outcomes)[-20:],
        }
