"""Sizing mode ``allocator`` inside the strategy: the allocators it accepts (whitelist,
lookahead), the targets it computes from the real book, a NaN observation held and logged once,
and the textbook allocations."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from freqtrade.exceptions import OperationalException

from learning.agents.alloc_env import FeatureConfig, MarketPanel
from learning.agents.alloc_policy import NetConfig, checkpoint
from learning.agents.alloc_train import ALLOC_SCHEMA, Window, train_window
from learning.core.store import StateStore
from tests.conftest import make_strategy
from tests.strategy.test_hooks import PAIRS, FrameProvider, market_frames

N = 24 * 12 * 12  # twelve days of 5m candles


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def frames():
    return market_frames(N, seed=5)


FEATURES = FeatureConfig(window="2h", long="1d")  # short windows: twelve days of 5m candles


def _save_allocator(root, frames, pairs=PAIRS, trade_start=None, data_end=None) -> None:
    panel = MarketPanel.from_candles({p: frames[(p, "5m")] for p in pairs}, "5m", FEATURES)
    dates = pd.DatetimeIndex(pd.to_datetime(panel.dates, utc=True))
    win = Window(dates[0], dates[N // 2], dates[-1])
    alloc, _ = train_window(panel, win, NetConfig(n_steps=64, batch_size=32, n_epochs=1),
                            features=FEATURES, timesteps=64)
    meta = dict(alloc.meta)
    if trade_start is not None:
        meta["trade_start"] = str(trade_start)
    if data_end is not None:
        meta["data_end"] = str(data_end)
    alloc.meta = meta
    StateStore(root).save_torch(f"allocator_{pd.Timestamp(meta['trade_start']):%Y%m%d}",
                                {"payload": checkpoint(alloc)}, schema=ALLOC_SCHEMA, meta=meta)


class _NoTrades:
    @staticmethod
    def get_open_trades() -> list:
        return []


def _strategy(tmp_path, frames, policy="ppo", whitelist=PAIRS):
    s = make_strategy(tmp_path)
    s.config["exchange"]["pair_whitelist"] = list(whitelist)
    s.config["advanced_learning"]["sizing"] = {"agent": "allocator"}
    s.config["advanced_learning"]["allocator"] = {"policy": policy}
    from learning.strategy.config import load_learning_config

    s.learning = load_learning_config(s.config)
    s.dp = FrameProvider(frames)
    # a flat book of 10 000 (no database here: equity and open trades are given)
    s._current_equity = lambda now: 10_000.0
    return s


@pytest.fixture(autouse=True)
def _flat_book(monkeypatch):
    import learning.strategy.allocation as allocation

    monkeypatch.setattr(allocation, "Trade", _NoTrades)


def _now(frames, i: int):
    return pd.Timestamp(frames[(PAIRS[0], "5m")]["date"].iloc[i]).to_pydatetime()


def test_allocator_targets_from_the_real_book_stay_in_budget_and_under_the_cap(tmp_path,
                                                                               frames):
    s = _strategy(tmp_path, frames)
    _save_allocator(s.store.root, frames)
    s._init_allocation(None)
    assert len(s._allocators) == 1
    now = _now(frames, N - 12)  # a candle open after the allocator's trading start
    targets = s.allocation_targets(now)
    assert set(targets) == set(PAIRS)
    w = np.array(list(targets.values()))
    assert (w >= 0).all() and w.sum() <= 1 + 1e-9 and (w <= 0.2 + 1e-12).all()
    assert s.allocation_targets(now) is targets, "computed once per candle"


def test_allocator_holds_on_a_nan_observation_and_logs_once(tmp_path, frames, caplog):
    bad = {k: v.copy() for k, v in frames.items()}
    bad[(PAIRS[1], "5m")].loc[N - 20, ["open", "high", "low", "close"]] = 0.0  # a bad print
    s = _strategy(tmp_path, bad)
    _save_allocator(s.store.root, frames)
    s._init_allocation(None)
    with caplog.at_level(logging.WARNING, logger="learning.strategy.strategy"):
        assert s.allocation_targets(_now(bad, N - 12)) is None
        assert s.allocation_targets(_now(bad, N - 11)) is None
    lines = [r for r in caplog.records if "NaN in the market features" in r.getMessage()]
    assert len(lines) == 1


def test_allocator_trained_on_another_whitelist_stops_the_start_naming_the_pairs(tmp_path,
                                                                                 frames):
    s = _strategy(tmp_path, frames, whitelist=["BTC/USDT", "ETH/USDT", "XRP/USDT"])
    _save_allocator(s.store.root, frames)
    with pytest.raises(OperationalException, match="not trained on XRP/USDT.*SOL/USDT"):
        s._init_allocation(None)


def test_allocator_that_saw_its_own_trading_window_is_refused(tmp_path, frames, caplog):
    s = _strategy(tmp_path, frames)
    start = pd.Timestamp(frames[(PAIRS[0], "5m")]["date"].iloc[N // 2])
    _save_allocator(s.store.root, frames, trade_start=start,
                    data_end=start + pd.Timedelta(hours=1))
    with caplog.at_level(logging.ERROR, logger="learning.strategy.allocation"):
        s._init_allocation(None)
    assert s._allocators == []
    assert any("refused (lookahead)" in r.getMessage() for r in caplog.records)
    assert s.allocation_targets(_now(frames, N - 12)) == dict.fromkeys(PAIRS, 0.0)


def test_equal_and_inverse_vol_targets_need_no_checkpoint(tmp_path, frames):
    now = _now(frames, N - 12)
    eq = _strategy(tmp_path / "eq", frames, policy="equal")
    eq._init_allocation(None)
    assert eq.allocation_targets(now) == pytest.approx(dict.fromkeys(PAIRS, 0.2))
    iv = _strategy(tmp_path / "iv", frames, policy="inverse_vol")
    iv._init_allocation(None)
    w = iv.allocation_targets(now)
    assert sum(w.values()) <= 0.6 + 1e-9 and max(w.values()) == pytest.approx(0.2)
