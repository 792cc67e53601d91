"""The synthetic market: determinism, candle validity, designed regime statistics, files, CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learning.brain.regime import Regime
from learning.commands import data as data_cmd
from learning.core.config import parse_section
from learning.core.errors import ConfigError, DataError
from learning.data.candles import OHLCV, bad_row_mask, check_candles, list_pairs, load_candles
from learning.data.synth import (
    MARKER_FILE,
    REGIMES_FILE,
    SynthConfig,
    generate_market,
    load_regimes,
    read_marker,
    resample_candles,
    write_market,
)
from tests.conftest import make_ohlcv

SEEDS = (0, 1, 2)
ALTS = ["ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT"]


@pytest.fixture(scope="module")
def markets():
    """Three default (180-day, 5-pair) markets; the statistics must hold for each."""
    return [generate_market(SynthConfig(seed=s)) for s in SEEDS]


@pytest.fixture(scope="module")
def small():
    return generate_market(SynthConfig(days=20, seed=7))


def _logret(df: pd.DataFrame) -> pd.Series:
    return np.log(df["close"]).diff()


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    data_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


# ---------------------------------------------------------------------------------------------
# Determinism


def test_generate_market_with_same_seed_identical_frames():
    a, b = generate_market(SynthConfig(days=10, seed=5)), generate_market(SynthConfig(days=10,
                                                                                       seed=5))
    for pair in a.candles:
        pd.testing.assert_frame_equal(a.candles[pair], b.candles[pair])
    pd.testing.assert_frame_equal(a.regimes, b.regimes)
    pd.testing.assert_frame_equal(a.crashes, b.crashes)


def test_generate_market_with_different_seed_different_prices():
    a, b = generate_market(SynthConfig(days=10, seed=5)), generate_market(SynthConfig(days=10,
                                                                                       seed=6))
    for pair in a.candles:
        assert not np.allclose(a.candles[pair]["close"], b.candles[pair]["close"])


def test_generate_market_with_fewer_days_is_prefix_up_to_last_segment(small):
    longer = generate_market(SynthConfig(days=40, seed=7))
    last = small.regimes["segment"].iloc[-1]
    cut = int(np.argmax(small.regimes["segment"].to_numpy() == last))
    assert cut > 0
    for pair in small.candles:
        pd.testing.assert_frame_equal(small.candles[pair].iloc[:cut],
                                      longer.candles[pair].iloc[:cut])
    pd.testing.assert_frame_equal(small.regimes.iloc[:cut], longer.regimes.iloc[:cut])


def test_generate_market_with_pair_dropped_other_pairs_unchanged(small):
    fewer = generate_market(SynthConfig(days=20, seed=7, pairs=("BTC/USDT", "SOL/USDT",
                                                                "XRP/USDT")))
    for pair in ("BTC/USDT", "SOL/USDT"):
        pd.testing.assert_frame_equal(fewer.candles[pair], small.candles[pair])


# ---------------------------------------------------------------------------------------------
# Candle validity


def _assert_valid_candles(market) -> None:
    n = len(market.regimes)
    for df in market.candles.values():
        assert list(df.columns) == OHLCV
        assert str(df["date"].dt.tz) == "UTC"
        assert all(df[c].dtype == np.float64 for c in OHLCV[1:])
        assert len(df) == n and (df["date"].diff().dropna() == pd.Timedelta("5min")).all()
        assert not bad_row_mask(df).any()
        np.testing.assert_array_equal(df["open"].to_numpy()[1:], df["close"].to_numpy()[:-1])
        assert (df["volume"] > 0).all() and (df["low"] > 0).all()


def test_candles_of_default_market_consistent_ohlc_and_positive_volume(markets):
    for market in markets:
        _assert_valid_candles(market)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**40), days=st.integers(1, 3))
def test_candles_with_any_seed_and_short_length_consistent(seed, days):
    market = generate_market(SynthConfig(days=days, seed=seed))
    _assert_valid_candles(market)
    assert set(market.regimes["regime"]) <= {r.value for r in Regime if r != Regime.UNKNOWN}


def test_candles_price_levels_near_configured_start(small):
    starts = {p: df["open"].iloc[0] for p, df in small.candles.items()}
    assert starts == {"BTC/USDT": 60000.0, "ETH/USDT": 3000.0, "SOL/USDT": 150.0,
                      "BNB/USDT": 600.0, "XRP/USDT": 2.0}


# ---------------------------------------------------------------------------------------------
# Designed statistics


def test_alt_returns_correlated_with_btc_above_0_3(markets):
    for market in markets:
        btc = _logret(market.candles["BTC/USDT"])
        for pair in ALTS:
            assert btc.corr(_logret(market.candles[pair])) > 0.3, pair


def _by_regime(market) -> pd.DataFrame:
    return pd.DataFrame({"r": _logret(market.candles["BTC/USDT"]),
                         "regime": market.regimes["regime"]}).dropna()


def test_regime_crisis_realized_vol_well_above_bull(markets):
    for market in markets:
        vol = _by_regime(market).groupby("regime")["r"].std()
        assert vol[Regime.CRISIS.value] > 1.8 * vol[Regime.BULL_MOMENTUM.value]


def test_regime_bull_drift_above_bear_drift(markets):
    # Pooled: one market may hold only a week of BEAR, whose mean return is noise of ~1 %/day.
    pooled = pd.concat([_by_regime(m) for m in markets])
    per_day = pooled.groupby("regime")["r"].mean() * 288
    assert per_day[Regime.BULL_MOMENTUM.value] > 0.008
    assert per_day[Regime.BEAR_DEFENSIVE.value] < -0.004
    for market in markets:
        per_day = _by_regime(market).groupby("regime")["r"].mean() * 288
        assert per_day[Regime.BULL_MOMENTUM.value] > per_day[Regime.BEAR_DEFENSIVE.value]


def test_regime_theme_dispersion_above_choppy(markets):
    for market in markets:
        hourly = pd.DataFrame({p: _logret(market.candles[p]) for p in ALTS}).fillna(0.0)
        hourly = hourly.groupby(np.arange(len(hourly)) // 12).sum()
        regime = market.regimes["regime"].to_numpy()[::12]
        disp = hourly.std(axis=1).groupby(regime).mean()
        assert disp[Regime.THEME_DRIVEN.value] > 1.4 * disp[Regime.CHOPPY.value]


def test_regime_choppy_mean_reverts_unlike_bull(markets):
    # Variance ratio of 1-day to 5m returns inside segments: < 1 for an OU, ~1 for a trend + noise.
    for market in markets:
        df = _by_regime(market).assign(seg=market.regimes["segment"])
        ratios = {}
        for name in (Regime.CHOPPY.value, Regime.BULL_MOMENTUM.value):
            sub = df[df["regime"] == name]
            daily = sub.groupby(["seg", np.arange(len(sub)) // 288])["r"].agg(["sum", "size"])
            daily = daily[daily["size"] == 288]["sum"]
            ratios[name] = daily.var() / (288 * sub["r"].var())
        assert ratios[Regime.CHOPPY.value] < 0.7 * ratios[Regime.BULL_MOMENTUM.value]


def test_abs_returns_autocorrelation_positive_at_small_lags(markets):
    for market in markets:
        a = _logret(market.candles["BTC/USDT"]).abs().dropna()
        for lag in (1, 3, 12):
            assert a.autocorr(lag) > 0.15, lag
        # Clustering in size, not in sign (crash windows excluded: a crash is momentum by design).
        r = _logret(market.candles["BTC/USDT"]).where(market.regimes["crash"] == -1)
        assert abs(r.autocorr(1)) < 0.04


def test_volume_rises_with_abs_return(markets):
    df = markets[0].candles["ETH/USDT"]
    assert (df["volume"] * df["close"]).corr(_logret(df).abs(), method="spearman") > 0.2


def test_crashes_drop_by_intended_depth_within_window(markets):
    cfg = SynthConfig()
    seen = 0
    for market in markets:
        btc = market.candles["BTC/USDT"].set_index("date")
        for crash in market.crashes[market.crashes["complete"]].itertuples():
            seen += 1
            assert cfg.crash_depth[0] <= crash.depth <= cfg.crash_depth[1]
            assert cfg.crash_hours[0] - 0.1 <= crash.hours <= cfg.crash_hours[1] + 0.1
            window = btc.loc[crash.start:crash.end]
            drop = 1 - window["close"].iloc[-1] / window["open"].iloc[0]
            assert drop == pytest.approx(crash.depth, abs=1e-4)
            vol_in = _logret(window.reset_index()).std()
            assert vol_in > 2 * _by_regime(market).query("regime == 'BULL_MOMENTUM'")["r"].std()
            marked = market.regimes.set_index("date").loc[crash.start:crash.end]
            assert (marked["crash"] == crash.episode).all()
            assert (marked["regime"] == Regime.CRISIS.value).all()
    assert seen >= 3


def test_every_regime_appears_in_180_day_market(markets):
    wanted = {r.value for r in Regime if r != Regime.UNKNOWN}
    for market in markets:
        assert set(market.regimes["regime"]) == wanted


def test_regime_segments_last_at_least_min_dwell(markets):
    cfg = SynthConfig()
    for market in markets:
        segs = market.regimes.groupby("segment").agg(regime=("regime", "first"),
                                                     steps=("date", "size"))
        for seg in segs.iloc[:-1].itertuples():  # the last one is cut by the market's end
            spec = {"BULL_MOMENTUM": cfg.bull, "BEAR_DEFENSIVE": cfg.bear, "CHOPPY": cfg.choppy,
                    "CRISIS": cfg.crisis, "THEME_DRIVEN": cfg.theme}[seg.regime]
            assert seg.steps >= spec.min_hours * 12 - 1
        assert (segs["regime"].iloc[1:].to_numpy() != segs["regime"].iloc[:-1].to_numpy()).all()


def test_theme_segments_name_their_leading_alts(markets):
    regimes = markets[0].regimes
    theme = regimes[regimes["regime"] == Regime.THEME_DRIVEN.value]
    assert (theme["theme_pairs"] != "").all()
    assert (regimes.loc[regimes["regime"] != Regime.THEME_DRIVEN.value, "theme_pairs"] == "").all()
    for leaders in theme["theme_pairs"].unique():
        assert 1 <= len(leaders.split(",")) <= 2 and set(leaders.split(",")) <= set(ALTS)


# ---------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize("kwargs, word", [
    ({"days": 0}, "days"), ({"pairs": ("BTCUSDT",)}, "BTCUSDT"), ({"timeframe": "7m"}, "7m"),
    ({"start": "2025-01-01 00:02"}, "aligned"), ({"crash_depth": (0.3, 0.1)}, "crash_depth"),
    ({"pairs": ("BTC/USDT", "BTC/USDT")}, "duplicates"),
])
def test_synth_config_with_bad_value_raises_naming_it(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        SynthConfig(**kwargs)


# ---------------------------------------------------------------------------------------------
# Files


@pytest.fixture(scope="module")
def written(small, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    paths = write_market(small, out)
    return out, paths


def test_write_market_files_roundtrip_through_load_candles(small, written):
    out, paths = written
    assert list_pairs(out) == {p: ["5m", "15m", "1h", "4h", "1d"] for p in small.candles}
    for pair, df in small.candles.items():
        pd.testing.assert_frame_equal(load_candles(out, pair, "5m"), df)
        for tf in ("5m", "15m", "1h", "4h", "1d"):
            report = check_candles(load_candles(out, pair, tf), tf)
            assert report.ok and report.rows == 20 * 1440 // {"5m": 5, "15m": 15, "1h": 60,
                                                              "4h": 240, "1d": 1440}[tf]
    assert len(paths) == 5 * 5 + 2


def test_write_market_1h_file_equals_aggregated_5m_file(written):
    out, _ = written
    five = load_candles(out, "SOL/USDT", "5m")
    expected = five.groupby(five["date"].dt.floor("1h")).agg(
        open=("open", "first"), high=("high", "max"), low=("low", "min"),
        close=("close", "last"), volume=("volume", "sum")).reset_index()
    pd.testing.assert_frame_equal(load_candles(out, "SOL/USDT", "1h"), expected)


def test_write_market_files_load_with_freqtrade_feather_handler(written):
    from freqtrade.data.history import get_datahandler
    from freqtrade.enums import CandleType

    out, _ = written
    ft = get_datahandler(out, "feather").ohlcv_load("BTC/USDT", "4h", CandleType.SPOT)
    pd.testing.assert_frame_equal(ft.reset_index(drop=True)[OHLCV],
                                  load_candles(out, "BTC/USDT", "4h"), check_dtype=False)


def test_write_market_marker_and_truth_describe_the_market(small, written):
    out, _ = written
    meta = read_marker(out)
    assert meta["synthetic"] is True and meta["seed"] == 7 and "not real" in meta["note"].lower()
    assert parse_section(SynthConfig, meta["config"], "config") == small.config
    assert REGIMES_FILE in meta["files"] and MARKER_FILE not in meta["files"]
    pd.testing.assert_frame_equal(load_regimes(out), small.regimes, check_dtype=False)


def test_resample_candles_drops_incomplete_last_bucket(small):
    part = small.candles["BTC/USDT"].iloc[: 288 + 30]
    assert len(resample_candles(part, "1d")) == 1
    assert len(resample_candles(part, "1h")) == 24 + 2


# ---------------------------------------------------------------------------------------------
# CLI


def test_make_data_in_real_data_folder_refuses_naming_file(tmp_path):
    make_ohlcv(100).to_feather(tmp_path / "DOGE_USDT-5m.feather")
    with pytest.raises(DataError, match="DOGE_USDT-5m.feather.*--force"):
        _cli(["make-data", "--out", str(tmp_path), "--days", "2"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DOGE_USDT-5m.feather"]


def test_make_data_with_force_writes_beside_real_file(tmp_path, capsys):
    make_ohlcv(100).to_feather(tmp_path / "DOGE_USDT-5m.feather")
    assert _cli(["make-data", "--out", str(tmp_path), "--days", "2", "--pairs", "BTC/USDT",
                 "--timeframes", "5m", "1h", "--force"]) == 0
    assert "DOGE_USDT-5m.feather" in capsys.readouterr().out
    assert list_pairs(tmp_path) == {"BTC/USDT": ["5m", "1h"], "DOGE/USDT": ["5m"]}


def test_make_data_rerun_replaces_earlier_synthetic_files(tmp_path, capsys):
    assert _cli(["make-data", "--out", str(tmp_path), "--days", "2", "--pairs", "ETH/USDT",
                 "--timeframes", "5m"]) == 0
    capsys.readouterr()
    assert _cli(["make-data", "--out", str(tmp_path), "--days", "3", "--seed", "9", "--pairs",
                 "btc_usdt", "--timeframes", "5m", "15m", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["seed"] == 9 and summary["pairs"] == ["BTC/USDT"]
    assert list_pairs(tmp_path) == {"BTC/USDT": ["5m", "15m"]}
    assert read_marker(tmp_path)["seed"] == 9


def test_check_data_json_flags_gap(tmp_path, capsys):
    write_market(generate_market(SynthConfig(days=2, pairs=("BTC/USDT",))), tmp_path, ("5m",))
    assert _cli(["check-data", "--datadir", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ok"] and info["synthetic"] and info["series"][0]["rows"] == 576
    df = load_candles(tmp_path, "BTC/USDT", "5m").drop(index=[100, 101])
    df.reset_index(drop=True).to_feather(tmp_path / "BTC_USDT-5m.feather")
    assert _cli(["check-data", "--datadir", str(tmp_path), "--json"]) == 1
    row = json.loads(capsys.readouterr().out)["series"][0]
    assert row["gaps"] == 1 and not row["ok"]
