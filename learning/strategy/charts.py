"""What AdvancedLearning shows in FreqUI: ``plot_config``, ``plot_annotations`` (regime shading)
and the per-candle columns built from the risk guard's and the brain's recorded history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from freqtrade.strategy import IStrategy

#: Guard state codes charted in FreqUI (column ``guard_state``).
GUARD_CODES = {"ok": 0, "manual_halt": 1, "daily_loss_halt": 2, "max_drawdown_halt": 3,
               "crisis_cash_only": 4}


class ChartHooks(IStrategy):
    """Mixed into the strategy; reads ``_guard_history``, ``brain`` and ``timeframe_to_td``."""

    def _record_guard(self, now: datetime, equity: float) -> None:
        if not self._live:
            return  # backtests chart nothing here: populate_indicators ran before the loop
        s = self.guard.state
        blocks = self.guard.blocks(now, self.crisis(now))
        code = max((GUARD_CODES[b] for b in blocks), default=0)
        dd = 1 - equity / s.peak_equity if s.peak_equity else 0.0
        day = equity / s.day_open_equity - 1 if s.day_open_equity else 0.0
        tf_ns = int(self.timeframe_to_td().total_seconds() * 1e9)
        t = (pd.Timestamp(now).value // tf_ns) * tf_ns
        if self._guard_history and self._guard_history[-1][0] == t:
            self._guard_history.pop()
        self._guard_history.append((t, equity, dd, day, code))

    def _add_guard_columns(self, dataframe: pd.DataFrame, dates: pd.Series) -> None:
        """Chart the guard history (live: per candle; backtests: empty, filled before the loop)."""
        cols = ("guard_equity", "guard_drawdown", "guard_day_pnl", "guard_state")
        if not self._guard_history:
            for c in cols:
                dataframe[c] = np.nan
            return
        hist = pd.DataFrame(list(self._guard_history), columns=("t", *cols))
        # The snapshot taken at time t describes the candle that closed at t (opened at t - tf).
        hist["date"] = pd.to_datetime(hist["t"], utc=True) - self.timeframe_to_td()
        hist = hist.drop(columns="t").drop_duplicates("date", keep="last")
        merged = pd.DataFrame({"date": dates}).merge(hist, on="date", how="left")
        for c in cols:
            dataframe[c] = merged[c].to_numpy()

    def _add_decision_columns(self, dataframe: pd.DataFrame, dates: pd.Series, pair: str) -> None:
        """Overall score, threshold, learner and weights of the recorded decisions on this pair
        at the candle they were taken on (NaN elsewhere; backtests fill them only afterwards, in
        the report, because decisions happen inside the candle loop)."""
        cols = ["brain_overall", "brain_threshold", "brain_learner",
                *(f"w_{c}" for c in ("technical", "ai", "theme", "sentiment"))]
        rows = [d for d in self.brain.recent_decisions() if d["pair"] == pair]
        if not rows:
            for c in cols:
                dataframe[c] = np.nan
            return
        names = self.brain.meta.learner_names
        hist = pd.DataFrame({
            # A decision at time t used the candle that closed at t (opened at t - tf).
            "date": pd.to_datetime([d["time"] for d in rows], utc=True) - self.timeframe_to_td(),
            "brain_overall": [d["overall"] for d in rows],
            "brain_threshold": [d["threshold"] for d in rows],
            "brain_learner": [names.index(d["learner"]) + 1 if d["learner"] in names else 0
                              for d in rows],
            **{f"w_{c}": [d["weights"].get(c, 0.0) for d in rows]
               for c in ("technical", "ai", "theme", "sentiment")},
        }).drop_duplicates("date", keep="last")
        hist["date"] = hist["date"].astype(dates.dtype)
        merged = pd.DataFrame({"date": dates}).merge(hist, on="date", how="left")
        for c in cols:
            dataframe[c] = merged[c].to_numpy()

    @property
    def plot_config(self) -> dict[str, Any]:
        regime_colors = {"BULL_MOMENTUM": "#2ca02c", "BEAR_DEFENSIVE": "#d62728",
                         "CHOPPY": "#7f7f7f", "CRISIS": "#000000", "THEME_DRIVEN": "#9467bd"}
        subplots = self._freqai_subplot() if self.freqai_enabled else {}
        return {
            "main_plot": {"ema_fast": {"color": "#2f7ed8"}, "ema_slow": {"color": "#f45b5b"}},
            "subplots": {
                "Components": {"score_technical": {"color": "#8085e9"},
                               "score_ai": {"color": "#f7a35c"},
                               "score_theme": {"color": "#90ed7d"},
                               "score_sentiment": {"color": "#e4d354"}},
                "Decision": {"brain_overall": {"color": "#434348", "type": "scatter"},
                             "brain_threshold": {"color": "#f15c80"},
                             "brain_learner": {"color": "#2b908f", "type": "bar"}},
                "Weights": {f"w_{c}": {"color": col} for c, col in (
                    ("technical", "#8085e9"), ("ai", "#f7a35c"), ("theme", "#90ed7d"),
                    ("sentiment", "#e4d354"))},
                "Regime": {**{f"regime_prob_{r}": {"color": c}
                              for r, c in regime_colors.items()},
                           "regime_confidence": {"color": "#17becf"}},
                "Equity drawdown": {"guard_drawdown": {"color": "#e4572e"},
                                    "guard_day_pnl": {"color": "#17bebb"}},
                "Risk guard": {"guard_state": {"color": "#000000", "type": "bar"}},
                **subplots,
            },
        }

    def _freqai_subplot(self) -> dict[str, Any]:
        """The FreqAI model's own outputs: the TSA-MAE reconstruction error (an anomaly score)
        and predicted return for regressors, the flat-state P(increase) for PPOPyramiding."""
        if self._freqai_is_rl():
            return {"FreqAI": {"&-pyr_flat_increase": {"color": "#f7a35c"}}}
        return {"FreqAI": {"&-s_return": {"color": "#f7a35c"},
                           "&-anomaly": {"color": "#b10026"}}}

    def plot_annotations(self, pair: str, start_date: datetime, end_date: datetime,
                         dataframe: pd.DataFrame, **kwargs: Any) -> list[dict[str, Any]]:
        """Shade each regime segment of the visible range (FreqUI draws these areas)."""
        if dataframe is None or "regime" not in dataframe or dataframe.empty:
            return []
        colors = {"BULL_MOMENTUM": "rgba(44,160,44,0.10)", "BEAR_DEFENSIVE": "rgba(214,39,40,0.10)",
                  "CHOPPY": "rgba(127,127,127,0.10)", "CRISIS": "rgba(0,0,0,0.25)",
                  "THEME_DRIVEN": "rgba(148,103,189,0.12)"}
        dates = pd.to_datetime(dataframe["date"], utc=True)
        regime = dataframe["regime"].astype(str)
        seg = (regime != regime.shift()).cumsum()
        out = []
        for _, idx in regime.groupby(seg).groups.items():
            name = regime.loc[idx[0]]
            if name not in colors:
                continue
            out.append({"type": "area", "start": dates.loc[idx[0]].to_pydatetime(),
                        "end": (dates.loc[idx[-1]] + self.timeframe_to_td()).to_pydatetime(),
                        "label": name, "color": colors[name]})
        return out[-200:]
