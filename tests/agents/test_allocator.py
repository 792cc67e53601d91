"""The portfolio allocator: target weights (property tests), execution under the cap and the
rebalance band, the environment's accounting, the end-to-end feature reducer, checkpoints and
walk-forward windows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from learning.agents.alloc_env import (
    AllocEnv,
    AllocEnvConfig,
    FeatureConfig,
    MarketPanel,
    ObsLayout,
    capped_weights,
    check_pairs,
    equal_weights,
    inverse_vol_weights,
    panel_features,
    rebalance,
)
from learning.agents.alloc_policy import (
    AllocExtractor,
    NetConfig,
    checkpoint,
    load_allocator,
    make_policy,
)
from learning.agents.alloc_train import Window, train_window, windows
from learning.agents.moe import MoEActorCriticPolicy
from learning.core.errors import StateError
from tests.conftest import make_ohlcv

PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
FEE = 0.001


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _panel(n: int = 24 * 60, late: int = 0, drift=(0.0005, 0.0, -0.0005)) -> MarketPanel:
    frames = {p: make_ohlcv(n, seed=i, freq="1h", drift=drift[i], vol=0.01)
              for i, p in enumerate(PAIRS)}
    if late:  # the last pair's market opens ``late`` candles after the others
        frames[PAIRS[-1]] = frames[PAIRS[-1]].iloc[late:].reset_index(drop=True)
    return MarketPanel.from_candles(frames, "1h", FeatureConfig())


# -- target weights and execution (properties) ------------------------------------------------

logits_st = st.lists(st.one_of(st.floats(-50, 50), st.just(float("nan")), st.just(math.inf)),
                     min_size=2, max_size=9)


@settings(max_examples=300, deadline=None)
@given(logits=logits_st, cap=st.floats(0.01, 1.0), min_weight=st.floats(0.0, 0.2),
       data=st.data())
def test_capped_weights_sum_to_one_with_cash_and_respect_the_cap(logits, cap, min_weight, data):
    listed = np.array(data.draw(st.lists(st.booleans(), min_size=len(logits) - 1,
                                         max_size=len(logits) - 1)))
    w = capped_weights(np.array(logits), cap, min_weight, listed)
    assert w.shape == (len(logits),)
    assert (w >= 0).all() and math.isclose(w.sum(), 1.0, abs_tol=1e-9)
    pairs = w[:-1]
    assert (pairs <= cap + 1e-12).all()
    assert ((pairs == 0) | (pairs >= min_weight)).all()
    assert (pairs[~listed] == 0).all()


def _book(draw_weights: list[float]) -> np.ndarray:
    w = np.array(draw_weights)
    return w / max(1.0, w.sum())


@settings(max_examples=300, deadline=None)
@given(current=st.lists(st.floats(0.0, 0.4), min_size=1, max_size=8),
       logits=st.lists(st.floats(-5, 5), min_size=9, max_size=9),
       cap=st.floats(0.05, 0.5), band=st.floats(0.0, 0.05), fee=st.floats(0.0, 0.01))
def test_rebalance_keeps_a_valid_book_under_the_cap_after_execution(current, logits, cap, band,
                                                                    fee):
    cur = _book(current)
    target = capped_weights(np.array(logits[:len(cur) + 1]), cap, 0.0)[:-1]
    new, traded = rebalance(cur, target, cap, band, fee)
    assert (new >= 0).all() and new.sum() <= 1.0 + 1e-9
    # the fee of the trades lowers equity, so a position filled to the cap can be a fee above it
    assert (new <= cap * 1.02 / (1.0 - fee * max(traded, 1.0)) + 1e-9).all(), (new, cap)
    assert traded == pytest.approx(np.abs(new * (1 - fee * traded) - cur).sum(), abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(current=st.lists(st.floats(0.0, 0.3), min_size=4, max_size=4),
       logits=st.lists(st.floats(-3, 3), min_size=5, max_size=5),
       band=st.floats(0.005, 0.05))
def test_executed_book_tracks_the_targets_within_the_rebalance_band(current, logits, band):
    cur = _book(current)
    target = capped_weights(np.array(logits), 0.2, 0.01)
    assume(target[-1] >= 4 * band + 0.01)  # enough cash that no buy is scaled down
    new, _ = rebalance(cur, target[:-1], 0.2, band, FEE)
    equity = 1 - FEE * np.abs(new - cur).sum()
    assert (np.abs(new * equity - target[:-1]) < band + 1e-9).all()
    # weights are fractions of equity after the fees, so a pair kept just inside the band
    # drifts by at most its weight times the fees' share of equity; one that close to the
    # band's edge may rightly trade on the next call
    gap = np.abs(target[:-1] - cur)
    drift = 0.3 * FEE * 2.0 / (1.0 - FEE * 2.0)
    assume(not ((gap < band) & (gap >= band - drift)).any())
    again, traded = rebalance(new, target[:-1], 0.2, band, FEE)
    assert traded == 0 and (again == new).all(), "inside the band nothing trades again"


def test_rebalance_closes_zero_targets_and_trims_above_the_cap_whatever_the_band():
    new, traded = rebalance(np.array([0.005, 0.23, 0.1]), np.array([0.0, 0.21, 0.1]), 0.2,
                            0.05, 0.0)
    assert new.tolist() == pytest.approx([0.0, 0.21, 0.1])
    assert traded == pytest.approx(0.025)


def test_baselines_spread_gross_over_listed_pairs_under_the_cap():
    listed = np.array([True, True, False, True])
    assert equal_weights(listed, 0.2, 0.45).tolist() == pytest.approx([0.15, 0.15, 0, 0.15])
    assert equal_weights(listed, 0.2, 1.0).tolist() == pytest.approx([0.2, 0.2, 0, 0.2])
    w = inverse_vol_weights(np.array([0.01, 0.02, 0.01, 0.04]), listed, 0.5, 0.7)
    assert w.tolist() == pytest.approx([0.4, 0.2, 0.0, 0.1])
    assert inverse_vol_weights(np.array([0.01, 0.02, 0.01, 0.04]), listed, 0.3, 0.7)[0] == 0.3


# -- market panel and environment -------------------------------------------------------------

def test_panel_features_are_causal():
    df = make_ohlcv(600, seed=3, freq="1h", vol=0.01)
    full = panel_features(df, "1h", FeatureConfig())
    for t in (200, 350, 599):
        part = panel_features(df.iloc[:t + 1], "1h", FeatureConfig())
        np.testing.assert_array_equal(part[t], full[t])


def test_a_late_pair_is_not_tradable_until_its_features_have_warmed_up():
    panel = _panel(24 * 30, late=24 * 10)
    first = panel.listed.argmax(axis=1)
    assert first[2] == first[0] + 24 * 10, "the same warm-up, counted from its own start"
    assert np.isfinite(panel.features[2, first[2]]).all()
    assert not np.isfinite(panel.features[2, first[2] - 1]).all()


def test_env_books_fees_and_drift_and_keeps_weights_valid():
    panel = _panel()
    env = AllocEnv(panel, config=AllocEnvConfig(step="4h", min_rebalance=0.02), fee=FEE,
                   training=False)
    obs, _ = env.reset()
    assert obs.shape == (env.layout.size,)
    _, _, _, _, info = env.step(np.array([5.0, 5.0, 5.0, -5.0]))  # all in, capped at 20 %
    assert info["traded"] == pytest.approx(0.6)
    assert env.fees == pytest.approx(0.6 * FEE)
    start, end = env.lo, env.lo + env.stride
    growth = panel.open[:, end] / panel.open[:, start]
    value = (0.4 - 0.6 * FEE) + 0.2 * growth.sum()  # cash paid the fees; 0.2 in each pair
    assert env.value == pytest.approx(value)
    rng = np.random.default_rng(0)
    done = False
    while not done:
        _, r, term, trunc, info = env.step(rng.normal(0, 3, 4))
        assert np.isfinite(r) and info["weights"].sum() <= 1 + 1e-9
        done = term or trunc


def test_env_daily_loss_sells_everything_and_stays_in_cash_until_the_next_day():
    panel = _panel()
    env = AllocEnv(panel, config=AllocEnvConfig(step="4h", daily_loss=0.02), fee=FEE,
                   training=False)
    day0 = pd.Timestamp(panel.dates[env.lo]).floor("1D")
    start = int(np.searchsorted(panel.dates, (day0 + pd.Timedelta("1D")).to_datetime64()))
    crash = start + 4  # the first pair loses 30 % during the day's first step
    panel.open[0, crash:] *= 0.7
    env.reset(options={"start": start})
    all_in = np.array([5.0, 5.0, 5.0, -5.0])
    _, _, _, _, info = env.step(all_in)
    assert info["weights"].sum() == 0 and env.blocked, "a 6 % loss of equity: sold at once"
    assert env.counts["daily_loss"] == 1
    for _ in range(5):  # the rest of the UTC day (4h steps): no buying
        _, _, _, _, info = env.step(all_in)
        assert info["traded"] == 0 and info["weights"].sum() == 0
    _, _, _, _, info = env.step(all_in)  # the next UTC day
    assert info["traded"] > 0 and not env.blocked


def test_env_holds_on_a_nan_observation_and_counts_it():
    panel = _panel()
    panel.features[1, 382] = np.nan  # a listed pair's glitch
    env = AllocEnv(panel, fee=FEE, training=False, start=pd.Timestamp(panel.dates[380]))
    env.reset()
    env.step(np.array([5.0, 5.0, 5.0, -5.0]))  # decided on candles 356..379: fine
    held = env.weights.copy()
    _, _, _, _, info = env.step(np.array([-5.0, -5.0, -5.0, 5.0]))  # 360..383: the NaN
    assert info["traded"] == 0 and env.counts["nan_hold"] == 1
    assert info["weights"].sum() == pytest.approx(held.sum(), rel=0.05)


def test_env_training_range_never_reads_the_trading_window():
    panel = _panel()
    end = pd.Timestamp(panel.dates[1000], tz="UTC")
    env = AllocEnv(panel, fee=FEE, end=end, training=True)
    env.reset(seed=1)
    done, ticks = False, []
    while not done:
        *_, term, trunc, _ = env.step(np.zeros(4))
        ticks.append(env.t)
        done = term or trunc
    assert max(ticks) < 1000


# -- the feature reducer, end to end ----------------------------------------------------------

def _policy(net: NetConfig, panel: MarketPanel):
    layout = ObsLayout(len(panel.pairs), 24)
    return make_policy(layout, net, len(panel.pairs) + 1), layout


def test_policy_loss_gradient_reaches_the_encoder_and_recon_reaches_the_decoder():
    panel = _panel()
    env = AllocEnv(panel, fee=FEE, training=False)
    obs = np.stack([env.reset(options={"start": env.lo + 4 * k})[0] for k in range(8)])
    x = torch.as_tensor(obs)
    policy, _ = _policy(NetConfig(policy_weight=1.0, recon_weight=0.0), panel)
    policy.set_training_mode(True)
    dist = policy.get_distribution(x)
    dist.distribution.mean.sum().backward()  # a loss of the policy's output alone
    enc = policy.features_extractor.encoder
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0
               for p in policy.features_extractor.decoder.parameters())
    policy, _ = _policy(NetConfig(policy_weight=0.0, recon_weight=1.0), panel)
    policy.set_training_mode(True)
    policy.get_distribution(x).distribution.mean.sum().backward()
    ext: AllocExtractor = policy.features_extractor
    assert all(p.grad.abs().sum() > 0 for p in ext.decoder.parameters())
    assert all(p.grad.abs().sum() > 0 for p in ext.encoder.parameters()), "recon trains it"


def test_training_lowers_the_reconstruction_loss_and_is_deterministic():
    panel = _panel()
    win = Window(pd.Timestamp(panel.dates[0], tz="UTC"),
                 pd.Timestamp(panel.dates[-200], tz="UTC"), pd.Timestamp(panel.dates[-1],
                                                                          tz="UTC"))
    net = NetConfig(n_steps=128, batch_size=64, n_epochs=4, learning_rate=3e-3)
    a, fig = train_window(panel, win, net, fee=FEE, timesteps=1024)
    assert fig["recon_last"] < 0.8 * fig["recon_first"], fig
    b, _ = train_window(panel, win, net, fee=FEE, timesteps=1024)
    obs = np.random.default_rng(0).normal(0, 1, (4, a.layout.size)).astype(np.float32)
    np.testing.assert_array_equal(a.logits(obs), b.logits(obs))
    assert pd.Timestamp(a.meta["data_end"]) < pd.Timestamp(a.meta["trade_start"])


# -- checkpoints ---------------------------------------------------------------------------------

def _trained(panel: MarketPanel, net: NetConfig | None = None):
    win = Window(pd.Timestamp(panel.dates[0], tz="UTC"),
                 pd.Timestamp(panel.dates[-100], tz="UTC"), pd.Timestamp(panel.dates[-1],
                                                                          tz="UTC"))
    return train_window(panel, win, net or NetConfig(n_steps=64, batch_size=32, n_epochs=1),
                        fee=FEE, timesteps=64)[0]


def test_checkpoint_round_trip_gives_the_same_targets(tmp_path):
    from learning.core.store import StateStore

    panel = _panel(24 * 40)
    alloc = _trained(panel, NetConfig(n_steps=64, batch_size=32, n_epochs=1, policy="moe"))
    assert isinstance(alloc.policy, MoEActorCriticPolicy)
    store = StateStore(tmp_path)
    store.save_torch("allocator_x", {"payload": checkpoint(alloc)}, schema=1, meta=alloc.meta)
    state, _ = store.load_torch("allocator_x", schema=1)
    again = load_allocator(state["payload"])
    obs = np.random.default_rng(1).normal(0, 1, (1, alloc.layout.size)).astype(np.float32)
    listed = np.ones(3, dtype=bool)
    np.testing.assert_allclose(again.target(obs, listed), alloc.target(obs, listed))
    assert again.pairs == PAIRS and again.meta["trade_start"] == alloc.meta["trade_start"]


def test_checkpoint_of_another_architecture_or_version_is_refused():
    panel = _panel(24 * 40)
    payload = checkpoint(_trained(panel))
    with pytest.raises(StateError, match="d_model 32 differs from the configured 16"):
        load_allocator(payload, net=NetConfig(d_model=16))
    with pytest.raises(StateError, match="policy 'mlp' differs"):
        load_allocator(payload, net=NetConfig(policy="moe"))
    with pytest.raises(StateError, match="schema version"):
        load_allocator({**payload, "schema_version": 99})
    with pytest.raises(StateError, match="not an allocator checkpoint"):
        load_allocator({"format": "advl-ppo-trade-params"})
    bad = {**payload, "policies": [{k: v[..., :1] for k, v in payload["policies"][0].items()}]}
    with pytest.raises(StateError, match="weights do not fit"):
        load_allocator(bad)


def test_a_whitelist_that_changed_since_training_is_named():
    assert check_pairs(PAIRS, list(PAIRS)) is None
    msg = check_pairs(PAIRS, ["BTC/USDT", "ETH/USDT", "XRP/USDT"])
    assert "not trained on XRP/USDT" in msg and "SOL/USDT" in msg
    assert "order" in check_pairs(PAIRS, [PAIRS[1], PAIRS[0], PAIRS[2]])


def test_walk_forward_windows_cover_the_range_and_train_before_each():
    wins = windows(pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-03-15", tz="UTC"),
                   "90d", "30d")
    assert [w.trade_start.strftime("%m-%d") for w in wins] == ["01-01", "01-31", "03-01"]
    assert wins[-1].trade_end == pd.Timestamp("2024-03-15", tz="UTC")
    assert all(w.train_start == w.trade_start - pd.Timedelta(days=90) for w in wins)
    assert wins[0].name == "allocator_20240101"
