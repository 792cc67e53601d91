"""What a benchmarked AdvancedLearning run did inside: risk halts, fallbacks, learning events.

Read from the run's own state folder (``risk.json``, ``brain.json``) after the backtest, so the
report can say when and for how long a variant was halted, how much each tier learned from real
trades and from shadow outcomes, and when a fallback happened on every decision (that is a
broken configuration, reported as an error, not a log line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

#: A fallback on at least this share of at least MIN_DECISIONS decisions is an error.
ALWAYS = 0.999
MIN_DECISIONS = 10


def _doc(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def halts(risk: dict[str, Any] | None, end: pd.Timestamp) -> list[dict[str, Any]]:
    """Drawdown halts as (start, end or None while still halted at ``end``, days)."""
    out: list[dict[str, Any]] = []
    for ev in (risk or {}).get("events", []):
        t = pd.Timestamp(ev["time"])
        if ev["kind"] == "max_drawdown":
            out.append({"start": t.isoformat(), "end": None})
        elif ev["kind"] in ("drawdown_reset", "drawdown_cool_off") and out and \
                out[-1]["end"] is None:
            out[-1]["end"] = t.isoformat()
    for h in out:
        stop = pd.Timestamp(h["end"]) if h["end"] else end
        h["days"] = round((stop - pd.Timestamp(h["start"])) / pd.Timedelta(days=1), 2)
        h["until_end"] = h["end"] is None
    return out


def diagnostics(user_data: Path, end: pd.Timestamp,
                identifier: str = "default") -> dict[str, Any]:
    """Halts, fallback shares, learning events and errors of one run (empty when the run kept
    no AdvancedLearning state, e.g. a baseline strategy)."""
    root = user_data / "learning" / identifier / "backtest"
    risk, brain = _doc(root / "risk.json"), _doc(root / "brain.json")
    if risk is None and brain is None:
        return {}
    out: dict[str, Any] = {"halts": halts(risk, end), "errors": []}
    if brain is not None:
        state = brain.get("brain", {})
        out["learning_events"] = state.get("events", {})
        out["shadow_unresolved"] = state.get("shadow_unresolved", 0)
        decisions = state.get("decisions", [])
        if decisions:
            modes = pd.Series([d.get("mode") for d in decisions])
            out["decisions_logged"] = len(decisions)
            out["fallback_share"] = round(float((modes == "fallback").mean()), 4)
            out["abstained_share"] = round(float(pd.Series(
                [bool(d.get("abstained")) for d in decisions]).mean()), 4)
            if len(decisions) >= MIN_DECISIONS and out["fallback_share"] >= ALWAYS:
                out["errors"].append("every logged decision fell back to the rules")
        sizing = state.get("events", {}).get("sizing") or {}
        total = sizing.get("agent", 0) + sizing.get("rule", 0)
        if total:
            out["agent_rule_share"] = round(sizing.get("rule", 0) / total, 4)
            if total >= MIN_DECISIONS and out["agent_rule_share"] >= ALWAYS:
                out["errors"].append("the Tier 3 agents fell back to rule sizing on every entry")
    return out


def notes(diag: dict[str, Any]) -> list[str]:
    """Lines for the report's "Status and notes"."""
    lines = [f"ERROR: {e}" for e in diag.get("errors", [])]
    for h in diag.get("halts", []):
        lines.append(f"drawdown halt from {h['start'][:16]} "
                     + (f"until the end of the range ({h['days']:.1f} days)" if h["until_end"]
                        else f"to {h['end'][:16]} ({h['days']:.1f} days)"))
    return lines


def volatility(trades: pd.DataFrame, datadir: Path, timeframe: str, equity: pd.Series,
               halflife: str = "3d") -> dict[str, Any]:
    """Realised against forecast (targeted) volatility of the positions taken.

    Per trade: the pair's annualised volatility forecast at entry (the strategy's causal EWMA,
    :func:`learning.brain.components.ewma_volatility`) and the volatility its returns realised
    while the trade was open; a position's volatility is its stake's share of equity at entry
    times either. Returns medians over trades (NaN-free trades only)."""
    import math

    import numpy as np

    from learning.brain.components import ewma_volatility
    from learning.core.durations import minutes_of, parse_duration
    from learning.data.candles import load_candles

    if trades is None or not len(trades) or equity is None or not len(equity):
        return {}
    per_year = 365.0 * 1440.0 / minutes_of(timeframe)
    step = pd.Timedelta(minutes=minutes_of(timeframe))
    rows = []
    for pair, group in trades.groupby("pair"):
        candles = load_candles(datadir, str(pair), timeframe)
        forecast = pd.Series(ewma_volatility(candles["close"], timeframe,
                                             pd.Timedelta(parse_duration(halflife))).to_numpy(),
                             index=candles["date"] + step)  # known at the candle's close
        logret = pd.Series(np.log(candles["close"] / candles["close"].shift(1)).to_numpy(),
                           index=candles["date"])
        for t in group.itertuples():
            opened, closed = pd.Timestamp(t.open_date), pd.Timestamp(t.close_date)
            f = forecast[forecast.index <= opened]
            during = logret[(logret.index >= opened) & (logret.index < closed)].dropna()
            eq = equity[equity.index <= opened]
            if f.empty or len(during) < 3 or eq.empty or not math.isfinite(f.iloc[-1]):
                continue
            share = float(t.stake_amount) / float(eq.iloc[-1])
            realised = float(during.std(ddof=1) * math.sqrt(per_year))
            rows.append((f.iloc[-1], realised, share))
    if not rows:
        return {}
    f, r, w = (np.array(x) for x in zip(*rows))
    return {"trades": len(rows), "forecast_median": float(np.median(f)),
            "realised_median": float(np.median(r)),
            "realised_over_forecast_median": float(np.median(r / f)),
            "position_targeted_median": float(np.median(w * f)),
            "position_realised_median": float(np.median(w * r))}
