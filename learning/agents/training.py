"""Training quality of life for the sb3 agents (seeds 002, 003): an adaptive learning rate,
evaluation on held-out candles with the best model kept, smart early stopping, all logged to
TensorBoard.

* :func:`cosine_warm_restarts`: sb3 learning-rate schedule (a function of the remaining
  progress, 1 -> 0): ``cycles`` cosine decays from the base rate to ``floor`` times it, each
  restarting at the base rate (SGDR, Loshchilov & Hutter 2017).
* :class:`EvalCallback`: every ``every`` rollouts runs the policy deterministically over a
  held-out evaluation environment; keeps the weights of the best evaluation (restored at the
  end); **reduces the learning rate on a plateau** (no improvement by ``min_delta`` for
  ``patience`` evaluations multiplies it by ``factor``, on top of the schedule); and **stops
  early** a run whose evaluation curve, fitted and extrapolated to the end of training, is
  unlikely to beat ``target`` (the best final evaluation of the runs before it, e.g. the other
  seeds of an ensemble): the fit is a least-squares line on the last ``fit_points``
  evaluations, and the run stops when its extrapolated final value plus ``margin`` times the
  residual spread is still below the target.

Prioritised and hindsight experience replay belong to off-policy methods that keep a replay
buffer (DQN, SAC, DDPG); PPO is on-policy and learns from each fresh rollout once, so neither
applies here.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


def cosine_warm_restarts(base: float, cycles: int = 4, floor: float = 0.1
                         ) -> Callable[[float], float]:
    """sb3 schedule: ``cycles`` cosine decays from ``base`` to ``floor * base``."""
    if cycles < 1 or not 0.0 <= floor <= 1.0 or not base > 0:
        raise ValueError(f"cosine_warm_restarts: base {base}, cycles {cycles}, floor {floor}")

    def schedule(progress_remaining: float) -> float:
        done = min(max(1.0 - progress_remaining, 0.0), 1.0 - 1e-12)
        phase = (done * cycles) % 1.0
        return base * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * phase)))

    return schedule


def evaluate(model: Any, env: Any) -> float:
    """Total reward of one deterministic pass over ``env`` (a gymnasium env, reset to its
    start with ``options={"start": 0}`` when it supports it)."""
    obs, _ = env.reset(options={"start": 0})
    total, done = 0.0, False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        done = terminated or truncated
    return total


def extrapolate(values: list[float], at: float, points: int) -> tuple[float, float]:
    """(value at ``at``, residual std) of a least-squares line through the last ``points`` of
    ``values`` (indexed 0, 1, ...)."""
    y = np.asarray(values[-points:], dtype=float)
    x = np.arange(len(values) - len(y), len(values), dtype=float)
    if len(y) < 2:
        return float(y[-1]), float("inf")
    slope, icept = np.polyfit(x, y, 1)
    resid = y - (slope * x + icept)
    return float(slope * at + icept), float(resid.std(ddof=1) if len(y) > 2 else 0.0)


class EvalCallback(BaseCallback):
    """Held-out evaluation, best model kept, LR reduced on a plateau, early stopping (module
    docstring). ``total_evals``: evaluations a full run would make (for the extrapolation)."""

    def __init__(self, eval_env: Any, every: int = 2, *, base_schedule: Callable | None = None,
                 patience: int = 0, factor: float = 0.5, min_delta: float = 0.0,
                 target: float | None = None, total_evals: int = 0, fit_points: int = 4,
                 margin: float = 2.0, min_evals: int = 4) -> None:
        super().__init__()
        self.eval_env, self.every = eval_env, max(1, every)
        self.base_schedule = base_schedule
        self.patience, self.factor, self.min_delta = patience, factor, min_delta
        self.target, self.total_evals = target, total_evals
        self.fit_points, self.margin, self.min_evals = fit_points, margin, min_evals
        self.scale, self.rollouts, self.stale = 1.0, 0, 0
        self.history: list[float] = []
        self.best, self.best_state = -math.inf, None
        self.stopped_early = False
        self.lr_reductions = 0

    def _on_training_start(self) -> None:
        base = self.base_schedule or self.model.lr_schedule
        self.model.lr_schedule = lambda p: base(p) * self.scale

    def _on_step(self) -> bool:
        return not self.stopped_early

    def _on_rollout_end(self) -> None:
        self.rollouts += 1
        if self.rollouts % self.every:
            return
        score = evaluate(self.model, self.eval_env)
        self.history.append(score)
        self.logger.record("eval/reward", score)
        if score > self.best + self.min_delta:
            self.best, self.stale = score, 0
            self.best_state = copy.deepcopy(self.model.policy.state_dict())
        else:
            self.stale += 1
            if self.patience and self.stale >= self.patience:
                self.scale *= self.factor
                self.stale = 0
                self.lr_reductions += 1
        self.logger.record("train/lr_scale", self.scale)
        n = len(self.history)
        if self.target is not None and self.total_evals > n >= self.min_evals:
            final, spread = extrapolate(self.history, self.total_evals - 1, self.fit_points)
            if max(final + self.margin * spread, self.best) < self.target:
                self.stopped_early = True
                self.logger.record("eval/stopped_early", n)

    def restore_best(self) -> None:
        """Load the weights of the best evaluation into the model's policy."""
        if self.best_state is not None:
            self.model.policy.load_state_dict(self.best_state)
