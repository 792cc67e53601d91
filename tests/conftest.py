"""Shared fixtures: a seeded rng, a small synthetic OHLCV frame, the real data dir when present
(``market_data_dir``: else a synthetic market), the strategy as freqtrade builds it for a
backtest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def make_ohlcv(n: int = 2000, seed: int = 7, start: str = "2025-01-01", freq: str = "5min",
               drift: float = 0.0, vol: float = 0.004, price: float = 100.0) -> pd.DataFrame:
    """A geometric random walk as freqtrade candles (consistent OHLC, positive volume)."""
    r = np.random.default_rng(seed)
    rets = r.normal(drift, vol, n)
    close = price * np.exp(np.cumsum(rets))
    open_ = np.concatenate([[price], close[:-1]])
    wick = np.abs(r.normal(0, vol / 2, (2, n)))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    volume = r.lognormal(3, 0.5, n)
    dates = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    return pd.DataFrame({"date": dates, "open": open_, "high": high, "low": low,
                         "close": close, "volume": volume})


@pytest.fixture
def ohlcv() -> pd.DataFrame:
    return make_ohlcv()


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real Binance candles ($ADVL_DATA_DIR, set by the Makefile and .ci/run).

    Fails (not skips) when the variable is set but the folder is missing, so a broken CI setup
    cannot silently pass; skips only on a user's machine where it was never configured.
    """
    value = os.environ.get("ADVL_DATA_DIR")
    if not value:
        pytest.skip("ADVL_DATA_DIR is not set (make test sets it when ../shared/data exists)")
    path = Path(value)
    assert path.is_dir(), f"ADVL_DATA_DIR={value} does not exist"
    return path


#: Days of synthetic market from 2025-01-01 (to 2026-02-04): every range the tests use.
SYNTH_DAYS = 400


@pytest.fixture(scope="session")
def market_data_dir(tmp_path_factory) -> Path:
    """Candles for the end-to-end tests: the real ones when ``$ADVL_DATA_DIR`` is set (CI, and
    ``make test`` beside ../shared), else the synthetic market of ``ftlearn make-data`` (the
    same pairs, timeframes and dates, 6 s to generate), so ``make test`` on a fresh clone still
    runs the whole path instead of skipping it. Synthetic prices are not real: tests on them
    check mechanics, never performance."""
    value = os.environ.get("ADVL_DATA_DIR")
    if value:
        path = Path(value)
        assert path.is_dir(), f"ADVL_DATA_DIR={value} does not exist"
        return path
    from learning.data.synth import DEFAULT_TIMEFRAMES, SynthConfig, generate_market, write_market

    out = tmp_path_factory.mktemp("synthetic-market")
    write_market(generate_market(SynthConfig(days=SYNTH_DAYS)), out, DEFAULT_TIMEFRAMES)
    return out


def make_strategy(tmp_path: Path):
    """AdvancedLearning built from the shipped config.json for a backtest, state in tmp_path."""
    from freqtrade.enums import RunMode
    from freqtrade.strategy import IStrategy  # noqa: F401  (freqtrade import order)

    from strategies.AdvancedLearning import AdvancedLearning

    config = json.loads((ROOT / "config.json").read_text())
    config.update({"user_data_dir": str(tmp_path), "runmode": RunMode.BACKTEST})
    return AdvancedLearning(config)


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (deterministic, and no oversubscription of the cores
    when the suite runs beside other work); the previous setting is restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
