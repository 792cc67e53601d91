"""Hyperopt as users run it: the strategy survives freqtrade's pickling into joblib workers, and
every epoch (a new backtest on the same instance, or on a copy) starts from the learning state
``bot_start`` gave the first one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cloudpickle
import pytest
from freqtrade.enums import RunMode
from freqtrade.optimize.hyperopt.hyperopt_optimizer import HyperOptimizer

from learning.core.store import StateStore
from tests.conftest import ROOT
from tests.strategy.test_hooks import FrameProvider, market_frames


def hyperopt_strategy(tmp_path: Path):
    """AdvancedLearning as freqtrade's resolver loads it for hyperopt (from strategies/)."""
    from freqtrade.resolvers.strategy_resolver import StrategyResolver

    config = json.loads((ROOT / "config.json").read_text())
    config.update({"user_data_dir": tmp_path, "runmode": RunMode.HYPEROPT,
                   "strategy": "AdvancedLearning", "strategy_path": str(ROOT / "strategies")})
    return StrategyResolver.load_strategy(config)


class _PickleMagic:
    hyperopt_pickle_magic = HyperOptimizer.hyperopt_pickle_magic


@pytest.fixture
def pickle_by_value():
    """freqtrade's hyperopt registers the strategy's base modules to be pickled by value."""
    import cloudpickle.cloudpickle as cp

    before = set(cp._PICKLE_BY_VALUE_MODULES)
    yield lambda strategy: _PickleMagic().hyperopt_pickle_magic(strategy.__class__.__bases__)
    for name in set(cp._PICKLE_BY_VALUE_MODULES) - before:
        cp._PICKLE_BY_VALUE_MODULES.discard(name)


def test_strategy_with_hyperopt_pickling_reaches_a_worker_with_its_indicator_data(
        tmp_path, pickle_by_value):
    strategy = hyperopt_strategy(tmp_path)
    strategy.dp = FrameProvider(market_frames(600, seed=3))
    strategy.populate_indicators(strategy.dp.get_pair_dataframe("ETH/USDT", "5m"),
                                 {"pair": "ETH/USDT"})
    pickle_by_value(strategy)

    copy = cloudpickle.loads(cloudpickle.dumps(strategy))

    assert isinstance(copy.store, StateStore) and copy.store.root == strategy.store.root
    assert (copy._series["ETH/USDT"].close == strategy._series["ETH/USDT"].close).all()
    assert copy._run_pending, "the worker rebuilds the learning state before its first candle"


def test_new_backtest_run_on_the_same_instance_starts_from_the_initial_learning_state(tmp_path):
    strategy = hyperopt_strategy(tmp_path)
    strategy.bot_start()
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    strategy.bot_loop_start(t0)
    # Epoch 1 learns from a trade and trips the drawdown limit.
    decision = strategy.brain.decide(t0, "ETH/USDT", {"technical": 0.9}, "CHOPPY", 0.9, None,
                                     0.3).to_dict()
    strategy.brain.record_close(t0 + timedelta(hours=1), "ETH/USDT", decision, 0.04)
    strategy.guard.observe(t0, 10_000.0)
    strategy.guard.observe(t0 + timedelta(hours=2), 8_000.0)
    strategy.bot_loop_start(t0 + timedelta(hours=3))
    assert strategy.brain.state.closed_trades == 1 and strategy.guard.state.drawdown_halt

    strategy.bot_loop_start(t0)  # the next epoch starts at the first candle again

    assert strategy.brain.state.closed_trades == 0
    assert not strategy.guard.state.drawdown_halt and strategy.guard.state.peak_equity is None
    assert strategy.brain.recent_decisions() == []
