"""The technical score is causal, bounded and abstains on bad candles."""

import numpy as np

from learning.brain.technical import add_technical
from tests.conftest import make_ohlcv


def test_technical_score_is_bounded_in_minus_one_to_one():
    df = add_technical(make_ohlcv(3000))
    s = df["score_technical"].dropna()
    assert len(s) > 2000 and s.between(-1, 1).all()


def test_technical_score_at_t_unchanged_when_later_candles_are_appended():
    full = add_technical(make_ohlcv(2500, seed=3))
    for t in (400, 1000, 1777, 2499):
        prefix = add_technical(make_ohlcv(2500, seed=3).iloc[: t + 1].copy())
        for col in ("score_technical", "tech_trend", "tech_momentum", "tech_volatility"):
            a, b = prefix[col].iloc[t], full[col].iloc[t]
            assert (np.isnan(a) and np.isnan(b)) or np.isclose(a, b, rtol=0, atol=1e-12), (col, t)


def test_bad_candles_are_flagged_not_ok():
    df = make_ohlcv(1000)
    df.loc[500, "close"] = np.nan
    df.loc[600, "volume"] = 0.0
    out = add_technical(df)
    assert not out["data_ok"].iloc[500] and not out["data_ok"].iloc[600]
    assert out["data_ok"].iloc[700:].all()


def test_uptrend_scores_above_downtrend():
    up = add_technical(make_ohlcv(1500, drift=0.001, seed=1))["score_technical"].iloc[400:].mean()
    down = add_technical(make_ohlcv(1500, drift=-0.001, seed=1))["score_technical"].iloc[400:].mean()
    assert up > 0.1 > -0.1 > down
