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
* **circuit breakers**: learning pauses while the Sharpe ratio of the last ``breaker_trades``
  closed trades is below 0 (outcomes are still recorded, the posteriors are frozen); while
  drawdown exceeds ``fallback_drawdown`` the brain falls back to rules (technical score only,
  Balanced, the base threshold, no sampling);
* **ablations**: ``bandit.enabled = false`` uses equal weights over the available components;
  ``regime.enabled = false`` makes every regime UNKNOWN; ``meta.force_learner`` pins a learner.
"""

from __future__ import annotations

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
from learning.brain.regime import Regime, RegimePerformance

SCHEMA_VERSION = 1
FALLBACK_LEARNER = "Balanced"
COMPONENTS = ("technical", "ai", "theme", "sentiment")


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

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its recursive deep copy was most of a decision's cost.
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["weights"], out["scores"] = dict(self.weights), dict(self.scores)
        return out


@dataclass
class BrainState:
    decisions: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    rng: dict[str, Any] | None = None  # the shared stream of schema-1 files; unused
    closed_trades: int = 0
    unattributed_trades: int = 0


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
        raw = state.get("brain", {})
        self.state = BrainState(**{k: v for k, v in raw.items()
                                   if k in BrainState.__dataclass_fields__})
        n = config.brain.decision_log
        self._decisions: deque[dict[str, Any]] = deque(self.state.decisions[-n:] if n else [],
                                                       maxlen=max(n, 1))
        self._outcomes: deque[dict[str, Any]] = deque(self.state.outcomes[-1000:], maxlen=1000)

    # ------------------------------------------------------------------ breakers
    def rolling_sharpe(self) -> float | None:
        n = self.config.brain.breaker_trades
        recent = [o["profit_ratio"] for o in list(self._outcomes)[-n:]]
        if len(recent) < n:
            return None
        sd = float(np.std(recent, ddof=1))
        return float(np.mean(recent)) / sd if sd > 0 else 0.0

    def learning_paused(self) -> bool:
        sharpe = self.rolling_sharpe()
        return sharpe is not None and sharpe < 0

    def fallback(self, drawdown: float | None) -> bool:
        return drawdown is not None and drawdown > self.config.brain.fallback_drawdown

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
               candle: datetime | None = None) -> Decision:
        """Decide whether to enter ``pair`` now. Never raises on bad scores: a component whose
        score is not finite is left out, and with none left the decision is "skip". The draws
        are seeded by (seed, pair, ``candle``: the time of the candle decided on, default
        ``now``)."""
        rng = self.rng_for(pair, candle or now)
        regime = regime if self.config.regime.enabled else Regime.UNKNOWN.value
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
                learner = self.meta.select(regime, rng, now).learner
            available = available_components(scores, COMPONENTS)
            if not available:
                weights = {}
            elif self.config.bandit.enabled:
                weights = self.meta.bandit(learner).sample_weights(regime, rng, available)
            else:
                weights = {c: 1.0 / len(available) for c in available}
            tolerance = self.meta.profile(learner).risk_tolerance
            threshold = entry_threshold * (2.0 - tolerance)
        overall = combine(weights, scores) if weights else float("nan")
        tolerance = self.meta.profile(learner).risk_tolerance
        decision = Decision(
            time=now.isoformat(), pair=pair, regime=str(regime),
            regime_confidence=round(float(regime_confidence), 4) if _finite(regime_confidence)
            else 0.0, learner=learner, mode=mode, weights=_round(weights), scores=_round(scores),
            overall=round(overall, 4) if _finite(overall) else float("nan"),
            threshold=round(threshold, 4), stake_share=tolerance,
            take=bool(_finite(overall) and overall > threshold), policy=policy)
        self._decisions.append(decision.to_dict())
        return decision

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
        paused = self.learning_paused()
        updated: dict[str, Any] = {}
        # Fallback trades were not the learners' choice: they teach the bandits (the component
        # signs still agreed or not) but not the meta-policy.
        if not paused and decision is not None:
            updated = self.meta.record_outcome(learner if mode == "learned" else None, regime,
                                               scores, profit_ratio, now)
        self._outcomes.append({"time": now.isoformat(), "pair": pair, "learner": learner,
                               "regime": regime, "mode": mode, "profit_ratio": profit_ratio,
                               "learning_paused": paused})
        return {"recorded": True, "learning_paused": paused, "updated": updated}

    # ------------------------------------------------------------------ state and reports
    def to_state(self) -> dict[str, Any]:
        self.state.decisions = list(self._decisions)
        self.state.outcomes = list(self._outcomes)
        self.state.rng = None  # draws are seeded per decision (rng_for); no stream to keep
        return {"brain": asdict(self.state), "meta": self.meta.to_state(),
                "regime_perf": self.regime_perf.to_state()}

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
            "circuit_breakers": {"learning_paused": self.learning_paused(),
                                 "rolling_sharpe": self.rolling_sharpe(),
                                 "breaker_trades": self.config.brain.breaker_trades,
                                 "fallback": self.fallback(drawdown),
                                 "fallback_drawdown": self.config.brain.fallback_drawdown},
            "weights": weights,
            "meta": self.meta.report(),
            "regime_performance": self.regime_perf.to_state(),
            "recent_outcomes": list(self._outcomes)[-20:],
        }
