"""Dense counterfactual ("shadow") feedback: what each decision would have earned.

At every candle where the strategy evaluates entries, each learner (and each router policy) makes
its decision as it would for a real entry. Where it would enter, a *shadow trade* opens at that
candle's close and is resolved by the exit plan it would have used (:mod:`learning.brain.profiles`:
stop, take profit, trailing stop, trend exit, longest hold; the triple barrier), after fees on
both sides. Every exit profile is resolved for the same entry, so the profile learner gets
full-information feedback.

Causality: an outcome exists only once its exit candle has closed. The book may *compute* an
outcome early (in a backtest the later candles are already in the frame), but it hands it to
learning only in :meth:`ShadowBook.release` at a time at or after that exit candle's close: a
learner at candle t has seen exactly the outcomes resolved by t (prefix tests prove it). An
outcome whose barriers are not reached inside the data stays pending; at the end of a run such
outcomes are dropped and counted (:meth:`ShadowBook.unresolved`), never used.

Every evaluated candle is a decision, so shadow trades of one learner overlap in time and their
outcomes are correlated (one market move resolves many of them). That is why one shadow outcome
counts as only ``weight`` of a real trade in every tier: the posteriors' effective sample size
and memory stay in proportion to the time the evidence spans, not to the number of candles.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from learning.brain.profiles import ExitPlan
from learning.core.config import _f


@dataclass(frozen=True)
class ShadowConfig:
    """Counterfactual feedback for every tier."""

    enabled: bool = _f(True, "Learn from shadow trades (every learner's decision at every "
                       "evaluated candle, resolved by its exit plan after fees) as well as from "
                       "real trades; false: real trades only (an ablation).")
    weight: float = _f(0.05, "What one shadow outcome counts as in every tier, in real trades "
                       "(a real trade counts 1).", (0.001, 1.0))
    router: bool = _f(True, "The router's policies learn from shadow outcomes too.")
    fee: float = _f(0.001, "Fee per side charged to shadow trades when the run sets none.",
                    (0.0, 0.05))


@dataclass
class PricePath:
    """One pair's candles as the shadow book reads them (the strategy's closed-candle arrays).

    ``trend`` is the trend component (for trend exits); ``close_ns`` the candles' close times.
    """

    close_ns: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    trend: np.ndarray


@dataclass(frozen=True)
class Resolution:
    index: int  # exit candle
    ret: float  # profit ratio after fees
    reason: str


def resolve(path: PricePath, i: int, plan: ExitPlan, fee: float,
            step_ns: int) -> Resolution | None:
    """Resolve a long entry at the close of candle ``i`` under ``plan`` on the candles present
    in ``path``; None while no barrier has been reached (more candles may resolve it).

    Within one candle a stop is assumed to be hit before a take profit (the conservative order);
    a gap through a barrier exits at the candle's open.
    """
    entry = float(path.close[i])
    if not (math.isfinite(entry) and entry > 0):
        return Resolution(i, 0.0, "no_entry")
    hold = max(1, math.ceil(plan.hold.total_seconds() * 1e9 / step_ns - 1e-9))
    last = min(i + hold, len(path.close) - 1)
    if last <= i:
        return None
    sl = slice(i + 1, last + 1)
    o, h, lo, c = path.open[sl], path.high[sl], path.low[sl], path.close[sl]
    stop = np.full(len(c), entry * (1.0 - plan.stop))
    if plan.trail > 0:
        # highest high before each candle (freqtrade's trade.max_rate trails the same way)
        peak = np.maximum.accumulate(np.concatenate([[entry], h[:-1]]))
        stop = np.maximum(stop, peak * (1.0 - plan.trail))
    with np.errstate(invalid="ignore"):
        hit_stop = lo <= stop
        hit_tp = h >= entry * (1.0 + plan.take_profit) if math.isfinite(plan.take_profit) \
            else np.zeros(len(c), dtype=bool)
        flip = path.trend[sl] < 0 if plan.trend_exit else np.zeros(len(c), dtype=bool)
    any_hit = hit_stop | hit_tp | flip
    if any_hit.any():
        k = int(np.argmax(any_hit))
        if hit_stop[k]:
            price, reason = min(o[k], stop[k]) if o[k] < stop[k] else stop[k], "stop"
        elif hit_tp[k]:
            tp = entry * (1.0 + plan.take_profit)
            price, reason = max(o[k], tp), "take_profit"
        else:
            price, reason = c[k], "trend_exit"
    elif i + hold <= len(path.close) - 1:
        k, price, reason = len(c) - 1, c[-1], "hold_limit"
    else:
        return None
    if not (math.isfinite(price) and price > 0):
        return Resolution(i + 1 + k, 0.0, "bad_price")
    ret = price * (1.0 - fee) / (entry * (1.0 + fee)) - 1.0
    return Resolution(i + 1 + k, float(ret), reason)


@dataclass
class ShadowTrade:
    """One counterfactual entry: who decided it, with what, and its plans per profile."""

    track: str  # "learner:<name>" or "policy:<name>"
    pair: str
    entry_ns: int  # close time of the entry candle
    regime: str
    scores: dict[str, float | None]
    chosen: str  # the profile the decision chose
    plans: dict[str, ExitPlan]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShadowOutcome:
    """A resolved profile of a shadow trade, released to learning."""

    trade: ShadowTrade
    profile: str
    resolution: Resolution
    exit_ns: int

    @property
    def chosen(self) -> bool:
        return self.profile == self.trade.chosen


class ShadowBook:
    """Open shadow trades, and outcomes waiting for their exit candle to close.

    Candles are addressed by close time, not by index: a live bot's frames slide.
    """

    def __init__(self, fee: float) -> None:
        self.fee = fee
        self._ready: list[tuple[int, int, ShadowOutcome]] = []  # heap by release time
        self._pending: dict[str, list[tuple[ShadowTrade, str]]] = {}  # pair -> unresolved
        self._tried_len: dict[str, int] = {}  # pair -> path length of the last attempt
        # pair -> ((entry candle, path length), {(entry, plan, length): resolution}): the
        # resolutions of the newest entry candle, shared by every track that enters there
        self._memo: dict[str, tuple[tuple[int, int], dict]] = {}
        self._seq = 0
        self.opened = 0
        self.released = 0
        self.lost = 0  # entry candle no longer in the frame (a live window slid past it)

    def open(self, trade: ShadowTrade, path: PricePath, step_ns: int) -> None:
        self.opened += 1
        for name in trade.plans:
            self._try(trade, name, path, step_ns)

    def _try(self, trade: ShadowTrade, name: str, path: PricePath, step_ns: int) -> None:
        i = int(np.searchsorted(path.close_ns, trade.entry_ns))
        if i >= len(path.close_ns) or int(path.close_ns[i]) != trade.entry_ns:
            self.lost += 1
            return
        # Every track entering the same pair at the same candle under the same plan has the
        # same outcome: resolve it once (the probe, each learner and each policy share it).
        plan = trade.plans[name]
        memo_key = (trade.entry_ns, plan, len(path.close_ns))
        memo = self._memo.get(trade.pair)
        if memo is None or memo[0] != (trade.entry_ns, len(path.close_ns)):
            memo = self._memo[trade.pair] = ((trade.entry_ns, len(path.close_ns)), {})
        if memo_key in memo[1]:
            res = memo[1][memo_key]
        else:
            res = memo[1][memo_key] = resolve(path, i, plan, self.fee, step_ns)
        if res is None:
            self._pending.setdefault(trade.pair, []).append((trade, name))
            self._tried_len[trade.pair] = len(path.close_ns)
            return
        exit_ns = int(path.close_ns[res.index])
        self._seq += 1
        heapq.heappush(self._ready, (exit_ns, self._seq, ShadowOutcome(trade, name, res,
                                                                       exit_ns)))

    def release(self, now_ns: int, paths: dict[str, PricePath],
                step_ns: int) -> list[ShadowOutcome]:
        """Outcomes whose exit candle closed at or before ``now_ns``, oldest first. Pending
        trades of a pair are retried when its path has grown (live: new candles arrived)."""
        for pair in list(self._pending):
            path = paths.get(pair)
            if path is None or len(path.close_ns) == self._tried_len.get(pair):
                continue
            self._tried_len[pair] = len(path.close_ns)
            waiting = self._pending.pop(pair)
            for trade, name in waiting:
                self._try(trade, name, path, step_ns)
        out = []
        while self._ready and self._ready[0][0] <= now_ns:
            out.append(heapq.heappop(self._ready)[2])
        self.released += len(out)
        return out

    def unresolved(self) -> int:
        """Outcomes not resolvable on the data so far (dropped at the end of a run)."""
        return sum(len(v) for v in self._pending.values())

    def waiting(self) -> int:
        """Resolved outcomes whose exit candle has not closed yet at the last release."""
        return len(self._ready)
