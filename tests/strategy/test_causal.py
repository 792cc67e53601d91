"""The whole per-candle pipeline of the strategy (technical, theme, sentiment, regime columns)
is causal: the row of candle t is the same whether the frames end at t or months later.

The strategy is built as freqtrade builds it, with a data provider that serves the candles (real, or synthetic)
cut at the chosen time (what a bot running at that time would have had)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from freqtrade.enums import RunMode

from learning.data.candles import load_candles
from tests.conftest import ROOT, make_strategy

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
COLUMNS = ["score_technical", "score_theme", "score_sentiment", "regime_id",
           "regime_confidence", "regime_prob_BULL_MOMENTUM", "regime_prob_CRISIS", "data_ok",
           "score_trend", "trend_daily", "vol_forecast"]


class CutDataProvider:
    def __init__(self, frames: dict, end: pd.Timestamp) -> None:
        self.frames, self.end = frames, end

    def get_pair_dataframe(self, pair: str, timeframe: str) -> pd.DataFrame:
        df = self.frames[(pair, timeframe)]
        # A candle is known once it has closed.
        step = pd.Timedelta(timeframe.replace("m", "min").replace("1d", "1D"))
        return df[df["date"] + step <= self.end].reset_index(drop=True)


@pytest.fixture(scope="module")
def frames(market_data_dir):
    start, end = pd.Timestamp("2025-06-01", tz="UTC"), pd.Timestamp("2025-08-15", tz="UTC")
    out = {}
    for pair in PAIRS:
        for tf in ("5m", "1h", "1d"):
            df = load_candles(market_data_dir, pair, tf)
            lo = start - pd.Timedelta(days={"1h": 25, "1d": 120}.get(tf, 5))
            out[(pair, tf)] = df[(df["date"] >= lo) & (df["date"] < end)].reset_index(drop=True)
    return out


def analyzed(strategy, frames, end: pd.Timestamp, pair: str) -> pd.DataFrame:
    strategy.dp = CutDataProvider(frames, end)
    df = strategy.dp.get_pair_dataframe(pair, "5m").copy()
    df = strategy.populate_indicators(df, {"pair": pair})
    return strategy.populate_exit_trend(df, {"pair": pair})


def test_every_strategy_column_at_t_is_unchanged_when_later_candles_exist(frames, tmp_path):
    full_end = pd.Timestamp("2025-08-15", tz="UTC")
    full = analyzed(make_strategy(tmp_path / "a"), frames, full_end, "ETH/USDT")
    assert full["regime_id"].iloc[-2000:].gt(0).mean() > 0.9, "regimes are known by then"
    for col in ("score_trend", "trend_daily", "vol_forecast"):
        assert full[col].iloc[-2000:].notna().all(), f"{col} is known by then"
    for cut in ("2025-07-01 13:05", "2025-07-20 00:00", "2025-08-02 07:40"):
        end = pd.Timestamp(cut, tz="UTC")
        # A fresh strategy, as a bot started at that moment would be.
        part = analyzed(make_strategy(tmp_path / cut.replace(":", "")), frames, end, "ETH/USDT")
        t = part["date"].iloc[-1]
        row_part = part.iloc[-1]
        row_full = full[full["date"] == t].iloc[0]
        for col in COLUMNS:
            a, b = float(row_part[col]), float(row_full[col])
            assert (np.isnan(a) and np.isnan(b)) or np.isclose(a, b, atol=1e-9), (cut, col, a, b)


def test_strategy_rejects_an_unknown_config_key_at_start_up(tmp_path):
    from freqtrade.exceptions import OperationalException

    from strategies.AdvancedLearning import AdvancedLearning

    config = json.loads((ROOT / "config.json").read_text())
    config["advanced_learning"]["risk"]["max_daily_los_pct"] = 0.02
    config.update({"user_data_dir": str(tmp_path), "runmode": RunMode.BACKTEST})
    with pytest.raises(OperationalException, match="max_daily_los_pct"):
        AdvancedLearning(config)


def test_plot_config_columns_exist_and_regimes_are_shaded(frames, tmp_path):
    strategy = make_strategy(tmp_path)
    df = analyzed(strategy, frames, pd.Timestamp("2025-08-15", tz="UTC"), "SOL/USDT")
    plotted = set(strategy.plot_config["main_plot"])
    for sub in strategy.plot_config["subplots"].values():
        plotted |= set(sub)
    missing = plotted - set(df.columns)
    assert not missing, f"plot_config names columns the strategy does not produce: {missing}"
    areas = strategy.plot_annotations("SOL/USDT", df["date"].iloc[0], df["date"].iloc[-1], df)
    assert areas and all(a["type"] == "area" and a["start"] < a["end"] for a in areas)
    assert {a["label"].split(" ")[0] for a in areas} <= {"BULL_MOMENTUM", "BEAR_DEFENSIVE",
                                                          "CHOPPY", "CRISIS", "THEME_DRIVEN"}
    # The shading is the regime the strategy used: the regime column it decided with.
    for a in areas:
        inside = df[(df["date"] >= a["start"]) & (df["date"] < a["end"])]
        assert (inside["regime"] == a["label"].split(" ")[0]).all()


def test_changepoint_and_its_regime_feed_are_causal(frames, tmp_path):
    from strategies.AdvancedLearning import AdvancedLearning

    def build(folder):
        config = json.loads((ROOT / "config.json").read_text())
        config.update({"user_data_dir": str(folder), "runmode": RunMode.BACKTEST})
        config.setdefault("advanced_learning", {})["changepoint"] = {"enabled": True}
        return AdvancedLearning(config)

    full = analyzed(build(tmp_path / "a"), frames, pd.Timestamp("2025-08-15", tz="UTC"),
                    "ETH/USDT")
    assert full["changepoint_prob"].iloc[-2000:].notna().all(), "BOCD is known by then"
    for cut in ("2025-07-05 09:35", "2025-08-01 00:00"):
        end = pd.Timestamp(cut, tz="UTC")
        part = analyzed(build(tmp_path / cut.replace(":", "")), frames, end, "ETH/USDT")
        row_part = part.iloc[-1]
        row_full = full[full["date"] == part["date"].iloc[-1]].iloc[0]
        for col in ("changepoint_prob", "regime_id", "regime_confidence"):
            a, b = float(row_part[col]), float(row_full[col])
            assert (np.isnan(a) and np.isnan(b)) or np.isclose(a, b, atol=1e-9), (cut, col, a, b)
