"""Output of ``ftlearn bench``: ``report.md``, ``results.json``, PNG plots and a short summary.

Plots use matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so
the bench runs headless and never disturbs a caller's backend.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from learning import __version__
from learning.bench import metrics as M
from learning.bench.runner import BenchResult

METRIC_DEFINITIONS: dict[str, str] = {
    "equity": "freqtrade's own per-candle wallet export (every currency's balance valued at the "
              "candle); buy-and-hold from the candles alone",
    "total_return": "final equity / starting wallet - 1",
    "cagr": "(final / start)^(365.25 / calendar days) - 1",
    "sharpe": "mean / sample std (ddof 1) of daily returns x sqrt(365); daily equity = last "
              "mark of each UTC day; risk-free rate 0",
    "sharpe_ci": "95 % percentile interval of the Sharpe ratio, circular block bootstrap over "
                 "days (block = ceil(days^(1/3)), 2000 resamples, seeded)",
    "sortino": "mean daily return / sqrt(mean(min(r, 0)^2)) x sqrt(365)",
    "calmar": "CAGR / max drawdown",
    "max_drawdown": "largest fall from a running peak of the candle-level equity",
    "profit_factor": "gross profit / gross loss of closed trades, net of fees",
    "win_rate": "share of closed trades with a positive net profit",
    "trades": "closed trades (buy-and-hold: one per pair)",
    "exposure": "share of candles during which any position was held",
    "fees": "fees paid on all fills, in the stake currency",
    "fee_share_of_gross": "fees of all trades / the sum of (net profit + fees) over the trades "
                          "whose profit before fees was positive; above 1: fees took more than "
                          "all the gross gains",
    "dsr": "deflated Sharpe ratio (Bailey & Lopez de Prado 2014): P(true Sharpe > SR0) with "
           "SR0 = sqrt(V) ((1-g) invPhi(1-1/N) + g invPhi(1-1/(N e))), N = variants "
           "compared (successful, with a defined Sharpe; a variant identical to another "
           "counted once), V = variance of their daily Sharpe ratios, g = 0.5772 "
           "(Euler-Mascheroni); PSR = Phi((SR - SR0) sqrt(T-1) / sqrt(1 - skew SR + "
           "(kurt-1)/4 SR^2)) on daily returns (T days, Pearson kurtosis); with a single "
           "variant SR0 = 0 (the probabilistic Sharpe ratio against zero)",
    "cost": "wall time, CPU time (user+sys) and peak RSS of the freqtrade process "
            "(os.wait4 rusage of that process)",
    "cell": "one seed x pair universe x period; every variant runs in every cell",
    "across_cells": "mean over the successful cells, with a 95 % t-interval of that mean "
                    "(n-1 degrees of freedom; none with one cell) and the range",
    "pairwise": "variant minus full on the same cells: difference of Sharpe ratios and of "
                "total returns, averaged over cells; 95 % interval from a stratified paired "
                "circular block bootstrap of the daily returns (arch.bootstrap; each cell "
                "resampled on its own, both variants on the same days; 2000 resamples)",
}


def clean(x: Any) -> Any:
    """JSON-safe: NaN -> null, +-inf -> "inf"/"-inf", numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        if math.isnan(x):
            return None
        return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (pd.Timestamp, Path)):
        return str(x)
    return x


def _versions() -> dict[str, str]:
    import freqtrade

    return {"learning": __version__, "freqtrade": freqtrade.__version__,
            "python": platform.python_version()}


