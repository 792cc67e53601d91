"""Curriculum and crash augmentation for training the allocator (issue 16, seed 003).

**Crash episodes.** One rule for real and synthetic data: the market proxy (the equal-weight
mean log return of the listed pairs, cumulated) closes ``drop`` (10 %) or more below its high
of the last ``within`` (48 h). The episode starts at that high (its *onset*) and lasts
``within + aftermath`` (the fall and what followed); episodes do not overlap.

**Curriculum** (``stages``): every training episode start of the range is labelled from its
own episode (hindsight inside the training range, which ends before the window the allocator
trades, so nothing is read from the traded future): *panic* when a crash alarm falls inside
it, else *trend* when the proxy's move over the episode is at least ``trend_z`` standard
deviations of a random walk of that length, else *range*. Training runs through cumulative
stages, as the design has it: trend only, then trend + range, then + panic, then every start
(unlabelled ones included), each stage a share of the timesteps (``stage_shares``). A stage
with no labelled start falls back to the previous pool (said once). Each stage change is
logged (``logging`` and TensorBoard ``curriculum/stage``).

**Crash augmentation** (``crash_share``, the design's 20 % synthetic next to 80 % real): that
share of the training episodes is drawn from augmented crash windows instead of the real
range. Each augmented window is a real stretch of the training range (its warm-up and its
episode) into which one crash is spliced at a random point: the crash's candles are an
*onset-aligned block bootstrap* of the crash episodes found in the training range and, with
``synthetic``, in a synthetic market (:mod:`learning.data.synth`, a fixed seed): block ``j``
(``block`` long) of the new crash is block ``j`` of a randomly chosen source episode, so the
path keeps a crash's shape (the fall, then the aftermath) while mixing episodes. Candles move
as relative OHLC (close-to-close log return, open gap, high above the close), all pairs of a
source row together, so the pairs' co-movement in a crash is kept; a pair the source row lacks
moves with the row's mean. The regime inputs of a spliced candle are those of its source
candle (uniform for the synthetic market, whose detector output is not computed). Features are
recomputed causally on the augmented path (:meth:`MarketPanel.from_candles`).

Why not ``arch.bootstrap``: its block bootstraps resample blocks at random positions of one
series, which would scatter a crash's fall over the whole window; here block ``j`` must come
from position ``j`` of some episode. And not CTGAN (the design's choice): its licence does not
fit, and a bootstrap of real crashes needs no model that could invent impossible ones.

Only the allocator uses it for now (``ftlearn train-allocator --curriculum --crash-share``);
the pyramiding agent trains inside FreqAI's RL loop, whose episode starts FreqAI owns.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from stable_baselines3.common.callbacks import BaseCallback

from learning.agents.alloc_env import AllocEnv, MarketPanel
from learning.core.config import _f
from learning.core.durations import candles, minutes_of
from learning.core.errors import ConfigError

logger = logging.getLogger(__name__)

STAGES = ("trend", "range", "panic", "all")
TREND, RANGE, PANIC = 0, 1, 2
_PAIR_RE = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+$")


@dataclass(frozen=True)
class CurriculumConfig:
    """Curriculum stages and crash augmentation of one training run (module docstring)."""

    stages: bool = _f(False, "Train through the stages trend -> + range -> + panic -> all.")
    stage_shares: tuple[float, ...] = _f((0.2, 0.2, 0.2, 0.4),
                                         "Share of the timesteps of each stage (4 values).")
    trend_z: float = _f(1.0, "An episode trends when the proxy moved at least this many "
                        "random-walk standard deviations over it.", (0.0, 100.0))
    crash_share: float = _f(0.0, "Share of training episodes drawn from augmented crash "
                            "windows (the design's 0.2; 0: off).", (0.0, 1.0))
    synthetic: bool = _f(True, "Also bootstrap the synthetic market's crashes.")
    drop: float = _f(0.10, "A crash: the proxy this far below its high of the last `within`.",
                     (0.001, 0.9))
    within: str = _f("48h", "Look-back of the crash rule.", duration=True)
    aftermath: str = _f("48h", "What follows the fall in one crash episode.", duration=True)
    block: str = _f("6h", "Block length of the bootstrap.", duration=True)
    windows: int = _f(24, "Augmented windows built per training run.", (1, 10_000))
    synthetic_days: int = _f(730, "Length of the synthetic market (days).", (30, 3650))
    synthetic_seed: int = _f(7, "Seed of the synthetic market.", (0, 2**31 - 1))

    def __post_init__(self) -> None:
        if len(self.stage_shares) != len(STAGES) or min(self.stage_shares) < 0 \
                or not sum(self.stage_shares) > 0:
            raise ConfigError(f"curriculum stage_shares {self.stage_shares}: need "
                              f"{len(STAGES)} non-negative shares with a positive sum")

    @property
    def active(self) -> bool:
        return self.stages or self.crash_share > 0


# ----------------------------------------------------------------------------------------------
# Crash episodes and labels


def market_proxy(panel: MarketPanel) -> np.ndarray:
    """(N,) cumulated equal-weight mean log return of the pairs listed at each candle (0 where
    none is); causal: entry t uses candles <= t."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.diff(np.log(panel.close), axis=1, prepend=np.nan)
    ok = np.isfinite(r) & panel.listed & np.roll(panel.listed, 1, axis=1)
    ok[:, 0] = False
    n = ok.sum(axis=0)
    mean = np.where(n > 0, np.where(ok, r, 0.0).sum(axis=0) / np.maximum(n, 1), 0.0)
    return np.cumsum(mean)


