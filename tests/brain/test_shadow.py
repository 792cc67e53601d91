"""Shadow (counterfactual) trades: barrier resolution, causality of their release, and the
count of outcomes the data never resolved."""

from datetime import timedelta

import numpy as np
import pytest

from learning.brain.profiles import ExitPlan
from learning.brain.shadow import PricePath, ShadowBook, ShadowTrade, resolve

STEP = 3_600 * 1_000_000_000  # 1h in ns


def path(closes, highs=None, lows=None, trend=None) -> PricePath:
    c = np.asarray(closes, dtype=float)
    h = np.asarray(highs if highs is not None else c, dtype=float)
    lo = np.asarray(lows if lows is not None else c, dtype=float)
    t = np.asarray(trend if trend is not None else np.ones_like(c), dtype=float)
    o = np.concatenate([c[:1], c[:-1]])  # each candle opens at the previous close
    return PricePath(np.arange(1, len(c) + 1, dtype=np.int64) * STEP, o, h, lo, c, t)


def plan(stop=0.05, tp=float("inf"), trail=0.0, hours=48, trend_exit=False) -> ExitPlan:
    return ExitPlan("X", stop, tp, trail, timedelta(hours=hours), trend_exit)


def test_resolve_hits_the_stop_before_the_take_profit_in_the_same_candle():
    p = path([100, 101, 100], highs=[100, 120, 100], lows=[100, 90, 100])
    r = resolve(p, 0, plan(stop=0.05, tp=0.1), fee=0.0, step_ns=STEP)
    assert r.reason == "stop" and r.index == 1 and r.ret == pytest.approx(-0.05)


def test_resolve_take_profit_and_fees_on_both_sides():
    p = path([100, 105, 112], highs=[100, 106, 112])
    r = resolve(p, 0, plan(tp=0.1), fee=0.001, step_ns=STEP)
    assert r.reason == "take_profit" and r.index == 2
    assert r.ret == pytest.approx(110 * 0.999 / (100 * 1.001) - 1)


def test_resolve_trailing_stop_follows_the_highest_high():
    closes = [100, 110, 120, 113]
    p = path(closes, highs=[100, 110, 120, 113], lows=[100, 109, 119, 113])
    r = resolve(p, 0, plan(stop=0.5, trail=0.05), fee=0.0, step_ns=STEP)
    assert r.reason == "stop" and r.index == 3 and r.ret == pytest.approx(0.14)


def test_resolve_trend_exit_and_hold_limit():
    p = path([100, 101, 102, 103], trend=[1, 1, -1, 1])
    assert resolve(p, 0, plan(trend_exit=True), 0.0, STEP).reason == "trend_exit"
    r = resolve(path([100, 101, 102, 103]), 0, plan(hours=2), 0.0, STEP)
    assert r.reason == "hold_limit" and r.index == 2


def test_resolve_is_pending_while_no_barrier_was_reached_inside_the_data():
    assert resolve(path([100, 101, 102]), 0, plan(hours=48), 0.0, STEP) is None


def test_shadow_outcome_is_released_only_once_its_exit_candle_has_closed():
    """Prefix property: at any time t a learner has seen exactly the outcomes whose exit candle
    closed by t; the full path and a path cut at t release the same outcomes up to t."""
    rng = np.random.default_rng(3)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    full = path(closes, closes * 1.004, closes * 0.996)
    released_full, released_cut = [], []
    book_full, book_cut = ShadowBook(0.001), ShadowBook(0.001)
    pl = {"X": plan(stop=0.02, tp=0.03, hours=24)}
    for t in range(400):
        now_ns = int(full.close_ns[t])
        cut = PricePath(*(a[: t + 1] for a in (full.close_ns, full.open, full.high, full.low,
                                                full.close, full.trend)))
        for book, p, sink in ((book_full, full, released_full), (book_cut, cut, released_cut)):
            for o in book.release(now_ns, {"P": p}, STEP):
                assert o.exit_ns <= now_ns, "released before its exit candle closed"
                sink.append((o.trade.entry_ns, o.exit_ns, round(o.resolution.ret, 12), now_ns))
            if t % 5 == 0:
                book.open(ShadowTrade("probe", "P", now_ns, "CHOPPY", {}, "X", pl), p, STEP)
    assert released_full == released_cut and len(released_full) > 50


def test_outcomes_unresolved_at_the_end_of_the_data_are_counted_and_never_released():
    book = ShadowBook(0.0)
    p = path([100.0] * 10)
    book.open(ShadowTrade("probe", "P", int(p.close_ns[8]), "CHOPPY", {}, "X",
                          {"X": plan(hours=48)}), p, STEP)
    assert book.release(int(p.close_ns[-1]) * 10, {"P": p}, STEP) == []
    assert book.unresolved() == 1