def to_json(bench: BenchResult) -> dict[str, Any]:
    s = bench.spec
    variants = []
    for r in bench.results:
        v = r.variant
        entry = {"name": v.name, "job": r.job_id, "cell": r.cell, "kind": v.kind,
                 "strategy": v.strategy,
                 "description": v.description, "freqaimodel": v.freqaimodel,
                 "config_overlay": v.config_overlay, "status": r.status, "reason": r.reason,
                 "notes": r.notes, "command": r.command, "diagnostics": r.diagnostics,
                 "command_line": shlex.join(r.command) if r.command else None, "log": r.log,
                 "metrics": r.metrics, "cost": r.cost, "freqtrade": r.freqtrade,
                 "returns_by_regime": r.by_regime, "exits": r.exits}
        if r.book is not None:
            daily = M.daily_equity(r.book.equity)
            entry["daily_equity"] = {t.isoformat(): float(x) for t, x in daily.items()}
        variants.append(entry)
    return clean({
        "created": bench.started.isoformat(), "finished": bench.finished.isoformat(),
        "argv": bench.argv, "versions": _versions(),
        "data": {"datadir": str(s.datadir), "synthetic": bench.info.synthetic,
                 "pairs": list(s.pairs), "timeframe": s.timeframe, "timerange": s.timerange,
                 "data_first_candle": bench.info.first.isoformat(),
                 "pair_first_candle": {p: t.isoformat() for p, t in bench.info.starts.items()},
                 "data_last_close": bench.info.last_close.isoformat()},
        "fee_per_side": s.fee, "wallet": s.wallet, "configs": [str(c) for c in s.configs],
        "quick": s.quick, "seed": s.seed, "regime_source": bench.regime_source,
        "annualization_days": M.PERIODS_PER_YEAR, "metric_definitions": METRIC_DEFINITIONS,
        "cells": bench.cells, "by_variant": by_variant(bench), "pairwise": pairwise(bench),
        "variants": variants,
    })


# ----------------------------------------------------------------------------------------------
# Tables


def _pct(x: Any, digits: int = 1) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.{digits}%}"


