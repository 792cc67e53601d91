"""The risk guard never lets a stake, a day's loss or a drawdown pass its limits."""

import math
from datetime import UTC, datetime, timedelta

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from learning.core.errors import StateError
from learning.core.risk import RiskConfig, RiskGuard, RiskState

T0 = datetime(2025, 3, 3, 0, 0, tzinfo=UTC)


def guard(**kw) -> RiskGuard:
    return RiskGuard(RiskConfig(**kw))


def test_check_stake_above_cap_is_clamped_to_twenty_percent_of_equity():
    g = guard()
    v = g.check_stake(T0, 10_000, 5_000)
    assert v.allowed and v.amount == 2_000
    assert "clamped_to_position_cap" in v.reasons


def test_check_stake_for_add_counts_the_stake_already_held():
    g = guard()
    v = g.check_stake(T0, 10_000, 1_500, held=1_200)
    assert v.allowed and v.amount == 800
    assert not g.check_stake(T0, 10_000, 100, held=2_000).allowed


def test_check_stake_below_min_stake_inside_cap_is_raised_to_min():
    v = guard().check_stake(T0, 10_000, 5, min_stake=10)
    assert v.allowed and v.amount == 10


def test_check_stake_when_min_stake_exceeds_cap_refuses():
    v = guard().check_stake(T0, 40, 5, min_stake=10)  # cap = 8
    assert not v.allowed and v.reasons == ("min_stake_above_position_cap",)


def test_check_stake_with_nonfinite_inputs_refuses_without_raising():
    g = guard()
    assert not g.check_stake(T0, float("nan"), 100)
    assert not g.check_stake(T0, 10_000, float("inf"))
    assert not g.check_stake(T0, -5, 100)
    assert g.observe(T0, float("nan")) == []


@pytest.mark.parametrize("held", [float("nan"), float("inf"), -float("inf"), -1.0, None, "1"])
def test_check_stake_for_add_with_unknown_held_stake_refuses(held):
    v = guard().check_stake(T0, 10_000, 5_000, held=held)
    assert not v.allowed and v.amount == 0.0 and v.reasons == ("held_stake_unknown",)


@pytest.mark.parametrize("min_stake", [float("nan"), float("inf"), -5.0])
def test_check_stake_with_non_finite_min_stake_refuses(min_stake):
    v = guard().check_stake(T0, 10_000, 100, min_stake=min_stake)
    assert not v.allowed and v.reasons == ("min_stake_unknown",)


def test_check_stake_accepts_numpy_numbers_and_refuses_bools():
    v = guard().check_stake(T0, np.float32(10_000), np.float32(500), held=np.float64(1_000),
                            min_stake=np.float64(5))
    assert v.allowed and v.amount == pytest.approx(500)
    assert not guard().check_stake(T0, 10_000, True)


_ANY = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none(),
                 st.integers(-10**6, 10**7))


@settings(max_examples=500, deadline=None)
@given(equity=_ANY, requested=_ANY, held=_ANY, min_stake=_ANY)
def test_check_stake_with_any_inputs_never_approves_above_the_cap_or_on_unknowns(
        equity, requested, held, min_stake):
    v = guard().check_stake(T0, equity, requested, held=0.0 if held is None else held,
                            min_stake=min_stake)
    if not v:
        return
    values = [equity, requested, 0.0 if held is None else held]
    assert all(isinstance(x, (int, float)) and math.isfinite(x) for x in values)
    assert min_stake is None or math.isfinite(min_stake)
    assert v.amount > 0 and math.isfinite(v.amount)
    assert (0.0 if held is None else held) + v.amount <= 0.2 * equity * (1 + 1e-12)


@pytest.mark.parametrize("bad", [
    [], {"peak_equity": float("nan")}, {"peak_equity": -1.0}, {"drawdown_halt": "yes"},
    {"control_seen": -1}, {"manual_halt": 1}, {"day": 20250101}, {"events": {}},
])
def test_risk_state_from_damaged_data_raises(bad):
    with pytest.raises(StateError):
        RiskState.from_state(bad)


