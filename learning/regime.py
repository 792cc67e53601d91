"""Tier 2: market regime detection (see issue 3). The enum is shared with the synthetic market.

How the detector works:

1. :func:`regime_features` turns BTC candles (and other pairs', for cross-pair dispersion) into
   causal per-candle features: trend t-statistic, log volatility, relative dispersion, drawdown
   and a short/long volatility ratio.
2. Walk-forward: at the first candle of every ``refit_every``-candle period (periods aligned to
   the Unix epoch, so a sliding live window and a backtest refit at the same candles) a Gaussian
   HMM is fitted on the ``fit_window`` candles strictly before that candle, starting EM from one
   prototype state per regime. Each hidden state is named by smooth rules on its emission means
   (trend, volatility, dispersion), so names follow the means and cannot permute between
   refits, and a mean near a threshold splits the state instead of flipping its name. Every
   refit depends on its own window only: a bot started late agrees with a backtest.
3. Until the next refit, the scaled forward filter turns each new candle into P(state | past),
   summed per regime. A rule-based CRISIS override (fast drawdown with a volatility spike) and a
   minimum dwell with a switching margin sit on top.

Numerical helpers live in :mod:`learning.regime_features`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from learning import regime_features as _rf
from learning.config import _f
from learning.errors import ConfigError, StateError
from learning.regime_features import RegimeFitError

__all__ = ["Regime", "RegimeConfig", "RegimeDetector", "RegimeFitError", "RegimeHMM",
           "RegimePerformance", "RegimeStats", "regime_features"]


class Regime(str, Enum):
    """Named market regimes. UNKNOWN while there is too little history to say."""

    BULL_MOMENTUM = "BULL_MOMENTUM"
    BEAR_DEFENSIVE = "BEAR_DEFENSIVE"
    CHOPPY = "CHOPPY"
    CRISIS = "CRISIS"
    THEME_DRIVEN = "THEME_DRIVEN"
    UNKNOWN = "UNKNOWN"


log = logging.getLogger(__name__)

#: The five named regimes, in the order of the probability columns.
REGIMES: tuple[Regime, ...] = (Regime.BULL_MOMENTUM, Regime.BEAR_DEFENSIVE, Regime.CHOPPY,
                               Regime.CRISIS, Regime.THEME_DRIVEN)
#: Small integer per regime for charts (UNKNOWN is 0).
REGIME_IDS: dict[Regime, int] = {Regime.UNKNOWN: 0, **{r: i + 1 for i, r in enumerate(REGIMES)}}
PROB_COLUMNS: tuple[str, ...] = tuple(f"regime_prob_{r.value}" for r in REGIMES)
OUTPUT_COLUMNS: tuple[str, ...] = ("date", "regime", "regime_confidence", *PROB_COLUMNS,
                                   "regime_id")
FEATURE_COLUMNS: tuple[str, ...] = ("trend", "log_vol", "dispersion", "drawdown", "vol_ratio")
_TIMEFRAME_RE = re.compile(r"^\d+[mhdw]$")


@dataclass(frozen=True)
class RegimeConfig:
    """Tier 2 regime detector. Windows count candles of ``timeframe`` (defaults suit 1h)."""

    timeframe: str = _f(
        "1h", "Timeframe of the candles given to the detector (e.g. 1h); refit periods are "
        "multiples of it counted from the Unix epoch.")
    trend_window: int = _f(
        72, "Candles in the trend feature (trailing log return over its own volatility).",
        (2, 100_000))
    vol_window: int = _f(24, "Candles in the realised-volatility feature.", (2, 100_000))
    vol_baseline_window: int = _f(
        720, "Candles in the long volatility baseline that the crisis rule compares against.",
        (4, 1_000_000))
    dispersion_window: int = _f(
        24, "Candles of trailing return compared across pairs for the dispersion feature.",
        (2, 100_000))
    min_pairs: int = _f(
        3, "Pairs, BTC included, needed for the dispersion feature (NaN below).", (2, 10_000))
    drawdown_window: int = _f(
        48, "Candles over which the crisis rule's drawdown is measured from the highest close.",
        (2, 100_000))
    hmm_features: tuple[str, ...] = _f(
        ("trend", "log_vol", "dispersion"),
        "Features the HMM is fitted on; a feature that is mostly NaN in a fit window (e.g. "
        "dispersion without other pairs) is left out of that fit.")
    n_states: int = _f(5, "Hidden states of the Gaussian HMM.", (2, 8))
    fit_window: int = _f(
        2160, "Candles (ending strictly before the refit candle) each HMM is fitted on.",
        (20, 1_000_000))
    min_fit_candles: int = _f(
        500, "Fewest valid candles a fit needs; with fewer the regime stays UNKNOWN.",
        (10, 1_000_000))
    refit_every: int = _f(168, "Candles between refits.", (1, 1_000_000))
    burn_in: int = _f(
        72, "Candles before a refit over which the new model's filter is warmed up.",
        (0, 1_000_000))
    n_iter: int = _f(100, "Most EM iterations per fit.", (1, 10_000))
    tol: float = _f(
        1e-2, "EM stops once the total log-likelihood gains less than this.", (0.0, 1e6))
    init: str = _f(
        "prototypes", "Where EM starts at each refit. 'prototypes': one state at a typical "
        "point of each regime, from the fit window alone, so refits do not depend on earlier "
        "ones and a bot started late fits the same models as a backtest. 'previous': the "
        "previous fit (fewer EM steps, but the models then depend on where the frame starts). "
        "'kmeans': hmmlearn's k-means.", choices=("prototypes", "previous", "kmeans"))
    n_init: int = _f(
        1, "EM runs per refit: the one from init plus k-means restarts (seeds random_state, "
        "+1, ...); the best likelihood wins.", (1, 50))
    random_state: int = _f(0, "Seed of the HMM's k-means initialisation.", (0, 2**31 - 1))
    min_variance: float = _f(
        1e-3, "A fit whose state covariance has an eigenvalue below this (standardised units) "
        "is degenerate and rejected.", (0.0, 1.0))
    transition_floor: float = _f(
        1e-3, "Mixed into every transition probability so the filter can always leave a "
        "state.", (0.0, 0.5))
    min_feature_coverage: float = _f(
        0.5, "A feature enters a fit only if it is finite on at least this share of the "
        "candles where the best-covered feature is (others are left out of that fit).",
        (0.0, 1.0))
    bull_trend: float = _f(
        0.6, "A state whose mean trend t-statistic exceeds this is BULL_MOMENTUM.", (0.0, 10.0))
    bear_trend: float = _f(
        0.3, "A state whose mean trend t-statistic is below minus this is BEAR_DEFENSIVE.",
        (0.0, 10.0))
    bear_vol_z: float = _f(
        1.0, "A state with a negative mean trend whose mean log volatility lies this many stds "
        "above the fit window's mean is BEAR_DEFENSIVE too.", (0.0, 100.0))
    theme_dispersion_z: float = _f(
        0.7, "A state whose mean dispersion lies this many stds above the fit window's mean "
        "is THEME_DRIVEN.", (0.0, 100.0))
    label_softness: float = _f(
        0.1, "Width of the naming rules' edges (trend / z units): a state this close to a "
        "threshold is split between the regimes on either side.", (0.0, 10.0))
    theme_rule_z: float = _f(
        1.5, "THEME_DRIVEN gets at least theme_confidence on a candle whose dispersion lies "
        "this many stds above the fit window's mean (0 turns the rule off).", (0.0, 100.0))
    theme_confidence: float = _f(
        0.6, "Probability mixed into THEME_DRIVEN by that rule.", (0.0, 1.0))
    crisis_drawdown: float = _f(
        0.08, "CRISIS override fires when close falls this far below the drawdown window's "
        "high ...", (0.0, 1.0))
    crisis_vol_ratio: float = _f(
        1.5, "... while short volatility is at least this multiple of the baseline.",
        (0.0, 100.0))
    crisis_exit_drawdown: float = _f(
        0.04, "CRISIS lasts while the drawdown stays beyond this ...", (0.0, 1.0))
    crisis_exit_vol_ratio: float = _f(
        1.3, "... and the volatility ratio stays above this.", (0.0, 100.0))
    crisis_min_dwell: int = _f(12, "Fewest candles a CRISIS override lasts.", (1, 100_000))
    crisis_confidence: float = _f(
        0.9, "Probability given to CRISIS while the override holds.", (0.5, 1.0))
    min_dwell: int = _f(
        6, "Fewest candles in a regime before the detector may switch (CRISIS excepted).",
        (1, 100_000))
    switch_margin: float = _f(
        0.2, "A switch needs the new regime's probability to beat the current one's by this.",
        (0.0, 1.0))

    def __post_init__(self) -> None:
        if not _TIMEFRAME_RE.match(self.timeframe):
            raise ConfigError(f"regime.timeframe: {self.timeframe!r} is not like 5m, 1h or 1d")
        bad = [f for f in self.hmm_features if f not in FEATURE_COLUMNS]
        if bad or not self.hmm_features:
            raise ConfigError(f"regime.hmm_features: {bad or '()'} not among {FEATURE_COLUMNS}")
        if self.crisis_exit_drawdown > self.crisis_drawdown:
            raise ConfigError("regime.crisis_exit_drawdown must not exceed crisis_drawdown")
        if self.min_fit_candles > self.fit_window:
            raise ConfigError("regime.min_fit_candles must not exceed fit_window")

    @property
    def warmup_candles(self) -> int:
        """Candles after which every feature is computed from full windows."""
        return 1 + max(self.trend_window, self.vol_window, self.vol_baseline_window,
                       self.dispersion_window, self.drawdown_window)

    @property
    def period(self) -> pd.Timedelta:
        """Length of one refit period."""
        return pd.Timedelta(self.timeframe.replace("m", "min")) * self.refit_every


# ----------------------------------------------------------------------------------------------
# Features


def regime_features(btc: pd.DataFrame, others: Mapping[str, pd.DataFrame] | None = None,
                    config: RegimeConfig | None = None) -> pd.DataFrame:
    """Causal per-candle regime features on BTC's dates.

    ``btc`` and each of ``others`` are freqtrade candles (date, open, high, low, close, volume)
    of one timeframe; other pairs are aligned on BTC's dates (missing candles stay NaN, nothing
    is forward-filled). Returns columns ``date`` and :data:`FEATURE_COLUMNS`; ``dispersion`` is
    NaN where fewer than ``min_pairs`` pairs have history (always, without ``others``).
    """
    cfg = config or RegimeConfig()
    return _rf.build_features(
        btc, others or {}, columns=FEATURE_COLUMNS, trend_window=cfg.trend_window,
        vol_window=cfg.vol_window, baseline_window=cfg.vol_baseline_window,
        drawdown_window=cfg.drawdown_window, dispersion_window=cfg.dispersion_window,
        min_pairs=cfg.min_pairs)


# ----------------------------------------------------------------------------------------------
# One fitted HMM


class RegimeHMM:
    """A Gaussian HMM fitted on one window of features, with its hidden states named.

    scikit-learn style: ``__init__`` stores the config, :meth:`fit` learns the attributes ending
    in ``_`` and returns ``self``; :meth:`filter` is the causal inference. hmmlearn fits the
    parameters, but its ``predict`` (Viterbi) and ``predict_proba`` (forward-backward) condition
    every candle on the whole sequence, later candles included, so they would leak the future
    into a backtest; :meth:`filter` runs the forward pass alone (docs/freqai-notes.md §7).
    """

    def __init__(self, config: RegimeConfig) -> None:
        self.config = config

    def fit(self, x: np.ndarray, feature_names: Sequence[str],
            previous: RegimeHMM | None = None) -> RegimeHMM:
        """Fit on ``x`` (T, D) with columns ``feature_names``; rows holding NaN are skipped.

        ``previous`` is the model in use before this fit; only ``init="previous"`` starts from
        it. Raises :class:`RegimeFitError` when the data are too few or the fit
        fails or is degenerate.
        """
        cfg = self.config
        x = np.asarray(x, dtype="float64")
        x = x[np.isfinite(x).all(axis=1)]
        if len(x) < cfg.min_fit_candles:
            raise RegimeFitError(f"{len(x)} valid candles, {cfg.min_fit_candles} needed")
        mean, scale = x.mean(axis=0), x.std(axis=0)
        if not (np.isfinite(scale).all() and (scale > 1e-12).all()):
            raise RegimeFitError(f"a feature is constant over the fit window (std {scale})")
        names = tuple(feature_names)
        if cfg.init == "previous" and previous is not None and previous.feature_names_ == names:
            ratio = previous.feature_scale_ / scale  # old fit's units -> this window's, (D,)
            start = (previous.startprob_, previous.transmat_,
                     (previous._raw_means() - mean) / scale,
                     previous.covars_ * ratio[None, :, None] * ratio[None, None, :])
        elif cfg.init == "kmeans":
            start = None
        else:  # "prototypes", and "previous" without a usable previous fit
            start = _rf.prototype_start(names, mean, scale, cfg.n_states, cfg)
        n_kmeans = cfg.n_init - (start is not None)
        best = _rf.fit_gaussian_hmm(
            (x - mean) / scale, n_states=cfg.n_states, n_iter=cfg.n_iter, tol=cfg.tol,
            starts=[] if start is None else [start], fallback_seed=cfg.random_state,
            seeds=[cfg.random_state + i for i in range(n_kmeans)],
            min_variance=cfg.min_variance)
        k = cfg.n_states
        self.feature_names_ = tuple(feature_names)
        self.feature_mean_, self.feature_scale_ = mean, scale
        self.means_ = np.array(best.means_)  # (K, D), standardised units
        self.covars_ = np.array(best.covars_)  # (K, D, D)
        self.transmat_ = (1 - cfg.transition_floor) * best.transmat_ + cfg.transition_floor / k
        self.startprob_ = _rf.stationary(self.transmat_)
        self.log_likelihood_ = float(best.monitor_.history[-1])
        self.n_iter_ = int(best.monitor_.iter)
        # (K, 5) share of each state per regime, and each state's main regime for reports.
        self.state_weights_ = _rf.soft_names(
            _rf.fit_margins(self.means_, mean, scale, names, cfg), cfg.label_softness)
        self.state_regimes_ = tuple(REGIMES[i] for i in self.state_weights_.argmax(axis=1))
        return self

    def _raw_means(self) -> np.ndarray:
        return self.means_ * self.feature_scale_ + self.feature_mean_

    def filter(self, x: np.ndarray, alpha0: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Forward-filtered state probabilities (T, K) of raw features ``x`` (T, D).

        Starts from ``alpha0`` (the filtered distribution just before row 0) or, without it,
        from the stationary distribution. Rows with NaN advance the chain without evidence.
        Returns (probs, alpha of the last row).
        """
        z = (np.asarray(x, dtype="float64") - self.feature_mean_) / self.feature_scale_
        log_lik = _rf.gaussian_log_likelihood(z, self.means_, self.covars_)
        return _rf.forward_filter(log_lik, self.startprob_, self.transmat_, alpha0)

    def regime_probs(self, state_probs: np.ndarray) -> np.ndarray:
        """Sum state probabilities (T, K) into regime probabilities (T, 5) in REGIMES order."""
        return state_probs @ self.state_weights_


