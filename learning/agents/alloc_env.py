"""The portfolio allocation environment: every whitelisted pair at once, a target weight each.

Market (:class:`MarketPanel`): the pairs' candles aligned on one set of dates, per pair and
candle a few causal, scale-free features (:func:`panel_features`: the candle's log return,
the returns over ``short`` and ``long``, the ratio of short to long volatility and the
drawdown from the ``long`` high, returns in units of the pair's own volatility, clipped to
±5) and the regime probabilities of the market (uniform when unknown). A pair is *listed*
(tradable) from its first candle whose features have warmed up (``long`` after its market
opened); before that its weight is 0 (no backfilled prices).

Action: ``P + 1`` logits; :func:`capped_weights` turns them into target weights of the pairs
and cash: a softmax (all weights >= 0, summing to 1), each pair at most ``cap`` (the risk
guard's 20 % of equity per trade) with the excess in cash, targets below ``min_weight`` set
to 0 (a position is closed), unlisted pairs 0.

Execution (:func:`rebalance`, the same rule the strategy's ``allocator`` sizing mode applies
through ``custom_stake_amount`` and ``adjust_trade_position``): a pair trades only when its
target differs from its weight by at least ``min_rebalance`` of equity, when its target is 0
(close), or when it has grown more than 2 % above the cap (trim); buys are scaled down to the
cash the sales and the book leave. Every traded notional pays ``fee``.

A step covers ``step`` (e.g. "4h"): the book is rebalanced at the open of the step's first
candle, then every pair's weight drifts with its price to the open after the step. As the
risk guard does, a step that ends ``daily_loss`` below the UTC day's opening value sells
everything (paying the fees) and the book stays in cash until the next UTC day. Reward:
``scale * (log(V_after / V_before) - drawdown_penalty * drawdown added beyond drawdown_free -
turnover_penalty * traded notional / V)``; the fees are inside V. Observation (one flat
vector, :class:`ObsLayout`): per pair its last ``window`` candles of features, then the
pairs' current weights, the five regime probabilities, cash and drawdown. A step whose
observation is not finite for a listed pair holds (no trade) and is counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from learning.core.config import _f
from learning.core.durations import candles
from learning.core.errors import DataError
from learning.core.regimes import REGIMES

#: A position this far (relative) above the cap is trimmed whatever the band (the strategy's
#: tolerance for an over-cap trade; a fill at the cap sits a fee above it once the fee is paid).
OVER_CAP = 0.02
N_FEATURES = 5
N_REGIMES = len(REGIMES)
N_PORTFOLIO = 2  # cash weight, drawdown
_CLIP = 5.0


@dataclass(frozen=True)
class FeatureConfig:
    """The market features of the allocator (durations, turned into candles)."""

    window: str = _f("1d", "Candles of features per pair in one observation (a duration).",
                     duration=True)
    short: str = _f("1d", "Short horizon of the return and volatility features.",
                    duration=True)
    long: str = _f("7d", "Long horizon of the return, volatility and drawdown features.",
                   duration=True)


@dataclass(frozen=True)
class AllocEnvConfig:
    """Execution and reward of the allocation environment."""

    cap: float = _f(0.20, "Largest weight of one pair (the risk guard's max_position_pct).",
                    (0.001, 1.0))
    min_weight: float = _f(0.01, "Targets below this weight are 0 (the position is closed).",
                           (0.0, 0.5))
    min_rebalance: float = _f(0.02, "A pair trades only when its target differs from its "
                              "weight by at least this share of equity.", (0.0, 0.5))
    step: str = _f("4h", "Time between rebalancing decisions.", duration=True)
    episode: str = _f("30d", "Training episode length.", duration=True)
    scale: float = _f(100.0, "Reward multiplier (1 % log growth -> 1.0).", (1e-6, 1e6))
    drawdown_penalty: float = _f(0.5, "Penalty per unit of drawdown added beyond "
                                 "drawdown_free.", (0.0, 100.0))
    drawdown_free: float = _f(0.02, "Drawdown tolerated without penalty.", (0.0, 1.0))
    turnover_penalty: float = _f(0.0005, "Churn: penalty per unit of traded notional / "
                                 "equity, on top of the fee.", (0.0, 1.0))
    daily_loss: float = _f(0.02, "The risk guard's daily loss limit: a step that ends this far "
                           "below the UTC day's opening value sells everything and keeps the "
                           "book in cash for the rest of the day (0: off).", (0.0, 1.0))


# ----------------------------------------------------------------------------------------------
# Market


def panel_features(df: pd.DataFrame, timeframe: str, cfg: FeatureConfig) -> np.ndarray:
    """(N, N_FEATURES) causal features of one pair's candles; row t uses candles <= t only;
    NaN until the long window has filled."""
    close = pd.Series(df["close"].to_numpy(dtype=float))
    high = pd.Series(df["high"].to_numpy(dtype=float))
    logc = np.log(close.where(close > 0))
    r = logc.diff()
    short, long = candles(cfg.short, timeframe, 2), candles(cfg.long, timeframe, 3)
    vol_long = r.rolling(long, min_periods=long).std()
    vol_short = r.rolling(short, min_periods=short).std()
    sigma = vol_long.where(vol_long > 0)
    out = np.column_stack([
        r / sigma,
        (logc - logc.shift(short)) / (sigma * math.sqrt(short)),
        (logc - logc.shift(long)) / (sigma * math.sqrt(long)),
        np.log(vol_short.where(vol_short > 0) / sigma),
        (np.log(close / high.rolling(long, min_periods=long).max())) / (sigma * math.sqrt(long)),
    ])
    return np.clip(out, -_CLIP, _CLIP)


@dataclass(frozen=True)
class MarketPanel:
    """Aligned candles and features of several pairs ((P, N) arrays: pairs x candles)."""

    pairs: tuple[str, ...]
    timeframe: str
    dates: np.ndarray       # (N,) datetime64[ns] candle open times
    open: np.ndarray        # (P, N), forward-filled; NaN before a pair's first candle
    close: np.ndarray
    listed: np.ndarray      # (P, N) bool: from the pair's first candle with warm features
    features: np.ndarray    # (P, N, F)
    regime: np.ndarray      # (N, 5) probabilities (uniform when unknown)
    vol: np.ndarray         # (P, N) per-candle volatility over the long window
    high: np.ndarray | None = None  # (P, N) forward-filled highs (crash augmentation)

    @classmethod
    def from_candles(cls, frames: Mapping[str, pd.DataFrame], timeframe: str,
                     cfg: FeatureConfig | None = None, regime: pd.DataFrame | None = None,
                     regime_timeframe: str | None = None) -> MarketPanel:
        """Align ``frames`` (pair -> freqtrade candles, the whitelist's order) on the union of
        their dates. ``regime``: a frame with ``date`` and the ``regime_prob_*`` columns on
        ``regime_timeframe``, used from each regime candle's close on."""
        cfg = cfg or FeatureConfig()
        if not frames:
            raise DataError("the allocator needs the candles of at least one pair")
        pairs = tuple(frames)
        dates = pd.DatetimeIndex(sorted(set().union(*(
            pd.to_datetime(f["date"], utc=True) for f in frames.values()))))
        P, N = len(pairs), len(dates)
        op, cl, hi = np.full((P, N), np.nan), np.full((P, N), np.nan), np.full((P, N), np.nan)
        listed = np.zeros((P, N), dtype=bool)
        feats = np.full((P, N, N_FEATURES), np.nan)
        vol = np.full((P, N), np.nan)
        for i, pair in enumerate(pairs):
            df = frames[pair].copy()
            df["date"] = pd.to_datetime(df["date"], utc=True)
            df = df.drop_duplicates("date").set_index("date").reindex(dates)
            if df["close"].first_valid_index() is None:
                continue
            df[["open", "high", "low", "close"]] = df[["open", "high", "low", "close"]].ffill()
            op[i], cl[i] = df["open"].to_numpy(dtype=float), df["close"].to_numpy(dtype=float)
            hi[i] = df["high"].to_numpy(dtype=float)
            frame = df.reset_index()
            feats[i] = panel_features(frame, timeframe, cfg)
            warm = np.isfinite(feats[i]).all(axis=1)
            if warm.any():  # tradable once its features have warmed up, never before
                listed[i, int(np.argmax(warm)):] = True
            r = np.log(frame["close"]).diff()
            long = candles(cfg.long, timeframe, 3)
            vol[i] = r.rolling(long, min_periods=long).std().to_numpy()
        probs = np.full((N, N_REGIMES), 1.0 / N_REGIMES)
        if regime is not None and len(regime):
            probs = regime_on(dates, timeframe, regime, regime_timeframe or timeframe)
        np_dates = dates.tz_convert(None).to_numpy(dtype="datetime64[ns]")
        return cls(pairs, timeframe, np_dates, op, cl, listed, feats, probs, vol, hi)

    def index_of(self, when: Any) -> int:
        """First candle at or after ``when``."""
        ts = pd.Timestamp(when)
        ts = ts.tz_convert(None) if ts.tzinfo else ts
        return int(np.searchsorted(self.dates, ts.to_datetime64()))


def regime_on(dates: pd.DatetimeIndex, timeframe: str, regime: pd.DataFrame,
              regime_timeframe: str) -> np.ndarray:
    """(N, 5) regime probabilities known at each candle's close (uniform before the first
    regime candle has closed, or where the detector says nothing)."""
    from learning.brain.regime import PROB_COLUMNS

    tf = pd.Timedelta(minutes=_minutes(timeframe))
    rtf = pd.Timedelta(minutes=_minutes(regime_timeframe))
    left = pd.DataFrame({"t": (dates + tf).astype("datetime64[ns, UTC]")})
    right = pd.DataFrame({"t": (pd.to_datetime(regime["date"], utc=True) + rtf)
                          .astype("datetime64[ns, UTC]")})
    right[list(PROB_COLUMNS)] = regime[list(PROB_COLUMNS)].to_numpy(dtype=float)
    merged = pd.merge_asof(left, right.sort_values("t"), on="t", direction="backward")
    probs = merged[list(PROB_COLUMNS)].to_numpy(dtype=float)
    bad = ~(np.isfinite(probs).all(axis=1) & (np.nansum(probs, axis=1) > 0))
    probs[bad] = 1.0 / N_REGIMES
    return probs / probs.sum(axis=1, keepdims=True)


def _minutes(timeframe: str) -> int:
    from learning.core.durations import minutes_of

    return minutes_of(timeframe)


# ----------------------------------------------------------------------------------------------
# Weights and execution (pure functions, shared with the strategy)


def capped_weights(logits: np.ndarray, cap: float, min_weight: float,
                   listed: np.ndarray | None = None) -> np.ndarray:
    """Target weights (P + 1,) from ``P + 1`` logits (the last is cash): softmax, pairs capped
    at ``cap`` and zeroed below ``min_weight`` or when not ``listed``; cash takes the rest, so
    the weights are >= 0 and sum to 1."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    z = np.where(np.isfinite(z), z, -np.inf)
    if not np.isfinite(z).any():
        z = np.zeros_like(z)
    e = np.exp(z - z.max())
    w = e / e.sum()
    pairs = np.minimum(w[:-1], cap)
    pairs[pairs < min_weight] = 0.0
    if listed is not None:
        pairs[~np.asarray(listed, dtype=bool)] = 0.0
    return np.append(pairs, max(0.0, 1.0 - pairs.sum()))


def rebalance(current: np.ndarray, target: np.ndarray, cap: float, min_rebalance: float,
              fee: float) -> tuple[np.ndarray, float]:
    """Execute ``target`` (P,) from ``current`` (P,) pair weights (fractions of equity before
    the trades): returns the new pair weights (fractions of equity after the fees) and the
    traded notional (fraction of the equity before).

    A pair trades when ``|target - current| >= min_rebalance``, when its target is 0 and it is
    held (close), or when it is more than :data:`OVER_CAP` above ``cap`` (trim); otherwise it
    keeps its weight. Sales
    come first; buys are scaled down to the cash left after the sales and the fees.
    """
    cur = np.asarray(current, dtype=np.float64)
    tgt = np.asarray(target, dtype=np.float64)
    delta = tgt - cur
    trade = (np.abs(delta) >= min_rebalance) | ((tgt <= 0) & (cur > 0)) | \
        (cur > cap * (1.0 + OVER_CAP))
    delta = np.where(trade, delta, 0.0)
    sells, buys = np.minimum(delta, 0.0), np.maximum(delta, 0.0)
    cash = 1.0 - cur.sum() - fee * np.abs(sells).sum() - sells.sum()  # after the sales
    want = buys.sum() * (1.0 + fee)
    if want > cash > -1e-12:
        buys = buys * max(cash, 0.0) / want
    elif cash <= -1e-12:
        buys = np.zeros_like(buys)
    traded = float(np.abs(sells).sum() + buys.sum())
    equity = 1.0 - fee * traded
    new = np.maximum(cur + sells + buys, 0.0) / equity
    return new, traded


# ----------------------------------------------------------------------------------------------
# Observation


@dataclass(frozen=True)
class ObsLayout:
    """Where everything sits in the flat observation vector."""

    n_pairs: int
    window: int
    n_features: int = N_FEATURES

    @property
    def market(self) -> int:
        return self.n_pairs * self.window * self.n_features

    @property
    def weights(self) -> slice:
        return slice(self.market, self.market + self.n_pairs)

    @property
    def regime(self) -> slice:
        start = self.market + self.n_pairs
        return slice(start, start + N_REGIMES)

    @property
    def portfolio(self) -> slice:
        start = self.market + self.n_pairs + N_REGIMES
        return slice(start, start + N_PORTFOLIO)

    @property
    def size(self) -> int:
        return self.market + self.n_pairs + N_REGIMES + N_PORTFOLIO

    def to_dict(self) -> dict[str, int]:
        return {"n_pairs": self.n_pairs, "window": self.window, "n_features": self.n_features}


def observe(panel: MarketPanel, layout: ObsLayout, t: int, weights: np.ndarray,
            drawdown: float) -> tuple[np.ndarray, bool]:
    """The observation at the close of candle ``t`` (its features use candles <= t) and
    whether it is usable: every listed pair's window is finite. Unlisted pairs read 0."""
    lo = t - layout.window + 1
    obs = np.zeros(layout.size, dtype=np.float32)
    ok = lo >= 0
    if ok:
        win = panel.features[:, lo:t + 1, :]  # (P, W, F)
        listed = panel.listed[:, t]
        ok = bool(np.isfinite(win[listed]).all())
        win = np.where(listed[:, None, None] & np.isfinite(win), win, 0.0)
        obs[:layout.market] = win.reshape(-1)
    w = np.asarray(weights, dtype=np.float64)
    obs[layout.weights] = w
    obs[layout.regime] = panel.regime[t]
    obs[layout.portfolio] = (1.0 - w.sum(), drawdown)
    return obs, ok


class AllocEnv(gym.Env):
    """One account over all pairs; one step per ``config.step`` (module docstring)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, panel: MarketPanel, features: FeatureConfig | None = None,
                 config: AllocEnvConfig | None = None, *, fee: float = 0.001,
                 start: Any = None, end: Any = None, training: bool = True) -> None:
        self.panel, self.fcfg = panel, features or FeatureConfig()
        self.cfg = config or AllocEnvConfig()
        self.fee, self.training = float(fee), training
        tf = panel.timeframe
        self.layout = ObsLayout(len(panel.pairs), candles(self.fcfg.window, tf))
        self.stride = candles(self.cfg.step, tf)
        self.episode_steps = max(1, candles(self.cfg.episode, tf) // self.stride)
        first = candles(self.fcfg.long, tf, 3) + self.layout.window
        self.lo = max(first, panel.index_of(start) if start is not None else 0)
        # a step needs the open after it: training never reads a candle at or after ``end``
        self.hi = (panel.index_of(end) if end is not None else len(panel.dates)) - 1
        if self.hi - self.lo < 2 * self.stride:
            raise DataError(f"allocator: {self.hi - self.lo} candles between "
                            f"{panel.dates[min(self.lo, len(panel.dates) - 1)]} and the end; "
                            "too few to train on")
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.layout.size,),
                                                np.float32)
        self.action_space = gym.spaces.Box(-5.0, 5.0, (self.layout.n_pairs + 1,), np.float32)
        self.counts = {"nan_hold": 0, "steps": 0}
        #: Training episodes start only at these candles when set (the curriculum's stage,
        #: the augmented crash windows: :mod:`learning.agents.curriculum`).
        self.starts: np.ndarray | None = None
        self._reset_book(self.lo)

    def _reset_book(self, t: int) -> None:
        self.t = t
        self.weights = np.zeros(self.layout.n_pairs)
        self.value, self.peak = 1.0, 1.0
        self.fees = self.turnover = 0.0
        self.steps = 0
        self.day, self.day_open, self.blocked = -1, 1.0, False

    def _day_of(self, t: int) -> int:
        return int(self.panel.dates[t].astype("datetime64[D]").astype("int64"))

    def _obs(self) -> tuple[np.ndarray, bool]:
        dd = 1.0 - self.value / self.peak
        return observe(self.panel, self.layout, self.t - 1, self.weights, dd)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        start = self.lo
        span = self.episode_steps * self.stride
        if options and "start" in options:
            start = max(self.lo, int(options["start"]))
        elif self.training and self.starts is not None and len(self.starts):
            start = int(self.starts[self.np_random.integers(len(self.starts))])
        elif self.training and self.hi - span > self.lo:
            start = int(self.np_random.integers(self.lo, self.hi - span))
        self._reset_book(start)
        return self._obs()[0], {}

    def step(self, action: np.ndarray):
        p, t = self.panel, self.t
        _, ok = self._obs()
        listed = p.listed[:, t]
        if self._day_of(t) != self.day:  # a new UTC day: its opening value, no block
            self.day, self.day_open, self.blocked = self._day_of(t), self.value, False
        if self.blocked:  # the daily loss limit was hit today: cash only
            new, traded = rebalance(self.weights, np.zeros_like(self.weights), self.cfg.cap,
                                    self.cfg.min_rebalance, self.fee)
        elif ok:
            target = capped_weights(action, self.cfg.cap, self.cfg.min_weight, listed)[:-1]
            new, traded = rebalance(self.weights, target, self.cfg.cap, self.cfg.min_rebalance,
                                    self.fee)
        else:  # a listed pair's features are not finite: hold, count it
            self.counts["nan_hold"] += 1
            new, traded = self.weights, 0.0
        before = self.value
        self.value *= 1.0 - self.fee * traded
        self.fees += before * self.fee * traded
        self.turnover += traded
        end = min(t + self.stride, self.hi)
        growth = np.where(listed, p.open[:, end] / p.open[:, t], 1.0)
        growth = np.where(np.isfinite(growth), growth, 1.0)
        held = new * growth
        gross = held.sum() + (1.0 - new.sum())
        self.value *= gross
        self.weights = held / gross
        c = self.cfg
        if c.daily_loss > 0 and self.weights.sum() > 0 and \
                self.value <= self.day_open * (1.0 - c.daily_loss):
            out = float(self.weights.sum())  # the guard exits every position
            self.fees += self.value * self.fee * out
            self.value *= 1.0 - self.fee * out
            traded += out
            self.turnover += out
            self.weights = np.zeros_like(self.weights)
            self.blocked = True
            self.counts["daily_loss"] = self.counts.get("daily_loss", 0) + 1
        dd_before = 1.0 - before / self.peak
        self.peak = max(self.peak, self.value)
        dd_after = 1.0 - self.value / self.peak
        deeper = max(0.0, dd_after - max(dd_before, self.cfg.drawdown_free))
        reward = c.scale * (math.log(self.value / before) - c.drawdown_penalty * deeper
                            - c.turnover_penalty * traded)
        self.t, self.steps = end, self.steps + 1
        self.counts["steps"] += 1
        terminated = self.t + self.stride > self.hi
        truncated = not terminated and self.training and self.steps >= self.episode_steps
        info = {"value": self.value, "traded": traded, "weights": self.weights.copy()}
        return self._obs()[0], float(reward), terminated, truncated, info


def equal_weights(listed: np.ndarray, cap: float, gross: float) -> np.ndarray:
    """Equal-weight baseline (P,): ``gross`` spread over the listed pairs, each capped."""
    listed = np.asarray(listed, dtype=bool)
    n = listed.sum()
    w = np.where(listed, gross / n if n else 0.0, 0.0)
    return np.minimum(w, cap)


def inverse_vol_weights(vol: np.ndarray, listed: np.ndarray, cap: float,
                        gross: float) -> np.ndarray:
    """Inverse-volatility baseline (P,): ``gross`` in proportion to 1 / vol over the listed
    pairs with a known volatility, each capped (the excess stays in cash)."""
    v = np.asarray(vol, dtype=np.float64)
    ok = np.asarray(listed, dtype=bool) & np.isfinite(v) & (v > 0)
    inv = np.where(ok, 1.0 / np.where(ok, v, 1.0), 0.0)
    total = inv.sum()
    return np.minimum(gross * inv / total, cap) if total > 0 else np.zeros_like(v)


def check_pairs(trained: Sequence[str], trading: Sequence[str]) -> str | None:
    """A message naming the pairs when the whitelist differs from the one trained on."""
    if list(trained) == list(trading):
        return None
    gone = [p for p in trained if p not in trading]
    new = [p for p in trading if p not in trained]
    parts = []
    if new:
        parts.append(f"not trained on {', '.join(new)}")
    if gone:
        parts.append(f"trained on {', '.join(gone)}, which the whitelist lacks")
    if not parts:
        parts.append(f"trained in the order {', '.join(trained)}")
    return ("the allocator was trained on a different whitelist (" + "; ".join(parts)
            + "): retrain it with ftlearn train-allocator for this whitelist")