def test_daily_loss_blocks_entries_and_exits_for_rest_of_utc_day_only():
    g = guard()
    g.observe(T0, 10_000)  # day opens at 10k
    assert g.observe(T0 + timedelta(hours=3), 9_850) == []  # -1.5%
    assert g.observe(T0 + timedelta(hours=4), 9_800) == ["daily_loss_limit"]  # -2%
    later = T0 + timedelta(hours=20)
    g.observe(later, 9_990)  # recovers intraday: still halted that day
    assert "daily_loss_halt" in g.blocks(later)
    assert g.exit_reason(later) == "risk_daily_loss"
    assert not g.check_stake(later, 9_990, 100)
    nxt = T0 + timedelta(days=1, minutes=5)
    g.observe(nxt, 9_990)
    assert g.blocks(nxt) == ()
    assert g.exit_reason(nxt) is None
    assert g.state.day_open_equity == 9_990


def test_drawdown_halt_is_sticky_until_manual_reset():
    g = guard()
    g.observe(T0, 10_000)
    g.observe(T0 + timedelta(days=1), 12_000)  # new peak
    assert g.observe(T0 + timedelta(days=2), 10_199) == ["max_drawdown"]  # 15.0% below 12k
    far = T0 + timedelta(days=30)
    g.observe(far, 13_000)  # even a new peak does not lift the halt
    assert g.exit_reason(far) == "risk_max_drawdown"
    assert "max_drawdown_halt" in g.blocks(far)
    assert g.apply_command(far, "resume", equity=13_000) == []  # a plain resume does not
    assert "max_drawdown_halt" in g.blocks(far)
    events = g.apply_command(far, "resume", reset_drawdown=True, equity=13_000)
    assert events == ["drawdown_reset"]
    assert g.blocks(far) == ()
    assert g.state.peak_equity == 13_000


def test_manual_halt_blocks_entries_but_does_not_force_exits():
    g = guard()
    g.observe(T0, 10_000)
    assert g.apply_command(T0, "halt", "maintenance") == ["manual_halt"]
    assert g.blocks(T0) == ("manual_halt",)
    assert g.exit_reason(T0) is None
    assert g.apply_command(T0, "resume") == ["manual_resume"]
    assert g.blocks(T0) == ()


def test_crisis_means_cash_only_unless_disabled():
    assert guard().exit_reason(T0, crisis=True) == "risk_crisis"
    assert "crisis_cash_only" in guard().blocks(T0, crisis=True)
    relaxed = guard(crisis_cash_only=False)
    assert relaxed.exit_reason(T0, crisis=True) is None


def test_risk_state_round_trip_keeps_everything():
    g = guard()
    g.observe(T0, 10_000)
    g.observe(T0 + timedelta(hours=1), 9_700)
    restored = RiskState.from_state(g.state.to_state())
    assert restored == g.state


@settings(max_examples=300, deadline=None)
@given(
    moves=st.lists(st.floats(-0.05, 0.05, allow_nan=False), min_size=1, max_size=60),
    stakes=st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=1, max_size=60),
    adds=st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=0, max_size=5),
    cap=st.floats(0.01, 1.0),
    minutes=st.integers(1, 600),
)
def test_no_sequence_of_equity_moves_stakes_and_adds_breaches_the_cap(moves, stakes, adds, cap,
                                                                     minutes):
    g = guard(max_position_pct=cap)
    equity, now = 10_000.0, T0
    for i, move in enumerate(moves):
        now += timedelta(minutes=minutes)
        equity *= 1 + move
        g.observe(now, equity)
        held = 0.0
        v = g.check_stake(now, equity, stakes[i % len(stakes)], min_stake=1.0)
        if v:
            held += v.amount
        for add in adds:
            v = g.check_stake(now, equity, add, held=held, min_stake=1.0)
            if v:
                held += v.amount
        assert held <= cap * equity * (1 + 1e-12)
        if g.state.drawdown_halt or g.daily_halted(now):
            assert held == 0.0