# ----------------------------------------------------------------------------------------------
# Walk-forward detection


@dataclass
class _Processed:
    """Inputs and outputs of the last call, so the next call only processes new candles."""

    dates: np.ndarray  # (T,) int64 ns
    inputs: np.ndarray  # (T, D + 2) HMM features, drawdown, vol_ratio
    probs: np.ndarray  # (T, 5)
    regime: np.ndarray  # (T,) int8 index into REGIMES, -1 = UNKNOWN
    confidence: np.ndarray  # (T,)
    carry: _rf.Carry = field(default_factory=_rf.Carry)


class RegimeDetector:
    """Walk-forward regime detection on a growing frame of :func:`regime_features`.

    :meth:`detect` is causal (its row t depends on rows <= t only) and incremental: fitted
    models are cached per refit candle and a call on a frame that extends (or slides past) the
    previous one processes only the new candles. Deterministic given ``config.random_state``.
    """

    def __init__(self, config: RegimeConfig | None = None) -> None:
        self.config = config or RegimeConfig()
        self._models: dict[tuple[int, int, str], RegimeHMM | None] = {}
        self._last: _Processed | None = None
        self._logged: set[str] = set()

    # -- public ---------------------------------------------------------------------------------

    def detect(self, features: pd.DataFrame) -> pd.DataFrame:
        """Per-candle ``regime``, ``regime_confidence``, ``regime_prob_<name>``, ``regime_id``.

        The probability columns sum to 1, or are all 0 while the regime is UNKNOWN.
        """
        dates, inputs = self._inputs(features)
        start, carry, head = self._resume(dates, inputs)
        n = len(dates)
        probs = np.zeros((n, len(REGIMES)))
        regime = np.full(n, -1, dtype=np.int8)
        conf = np.zeros(n)
        if head is not None:
            probs[:start], regime[:start], conf[:start] = head
        # The HMM's matrices are tiny (a few states x a few features): multi-threaded BLAS only
        # adds scheduling overhead, which on a busy 2-core machine made a year's walk-forward
        # 12x slower (86 s vs 7 s). One thread, only inside this call.
        with threadpool_limits(limits=1):
            self._run(dates, inputs, start, carry, probs, regime, conf)
        self._last = _Processed(dates, inputs, probs, regime, conf, carry)
        return _rf.output_frame(features["date"], probs, regime, conf, names=PROB_COLUMNS,
                                ids=[REGIME_IDS[r] for r in REGIMES])

    # -- internals ------------------------------------------------------------------------------

    def _inputs(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        missing = [c for c in ("date", "drawdown", "vol_ratio") if c not in features]
        if missing:
            raise ValueError(f"features lack column(s) {missing}; build them with "
                             "regime_features()")
        dates = pd.DatetimeIndex(pd.to_datetime(features["date"], utc=True)).as_unit("ns").asi8
        if len(dates) > 1 and not (np.diff(dates) > 0).all():
            raise ValueError("features must have unique, increasing dates")
        cols = [features[c].to_numpy(dtype="float64") if c in features
                else np.full(len(dates), np.nan) for c in self.config.hmm_features]
        cols += [features["drawdown"].to_numpy(dtype="float64"),
                 features["vol_ratio"].to_numpy(dtype="float64")]
        return dates, np.column_stack(cols)

    def _resume(self, dates: np.ndarray, inputs: np.ndarray
                ) -> tuple[int, _rf.Carry, tuple[np.ndarray, ...] | None]:
        """Rows already processed by the previous call (matched by date and values).

        A frame that slid forward (freqtrade keeps a fixed number of candles) is matched after
        the features' warm-up: its first rows were computed with less history than before.
        """
        last = self._last
        if last is None or not len(dates) or not len(last.dates):
            return 0, _rf.Carry(), None
        k = int(np.searchsorted(last.dates, dates[0]))
        m = len(last.dates) - k
        skip = 0 if k == 0 else self.config.warmup_candles
        if (k >= len(last.dates) or m > len(dates) or m <= skip or last.dates[k] != dates[0]
                or not np.array_equal(last.dates[k:], dates[:m])
                or not _same(last.inputs[k + skip:], inputs[skip:m], exact=k == 0)):
            return 0, _rf.Carry(), None
        carry = _rf.Carry(**vars(last.carry))
        return m, carry, (last.probs[k:], last.regime[k:], last.confidence[k:])

    def _run(self, dates: np.ndarray, inputs: np.ndarray, start: int, carry: _rf.Carry,
             probs: np.ndarray, regime: np.ndarray, conf: np.ndarray) -> None:
        n, d = len(dates), len(self.config.hmm_features)
        if start >= n:
            return
        periods = dates // self.config.period.value
        # Split the new rows into runs that share one model: a run starts at each refit candle.
        cuts = {i for i in range(max(start, 1), n) if periods[i] != periods[i - 1]}
        bounds = sorted({start, *cuts, n})
        for a, b in zip(bounds[:-1], bounds[1:]):
            if a in cuts:
                self._refit(a, dates, inputs[:, :d], carry)
            if carry.model is not None:
                cols = self._columns(carry.model)
                sp, carry.alpha = carry.model.filter(inputs[a:b, cols], carry.alpha)
                rp = self._theme_rule(carry.model, inputs[a:b, cols],
                                      carry.model.regime_probs(sp))
            else:
                rp = None
            _rf.decide(rp, inputs[a:b, d], inputs[a:b, d + 1], carry, self.config,
                       probs[a:b], regime[a:b], conf[a:b])

    def _refit(self, b: int, dates: np.ndarray, x: np.ndarray, carry: _rf.Carry) -> None:
        """Fit (or fetch) the model for the refit candle at row ``b`` and warm its filter."""
        cfg = self.config
        lo = max(0, b - cfg.fit_window)
        window = x[lo:b]
        count = np.isfinite(window).sum(axis=0)
        # Coverage relative to the best-covered feature, so the warm-up NaNs at a series' start
        # do not drop the slower features from the first fits.
        use = [i for i in range(window.shape[1])
               if count[i] > 0 and count[i] >= cfg.min_feature_coverage * count.max()]
        names = tuple(cfg.hmm_features[i] for i in use)
        tail = np.ascontiguousarray(window[-64:])
        key = (int(dates[b]), b - lo, hashlib.blake2b(tail.tobytes(), digest_size=16).hexdigest())
        if key not in self._models:
            self._models[key] = self._fit(window[:, use], names, carry.model, dates[b])
            while len(self._models) > 64:  # the cache only needs recent refits
                self._models.pop(next(iter(self._models)))
        model = self._models[key]
        if model is None:
            return  # keep the previous model (or stay UNKNOWN) and its running filter
        warm = x[max(0, b - cfg.burn_in):b][:, self._columns(model)]
        _, carry.alpha = model.filter(warm) if len(warm) else (None, model.startprob_)
        carry.model = model

    def _theme_rule(self, model: RegimeHMM, x: np.ndarray, rp: np.ndarray) -> np.ndarray:
        """THEME_DRIVEN where dispersion stands out against the model's fit window."""
        if self.config.theme_rule_z <= 0 or "dispersion" not in model.feature_names_:
            return rp
        k = model.feature_names_.index("dispersion")
        z = (x[:, k] - model.feature_mean_[k]) / model.feature_scale_[k]
        return _rf.theme_rule(rp, z, self.config.theme_rule_z, self.config.theme_confidence)

    def _columns(self, model: RegimeHMM) -> list[int]:
        return [self.config.hmm_features.index(n) for n in model.feature_names_]

    def _fit(self, x: np.ndarray, names: tuple[str, ...], previous: RegimeHMM | None,
             when: int) -> RegimeHMM | None:
        stamp = pd.Timestamp(when, tz="UTC")
        if not names or np.isfinite(x).all(axis=1).sum() < self.config.min_fit_candles:
            self._log_once("history", "regime: too little history to fit the HMM at %s "
                           "(need %d valid candles); regime is UNKNOWN until there is",
                           stamp, self.config.min_fit_candles)
            return None
        try:
            return RegimeHMM(self.config).fit(x, names, previous)
        except RegimeFitError as err:
            self._log_once(f"fit:{when}", "regime: HMM fit at %s failed (%s); keeping the "
                           "previous model", stamp, err)
            return None

    def _log_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(msg, *args)


def _same(a: np.ndarray, b: np.ndarray, exact: bool) -> bool:
    """Equal inputs; a slid frame's rolling sums restart elsewhere, so there last bits differ."""
    if exact:
        return np.array_equal(a, b, equal_nan=True)
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)