def _num(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def _sharpe_cell(m: dict[str, Any]) -> str:
    return (f"{_num(m.get('sharpe'))} [{_num(m.get('sharpe_ci_low'))}, "
            f"{_num(m.get('sharpe_ci_high'))}]")


def results_table(bench: BenchResult) -> str:
    head = ("| variant | kind | status | total return | CAGR | Sharpe [95% CI] | Sortino | "
            "Calmar | max DD | profit factor | win rate | trades | exposure | fees | DSR | "
            "wall s | peak MB |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in bench.results:
        m, c = r.metrics, r.cost
        if r.status != "ok":
            rows.append(f"| {_label(bench, r)} | {r.variant.kind} | {r.status} |" + " |" * 14)
            continue
        rows.append(
            f"| {_label(bench, r)} | {r.variant.kind} | ok | {_pct(m['total_return'], 2)} | "
            f"{_pct(m['cagr'])} | {_sharpe_cell(m)} | {_num(m['sortino'])} | "
            f"{_num(m['calmar'])} | {_pct(m['max_drawdown'], 2).lstrip('+')} | "
            f"{_num(m['profit_factor'])} | {_pct(m['win_rate']).lstrip('+')} | {m['trades']} | "
            f"{_pct(m['exposure']).lstrip('+')} | {_num(m['fees'], 0)} | {_num(m.get('dsr'))} | "
            f"{_num(c.get('wall_s'), 0)} | {_num(c.get('peak_rss_mb'), 0)} |")
    return "\n".join(rows)


def regime_table(bench: BenchResult) -> str:
    names = sorted({k for r in bench.results for k in r.by_regime})
    if not names:
        return "(no successful run)"
    ref = next(r for r in bench.results if r.by_regime)
    total = sum(x["candles"] for x in ref.by_regime.values())
    share = {k: ref.by_regime.get(k, {}).get("candles", 0) / total for k in names}
    head = "| variant | " + " | ".join(f"{k} ({share[k]:.0%})" for k in names) + " |"
    rows = [head, "|---|" + "---|" * len(names)]
    for r in bench.results:
        if r.by_regime:
            rows.append(f"| {_label(bench, r)} | " + " | ".join(
                _pct(r.by_regime.get(k, {}).get("return"), 2) for k in names) + " |")
    return "\n".join(rows)


def exits_table(bench: BenchResult, top: int = 4) -> str:
    """Median hold, the fee share of gross profit and the most frequent exit reasons (count,
    mean profit) per variant."""
    rows = ["| variant | median hold | fees / gross profit | exits by reason: trades (mean "
            "profit) |", "|---|---|---|---|"]
    for r in bench.results:
        if not r.exits or not r.exits.get("by_exit_reason"):
            continue
        hold = r.exits["median_hold_minutes"]
        share = r.exits.get("fee_share_of_gross")
        reasons = list(r.exits["by_exit_reason"].items())
        cells = [f"{k}: {v['trades']} ({_pct(v['mean_profit_ratio'], 2)})"
                 for k, v in reasons[:top]]
        if len(reasons) > top:
            cells.append(f"{len(reasons) - top} more")
        rows.append(f"| {_label(bench, r)} | {hold / 60:.1f} h | "
                    f"{_pct(share).lstrip('+')} | {'; '.join(cells)} |")
    return "\n".join(rows) if len(rows) > 2 else "(no trades)"


def _multi(bench: BenchResult) -> bool:
    return len(bench.cells) > 1


def cell_period(cell: str) -> str:
    """The period name of a grid cell (``period.universe.seed``); "" for a one-run bench."""
    return cell.split(".", 1)[0] if "." in cell else ""


def by_period(bench: BenchResult) -> dict[str, BenchResult]:
    """The bench split by period, in grid order: validation and test figures are never
    averaged together (a tuning decision reads the first, the report states the second)."""
    names = list(dict.fromkeys(cell_period(c) for c in bench.cells))
    return {name: dataclasses.replace(
        bench, results=[r for r in bench.results if cell_period(r.cell) == name],
        cells=[c for c in bench.cells if cell_period(c) == name]) for name in names}


def period_tables(bench: BenchResult) -> list[str]:
    """Across-cell and variant-minus-full tables, one pair per period when there are several."""
    parts = by_period(bench)
    if len(parts) <= 1:
        return [grid_table(bench), "", pairwise_table(bench)]
    out: list[str] = []
    for name, part in parts.items():
        out += [f"### Period `{name}` ({len(part.cells)} cells: "
                f"{', '.join(f'`{c}`' for c in part.cells)})", "", grid_table(part), "",
                pairwise_table(part), ""]
    return out[:-1]


def _label(bench: BenchResult, r: Any) -> str:
    return f"{r.cell} / {r.variant.name}" if _multi(bench) else r.variant.name


def _t_interval(values: list[float]) -> dict[str, float]:
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype="float64")
    nan = float("nan")
    if len(x) == 0:
        return {"n": 0, "mean": nan, "low": nan, "high": nan, "min": nan, "max": nan}
    mean = float(x.mean())
    if len(x) > 1 and x.std(ddof=1) > 0:
        half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    else:
        half = 0.0 if len(x) > 1 else nan
    return {"n": int(len(x)), "mean": mean, "low": mean - half, "high": mean + half,
            "min": float(x.min()), "max": float(x.max())}


def by_variant(bench: BenchResult) -> dict[str, dict[str, Any]]:
    """Per variant, each metric across the cells it finished in."""
    out: dict[str, dict[str, Any]] = {}
    names = list(dict.fromkeys(r.variant.name for r in bench.results))
    for name in names:
        runs = [r for r in bench.results if r.variant.name == name]
        ok = [r for r in runs if r.status == "ok"]
        out[name] = {"cells": len(runs), "ok": len(ok), **{
            k: _t_interval([r.metrics.get(k) for r in ok])
            for k in ("total_return", "sharpe", "max_drawdown", "trades", "cagr")}}
    return out


def pairwise(bench: BenchResult, reference: str = "full") -> dict[str, dict[str, Any]]:
    """Every variant minus ``reference`` on the cells where both finished (same days)."""
    ref = {r.cell: r for r in bench.results
           if r.variant.name == reference and r.status == "ok" and r.book is not None}
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r.variant.name for r in bench.results):
        if name == reference:
            continue
        cells = []
        for r in bench.results:
            if r.variant.name != name or r.status != "ok" or r.book is None or \
                    r.cell not in ref:
                continue
            a = M.daily_returns(r.book.equity)
            b = M.daily_returns(ref[r.cell].book.equity)
            both = a.index.intersection(b.index)
            if len(both) >= 3:
                cells.append((a[both].to_numpy(), b[both].to_numpy()))
        if cells:
            out[name] = M.paired_difference(cells, seed=bench.spec.seed)
    return out


