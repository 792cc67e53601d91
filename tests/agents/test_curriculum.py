"""Curriculum and crash augmentation of the allocator's training: crash episodes and labels
from candles <= t, ordered and logged stages, onset-aligned bootstrap, augmented windows built
from the training range only."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from learning.agents import curriculum as C
from learning.agents.alloc_env import AllocEnv, AllocEnvConfig, FeatureConfig, MarketPanel
from learning.agents.alloc_policy import NetConfig
from learning.agents.alloc_train import Window, train_window
from tests.conftest import make_ohlcv

PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
FEE = 0.001
CRASHES = (900, 1500, 2300)  # first falling candle of each planted crash


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_crashes(df: pd.DataFrame, crashes=CRASHES, depth: float = 0.2, hours: int = 12
                  ) -> pd.DataFrame:
    """Every pair falls ``depth`` over ``hours`` candles from each crash start (prices after
    it shifted down with it; OHLC stays consistent)."""
    factor = np.ones(len(df))
    for c in crashes:
        step = (1 - depth) ** (1 / hours)
        factor[c:] *= step ** np.minimum(np.arange(len(df) - c) + 1, hours)
    out = df.copy()
    for col in ("open", "high", "low", "close"):
        out[col] = out[col] * factor
    out["high"] = out[["open", "high", "close"]].max(axis=1)
    out["low"] = out[["open", "low", "close"]].min(axis=1)
    return out


def _panel(n: int = 24 * 120, crashes=CRASHES) -> MarketPanel:
    frames = {p: _with_crashes(make_ohlcv(n, seed=i, freq="1h", vol=0.006), crashes)
              for i, p in enumerate(PAIRS)}
    return MarketPanel.from_candles(frames, "1h", FeatureConfig())


# -- crash episodes and labels ----------------------------------------------------------------

def test_crash_onsets_are_the_high_before_each_planted_fall_and_none_on_a_calm_market():
    panel = _panel()
    proxy = C.market_proxy(panel)
    onsets = C.crash_onsets(proxy, 48, 0.10, 96)
    assert len(onsets) == len(CRASHES)
    for onset, crash in zip(onsets, CRASHES, strict=True):
        assert crash - 48 <= onset <= crash, (onset, crash)
        assert proxy[onset] == proxy[onset - 0: crash + 1].max()
    assert C.crash_onsets(C.market_proxy(_panel(crashes=())), 48, 0.10, 96) == []


def test_proxy_and_alarms_at_t_use_candles_up_to_t_only():
    panel = _panel()
    full = C.crash_alarms(C.market_proxy(panel), 48, 0.10)
    for cut in (905, 1510, 2000):
        frames = {p: _with_crashes(make_ohlcv(24 * 120, seed=i, freq="1h", vol=0.006))
                  .iloc[:cut] for i, p in enumerate(PAIRS)}
        short = MarketPanel.from_candles(frames, "1h", FeatureConfig())
        proxy = C.market_proxy(short)
        np.testing.assert_allclose(proxy, C.market_proxy(panel)[:cut])
        np.testing.assert_array_equal(C.crash_alarms(proxy, 48, 0.10), full[:cut])


def test_labels_tell_trend_range_and_panic_apart():
    rng = np.random.default_rng(0)
    calm = np.cumsum(rng.normal(0, 0.002, 400))
    trend = np.cumsum(rng.normal(0.004, 0.002, 400))
    crash = calm.copy()
    crash[200:] += np.log(0.8)
    proxy = np.concatenate([calm, trend + calm[-1], crash + trend[-1] + calm[-1]])
    starts = np.array([50, 450, 850])
    labels = C.label_starts(proxy, starts, 300, 48, 0.10, 1.0)
    assert labels.tolist() == [C.RANGE, C.TREND, C.PANIC]


def test_stage_pools_are_cumulative_and_an_empty_stage_keeps_the_previous_pool():
    starts = np.arange(10)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 1])
    pools = C.stage_pools(labels, starts)
    assert [len(p) for p in pools] == [3, 7, 10, 10]
    assert set(pools[0]) <= set(pools[1]) <= set(pools[2]) <= set(pools[3])
    no_trend = C.stage_pools(np.array([1, 1, 2]), np.arange(3))
    assert len(no_trend[0]) == 3  # no trend start: the first stage trains on everything
    assert [C.stage_at(x, (0.2, 0.2, 0.2, 0.4)) for x in (0, 0.19, 0.2, 0.5, 0.7, 1.0)] == \
        [0, 0, 1, 2, 3, 3]


# -- the bootstrap and the augmented windows --------------------------------------------------

def test_bootstrap_takes_each_block_from_the_same_position_of_some_episode():
    length, pairs = 24, 2
    rel = np.stack([np.full((length, pairs, 3), float(e)) for e in range(3)])
    rel += np.arange(length)[None, :, None, None] * 10  # position is readable in the value
    source = C.CrashSource(rel, np.zeros((3, length, 5)), real=3)
    out, _ = C.bootstrap_crash(source, 6, np.random.default_rng(1))
    episodes = set()
    for a in range(0, length, 6):
        block = out[a:a + 6]
        e = block[0, 0, 0] - a * 10
        episodes.add(e)
        np.testing.assert_array_equal(block, rel[int(e), a:a + 6])
    assert len(episodes) > 1, "blocks come from several episodes"


def _aug(panel: MarketPanel, hi: int, seed: int = 3, **kw):
    cfg = C.CurriculumConfig(crash_share=0.2, synthetic=False, windows=6, **kw)
    source = C.crash_source(panel, cfg, 200, hi)
    return C.augmented_panel(panel, source, cfg, 200, hi, 400, 24 * 20,
                             np.random.default_rng(seed)), source


def test_augmented_windows_read_nothing_after_the_training_range():
    panel = _panel()
    hi = 2600
    (aug, starts), source = _aug(panel, hi)
    assert source.real == 3
    frames = {p: _with_crashes(make_ohlcv(24 * 120, seed=i, freq="1h", vol=0.006))
              for i, p in enumerate(PAIRS)}
    for f in frames.values():  # a different future after the training range
        f.loc[hi:, ["open", "high", "low", "close"]] *= np.linspace(1, 5, len(f) - hi)[:, None]
    other = MarketPanel.from_candles(frames, "1h", FeatureConfig())
    (aug2, starts2), _ = _aug(other, hi)
    np.testing.assert_array_equal(starts, starts2)
    np.testing.assert_array_equal(aug.close, aug2.close)
    np.testing.assert_array_equal(aug.features, aug2.features)


def test_augmented_windows_hold_deeper_falls_than_the_real_windows_they_start_from():
    panel = _panel(crashes=(900,))
    (aug, starts), _ = _aug(panel, 2600)
    span = 24 * 20
    proxy = C.market_proxy(aug)

    def worst(p, s):
        seg = p[s:s + span]
        return float((np.maximum.accumulate(seg) - seg).max())

    aug_dd = np.mean([worst(proxy, s) for s in starts])
    real_proxy = C.market_proxy(panel)
    real_dd = np.mean([worst(real_proxy, s) for s in range(1000, 2600 - span, 50)])
    assert aug_dd > -np.log(0.85) > real_dd, (aug_dd, real_dd)
    assert aug.listed[:, starts].all(), "every pair is tradable when an episode starts"


# -- training -----------------------------------------------------------------------------------

def test_mixed_env_draws_the_augmented_share_only_from_the_panic_stage_on():
    panel = _panel()
    real = AllocEnv(panel, fee=FEE, end=pd.Timestamp(panel.dates[2600], tz="UTC"))
    plan = C.build(real, lambda p: AllocEnv(p, fee=FEE),
                   C.CurriculumConfig(stages=True, crash_share=0.3, synthetic=False),
                   np.random.default_rng(0))
    env = plan.env
    env.reset(seed=0)
    for stage, want in ((0, 0.0), (1, 0.0), (2, 0.3), (3, 0.3)):
        plan.apply(stage)
        before = dict(env.episodes)
        for _ in range(400):
            env.reset()
        aug = (env.episodes["augmented"] - before["augmented"]) / 400
        assert aug == pytest.approx(want, abs=0.06), (stage, aug)
        if stage == 0:
            assert set(real.starts) == set(plan.pools[0]) and len(plan.pools[0]) < \
                len(plan.pools[3])


def test_curriculum_stages_run_in_order_and_are_logged(caplog):
    panel = _panel()
    win = Window(pd.Timestamp(panel.dates[0], tz="UTC"), pd.Timestamp(panel.dates[2600],
                 tz="UTC"), pd.Timestamp(panel.dates[-1], tz="UTC"))
    net = NetConfig(n_steps=64, batch_size=32, n_epochs=1, curriculum=True, crash_share=0.2)
    with caplog.at_level(logging.INFO, logger="learning.agents.curriculum"):
        alloc, fig = train_window(panel, win, net, AllocEnvConfig(episode="3d"), fee=FEE,
                                  timesteps=640)
    (run,) = fig["curriculum"]
    names = [name for _, name in run["stages"]]
    steps = [step for step, _ in run["stages"]]
    assert names == list(C.STAGES) and steps == sorted(steps) and steps[0] == 0
    logged = [r.getMessage() for r in caplog.records if "curriculum stage" in r.getMessage()]
    assert [m.split("curriculum stage ")[1].split()[0] for m in logged] == list(C.STAGES)
    assert run["augmented_windows"] > 0 and run["episodes"]["augmented"] > 0
    assert pd.Timestamp(alloc.meta["data_end"]) < pd.Timestamp(alloc.meta["trade_start"])
