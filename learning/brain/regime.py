"""Tier 2: market regime detection (see issue 3). The regime names live in
:mod:`learning.core.regimes` (the synthetic market labels its candles with them too).

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

Numerical helpers live in :mod:`learning.brain.regime_features`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from learning.brain import regime_features as _rf
from learning.brain.regime_config import FEATURE_COLUMNS, RegimeConfig
from learning.brain.regime_features import RegimeFitError
from learning.core.errors import StateError
from learning.core.regimes import PROB_COLUMNS, REGIME_IDS, REGIMES, Regime

__all__ = ["Regime", "RegimeConfig", "RegimeDetector", "RegimeFitError", "RegimeHMM",
           "RegimePerformance", "RegimeStats", "regime_features"]



log = logging.getLogger(__name__)

OUTPUT_COLUMNS: tuple[str, ...] = ("date", "regime", "regime_confidence", *PROB_COLUMNS,
                                   "regime_id")


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
        self._refit_delay = 0

    # -- public ---------------------------------------------------------------------------------

    def detect(self, features: pd.DataFrame, alarm: np.ndarray | None = None,
               refit_delay: int = 0) -> pd.DataFrame:
        """Per-candle ``regime``, ``regime_confidence``, ``regime_prob_<name>``, ``regime_id``.

        The probability columns sum to 1, or are all 0 while the regime is UNKNOWN.

        ``alarm`` (bool per row, e.g. a changepoint alarm, causal itself): on an alarm candle the
        regime may switch before ``min_dwell``, and ``refit_delay`` candles after an alarm's
        first candle the HMM is refitted (on the candles before that refit, as every refit).
        """
        dates, inputs = self._inputs(features)
        flags = np.zeros(len(dates)) if alarm is None else np.asarray(alarm, dtype="float64")
        inputs = np.column_stack([inputs, flags])
        self._refit_delay = int(refit_delay)
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
        flags = inputs[:, d + 2] > 0
        onsets = np.flatnonzero(flags & ~np.r_[False, flags[:-1]])
        cuts |= {int(i) for i in onsets + self._refit_delay if max(start, 1) <= i < n}
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
                       probs[a:b], regime[a:b], conf[a:b], alarm=flags[a:b])

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
