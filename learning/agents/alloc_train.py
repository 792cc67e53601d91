"""Walk-forward training of the allocator (``ftlearn train-allocator``).

Why a command and not a FreqAI model: FreqAI trains and serves **one model per pair** (its
``train`` gets one pair's frame, its data drawer keeps one model per pair, its backtest trains
pair after pair), while the allocator is **one model over all pairs** whose action couples
them (the weights share one budget). Fitting it into FreqAI would mean training the same
joint model once per pair, or smuggling state between the per-pair calls. So, as FreqAI would,
the command cuts the range into windows (train on ``train`` before each window start, trade
the next ``retrain``), trains one allocator per window on that window's past only, and saves
each as ``allocator_<YYYYMMDD>.pt`` (the day it starts trading) with the data range it saw.
The strategy uses, at every candle, the newest allocator whose trading start has passed, and
refuses one that saw candles after its own trading start (lookahead).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from learning.agents import curriculum as C
from learning.agents.alloc_env import (
    AllocEnv,
    AllocEnvConfig,
    FeatureConfig,
    MarketPanel,
)
from learning.agents.alloc_policy import (
    Allocator,
    AllocExtractor,
    NetConfig,
    checkpoint,
    policy_spec,
)
from learning.agents.training import EvalCallback, cosine_warm_restarts
from learning.core.durations import parse_duration
from learning.core.errors import DataError

logger = logging.getLogger(__name__)

#: Schema of the state-store files holding one allocator (``StateStore.save_torch``).
ALLOC_SCHEMA = 1
PREFIX = "allocator_"


@dataclass(frozen=True)
class Window:
    """Train on [train_start, trade_start), trade [trade_start, trade_end)."""

    train_start: pd.Timestamp
    trade_start: pd.Timestamp
    trade_end: pd.Timestamp

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.trade_start:%Y%m%d}"


def windows(start: pd.Timestamp, end: pd.Timestamp, train: str, retrain: str) -> list[Window]:
    """The walk-forward windows covering [start, end) (FreqAI's train/backtest periods)."""
    t, step = pd.Timedelta(parse_duration(train)), pd.Timedelta(parse_duration(retrain))
    out, s = [], start
    while s < end:
        out.append(Window(s - t, s, min(s + step, end)))
        s += step
    return out


class _ReconLogger(BaseCallback):
    """Logs the reducer's reconstruction loss (TensorBoard ``allocator/recon_loss``) and keeps
    its history (the end-to-end test checks that it falls)."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[float] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        ext: AllocExtractor = self.model.policy.features_extractor
        if np.isfinite(ext.last_recon):
            self.history.append(ext.last_recon)
            self.logger.record("allocator/recon_loss", ext.last_recon)
        env = self.model.get_env().envs[0].unwrapped
        self.logger.record("allocator/nan_hold", env.counts["nan_hold"])


def train_window(panel: MarketPanel, window: Window, net: NetConfig | None = None,
                 env_cfg: AllocEnvConfig | None = None, features: FeatureConfig | None = None,
                 fee: float = 0.001, tensorboard: Path | None = None,
                 timesteps: int | None = None) -> tuple[Allocator, dict[str, Any]]:
    """Train one allocator on ``[window.train_start, window.trade_start)`` of ``panel`` (no
    candle at or after the trade start is read); returns it and its training figures.

    With ``net.eval_share`` the end of that range is held out to evaluate each seed (the best
    evaluation's weights are kept, the learning rate falls on a plateau, and with
    ``net.early_stop`` a seed unlikely to beat the best so far stops and leaves the ensemble);
    ``net.ensemble`` seeds are trained and the allocator acts on their mean action."""
    net, env_cfg = net or NetConfig(), env_cfg or AllocEnvConfig()
    features = features or FeatureConfig()
    steps = timesteps or net.timesteps
    split = window.trade_start
    eval_env = None
    if net.eval_share > 0:
        span = window.trade_start - window.train_start
        split = window.trade_start - span * net.eval_share
        eval_env = AllocEnv(panel, features, env_cfg, fee=fee, start=split,
                            end=window.trade_start, training=False)
    members, figures = [], {"timesteps": 0, "seconds": 0.0, "evals": [], "stopped": [],
                            "lr_reductions": 0}
    best_final: float | None = None
    layout = None
    recon_first = recon_last = float("nan")
    curriculum = C.CurriculumConfig(stages=net.curriculum, crash_share=net.crash_share)
    for k in range(net.ensemble):
        seed = net.seed + k
        env = AllocEnv(panel, features, env_cfg, fee=fee, start=window.train_start, end=split,
                       training=True)
        layout = env.layout
        cls, kwargs = policy_spec(env.layout, net)
        torch.manual_seed(seed)
        schedule = cosine_warm_restarts(net.learning_rate, net.lr_cycles) \
            if net.lr_schedule == "cosine" else net.learning_rate
        train_env: Any = env
        stages = None
        if curriculum.active:
            plan = C.build(env, lambda p: AllocEnv(p, features, env_cfg, fee=fee,
                                                    training=True),
                           curriculum, np.random.default_rng(seed))
            train_env = plan.env
            stages = C.CurriculumCallback(plan, steps, f"{window.name} seed {seed}: ")
        model = PPO(cls, train_env, learning_rate=schedule, n_steps=net.n_steps,
                    batch_size=net.batch_size, n_epochs=net.n_epochs, gamma=net.gamma,
                    ent_coef=net.ent_coef, policy_kwargs=kwargs, seed=seed, device="cpu",
                    verbose=0, tensorboard_log=str(tensorboard) if tensorboard else None)
        recon = _ReconLogger()
        callbacks: list[BaseCallback] = [recon] + ([stages] if stages else [])
        evaluator = None
        if eval_env is not None:
            rollouts = max(1, steps // net.n_steps)
            evaluator = EvalCallback(
                eval_env, net.eval_every, patience=net.plateau_patience,
                target=best_final if net.early_stop else None,
                total_evals=rollouts // net.eval_every)
            callbacks.append(evaluator)
        t0 = time.perf_counter()
        model.learn(steps, callback=callbacks,
                    tb_log_name=f"{window.name}_s{seed}" if tensorboard else "PPO")
        figures["seconds"] += time.perf_counter() - t0
        figures["timesteps"] += int(model.num_timesteps)
        if stages is not None:
            figures.setdefault("curriculum", []).append(
                {"stages": stages.history, **stages.plan.sizes,
                 "episodes": dict(stages.plan.env.episodes)})
        if k == 0:
            recon_first = recon.history[0] if recon.history else float("nan")
        recon_last = recon.history[-1] if recon.history else recon_last
        keep = True
        if evaluator is not None:
            evaluator.restore_best()
            figures["evals"].append(evaluator.history)
            figures["lr_reductions"] += evaluator.lr_reductions
            if evaluator.stopped_early:
                figures["stopped"].append(seed)
                keep = not members  # a stopped seed leaves the ensemble (unless it is alone)
            if keep and evaluator.best > (best_final if best_final is not None else -math.inf):
                best_final = evaluator.best
        if keep:
            model.policy.set_training_mode(False)
            members.append(model.policy)
    last_train = panel.dates[(eval_env or env).hi]  # the last candle a step read
    meta = {"data_start": str(pd.Timestamp(panel.dates[env.lo], tz="UTC")),
            "data_end": str(pd.Timestamp(last_train, tz="UTC")),
            "trade_start": str(window.trade_start), "trade_end": str(window.trade_end),
            "pairs": list(panel.pairs), "timeframe": panel.timeframe, "fee": fee,
            "ensemble": len(members), "runmode": "offline"}
    alloc = Allocator(panel.pairs, panel.timeframe, features, env_cfg, net, layout, members,
                      meta)
    figures.update(recon_first=recon_first, recon_last=recon_last,
                   nan_hold=env.counts["nan_hold"], members=len(members))
    return alloc, figures


def load_panel(datadir: Path, pairs: Sequence[str], timeframe: str, start: pd.Timestamp,
               end: pd.Timestamp, features: FeatureConfig, regime_cfg: Any = None,
               btc_pair: str = "BTC/USDT", peers: Sequence[str] = ()) -> MarketPanel:
    """The pairs' candles in [start, end) (and the regime detector's probabilities when
    ``regime_cfg`` is given and the market proxy's candles exist; its dispersion feature
    compares ``peers``, default the pairs, as the strategy's ``brain.peers`` does)."""
    from learning.data.candles import load_candles

    frames = {}
    for p in pairs:
        df = load_candles(datadir, p, timeframe)
        frames[p] = df[(df["date"] >= start) & (df["date"] < end)].reset_index(drop=True)
    if all(f.empty for f in frames.values()):
        raise DataError(f"none of {', '.join(pairs)} has {timeframe} candles in "
                        f"{start:%Y-%m-%d} .. {end:%Y-%m-%d}")
    regime = None
    if regime_cfg is not None:
        from learning.brain.regime import RegimeDetector, regime_features

        hourly = {}
        lo = start - pd.Timedelta(hours=regime_cfg.fit_window + regime_cfg.warmup_candles)
        for p in dict.fromkeys([btc_pair, *(peers or pairs)]):
            try:
                df = load_candles(datadir, p, regime_cfg.timeframe)
            except DataError:
                continue
            hourly[p] = df[(df["date"] >= lo) & (df["date"] < end)].reset_index(drop=True)
        if btc_pair in hourly:
            btc = hourly.pop(btc_pair)
            regime = RegimeDetector(regime_cfg).detect(regime_features(btc, hourly,
                                                                       regime_cfg))
    return MarketPanel.from_candles(frames, timeframe, features, regime,
                                    regime_cfg.timeframe if regime_cfg is not None else None)


def train_walk_forward(panel: MarketPanel, wins: Sequence[Window], store: Any,
                       net: NetConfig | None = None, env_cfg: AllocEnvConfig | None = None,
                       features: FeatureConfig | None = None, fee: float = 0.001,
                       tensorboard: Path | None = None, timesteps: int | None = None,
                       say: Callable[[str], None] = print) -> list[Path]:
    """Train and save one allocator per window (skipping a window whose training range holds
    too few candles, said once per window); returns the checkpoint paths."""
    paths = []
    for w in wins:
        try:
            alloc, fig = train_window(panel, w, net, env_cfg, features, fee, tensorboard,
                                      timesteps)
        except DataError as err:
            say(f"{w.name}: not trained ({err})")
            continue
        path = store.save_torch(w.name, {"payload": checkpoint(alloc)}, schema=ALLOC_SCHEMA,
                                meta=alloc.meta)
        paths.append(path)
        say(f"{w.name}: trades {w.trade_start:%Y-%m-%d} .. {w.trade_end:%Y-%m-%d}, trained on "
            f"{alloc.meta['data_start'][:10]} .. {alloc.meta['data_end'][:10]}: "
            f"{fig['timesteps']} steps in {fig['seconds']:.0f} s, reconstruction loss "
            f"{fig['recon_first']:.3f} -> {fig['recon_last']:.3f}"
            + (f", {fig['members']} of {net.ensemble} seeds kept (stopped early: "
               f"{fig['stopped'] or 'none'}), learning rate cut {fig['lr_reductions']} times"
               if net and net.ensemble > 1 else "") + f" -> {path}")
    return paths


def train_allocator(ft_config: dict[str, Any], cfg: Any, store: Any, datadir: Path,
                    timerange: str, train: str = "90d", retrain: str = "30d",
                    timesteps: int | None = None, policy: str = "mlp",
                    tensorboard: Path | None = None, regimes: bool = True, seed: int = 0,
                    say: Callable[[str], None] = print,
                    training: dict[str, Any] | None = None) -> list[Path]:
    """Walk-forward allocators for the whitelist over ``timerange`` (``YYYYMMDD-YYYYMMDD``, the
    range they will trade), from freqtrade's merged config and the parsed ``advanced_learning``
    section ``cfg`` (the cap, the rebalancing rule and the regime detector come from it).
    ``training``: :class:`NetConfig` training fields (schedule, evaluation, ensemble, ...)."""
    import dataclasses

    from learning.core.durations import parse_duration

    start_s, _, end_s = timerange.partition("-")
    if not start_s or not end_s:
        raise DataError(f"--timerange {timerange!r}: need YYYYMMDD-YYYYMMDD")
    start, end = pd.Timestamp(start_s, tz="UTC"), pd.Timestamp(end_s, tz="UTC")
    pairs = list(ft_config["exchange"]["pair_whitelist"])
    tf = ft_config.get("timeframe", "5m")
    features = FeatureConfig()
    warm = pd.Timedelta(parse_duration(features.long)) * 2 + pd.Timedelta(
        parse_duration(features.window))
    lo = start - pd.Timedelta(parse_duration(train)) - warm
    torch.set_num_threads(1)
    panel = load_panel(datadir, pairs, tf, lo, end, features,
                       cfg.regime.detector if regimes and cfg.regime.enabled else None,
                       cfg.regime.btc_pair, cfg.brain.peers or tuple(pairs))
    alloc = cfg.allocator
    env_cfg = AllocEnvConfig(cap=cfg.risk.max_position_pct, min_weight=alloc.min_weight,
                             min_rebalance=alloc.min_rebalance, step=alloc.rebalance_every,
                             daily_loss=cfg.risk.max_daily_loss_pct)
    net = dataclasses.replace(NetConfig(), policy=policy, seed=seed, **(training or {}))
    fee = float(ft_config.get("fee") or 0.001)
    wins = windows(start, end, train, retrain)
    say(f"{len(wins)} window(s) over {start:%Y-%m-%d} .. {end:%Y-%m-%d} of {', '.join(pairs)} "
        f"{tf}: train {train} before each, retrain every {retrain}, {policy} policy")
    return train_walk_forward(panel, wins, store, net, env_cfg, features, fee, tensorboard,
                              timesteps, say)