# ----------------------------------------------------------------------------------------------
# Per-regime performance


@dataclass
class RegimeStats:
    """Closed trades of one regime."""

    trades: int = 0
    wins: int = 0
    profit: float = 0.0  # sum of profit ratios

    @property
    def win_rate(self) -> float:
        return self.wins / self.trades if self.trades else 0.0


STATE_VERSION = 1


@dataclass
class RegimePerformance:
    """Trades, wins, win rate and profit per regime (the regime at the trade's entry)."""

    stats: dict[Regime, RegimeStats] = field(
        default_factory=lambda: {r: RegimeStats() for r in Regime})

    def record_trade(self, regime: Regime | str, profit_ratio: float) -> None:
        """Count one closed trade. Bad input is logged and ignored (this runs while trading)."""
        try:
            key = Regime(regime)
            ratio = float(profit_ratio)
        except (ValueError, TypeError):
            log.warning("regime performance: ignored trade (%r, %r)", regime, profit_ratio)
            return
        if not math.isfinite(ratio):
            log.warning("regime performance: ignored non-finite profit %r", profit_ratio)
            return
        s = self.stats.setdefault(key, RegimeStats())
        s.trades += 1
        s.wins += int(ratio > 0)
        s.profit += ratio

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable state (the state store persists it)."""
        return {"version": STATE_VERSION, "regimes": {
            r.value: {"trades": s.trades, "wins": s.wins, "win_rate": s.win_rate,
                      "profit": s.profit} for r, s in self.stats.items()}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RegimePerformance:
        """Rebuild from :meth:`to_state`; raises :class:`StateError` on anything unexpected."""
        version = state.get("version") if isinstance(state, Mapping) else state
        if version != STATE_VERSION:
            raise StateError(f"regime performance state: expected version {STATE_VERSION}, "
                             f"got {version!r}")
        perf = cls()
        try:
            for name, row in state["regimes"].items():
                s = RegimeStats(int(row["trades"]), int(row["wins"]), float(row["profit"]))
                if s.trades < 0 or not 0 <= s.wins <= s.trades or not math.isfinite(s.profit):
                    raise ValueError(f"inconsistent counts {row!r}")
                perf.stats[Regime(name)] = s
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise StateError(f"regime performance state is corrupt: {err}") from err
        return perf