def crash_alarms(proxy: np.ndarray, within: int, drop: float) -> np.ndarray:
    """(N,) bool: the proxy at t is ``drop`` or more below its high over the last ``within``
    candles (t included); causal."""
    high = pd.Series(proxy).rolling(within + 1, min_periods=1).max().to_numpy()
    return proxy - high <= math.log(1.0 - drop)


def crash_onsets(proxy: np.ndarray, within: int, drop: float, length: int,
                 lo: int = 0, hi: int | None = None) -> list[int]:
    """Onsets (the high before the fall) of non-overlapping crash episodes of ``length``
    candles lying wholly inside [lo, hi)."""
    hi = len(proxy) if hi is None else hi
    alarms = np.flatnonzero(crash_alarms(proxy, within, drop))
    out: list[int] = []
    busy = lo
    for t in alarms:
        if t < busy:
            continue
        a = max(lo, t - within)
        onset = a + int(np.argmax(proxy[a:t + 1]))
        if onset < busy:
            continue
        if onset + length > hi:
            break
        out.append(onset)
        busy = onset + length
    return out


def label_starts(proxy: np.ndarray, starts: np.ndarray, span: int, within: int, drop: float,
                 trend_z: float) -> np.ndarray:
    """Label (TREND, RANGE or PANIC) of the episode [s, s + span] of every start ``s``."""
    alarms = crash_alarms(proxy, within, drop).astype(np.int64)
    cum = np.concatenate([[0], np.cumsum(alarms)])
    ends = np.minimum(starts + span, len(proxy) - 1)
    panic = (cum[ends + 1] - cum[starts]) > 0
    lo, hi = int(starts.min()), int(ends.max())
    steps = np.diff(proxy[lo:hi + 1])
    sd = float(steps.std()) if len(steps) > 1 else 0.0
    move = np.abs(proxy[ends] - proxy[starts])
    trend = move >= trend_z * sd * np.sqrt(np.maximum(ends - starts, 1)) if sd > 0 else \
        np.zeros(len(starts), dtype=bool)
    return np.where(panic, PANIC, np.where(trend, TREND, RANGE))


def stage_pools(labels: np.ndarray, starts: np.ndarray) -> list[np.ndarray]:
    """Start pools of the cumulative stages (trend, + range, + panic, all); an empty pool takes
    the previous stage's (the first falls back to all starts)."""
    pools: list[np.ndarray] = []
    for k, _ in enumerate(STAGES):
        pool = starts if k == len(STAGES) - 1 else starts[labels <= k]
        if not len(pool):
            pool = pools[-1] if pools else starts
        pools.append(pool)
    return pools


def stage_at(progress: float, shares: Sequence[float]) -> int:
    """Index of the stage at ``progress`` (0..1) of the timesteps."""
    edges = np.cumsum(np.asarray(shares, dtype=float) / float(sum(shares)))
    return int(min(np.searchsorted(edges, progress, side="right"), len(shares) - 1))


# ----------------------------------------------------------------------------------------------
# Crash augmentation


