"""What FreqUI charts: live decisions at the candle they were decided on (also before the next
candle is analysed), a backtest's decisions and guard snapshots in FreqUI's backtest view, and
the regime shading."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from freqtrade.enums import RunMode

from learning.core.regimes import REGIME_IDS, Regime
from strategies.AdvancedLearning import AdvancedLearning
from tests.conftest import ROOT
from tests.strategy.test_hooks import FrameProvider, market_frames

PAIR = "ETH/USDT"
STEP = timedelta(minutes=5)


class AnalyzedProvider(FrameProvider):
    """Also serves the analyzed frame as freqtrade's DataProvider does live (the object)."""

    analyzed: dict = {}

    def get_analyzed_dataframe(self, pair, timeframe):
        return self.analyzed[pair], None


def build(tmp_path: Path, runmode: RunMode, timerange: str | None = None):
    config = json.loads((ROOT / "config.json").read_text())
    config.update({"user_data_dir": str(tmp_path), "runmode": runmode})
    if timerange:
        config["timerange"] = timerange
    return AdvancedLearning(config)


def analyze(strategy, frames):
    return strategy.populate_indicators(frames[(PAIR, "5m")].copy(), {"pair": PAIR})


def test_live_decision_at_wall_clock_time_shows_at_the_candle_it_decided_on(tmp_path):
    frames = market_frames(3000, seed=5)
    s = build(tmp_path, RunMode.DRY_RUN)
    s.dp = AnalyzedProvider(frames)
    df = analyze(s, frames)
    s.dp.analyzed = {PAIR: df}
    last_open = df["date"].iloc[-1]
    now = (last_open + STEP + timedelta(minutes=3, seconds=27)).to_pydatetime()  # mid-candle

    decision = s.decide_entry(PAIR, now, None)

    row = df[df["date"] == last_open].iloc[0]  # the newest closed candle at `now`
    assert row["brain_overall"] == decision.overall
    assert row["brain_threshold"] == decision.threshold
    marker = "decision_taken" if decision.take else "decision_refused"
    assert row[marker] == row["close"] and np.isnan(row[{"decision_taken": "decision_refused",
                                                         "decision_refused": "decision_taken"}[
                                                            marker]])
    # The next analysis (next candle) keeps it there, from the brain's log.
    again = analyze(s, frames)
    assert again.loc[again["date"] == last_open, "brain_overall"].iloc[0] == decision.overall
    assert again["brain_overall"].notna().sum() == 1


def test_backtest_decisions_and_guard_fill_frequi_backtest_view(tmp_path):
    frames = market_frames(3000, seed=6)
    timerange = "20250108-20250111"
    run = build(tmp_path, RunMode.BACKTEST, timerange)
    run.dp = FrameProvider(frames)
    df = analyze(run, frames)
    times = [t.to_pydatetime() + STEP for t in df["date"].iloc[-40:-30]]
    decisions = []
    for i, now in enumerate(times):
        run.guard.observe(now, 10_000.0 - 10 * i)
        run._record_guard(now, 10_000.0 - 10 * i)
        decisions.append(run.decide_entry(PAIR, now, None))
    run._save_charts()
    assert all(np.isnan(df[c]).all() for c in ("brain_overall", "guard_drawdown")), \
        "a backtest's own analysis runs before its candle loop"

    view = build(tmp_path, RunMode.WEBSERVER, timerange)  # FreqUI: /pair_history
    view.dp = FrameProvider(frames)
    shown = analyze(view, frames)

    rows = shown[shown["date"].isin([t - STEP for t in times])]
    assert list(rows["brain_overall"]) == [d.overall for d in decisions]
    assert rows["guard_drawdown"].notna().all() and rows["guard_drawdown"].iloc[-1] > 0
    taken = rows["decision_taken"].notna().to_numpy()
    assert list(taken) == [d.take for d in decisions]
    assert (rows["decision_taken"].fillna(rows["decision_refused"]) == rows["close"]).all()
    assert shown["brain_overall"].notna().sum() == len(times)
    # Another timerange is another run: nothing to show.
    other = build(tmp_path, RunMode.WEBSERVER, "20250101-20250111")
    other.dp = FrameProvider(frames)
    assert analyze(other, frames)["brain_overall"].isna().all()
    assert not list((tmp_path / "learning/default/other").glob("*")), "a view writes nothing"
    pd.testing.assert_series_equal(shown["score_technical"], df["score_technical"])


def test_entry_candidates_with_no_learner_able_to_pass_or_crisis_are_not_marked(tmp_path):
    s = build(tmp_path, RunMode.BACKTEST)
    chop, crisis = REGIME_IDS[Regime.CHOPPY], REGIME_IDS[Regime.CRISIS]
    df = pd.DataFrame({"score_technical": [-1.0, 0.5, 0.5], "score_ai": np.nan,
                       "score_theme": [-1.0, 0.0, 0.0], "score_sentiment": [0.32, 0.0, 0.0],
                       "score_trend": np.nan, "regime_id": [chop, chop, crisis],
                       "data_ok": True})
    out = s.populate_entry_trend(df, {"pair": PAIR})
    assert list(out["enter_long"].fillna(0)) == [0, 1, 0]


def test_regime_shading_with_the_dwell_rule_holding_says_so(tmp_path):
    from learning.core.regimes import PROB_COLUMNS

    s = build(tmp_path, RunMode.BACKTEST)
    n = 6
    df = pd.DataFrame({"date": pd.date_range("2025-01-01", periods=n, freq="5min", tz="UTC"),
                       "regime": ["CHOPPY"] * 2 + ["BEAR_DEFENSIVE"] * 4})
    for col in PROB_COLUMNS:
        df[col] = 0.0
    df.loc[:1, "regime_prob_CHOPPY"] = 0.9
    df.loc[2:3, "regime_prob_BEAR_DEFENSIVE"] = 0.8
    df.loc[4:, ["regime_prob_BEAR_DEFENSIVE", "regime_prob_CHOPPY"]] = (0.08, 0.89)  # held

    areas = s.plot_annotations(PAIR, df["date"].iloc[0], df["date"].iloc[-1], df)

    assert [a["label"].split(" ")[0] for a in areas] == ["CHOPPY", "BEAR_DEFENSIVE",
                                                         "BEAR_DEFENSIVE"]
    assert all("regime the strategy used" in a["label"] for a in areas)
    assert "held by the 6-candle minimum dwell; most probable: CHOPPY" in areas[2]["label"]
    assert areas[2]["start"] == df["date"].iloc[4] and "held" not in areas[1]["label"]
    assert "regime_held" in s.plot_config["subplots"]["Regime"]
