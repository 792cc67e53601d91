"""Hard risk limits: the guard every entry, add, trim and exit decision passes through.

Limits (defaults; see :class:`learning.core.config.RiskConfig`):

* one trade's stake, pyramiding adds included, at most ``max_position_pct`` (20%) of equity;
* a loss of ``max_daily_loss_pct`` (2%) from the UTC day's opening equity blocks entries and adds
  for the rest of that day and exits open positions;
* a drawdown of ``max_drawdown_pct`` (15%) from the equity peak flattens and halts entries until a
  manual reset;
* the CRISIS regime means cash only (no entries, open positions exited);
* a changepoint alarm on the market proxy (:mod:`learning.brain.changepoint`, when enabled):
  level 1 blocks entries and adds, level 2 also exits open positions (the caller computes the
  level from the alarm probability and its thresholds);
* a manual halt (``ftlearn halt``) blocks entries and adds while the bot runs.

Equity is starting balance + closed profit + realized profit of partial exits + unrealized PnL of
open trades (freqtrade's wallet leaves unrealized PnL out, docs/freqai-notes §4.3); the caller
computes it and passes it in together with ``now``, so the guard itself is pure and repeatable.

Nothing here raises on the trading path: every check returns a :class:`Verdict` with reasons, and
non-finite inputs produce a refusing verdict.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from learning.core.config import SECTION, _f, parse_section
from learning.core.durations import parse_duration
from learning.core.errors import StateError

SCHEMA_VERSION = 1
MAX_EVENTS = 200


@dataclass(frozen=True)
class RiskConfig:
    """Hard risk limits. No code path may exceed them."""

    max_position_pct: float = _f(
        0.20, "Largest stake of one trade, pyramiding adds included, as a fraction of equity.",
        (0.001, 1.0))
    max_daily_loss_pct: float = _f(
        0.02, "Loss from the UTC day's opening equity that blocks entries and adds for the rest "
        "of the day and exits open positions.", (0.001, 1.0))
    max_drawdown_pct: float = _f(
        0.15, "Drawdown from the equity peak that flattens all positions and halts entries "
        "until a manual reset (ftlearn resume --reset-drawdown).", (0.001, 1.0))
    crisis_cash_only: bool = _f(
        True, "In the CRISIS regime hold cash only: no entries, open positions exited.")
    reset_after: str = _f(
        "", "Research runs only: lift a drawdown halt by itself after this duration (e.g. "
        "'30d'), restarting the peak from the equity then. Empty (the default, and what live "
        "trading should use): the halt holds until a manual reset.", duration=True)


def risk_config(ft_config: Mapping[str, Any]) -> RiskConfig:
    """The hard limits from a (merged) freqtrade config's ``advanced_learning.risk``."""
    section = ft_config.get(SECTION) or {}
    return parse_section(RiskConfig, section.get("risk") if isinstance(section, Mapping) else
                         section, f"{SECTION}.risk")


@dataclass(frozen=True)
class Verdict:
    """The guard's answer: whether to act, the (clamped) amount allowed, and why."""

    allowed: bool
    amount: float = 0.0
    reasons: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.allowed


