"""``ftlearn report``: an HTML page with PNG plots of what the learning tiers did.

From the saved state (decision log, outcomes) and, optionally, a freqtrade backtest result and
the candle folder: component weights over time, the regime timeline over BTC's price (the
detector re-run causally on the data, exactly as the strategy runs it), and performance by
regime and by learner.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from learning.brain.decision import COMPONENTS

REGIME_COLORS = {"BULL_MOMENTUM": "#2ca02c", "BEAR_DEFENSIVE": "#d62728", "CHOPPY": "#7f7f7f",
                 "CRISIS": "#000000", "THEME_DRIVEN": "#9467bd", "UNKNOWN": "#ffffff"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_weights(decisions: list[dict[str, Any]], path: Path) -> Path | None:
    rows = [d for d in decisions if d.get("mode") == "learned" and d.get("weights")]
    if not rows:
        return None
    plt = _plt()
    df = pd.DataFrame({"time": pd.to_datetime([d["time"] for d in rows], utc=True),
                       **{c: [d["weights"].get(c, np.nan) for d in rows] for c in COMPONENTS}})
    fig, ax = plt.subplots(figsize=(10, 4))
    for c in COMPONENTS:
        if df[c].notna().any():
            ax.plot(df["time"], df[c].rolling(20, min_periods=1).mean(), label=c)
    ax.set_title("Sampled component weights per decision (rolling mean of 20)")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_regimes(btc: pd.DataFrame, regimes: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(btc["date"], btc["close"], color="#1f77b4", lw=0.8)
    seg = (regimes["regime"] != regimes["regime"].shift()).cumsum()
    for _, part in regimes.groupby(seg):
        name = part["regime"].iloc[0]
        ax.axvspan(part["date"].iloc[0], part["date"].iloc[-1], alpha=0.25 if name != "CRISIS"
                   else 0.5, color=REGIME_COLORS.get(name, "#ffffff"), lw=0)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.4) for c in REGIME_COLORS.values()]
    ax.legend(handles, REGIME_COLORS, fontsize=7, loc="upper left")
    ax.set_title("Filtered regime over BTC price")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_performance(outcomes: list[dict[str, Any]], key: str, path: Path) -> Path | None:
    if not outcomes:
        return None
    plt = _plt()
    df = pd.DataFrame(outcomes)
    df[key] = df[key].fillna("unattributed")
    g = df.groupby(key)["profit_ratio"].agg(["count", "mean", "sum"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(g.index.astype(str), g["sum"], color="#4c72b0")
    for i, (n, m) in enumerate(zip(g["count"], g["mean"])):
        ax.annotate(f"n={n}\nmean {m:+.2%}", (i, 0), ha="center", va="bottom", fontsize=7)
    ax.set_title(f"Sum of trade profit ratios by {key}")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def component_importance(decisions: list[dict[str, Any]]) -> pd.DataFrame | None:
    """Per regime (rows) and component (columns): the mean |weight × score| of the decisions
    there, an exact attribution of the weighted score (decisions without contributions, from
    before they were recorded, are left out); a column ``decisions`` counts them."""
    rows = [(d.get("regime", "UNKNOWN"), d["contributions"]) for d in decisions
            if d.get("contributions")]
    if not rows:
        return None
    df = pd.DataFrame([{"regime": r, **{c: abs(v) for c, v in contrib.items()}}
                       for r, contrib in rows])
    cols = [c for c in COMPONENTS if c in df]
    out = df.groupby("regime")[cols].mean()
    out["decisions"] = df.groupby("regime").size()
    return out


def shap_importance(models_dir: Path, regimes: pd.DataFrame | None,
                    period_days: float = 7.0, top: int = 10) -> pd.DataFrame | None:
    """Per regime: the mean SHAP share of each feature over the FreqAI windows that traded in
    it (``LightGBMConformal`` writes the shares into each window's ``*_metadata.json``). A
    window's regime is the most frequent one over the ``period_days`` after its training end
    (the timestamp in the file name); without regimes every window counts as ALL."""
    import re

    rows = []
    for path in sorted(Path(models_dir).rglob("*_metadata.json")):
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        shares = (meta.get("shap") or {}).get("shares")
        stamp = re.search(r"_(\d{9,11})_metadata\.json$", path.name)
        if not shares or not stamp:
            continue
        start = pd.Timestamp(int(stamp.group(1)), unit="s", tz="UTC")
        regime = "ALL"
        if regimes is not None and len(regimes):
            dates = pd.to_datetime(regimes["date"], utc=True)
            span = regimes.loc[(dates >= start) & (dates < start + pd.Timedelta(days=period_days)),
                               "regime"]
            regime = str(span.mode().iloc[0]) if len(span) else "UNKNOWN"
        rows.append({"regime": regime, **shares})
    if not rows:
        return None
    df = pd.DataFrame(rows).fillna(0.0)
    mean = df.groupby("regime").mean()
    keep = mean.mean(axis=0).sort_values(ascending=False).index[:top]
    out = mean[keep]
    out["windows"] = df.groupby("regime").size()
    return out


def write_report(out_dir: Path, stats: dict[str, Any], decisions: list[dict[str, Any]],
                 outcomes: list[dict[str, Any]], btc: pd.DataFrame | None,
                 regimes: pd.DataFrame | None, backtest: dict[str, Any] | None,
                 models_dir: Path | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    images = [plot_weights(decisions, out_dir / "weights.png"),
              plot_regimes(btc, regimes, out_dir / "regimes.png")
              if btc is not None and regimes is not None else None,
              plot_performance(outcomes, "regime", out_dir / "by_regime.png"),
              plot_performance(outcomes, "learner", out_dir / "by_learner.png")]
    parts = ["<html><head><meta charset='utf-8'><title>AdvancedLearning report</title></head>"
             "<body style='font-family:sans-serif;max-width:1100px'>",
             "<h1>AdvancedLearning report</h1>"]
    if backtest:
        parts.append("<h2>Backtest</h2><pre>" + html.escape(json.dumps(backtest, indent=1,
                                                                       default=str)) + "</pre>")
    for img in images:
        if img is not None:
            parts.append(f"<p><img src='{img.name}' style='max-width:100%'></p>")
    importance = component_importance(decisions)
    if importance is not None:
        parts.append("<h2>Per-regime component importance</h2><p>Mean |weight × score| of each "
                     "component in the decisions taken in each regime (the weighted score is "
                     "their exact sum).</p>" + importance.round(4).to_html())
    shap = shap_importance(models_dir, regimes) if models_dir is not None else None
    if shap is not None:
        parts.append("<h2>Per-regime feature importance (SHAP)</h2><p>Mean share of |SHAP| of "
                     "the FreqAI model's features for the predicted return, over the training "
                     "windows that traded in each regime (LightGBMConformal).</p>"
                     + shap.round(4).to_html())
    b = stats.get("circuit_breakers", {})
    parts.append(f"<h2>Circuit breakers</h2><pre>{html.escape(json.dumps(b, indent=1))}</pre>")
    parts.append("<h2>Learners</h2><pre>" + html.escape(json.dumps(
        stats.get("meta", {}).get("learners", {}), indent=1, default=str)) + "</pre>")
    parts.append("<h2>Performance by regime</h2><pre>" + html.escape(json.dumps(
        stats.get("regime_performance", {}), indent=1)) + "</pre></body></html>")
    page = out_dir / "report.html"
    page.write_text("\n".join(parts))
    return page
