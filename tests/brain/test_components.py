"""Theme and sentiment scores are bounded, causal and move the right way."""

import numpy as np
import pandas as pd

from learning.brain.components import sentiment_score, theme_score
from tests.conftest import make_ohlcv


def _market(n=1500, seed=0):
    btc = make_ohlcv(n, seed=seed, freq="1h", vol=0.01, price=60000)
    eth = make_ohlcv(n, seed=seed + 1, freq="1h", vol=0.012, price=3000)
    sol = make_ohlcv(n, seed=seed + 2, freq="1h", vol=0.015, price=150)
    return btc, eth, sol


def test_theme_score_at_t_unchanged_when_later_candles_are_appended():
    btc, eth, sol = _market()
    full = theme_score(sol, {"ETH": eth, "BTC": btc}, btc, window=24)
    for t in (100, 700, 1499):
        cut = slice(0, t + 1)
        part = theme_score(sol.iloc[cut], {"ETH": eth.iloc[cut], "BTC": btc.iloc[cut]},
                           btc.iloc[cut], window=24)
        assert np.isclose(part.iloc[t], full.iloc[t], equal_nan=True, atol=1e-12), t


def test_theme_score_ignores_other_pairs_future_rows():
    btc, eth, sol = _market()
    full = theme_score(sol.iloc[:800], {"ETH": eth, "BTC": btc}, btc, window=24)
    cut = theme_score(sol.iloc[:800], {"ETH": eth.iloc[:800], "BTC": btc.iloc[:800]},
                      btc.iloc[:800], window=24)
    pd.testing.assert_series_equal(full, cut)


def test_theme_score_is_positive_for_the_outperformer():
    btc, eth, sol = _market()
    sol = sol.copy()
    boost = np.exp(np.linspace(0, 4.0, len(sol)))  # SOL outperforms by ~6% a day
    for c in ("open", "high", "low", "close"):
        sol[c] = sol[c] * boost
    s = theme_score(sol, {"ETH": eth, "BTC": btc}, btc, window=24).iloc[100:]
    assert s.between(-1, 1).all() and s.mean() > 0.2


def test_sentiment_score_is_causal_bounded_and_fearful_in_a_crash():
    btc = make_ohlcv(3000, seed=4, freq="1h", vol=0.008, price=60000)
    full = sentiment_score(btc)
    for t in (400, 2000, 2999):
        assert np.isclose(sentiment_score(btc.iloc[: t + 1]).iloc[t], full.iloc[t],
                          equal_nan=True, atol=1e-12)
    assert full.dropna().between(-1, 1).all()
    crash = btc.copy()
    drop = np.ones(len(crash))
    drop[2500:2530] = np.exp(np.linspace(0, -0.25, 30))
    drop[2530:] = drop[2529]
    for c in ("open", "high", "low", "close"):
        crash[c] = crash[c] * drop
    crash.loc[2500:2530, "volume"] *= 5
    after = sentiment_score(crash).iloc[2530]
    assert after < -0.4 and after < full.iloc[2530] - 0.3


def test_sentiment_uses_funding_when_given():
    btc = make_ohlcv(1500, seed=5, freq="1h")
    funding = pd.DataFrame({"date": btc["date"], "funding_rate": 0.002})
    assert (sentiment_score(btc, funding) - sentiment_score(btc)).dropna().mean() > 0.05


def test_volatility_forecast_depends_only_on_its_window_and_not_on_where_data_starts():
    from learning.brain.components import ewma_volatility

    close = make_ohlcv(1500, seed=9, freq="1h")["close"]
    full = ewma_volatility(close, "1h", pd.Timedelta(days=3))
    late = ewma_volatility(close.iloc[400:].reset_index(drop=True), "1h", pd.Timedelta(days=3))
    window = 4 * 72
    np.testing.assert_allclose(full.iloc[400 + window:].to_numpy(),
                               late.iloc[window:].to_numpy(), rtol=1e-12)
    assert full.iloc[: window // 2].isna().all(), "NaN until half the window holds returns"
    assert ewma_volatility(close.iloc[:50], "5m", pd.Timedelta(days=3)).isna().all()