def grid_table(bench: BenchResult) -> str:
    rows = ["| variant | cells ok | total return: mean [95% CI] (min .. max) | Sharpe: mean "
            "[95% CI] | max DD: mean | trades: mean |", "|---|---|---|---|---|---|"]
    for name, d in by_variant(bench).items():
        tr, sh = d["total_return"], d["sharpe"]
        rows.append(f"| {name} | {d['ok']}/{d['cells']} | {_pct(tr['mean'], 2)} "
                    f"[{_pct(tr['low'], 2)}, {_pct(tr['high'], 2)}] ({_pct(tr['min'], 2)} .. "
                    f"{_pct(tr['max'], 2)}) | {_num(sh['mean'])} [{_num(sh['low'])}, "
                    f"{_num(sh['high'])}] | {_pct(d['max_drawdown']['mean'], 2).lstrip('+')} |"
                    f" {_num(d['trades']['mean'], 1)} |")
    return "\n".join(rows)


def pairwise_table(bench: BenchResult) -> str:
    pw = pairwise(bench)
    if not pw:
        return "(no variant finished in a cell where `full` finished)"
    rows = ["| variant - full | cells | Sharpe difference [95% CI] | total return difference "
            "[95% CI] |", "|---|---|---|---|"]
    for name, d in pw.items():
        rows.append(f"| {name} | {d['cells']} | {_num(d['d_sharpe'])} [{_num(d['d_sharpe_low'])}"
                    f", {_num(d['d_sharpe_high'])}] | {_pct(d['d_return'], 2)} "
                    f"[{_pct(d['d_return_low'], 2)}, {_pct(d['d_return_high'], 2)}] |")
    return "\n".join(rows)


def _data_line(bench: BenchResult) -> str:
    s = bench.spec
    kind = ("a SYNTHETIC market (prices are not real)" if bench.info.synthetic
            else "candles with no synthetic marker (real exchange data)")
    start = pd.Timestamp(s.timerange[:8], tz="UTC") if s.timerange else None
    late = bench.info.late_pairs(start) if start is not None else {}
    joins = ("; " + ", ".join(f"{p} from {t:%Y-%m-%d}" for p, t in late.items())
             + " (their candles begin later: traded, and bought by buy-and-hold, from then)"
             if late else "")
    argv = list(bench.argv)
    periods = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--period"]
    ranges = (f"periods {', '.join(periods)}" if len(periods) > 1 else f"range {s.timerange}")
    return (f"{kind} from `{s.datadir}`; pairs {', '.join(s.pairs)}; timeframe {s.timeframe}; "
            f"{ranges} (candles opening in [start, end), UTC){joins}; fee "
            f"{s.fee:.2%} per side on entry and exit; starting wallet {s.wallet:g}")