@settings(max_examples=300, deadline=None)
@given(
    first=st.floats(0.0, 1e6, allow_nan=False),
    steps=st.lists(st.tuples(st.floats(-0.05, 0.05, allow_nan=False),
                             st.floats(0.0, 1e6, allow_nan=False)), min_size=1, max_size=80),
    cap=st.floats(0.01, 1.0),
)
def test_adds_on_later_candles_never_take_an_open_trade_above_the_cap_of_that_moment(
        first, steps, cap):
    """One trade held across candles while equity moves: every approved add leaves the trade at
    most the cap of the equity at that moment, and a trade already at or above it gets none."""
    g = guard(max_position_pct=cap)
    equity, now = 10_000.0, T0
    g.observe(now, equity)
    v = g.check_stake(now, equity, first, min_stake=1.0)
    held = v.amount if v else 0.0
    for move, add in steps:
        now += timedelta(minutes=5)
        equity *= 1 + move
        g.observe(now, equity)
        at_cap = held >= cap * equity
        v = g.check_stake(now, equity, add, held=held, min_stake=1.0)
        if v:
            assert not at_cap
            held += v.amount
            assert held <= cap * equity * (1 + 1e-12)


@settings(max_examples=200, deadline=None)
@given(moves=st.lists(st.floats(-0.04, 0.04, allow_nan=False), min_size=1, max_size=200))
def test_halts_trip_exactly_when_thresholds_are_crossed(moves):
    g = guard()
    equity, now, peak = 10_000.0, T0, None
    day_open, day = None, None
    for move in moves:
        now += timedelta(hours=1)
        equity *= 1 + move
        if now.date() != day:
            day, day_open = now.date(), equity
        events = g.observe(now, equity)
        # The guard's peak starts at its first observation.
        peak = equity if peak is None else max(peak, equity)
        if equity <= peak * 0.85:
            assert g.state.drawdown_halt
        if equity <= day_open * 0.98:
            assert g.daily_halted(now)
        if "daily_loss_limit" in events:
            assert equity <= day_open * 0.98 + 1e-9


def test_drawdown_halt_holds_until_reset_without_a_cool_off():
    g = guard()
    g.observe(T0, 10_000)
    assert "max_drawdown" in g.observe(T0 + timedelta(hours=1), 8_400)
    g.observe(T0 + timedelta(days=400), 8_500)
    assert g.state.drawdown_halt, "live default: only a manual reset lifts it"


def test_drawdown_halt_with_reset_after_lifts_after_the_cool_off_and_restarts_the_peak():
    g = guard(reset_after="30d")
    g.observe(T0, 10_000)
    g.observe(T0 + timedelta(hours=1), 8_400)
    g.observe(T0 + timedelta(days=29), 8_300)
    assert g.state.drawdown_halt, "not before 30 days"
    events = g.observe(T0 + timedelta(days=30, hours=1), 8_200)
    assert events == ["drawdown_cool_off"] and not g.state.drawdown_halt
    assert g.state.peak_equity == 8_200
    assert g.state.events[-1]["kind"] == "drawdown_cool_off"


def test_changepoint_alarm_blocks_at_level_one_and_exits_at_level_two():
    g = RiskGuard(RiskConfig())
    now = datetime(2025, 1, 2, tzinfo=UTC)
    assert g.blocks(now, changepoint=0) == ()
    assert g.blocks(now, changepoint=1) == ("changepoint_alarm",)
    assert g.exit_reason(now, changepoint=1) is None
    assert g.exit_reason(now, changepoint=2) == "risk_changepoint"
    assert not g.check_stake(now, 1000.0, 50.0, changepoint=1)
    assert g.check_stake(now, 1000.0, 50.0, changepoint=0).amount == 50.0