def _relative(panel: MarketPanel, lo: int, hi: int) -> np.ndarray:
    """(hi - lo, P, 3) relative candles: close-to-close log return, log(open / previous
    close), log(high / close); NaN where a pair has no candle."""
    prev = panel.close[:, lo - 1:hi - 1] if lo > 0 else np.concatenate(
        [np.full((len(panel.pairs), 1), np.nan), panel.close[:, :hi - 1]], axis=1)
    close, open_ = panel.close[:, lo:hi], panel.open[:, lo:hi]
    high = panel.high[:, lo:hi] if panel.high is not None else np.maximum(open_, close)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.stack([np.log(close / prev), np.log(open_ / prev), np.log(high / close)],
                       axis=-1)
    ok = panel.listed[:, lo:hi, None] & np.isfinite(rel)
    return np.where(ok, rel, np.nan).transpose(1, 0, 2)


@dataclass(frozen=True)
class CrashSource:
    """Crash episodes to bootstrap: (E, L, P, 3) relative candles and (E, L, 5) regime inputs."""

    rel: np.ndarray
    regime: np.ndarray
    real: int  # how many of the E episodes are real (the rest synthetic)


def episodes_of(panel: MarketPanel, cfg: CurriculumConfig, lo: int, hi: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The crash episodes wholly inside [lo, hi) of ``panel`` (relative candles, regime)."""
    tf = panel.timeframe
    within = candles(cfg.within, tf)
    length = within + candles(cfg.aftermath, tf)
    onsets = crash_onsets(market_proxy(panel), within, cfg.drop, length, max(lo, 1), hi)
    if not onsets:
        return np.empty((0, length, len(panel.pairs), 3)), np.empty((0, length, 5))
    rel = np.stack([_relative(panel, o, o + length) for o in onsets])
    reg = np.stack([panel.regime[o:o + length] for o in onsets])
    return rel, reg


@functools.lru_cache(maxsize=4)
def _synthetic_panel(pairs: tuple[str, ...], timeframe: str, days: int, seed: int
                     ) -> MarketPanel | None:
    from learning.data.synth import SynthConfig, generate_market

    if 1440 % minutes_of(timeframe):
        logger.info("crash augmentation: no synthetic crashes at %s (the synthetic market "
                    "needs a timeframe that divides a day)", timeframe)
        return None
    names = tuple(p.split(":")[0] if _PAIR_RE.match(p.split(":")[0]) else f"X{i}/USDT"
                  for i, p in enumerate(pairs))
    if len(set(names)) != len(names):
        names = tuple(f"X{i}/USDT" for i in range(len(pairs)))
    market = generate_market(SynthConfig(pairs=names, timeframe=timeframe, days=days,
                                         seed=seed))
    frames = {p: market.candles[n] for p, n in zip(pairs, names, strict=True)}
    return MarketPanel.from_candles(frames, timeframe)


def crash_source(panel: MarketPanel, cfg: CurriculumConfig, lo: int, hi: int) -> CrashSource:
    """Real crash episodes in [lo, hi) of ``panel`` and, with ``cfg.synthetic``, the
    synthetic market's (uniform regime inputs)."""
    rel, reg = episodes_of(panel, cfg, lo, hi)
    real = len(rel)
    if cfg.synthetic:
        synth = _synthetic_panel(panel.pairs, panel.timeframe, cfg.synthetic_days,
                                 cfg.synthetic_seed)
        if synth is not None:
            s_rel, _ = episodes_of(synth, cfg, 0, len(synth.dates))
            s_reg = np.full(s_rel.shape[:2] + (5,), 0.2)
            rel, reg = np.concatenate([rel, s_rel]), np.concatenate([reg, s_reg])
    return CrashSource(rel, reg, real)


def bootstrap_crash(source: CrashSource, block: int, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """One crash of the episodes' length: block j from position j of a random episode."""
    n, length = source.rel.shape[:2]
    rel, reg = np.empty(source.rel.shape[1:]), np.empty(source.regime.shape[1:])
    for a in range(0, length, block):
        e = int(rng.integers(n))
        rel[a:a + block] = source.rel[e, a:a + block]
        reg[a:a + block] = source.regime[e, a:a + block]
    return rel, reg


def _fill_missing(rel: np.ndarray) -> np.ndarray:
    """A pair a source row lacks moves with the row's mean (no gap, high at the close)."""
    ret = rel[:, :, :1]
    ok = np.isfinite(ret)
    n = ok.sum(axis=1, keepdims=True)
    mean = np.where(n > 0, np.where(ok, ret, 0.0).sum(axis=1, keepdims=True)
                    / np.maximum(n, 1), 0.0)
    fill = np.concatenate([mean, np.zeros_like(mean), np.zeros_like(mean)], axis=-1)
    return np.where(np.isfinite(rel), rel, np.broadcast_to(fill, rel.shape))


def augmented_panel(panel: MarketPanel, source: CrashSource, cfg: CurriculumConfig,
                    lo: int, hi: int, warm: int, span: int, rng: np.random.Generator
                    ) -> tuple[MarketPanel, np.ndarray] | None:
    """``cfg.windows`` augmented windows (module docstring) made from [lo - warm, hi) of
    ``panel``, laid end to end on made-up dates, and the episode start of each (the candle
    after its warm-up). ``None`` (said once) when there is no crash to bootstrap or the
    range is too short."""
    if not len(source.rel):
        logger.info("crash augmentation: no crash episode to bootstrap; off for this run")
        return None
    length = source.rel.shape[1]
    block = candles(cfg.block, panel.timeframe)
    # bases whose pairs are listed throughout, with the listing of the range's end (a pair
    # listed later than a base would appear from nothing in the middle of a window)
    now = panel.listed[:, hi - 1]
    whole = panel.listed[now].all(axis=0) if now.any() else \
        np.zeros(panel.listed.shape[1], dtype=bool)
    cum = np.concatenate([[0], np.cumsum(whole.astype(np.int64))])
    size = warm + span + 1
    first = np.arange(max(lo - warm, 0), hi - size + 1)
    ok = first[(cum[first + size] - cum[first]) == size] if len(first) else first
    if not len(ok):
        logger.info("crash augmentation: the training range is too short for a window of "
                    "%d candles; off for this run", size)
        return None
    frames: dict[str, list[pd.DataFrame]] = {p: [] for p in panel.pairs}
    regimes, starts = [], []
    tf = pd.Timedelta(minutes=minutes_of(panel.timeframe))
    t0 = pd.Timestamp(panel.dates[0], tz="UTC")
    offset = 0
    for _ in range(cfg.windows):
        b = int(ok[rng.integers(len(ok))])
        rel = _relative(panel, b, b + size)          # (size, P, 3)
        reg = panel.regime[b:b + size].copy()
        at = warm + int(rng.integers(max(1, span - length)))
        crash, crash_reg = bootstrap_crash(source, block, rng)
        end = min(size, at + length)
        rel[at:end] = crash[:end - at]
        reg[at:end] = crash_reg[:end - at]
        rel[:, ~now] = np.nan
        rel[0, now, 0] = 0.0  # the window's first close is its base's
        rel[0, now, 1] = 0.0
        rel = _fill_missing(rel) if now.any() else rel
        dates = t0 + tf * np.arange(offset, offset + size)
        for i, pair in enumerate(panel.pairs):
            if not now[i]:
                continue
            c = panel.close[i, b] * np.exp(np.cumsum(rel[:, i, 0]))
            prev = np.concatenate([[panel.close[i, b]], c[:-1]])
            o = prev * np.exp(rel[:, i, 1])
            h = np.maximum(np.maximum(c * np.exp(rel[:, i, 2]), o), c)
            frames[pair].append(pd.DataFrame({"date": dates, "open": o, "high": h,
                                              "low": np.minimum(o, c), "close": c,
                                              "volume": 1.0}))
        regimes.append(reg)
        starts.append(offset + warm)
        offset += size
    built = {p: pd.concat(f, ignore_index=True) if f else
             pd.DataFrame(columns=["date", "open", "high", "low", "close", "volume"])
             for p, f in frames.items()}
    out = MarketPanel.from_candles(built, panel.timeframe)
    out = dataclasses.replace(out, regime=np.concatenate(regimes))
    return out, np.asarray(starts)


# ----------------------------------------------------------------------------------------------
# Training


class MixedEnv(gym.Env):
    """The real training env, and the augmented one for a ``share`` of the episodes (drawn at
    each reset)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, real: AllocEnv, augmented: AllocEnv | None, share: float = 0.0) -> None:
        self.real, self.augmented, self.share = real, augmented, share
        self.observation_space, self.action_space = real.observation_space, real.action_space
        self.current: AllocEnv = real
        self.episodes = {"augmented": 0, "real": 0}

    @property
    def layout(self) -> Any:
        return self.real.layout

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.real.reset(seed=seed)
            if self.augmented is not None:
                self.augmented.reset(seed=seed + 1)
        aug = self.augmented is not None and self.share > 0 and not options \
            and float(self.np_random.random()) < self.share
        self.current = self.augmented if aug else self.real
        self.episodes["augmented" if aug else "real"] += 1
        return self.current.reset(options=options)

    def step(self, action: np.ndarray):
        return self.current.step(action)

    @property
    def counts(self) -> dict[str, int]:
        """The real env's counts, its NaN holds summed with the augmented env's."""
        out = dict(self.real.counts)
        if self.augmented is not None:
            out["nan_hold"] += self.augmented.counts["nan_hold"]
        return {**out, **self.episodes}


@dataclass
class Plan:
    """What each stage trains on: the real env's start pool and the augmented share."""

    env: MixedEnv
    pools: list[np.ndarray] | None
    cfg: CurriculumConfig
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)

    def apply(self, stage: int) -> None:
        if self.pools is not None:
            self.env.real.starts = self.pools[stage]
        crashes = stage >= PANIC or self.pools is None
        self.env.share = self.cfg.crash_share if crashes else 0.0


def build(real: AllocEnv, make_env: Any, cfg: CurriculumConfig,
          rng: np.random.Generator) -> Plan:
    """The training env and stage plan for ``real`` (an :class:`AllocEnv` over the training
    range). ``make_env(panel)``: an AllocEnv like ``real`` over another panel."""
    panel = real.panel
    span = real.episode_steps * real.stride
    starts = np.arange(real.lo, max(real.lo + 1, real.hi - span))
    tf = panel.timeframe
    within = candles(cfg.within, tf)
    pools, sizes = None, {}
    if cfg.stages:
        labels = label_starts(market_proxy(panel), starts, span, within, cfg.drop,
                              cfg.trend_z)
        for k, name in enumerate(("trend", "range", "panic")):
            sizes[name] = int((labels == k).sum())
        pools = stage_pools(labels, starts)
        for k, name in enumerate(STAGES[:-1]):
            if not (labels <= k).any():
                logger.info("curriculum: no %s episode in the training range; that stage "
                            "keeps the previous pool", name)
    augmented = None
    if cfg.crash_share > 0:
        source = crash_source(panel, cfg, real.lo, real.hi + 1)
        sizes.update(real_crashes=source.real, synthetic_crashes=len(source.rel) - source.real)
        warm = real.layout.window + candles(real.fcfg.long, tf, 3) * 2
        made = augmented_panel(panel, source, cfg, real.lo, real.hi + 1, warm, span, rng)
        if made is not None:
            aug_panel, aug_starts = made
            augmented = make_env(aug_panel)
            augmented.starts = np.maximum(aug_starts, augmented.lo)
            sizes["augmented_windows"] = len(aug_starts)
    plan = Plan(MixedEnv(real, augmented), pools, cfg, sizes)
    plan.apply(0 if cfg.stages else len(STAGES) - 1)
    return plan


class CurriculumCallback(BaseCallback):
    """Moves ``plan`` through the stages by the share of ``total`` timesteps done; logs each
    change and keeps the (timestep, stage) history."""

    def __init__(self, plan: Plan, total: int, name: str = "") -> None:
        super().__init__()
        self.plan, self.total, self.name = plan, max(1, total), name
        self.stage = 0 if plan.cfg.stages else len(STAGES) - 1
        self.history: list[tuple[int, str]] = [(0, STAGES[self.stage])]

    def _on_training_start(self) -> None:
        logger.info("%scurriculum stage %s from step 0 (%s)", self.name, STAGES[self.stage],
                    self.plan.sizes)

    def _on_rollout_start(self) -> None:
        if not self.plan.cfg.stages:
            return
        stage = stage_at(self.num_timesteps / self.total, self.plan.cfg.stage_shares)
        if stage != self.stage:
            self.stage = stage
            self.plan.apply(stage)
            self.history.append((int(self.num_timesteps), STAGES[stage]))
            logger.info("%scurriculum stage %s from step %d", self.name, STAGES[stage],
                        self.num_timesteps)

    def _on_rollout_end(self) -> None:
        self.logger.record("curriculum/stage", self.stage)
        self.logger.record("curriculum/augmented_episodes", self.plan.env.episodes["augmented"])

    def _on_step(self) -> bool:
        return True