def learning_table(bench: BenchResult) -> str:
    """One row per AdvancedLearning job that kept learning state (see bench.diagnostics)."""
    rows = []
    for r in bench.results:
        d = r.diagnostics
        if not d:
            continue
        ev = d.get("learning_events", {})

        def pair(tier: str, ev: dict = ev) -> str:
            n = ev.get(tier) or {}
            return f"{n.get('real', 0)} / {n.get('shadow', 0)}"

        halts = d.get("halts", [])
        vol = d.get("volatility") or {}
        vol_text = (f"{100 * vol['position_realised_median']:.1f}% / "
                    f"{100 * vol['position_targeted_median']:.1f}% "
                    f"(pair {vol['realised_over_forecast_median']:.2f}x)" if vol else "-")
        rows.append(f"| `{_label(bench, r)}` | {pair('bandit')} | {pair('meta')} | "
                    f"{pair('profiles')} | {pair('router')} | {d.get('shadow_unresolved', 0)} | "
                    f"{100 * d.get('fallback_share', 0):.1f}% | "
                    f"{100 * d.get('abstained_share', 0):.1f}% | {len(halts)}, "
                    f"{sum(h['days'] for h in halts):.1f} d | {vol_text} | "
                    f"{'; '.join(d.get('errors', [])) or '-'} |")
    if not rows:
        return ""
    head = ("| variant | bandit | meta | profiles | router | unresolved | fallback | abstained "
            "| halts | position vol realised / targeted | errors |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    return head + "\n" + "\n".join(rows)


def summary_text(bench: BenchResult) -> str:
    """A short block ready to paste into the README's performance section."""
    cmd = "ftlearn " + shlex.join(bench.argv) if bench.argv else "ftlearn bench"
    lines = [f"Figures from `{cmd}` run {bench.started:%Y-%m-%d} (freqtrade "
             f"{_versions()['freqtrade']}) on {_data_line(bench)}. Walk-forward: FreqAI "
             "variants train only on the days before each window they trade; nothing was "
             "tuned on this range. Sharpe from daily equity, annualized with 365 days; "
             "DSR = deflated Sharpe ratio over the variants compared.", "",
             "| variant | total return | Sharpe [95% CI] | max DD | DSR | trades |",
             "|---|---|---|---|---|---|"]
    if _multi(bench):
        return "\n".join(lines[:2] + [f"{len(bench.cells)} cells (seed x universe x period): "
                                      f"{', '.join(bench.cells)}.", ""] + period_tables(bench))
    for r in bench.results:
        if r.status == "ok":
            m = r.metrics
            lines.append(f"| {r.variant.name} | {_pct(m['total_return'], 2)} | "
                         f"{_sharpe_cell(m)} | {_pct(m['max_drawdown'], 2).lstrip('+')} | "
                         f"{_num(m.get('dsr'))} | {m['trades']} |")
        else:
            lines.append(f"| {r.variant.name} | {r.status} | | | | |")
    return "\n".join(lines)


def report_markdown(bench: BenchResult, images: list[str]) -> str:
    s = bench.spec
    out = [f"# AdvancedLearning benchmark ({bench.started:%Y-%m-%d %H:%M} UTC)", "",
           f"**Data**: {_data_line(bench)}.", "",
           f"**Config**: {', '.join(f'`{c}`' for c in s.configs)} plus a per-variant overlay "
           "(user_data_dir, wallet, pairs, FreqAI section) and the local exchange overlay; "
           f"each freqtrade variant has its own user_data_dir. Quick model settings: "
           f"{'yes (smoke run, not for conclusions)' if s.quick else 'no'}.", "",
           "**Buy-and-hold** is computed directly from the candles (equal weight, bought at the "
           "first open and sold at the last close, same fee on entry and exit), not by "
           "freqtrade. The freqtrade variants share config.json's stake rules "
           "(max_open_trades, stake_amount), so they rarely hold the whole wallet.", "",
           "**Walk-forward**: FreqAI variants train on `train_period_days` before each "
           "`backtest_period_days` window and trade only that window; no setting was tuned "
           "on the evaluated range.", "",
           "## Across cells", "", f"Cells (seed x pair universe x period): "
           f"{', '.join(f'`{c}`' for c in bench.cells)}. Per variant, each figure's mean "
           "over the cells it finished in, a 95 % t-interval of that mean and the range; "
           "then every variant minus full, paired on the same cells and days, intervals from "
           "a stratified circular block bootstrap of daily returns (arch.bootstrap). With "
           "several periods, one pair of tables per period (periods are never averaged "
           "together).", "", *period_tables(bench), "",
           "## Results", "", results_table(bench), ""]
    learning = learning_table(bench)
    if learning:
        out += ["## Learning and risk inside the runs", "", "Learning events per tier from "
                "real trades / shadow outcomes (`ftlearn stats`), shadow outcomes dropped "
                "unresolved at the end of the range, share of decisions that fell back to the "
                "rules or abstained, drawdown halts (count, days halted), and the median "
                "position volatility realised against the one targeted at entry (stake share of "
                "equity × the pair's realised / forecast annualised volatility; in brackets the "
                "median realised / forecast ratio of the pairs).", "", learning, ""]
    problems = [r for r in bench.results if r.status != "ok" or r.notes]
    if problems:
        out += ["## Status and notes", ""]
        for r in problems:
            text = "; ".join(([f"**{r.status}**: {r.reason}"] if r.status != "ok" else [])
                             + r.notes)
            out.append(f"- `{_label(bench, r)}`: {text}")
        out.append("")
    out += ["## Returns by regime", "", f"Regimes: {bench.regime_source}. Cells: compounded "
            "return over the candles of that regime (header: share of candles).", "",
            regime_table(bench), "",
            "## Trades by exit reason", "", "Median time in trade, the fee share of gross "
            "profit (fees over the pre-fee gains of the trades that gained before fees), and "
            "per exit reason the number of trades and their mean profit ratio (after fees).",
            "",
            exits_table(bench), ""]
    if images:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in images] + [""]
    out += ["## How the figures are computed", ""]
    out += [f"- **{k}**: {v}" for k, v in METRIC_DEFINITIONS.items()]
    out += ["", "## Commands", "", "```"]
    out += [f"# {_label(bench, r)}\n{shlex.join(r.command)}" for r in bench.results
            if r.command]
    out += ["```", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# Plots


def _figure(width: float = 10, height: float = 5) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _color(i: int) -> Any:
    from matplotlib import colormaps

    return colormaps["tab20"](i % 20)  # 20 distinct colours: one per variant


def plot_curves(bench: BenchResult, out: Path) -> list[str]:
    ok = [r for r in bench.results if r.status == "ok" and r.book is not None]
    if ok and _multi(bench):  # one chart per cell would be unreadable: the first cell's runs
        ok = [r for r in ok if r.cell == ok[0].cell]
    if not ok:
        return []
    paths = []
    for name, fn, ylabel in (("equity", lambda e: e / e.iloc[0], "equity / starting wallet"),
                             ("drawdown", lambda e: -M.drawdown(e), "drawdown")):
        fig = _figure()
        ax = fig.add_subplot()
        for i, r in enumerate(ok):
            eq = r.book.equity
            # Hourly points are plenty for a chart and keep the PNG light.
            eq = eq.resample("1h").last().dropna() if len(eq) > 5000 else eq
            style = "--" if r.variant.kind == "baseline" else "-"
            ax.plot(eq.index, fn(eq), style, lw=1.8 if r.variant.kind == "full" else 1.0,
                    color=_color(i), label=r.variant.name)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{name} - {ok[0].cell if _multi(bench) else bench.spec.timerange}, "
                     f"{', '.join(bench.spec.pairs)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.autofmt_xdate()
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path)
        paths.append(str(path))
    names = sorted({k for r in ok for k in r.by_regime})
    if names:
        fig = _figure(max(8, 1.6 * len(names)), 5)
        ax = fig.add_subplot()
        width = 0.8 / len(ok)
        for i, r in enumerate(ok):
            vals = [r.by_regime.get(k, {}).get("return", np.nan) for k in names]
            ax.bar(np.arange(len(names)) + i * width - 0.4 + width / 2,
                   np.asarray(vals) * 100, width, color=_color(i), label=r.variant.name)
        ax.set_xticks(np.arange(len(names)), names)
        ax.set_ylabel("compounded return in regime (%)")
        ax.set_title("returns by regime")
        ax.axhline(0, color="black", lw=0.6)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        path = out / "regimes.png"
        fig.savefig(path)
        paths.append(str(path))
    return paths


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_outputs(bench: BenchResult) -> dict[str, str]:
    """Write every output into ``bench.spec.out``; returns their paths by kind."""
    out = bench.spec.out
    out.mkdir(parents=True, exist_ok=True)
    images = plot_curves(bench, out)
    _write_atomic(out / "report.md", report_markdown(bench, images))
    _write_atomic(out / "results.json", json.dumps(to_json(bench), indent=2) + "\n")
    _write_atomic(out / "summary.md", summary_text(bench) + "\n")
    return {"report": str(out / "report.md"), "results": str(out / "results.json"),
            "summary": str(out / "summary.md"), **{Path(p).stem: p for p in images}}