@dataclass
class RiskState:
    """What the guard remembers between candles and across restarts (persisted as JSON)."""

    peak_equity: float | None = None
    day: str | None = None  # UTC date (YYYY-MM-DD) of day_open_equity
    day_open_equity: float | None = None
    daily_halt_day: str | None = None  # the UTC day on which the daily loss limit was hit
    drawdown_halt: bool = False
    drawdown_halt_since: str | None = None
    manual_halt: bool = False
    manual_halt_reason: str = ""
    #: Drawdown resets applied (``ftlearn resume --reset-drawdown``).
    reset_token_applied: int = 0
    #: Lines of the control command log (``learning.core.control``) already applied.
    control_seen: int = 0
    last_equity: float | None = None
    last_update: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, data: Any) -> RiskState:
        """The state saved by :meth:`to_state`; raises :class:`StateError` on anything else
        (wrong types, non-finite or non-positive equity), so a damaged file is never trusted."""
        if not isinstance(data, Mapping):
            raise StateError(f"risk state is a {type(data).__name__}, not an object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("peak_equity", "day_open_equity", "last_equity"):
            if known.get(key) is not None and not _finite_positive(known[key]):
                raise StateError(f"risk state: {key} is {known[key]!r}")
        for key in ("drawdown_halt", "manual_halt"):
            if not isinstance(known.get(key, False), bool):
                raise StateError(f"risk state: {key} is {known[key]!r}, not true/false")
        for key in ("reset_token_applied", "control_seen"):
            count = known.get(key, 0)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise StateError(f"risk state: {key} is {count!r}")
        for key in ("day", "daily_halt_day", "drawdown_halt_since", "last_update"):
            if known.get(key) is not None and not isinstance(known[key], str):
                raise StateError(f"risk state: {key} is {known[key]!r}, not a string")
        if not isinstance(known.get("manual_halt_reason", ""), str) or \
                not isinstance(known.get("events", []), list):
            raise StateError("risk state: manual_halt_reason or events has the wrong type")
        return cls(**known)


def _finite(x: Any) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _finite_positive(x: Any) -> bool:
    return _finite(x) and x > 0


class RiskGuard:
    """Applies :class:`RiskConfig` to a :class:`RiskState`. Pure apart from mutating the state."""

    def __init__(self, config: RiskConfig, state: RiskState | None = None) -> None:
        self.config = config
        self.state = state or RiskState()

    # ------------------------------------------------------------------ observation
    def observe(self, now: datetime, equity: float) -> list[str]:
        """Feed the current equity; rolls the UTC day, tracks the peak and trips the limits.

        Returns the events raised by this observation (e.g. ``["daily_loss_limit"]``).
        """
        s = self.state
        if not _finite_positive(equity):
            return []
        events: list[str] = []
        today = now.strftime("%Y-%m-%d")
        if s.day != today:
            s.day, s.day_open_equity = today, equity
        if s.peak_equity is None or equity > s.peak_equity:
            s.peak_equity = equity
        s.last_equity, s.last_update = equity, now.isoformat()

        if (s.daily_halt_day != today and s.day_open_equity
                and equity <= s.day_open_equity * (1.0 - self.config.max_daily_loss_pct)):
            s.daily_halt_day = today
            events.append("daily_loss_limit")
            self._event(now, "daily_loss_limit",
                        f"equity {equity:.2f} <= {1 - self.config.max_daily_loss_pct:.2%} of "
                        f"day open {s.day_open_equity:.2f}")
        if (s.drawdown_halt and self.config.reset_after and s.drawdown_halt_since
                and now - datetime.fromisoformat(s.drawdown_halt_since)
                >= parse_duration(self.config.reset_after)):
            s.drawdown_halt, s.drawdown_halt_since = False, None
            s.peak_equity = equity  # or the halt would trip again at once
            events.append("drawdown_cool_off")
            self._event(now, "drawdown_cool_off",
                        f"drawdown halt lifted after {self.config.reset_after} (reset_after)")
        if not s.drawdown_halt and equity <= s.peak_equity * (1.0 - self.config.max_drawdown_pct):
            s.drawdown_halt, s.drawdown_halt_since = True, now.isoformat()
            events.append("max_drawdown")
            self._event(now, "max_drawdown",
                        f"equity {equity:.2f} is {1 - equity / s.peak_equity:.2%} below the peak "
                        f"{s.peak_equity:.2f}")
        return events

    def apply_command(self, now: datetime, command: str, reason: str = "",
                      reset_drawdown: bool = False, equity: float | None = None) -> list[str]:
        """Apply one manual command (``ftlearn halt/resume``); returns the events it raised.

        ``halt`` blocks entries and adds; ``resume`` lifts a manual halt and, with
        ``reset_drawdown``, a max-drawdown halt too (the peak restarts from ``equity``).
        """
        s, events = self.state, []
        if command == "halt":
            if not s.manual_halt:
                events.append("manual_halt")
            s.manual_halt, s.manual_halt_reason = True, reason or "manual halt"
        elif command == "resume":
            if s.manual_halt:
                events.append("manual_resume")
            s.manual_halt, s.manual_halt_reason = False, ""
            if reset_drawdown:
                s.reset_token_applied += 1
                if s.drawdown_halt:
                    s.drawdown_halt, s.drawdown_halt_since = False, None
                    # Restart the peak from here, or the halt would trip again at once.
                    s.peak_equity = equity if _finite_positive(equity) else s.last_equity
                    events.append("drawdown_reset")
        for event in events:
            self._event(now, event, reason or "by user")
        return events

    def _event(self, now: datetime, kind: str, detail: str) -> None:
        self.state.events.append({"time": now.isoformat(), "kind": kind, "detail": detail})
        del self.state.events[:-MAX_EVENTS]

    # ------------------------------------------------------------------ queries
    def daily_halted(self, now: datetime) -> bool:
        return self.state.daily_halt_day == now.strftime("%Y-%m-%d")

    def blocks(self, now: datetime, crisis: bool = False,
               changepoint: int = 0) -> tuple[str, ...]:
        """Reasons that currently block new entries and adds (empty tuple = none).
        ``changepoint``: the alarm level (0 none, 1 block, 2 block and exit)."""
        s, reasons = self.state, []
        if s.drawdown_halt:
            reasons.append("max_drawdown_halt")
        if self.daily_halted(now):
            reasons.append("daily_loss_halt")
        if s.manual_halt:
            reasons.append("manual_halt")
        if crisis and self.config.crisis_cash_only:
            reasons.append("crisis_cash_only")
        if changepoint >= 1:
            reasons.append("changepoint_alarm")
        return tuple(reasons)

    def exit_reason(self, now: datetime, crisis: bool = False,
                    changepoint: int = 0) -> str | None:
        """The reason to close an open position now, or None (manual halt does not force exits)."""
        s = self.state
        if s.drawdown_halt:
            return "risk_max_drawdown"
        if self.daily_halted(now):
            return "risk_daily_loss"
        if crisis and self.config.crisis_cash_only:
            return "risk_crisis"
        if changepoint >= 2:
            return "risk_changepoint"
        return None

    def max_stake(self, equity: float) -> float:
        """Largest total stake one trade may hold."""
        return self.config.max_position_pct * equity if _finite_positive(equity) else 0.0

    def check_stake(self, now: datetime, equity: float, requested: float, *,
                    held: float = 0.0, min_stake: float | None = None,
                    crisis: bool = False, changepoint: int = 0) -> Verdict:
        """Clamp a new entry (``held`` = 0) or an add to an open trade (``held`` = what the
        position already counts for: the larger of its cost and its market value).

        The result never lets ``held + amount`` exceed ``max_position_pct * equity``. When the
        exchange minimum cannot be met inside the cap the entry is refused rather than rounded
        up (freqtrade would otherwise raise a small stake to the minimum). Any input that is not
        a finite number (or a negative holding, or a ``min_stake`` that is neither None nor a
        finite number) refuses: an unknown amount cannot be shown to fit under the cap.
        """
        if not _finite_positive(equity):
            return Verdict(False, 0.0, ("equity_unknown",))
        if not _finite_positive(requested):
            return Verdict(False, 0.0, ("no_stake_requested",))
        if not _finite(held) or held < 0:
            return Verdict(False, 0.0, ("held_stake_unknown",))
        if min_stake is not None and (not _finite(min_stake) or min_stake < 0):
            return Verdict(False, 0.0, ("min_stake_unknown",))
        blocked = self.blocks(now, crisis, changepoint)
        if blocked:
            return Verdict(False, 0.0, blocked)
        room = self.max_stake(equity) - held
        if room <= 0:
            return Verdict(False, 0.0, ("position_cap_reached",))
        amount, reasons = float(requested), []
        if amount > room:
            amount, reasons = room, ["clamped_to_position_cap"]
        if min_stake is not None and amount < min_stake:
            if min_stake > room:
                return Verdict(False, 0.0, ("min_stake_above_position_cap",))
            amount, reasons = float(min_stake), [*reasons, "raised_to_min_stake"]
        return Verdict(True, amount, tuple(reasons))

    def status(self, now: datetime | None = None) -> dict[str, Any]:
        """A JSON-able summary for ``ftlearn status`` and logs."""
        s = self.state
        dd = (1 - s.last_equity / s.peak_equity) if (s.last_equity and s.peak_equity) else None
        day_pnl = (s.last_equity / s.day_open_equity - 1) if (
            s.last_equity and s.day_open_equity) else None
        return {
            "limits": asdict(self.config),
            "equity": s.last_equity, "peak_equity": s.peak_equity, "drawdown": dd,
            "day": s.day, "day_open_equity": s.day_open_equity, "day_pnl": day_pnl,
            "daily_halt": s.daily_halt_day is not None and (
                now is None or s.daily_halt_day == now.strftime("%Y-%m-%d")),
            "daily_halt_day": s.daily_halt_day,
            "drawdown_halt": s.drawdown_halt, "drawdown_halt_since": s.drawdown_halt_since,
            "manual_halt": s.manual_halt, "manual_halt_reason": s.manual_halt_reason,
            "last_update": s.last_update, "recent_events": s.events[-10:],
        }
