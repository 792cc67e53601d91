"""What AdvancedLearning shows in FreqUI: ``plot_config``, ``plot_annotations`` (regime shading)
and the per-candle columns built from the risk guard's and the brain's recorded history."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from freqtrade.strategy import IStrategy

logger = logging.getLogger(__name__)

#: Guard state codes charted in FreqUI (column ``guard_state``).
GUARD_CODES = {"ok": 0, "manual_halt": 1, "daily_loss_halt": 2, "max_drawdown_halt": 3,
               "crisis_cash_only": 4, "changepoint_alarm": 5}


#: Per-decision chart columns: the brain's overall score, threshold, learner (1-based index into
#: the learners, 0 unknown) and sampled weights at the candle decided on, and the close of that
#: candle under ``decision_taken`` or ``decision_refused`` (markers on the price chart).
WEIGHT_COLUMNS = tuple(f"w_{c}" for c in ("technical", "ai", "theme", "sentiment"))
DECISION_COLUMNS = ("brain_overall", "brain_threshold", "brain_learner", *WEIGHT_COLUMNS,
                    "decision_taken", "decision_refused")
GUARD_COLUMNS = ("guard_equity", "guard_drawdown", "guard_day_pnl", "guard_state")
#: A backtest's chart record (its decisions and the guard per candle), which FreqUI's backtest
#: view shows: /pair_history re-runs populate_indicators in the webserver, after the run.
CHARTS_SCHEMA = 1
VIEW_RUNMODES = ("webserver", "plot")


def charts_name(timerange: str) -> str:
    """State file of the backtest run over ``timerange`` (FreqUI asks by the run's timerange)."""
    return "charts-" + ("".join(c if c.isalnum() else "_" for c in timerange) or "all")


def _decision_row(d: dict[str, Any], names: tuple[str, ...]) -> list[Any]:
    return [d["time"], d["overall"], d["threshold"],
            names.index(d["learner"]) + 1 if d["learner"] in names else 0,
            *(d["weights"].get(c[2:], 0.0) for c in WEIGHT_COLUMNS), bool(d["take"])]


class ChartHooks(IStrategy):
    """Mixed into the strategy; reads ``_guard_history``, ``brain`` and ``timeframe_to_td``."""

    def _init_charts(self) -> None:
        self._run_decisions: dict[str, list[list[Any]]] = {}  # backtests: pair -> rows
        self._viewed: dict[str, Any] | None = None  # webserver: the viewed run's record

    def _candle_ns(self, now: datetime) -> int:
        """The open time (ns) of the newest candle closed at ``now``: what a decision or a guard
        snapshot at ``now`` used. Live times fall inside a candle (12:03:27 -> 11:55)."""
        tf_ns = int(self.timeframe_to_td().total_seconds()) * 1_000_000_000
        ns = int(now.timestamp()) * 1_000_000_000 + now.microsecond * 1000
        return (ns // tf_ns) * tf_ns - tf_ns

    def _record_guard(self, now: datetime, equity: float) -> None:
        if not (self._live or self._persist):
            return  # hyperopt: nobody looks
        s = self.guard.state
        blocks = self.guard.blocks(now, **self.alarms(now))
        code = max((GUARD_CODES[b] for b in blocks), default=0)
        dd = 1 - equity / s.peak_equity if s.peak_equity else 0.0
        day = equity / s.day_open_equity - 1 if s.day_open_equity else 0.0
        t = self._candle_ns(now)
        if self._guard_history and self._guard_history[-1][0] == t:
            self._guard_history.pop()
        self._guard_history.append((t, equity, dd, day, code))

    def _chart_decision(self, pair: str, decision: dict[str, Any]) -> None:
        """Show a decision at once: live in the cached analyzed frame FreqUI reads
        (/pair_candles; it would otherwise appear only at the next candle), in a backtest in
        the run's chart record."""
        try:
            row = _decision_row(decision, self.brain.meta.learner_names)
            if not self._live:
                if self._persist:
                    self._run_decisions.setdefault(pair, []).append(row)
                return
            df, _ = self.dp.get_analyzed_dataframe(pair, self.timeframe)
            if df is None or df.empty or "brain_overall" not in df:
                return
            date = pd.Timestamp(self._candle_ns(datetime.fromisoformat(decision["time"])),
                                tz="UTC")
            hit = df.index[pd.to_datetime(df["date"], utc=True) == date]
            if len(hit):
                i = hit[-1]
                for col, value in zip(DECISION_COLUMNS[:7], row[1:8]):
                    df.at[i, col] = value
                price = df.at[i, "close"]
                df.at[i, "decision_taken"] = price if row[8] else np.nan
                df.at[i, "decision_refused"] = np.nan if row[8] else price
        except Exception as err:  # a chart never stops trading
            self._log_once("chart-decision", "AdvancedLearning: decision not charted (%s)", err)

    def _save_charts(self) -> None:
        """Write a backtest's chart record (see CHARTS_SCHEMA)."""
        timerange = self.config.get("timerange")
        if self._live or not self._persist or not timerange or self._namespace != "backtest":
            return
        g = list(self._guard_history)
        digits = (2, 6, 6, 0)  # equity in quote currency, drawdown and day P&L ratios, code
        data = {"timeframe": self.timeframe, "timerange": timerange,
                "guard": {"t": [r[0] for r in g],
                          **{c: [round(r[i + 1], digits[i]) for r in g]
                             for i, c in enumerate(GUARD_COLUMNS)}},
                "decisions": self._run_decisions}
        try:
            self.store.save_json(charts_name(timerange), data, schema=CHARTS_SCHEMA,
                                 meta={"runmode": self._namespace})
        except Exception as err:
            logger.error("AdvancedLearning: could not save the backtest's chart record: %s", err)

    def _viewed_run(self) -> dict[str, Any] | None:
        """FreqUI's backtest view (webserver) and plot-dataframe: the chart record of the
        backtest over the requested timerange, read from the backtest state folder."""
        runmode = getattr(self.config.get("runmode"), "value", self.config.get("runmode"))
        timerange = self.config.get("timerange")
        if runmode not in VIEW_RUNMODES or not timerange:
            return None
        if self._viewed is None:
            from learning.core.store import StateStore, state_root

            store = StateStore(state_root(self.config.get("user_data_dir", "user_data"),
                                          self.learning.state_dir, self.learning.identifier,
                                          "backtest"))
            data = store.load_json(charts_name(timerange), schema=CHARTS_SCHEMA) \
                if store.path(charts_name(timerange)).exists() else None
            self._viewed = data if data and data.get("timeframe") == self.timeframe else {}
            if not self._viewed:
                logger.info("AdvancedLearning: no backtest chart record for %s in %s; decision "
                            "and guard columns stay empty", timerange, store.root)
        return self._viewed or None

    def _add_guard_columns(self, dataframe: pd.DataFrame, dates: pd.Series) -> None:
        """Chart the guard history (live: per candle; a viewed backtest: its record)."""
        viewed = self._viewed_run()
        if viewed is not None:
            hist = pd.DataFrame(viewed["guard"])
        elif self._guard_history:
            hist = pd.DataFrame(list(self._guard_history), columns=("t", *GUARD_COLUMNS))
        else:
            for c in GUARD_COLUMNS:
                dataframe[c] = np.nan
            return
        # Each snapshot is keyed by the open time of the candle it describes.
        hist["date"] = pd.to_datetime(hist["t"], utc=True).astype(dates.dtype)
        hist = hist.drop(columns="t").drop_duplicates("date", keep="last")
        merged = pd.DataFrame({"date": dates}).merge(hist, on="date", how="left")
        for c in GUARD_COLUMNS:
            dataframe[c] = merged[c].to_numpy()

    def _add_decision_columns(self, dataframe: pd.DataFrame, dates: pd.Series, pair: str) -> None:
        """The recorded decisions on this pair at the candle each was decided on (NaN
        elsewhere): live from the brain's log, in FreqUI's backtest view from the run's record.
        A backtest itself charts none here: its decisions come in the candle loop, later."""
        viewed = self._viewed_run()
        if viewed is not None:
            rows = viewed["decisions"].get(pair, [])
        else:
            names = self.brain.meta.learner_names
            rows = [_decision_row(d, names) for d in self.brain.recent_decisions()
                    if d["pair"] == pair]
        if not rows:
            for c in DECISION_COLUMNS:
                dataframe[c] = np.nan
            return
        hist = pd.DataFrame(rows, columns=("time", *DECISION_COLUMNS[:7], "take"))
        tf_ns = int(self.timeframe_to_td().total_seconds()) * 1_000_000_000
        ns = pd.to_datetime(hist["time"], utc=True).dt.as_unit("ns").astype("int64")
        hist["date"] = pd.to_datetime((ns // tf_ns) * tf_ns - tf_ns, utc=True).astype(
            dates.dtype)
        hist = hist.drop(columns="time").drop_duplicates("date", keep="last")
        merged = pd.DataFrame({"date": dates}).merge(hist, on="date", how="left")
        for c in DECISION_COLUMNS[:7]:
            dataframe[c] = merged[c].to_numpy(dtype="float64")
        take = merged["take"].to_numpy()
        close = dataframe["close"].to_numpy(dtype="float64")
        dataframe["decision_taken"] = np.where(take == True, close, np.nan)  # noqa: E712
        dataframe["decision_refused"] = np.where(take == False, close, np.nan)  # noqa: E712

    @property
    def plot_config(self) -> dict[str, Any]:
        regime_colors = {"BULL_MOMENTUM": "#2ca02c", "BEAR_DEFENSIVE": "#d62728",
                         "CHOPPY": "#7f7f7f", "CRISIS": "#000000", "THEME_DRIVEN": "#9467bd"}
        subplots = self._freqai_subplot() if self.freqai_enabled else {}
        return {
            "main_plot": {"ema_fast": {"color": "#2f7ed8"}, "ema_slow": {"color": "#f45b5b"},
                          # Each decision the brain took (green) or refused (red), at the close
                          # of the candle it decided on; the trades themselves are freqtrade's.
                          "decision_taken": {"color": "#2ca02c", "type": "scatter"},
                          "decision_refused": {"color": "#d62728", "type": "scatter"}},
            "subplots": {
                "Components": {"score_technical": {"color": "#8085e9"},
                               "score_ai": {"color": "#f7a35c"},
                               "score_theme": {"color": "#90ed7d"},
                               "score_sentiment": {"color": "#e4d354"}},
                "Decision": {"brain_overall": {"color": "#434348", "type": "scatter"},
                             "brain_threshold": {"color": "#f15c80"},
                             "brain_learner": {"color": "#2b908f", "type": "bar"},
                             # 1 where the score's exit would end a SCALP trade (custom_exit)
                             "score_exit": {"color": "#d62728", "type": "bar"}},
                "Weights": {f"w_{c}": {"color": col} for c, col in (
                    ("technical", "#8085e9"), ("ai", "#f7a35c"), ("theme", "#90ed7d"),
                    ("sentiment", "#e4d354"))},
                "Regime": {**{f"regime_prob_{r}": {"color": c}
                              for r, c in regime_colors.items()},
                           "regime_confidence": {"color": "#17becf"},
                           # 1 where the regime used (the shading) is not the most probable one
                           "regime_held": {"color": "#bcbd22", "type": "bar"}},
                "Equity drawdown": {"guard_drawdown": {"color": "#e4572e"},
                                    "guard_day_pnl": {"color": "#17bebb"}},
                "Risk guard": {"guard_state": {"color": "#000000", "type": "bar"}},
                # BOCD on the market proxy: P(changepoint within the window), NaN when off
                "Changepoint": {"changepoint_prob": {"color": "#d62728"}},
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
        """Shade each segment of the regime the strategy used (FreqUI draws these areas).

        The used regime is the detector's after its minimum dwell and switching margin, so for
        a few candles after a change it can differ from the most probable regime in the Regime
        subplot; such a segment says so (and ``regime_held`` is 1 there)."""
        if dataframe is None or "regime" not in dataframe or dataframe.empty:
            return []
        colors = {"BULL_MOMENTUM": "rgba(44,160,44,0.10)", "BEAR_DEFENSIVE": "rgba(214,39,40,0.10)",
                  "CHOPPY": "rgba(127,127,127,0.10)", "CRISIS": "rgba(0,0,0,0.25)",
                  "THEME_DRIVEN": "rgba(148,103,189,0.12)"}
        dates = pd.to_datetime(dataframe["date"], utc=True)
        regime = dataframe["regime"].astype(str)
        likely = self._most_probable(dataframe)
        held = (likely != regime) & likely.notna()
        seg = ((regime != regime.shift()) | (held != held.shift())).cumsum()
        dwell = self.learning.regime.detector.min_dwell
        out = []
        for _, idx in regime.groupby(seg).groups.items():
            name = regime.loc[idx[0]]
            if name not in colors:
                continue
            label = f"{name} (regime the strategy used)"
            if held.loc[idx[0]]:
                label = (f"{name} (regime the strategy used, held by the {dwell}-candle minimum "
                         f"dwell; most probable: {likely.loc[idx].mode().iloc[0]})")
            out.append({"type": "area", "start": dates.loc[idx[0]].to_pydatetime(),
                        "end": (dates.loc[idx[-1]] + self.timeframe_to_td()).to_pydatetime(),
                        "label": label, "color": colors[name]})
        return out[-200:]

    @staticmethod
    def _most_probable(dataframe: pd.DataFrame) -> pd.Series:
        """The regime with the highest probability per candle (None while all are 0)."""
        cols = [c for c in dataframe.columns if c.startswith("regime_prob_")]
        if not cols:
            return pd.Series(None, index=dataframe.index, dtype=object)
        probs = dataframe[cols].fillna(0.0)
        best = probs.idxmax(axis=1).str.removeprefix("regime_prob_")
        return best.where(probs.max(axis=1) > 0)
