"""Training quality of life: the cosine schedule with warm restarts, the curve fit behind early
stopping, the evaluation callback (best model kept, learning rate cut on a plateau, early stop)
and the allocator's seed ensemble acting on the mean action."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch
from stable_baselines3 import PPO

from learning.agents.alloc_policy import NetConfig
from learning.agents.alloc_train import Window, train_window
from learning.agents.training import EvalCallback, cosine_warm_restarts, extrapolate
from tests.agents.test_allocator import FEE, _panel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cosine_schedule_decays_to_the_floor_and_restarts_each_cycle():
    lr = cosine_warm_restarts(1e-3, cycles=2, floor=0.1)
    assert lr(1.0) == pytest.approx(1e-3)  # start of training
    assert lr(0.75) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # half-way through cycle 1
    assert lr(0.5000001) == pytest.approx(1e-4, rel=1e-3)  # end of cycle 1: the floor
    assert lr(0.5) == pytest.approx(1e-3)  # restart
    assert lr(0.0) == pytest.approx(1e-4, rel=1e-3)
    with pytest.raises(ValueError):
        cosine_warm_restarts(1e-3, cycles=0)


def test_extrapolate_fits_a_line_through_the_last_points():
    final, spread = extrapolate([9.0, 0.0, 1.0, 2.0, 3.0], at=9, points=4)
    assert final == pytest.approx(8.0) and spread == pytest.approx(0.0, abs=1e-9)
    final, spread = extrapolate([5.0], at=3, points=4)
    assert final == 5.0 and spread == math.inf


class Bandit(gym.Env):
    """One-step episodes; action 1 pays 1, action 0 pays 0 (``flip``: the other way round)."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, flip: bool = False) -> None:
        self.flip = flip

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        good = int(action) == (0 if self.flip else 1)
        return np.zeros(2, dtype=np.float32), float(good), True, False, {}


def _ppo(env, seed=0) -> PPO:
    return PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, learning_rate=1e-3,
               seed=seed, device="cpu", verbose=0)


def test_eval_callback_keeps_the_best_weights_and_cuts_the_rate_on_a_plateau():
    model = _ppo(Bandit())
    # evaluated where every policy scores the same: a plateau from the second evaluation on
    cb = EvalCallback(Bandit(flip=True), every=1, patience=2, factor=0.5)
    model.learn(64 * 8, callback=cb)
    assert len(cb.history) == 8
    assert cb.lr_reductions >= 1 and cb.scale == pytest.approx(0.5 ** cb.lr_reductions)
    assert model.lr_schedule(0.5) == pytest.approx(1e-3 * cb.scale)
    first_best = cb.best_state
    cb.restore_best()
    assert all(torch.equal(v, first_best[k]) for k, v in model.policy.state_dict().items())


def test_eval_callback_stops_a_run_that_cannot_reach_the_target():
    model = _ppo(Bandit())
    cb = EvalCallback(Bandit(flip=True), every=1, target=10.0, total_evals=50, min_evals=3)
    model.learn(64 * 50, callback=cb)
    assert cb.stopped_early and len(cb.history) == 3, "a flat curve far below the target"
    reachable = EvalCallback(Bandit(), every=1, target=0.5, total_evals=10, min_evals=3)
    _ppo(Bandit(), seed=1).learn(64 * 10, callback=reachable)
    assert not reachable.stopped_early


def test_allocator_ensemble_acts_on_the_members_mean_logits():
    panel = _panel()
    win = Window(pd.Timestamp(panel.dates[0], tz="UTC"),
                 pd.Timestamp(panel.dates[-200], tz="UTC"),
                 pd.Timestamp(panel.dates[-1], tz="UTC"))
    net = NetConfig(n_steps=64, batch_size=32, n_epochs=1, ensemble=2, eval_share=0.2,
                    eval_every=1, lr_schedule="cosine")
    alloc, fig = train_window(panel, win, net, fee=FEE, timesteps=256)
    assert len(alloc.policies) == 2 and fig["members"] == 2
    assert len(fig["evals"]) == 2 and all(len(e) == 4 for e in fig["evals"])
    obs = np.random.default_rng(0).normal(0, 1, (3, alloc.layout.size)).astype(np.float32)
    x = torch.as_tensor(obs)
    each = [p.get_distribution(x).distribution.mean.clamp(-5, 5).detach().numpy()
            for p in alloc.policies]
    np.testing.assert_allclose(alloc.logits(obs), (each[0] + each[1]) / 2, atol=1e-7)
    assert not np.allclose(each[0], each[1]), "two seeds, two networks"
    # held out for evaluation, still before the window it trades
    assert pd.Timestamp(alloc.meta["data_end"]) < win.trade_start


def test_allocator_training_logs_rewards_losses_and_evaluations_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    panel = _panel()
    win = Window(pd.Timestamp(panel.dates[0], tz="UTC"),
                 pd.Timestamp(panel.dates[-200], tz="UTC"),
                 pd.Timestamp(panel.dates[-1], tz="UTC"))
    net = NetConfig(n_steps=64, batch_size=32, n_epochs=1, eval_share=0.2, eval_every=1,
                    plateau_patience=1)
    train_window(panel, win, net, fee=FEE, tensorboard=tmp_path, timesteps=192)
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(runs) == 1
    acc = EventAccumulator(str(runs[0])).Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"allocator/recon_loss", "eval/reward", "train/lr_scale", "train/policy_gradient_loss",
            "train/learning_rate"} <= tags, tags
