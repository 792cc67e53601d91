"""Bayesian online changepoint detection (Adams & MacKay 2007) on the market proxy.

Per candle of the market proxy (BTC at the regime detector's timeframe), the run-length
posterior P(r_t | x_1..t) of the Adams & MacKay recursion, and from it the probability that a
changepoint happened within the last ``window`` candles: P(1 <= r_t <= k). (P(r_t = 0) is the
hazard itself under a constant hazard, so it carries no information.)

The observation of candle t is two-dimensional: the candle's log return and its log high-low
range, both divided by the trailing standard deviation of log returns over the ``scale_window``
candles *before* t (so the prior suits any pair and timeframe, and a crash stands out against
the calm before it).

The recursion is written here, in log space with numpy and ``scipy.special`` (the per-candle
work is a few vector operations over the kept run lengths). The maintained PyPI package
``bayesian-changepoint`` (1.2.1, ``OnlineChangepointDetector``) implements the same recursion,
but one torch call sequence per candle in float32 probability space: measured here on BTC 1h
2023-01..2026-02 (27,483 candles) its 2-D Student-t took 235 s (8.5 ms a candle; 0.6 ms for
1-D), which a backtest would pay for every run; this version took 4.9 s on the same
candles. ``bocd``
(2019) and ``bocpd`` (2023, 0.0.4) are unmaintained. The two observation dimensions are
modelled as independent Normal-Gamma segments (a Student-t predictive each), so a segment has an
unknown mean and variance per dimension; a change of volatility (a crash) is a changepoint, as
is a change of drift. Run lengths are capped at ``max_run`` (the posterior conditioned on the
current segment being at most that long). Every value is causal by construction, and a detector
fed a growing frame resumes where it stopped. Optionally (``downside_only``) an alarm also needs
the close to be below its level ``window`` candles ago: a rally is a changepoint too, but not one
to flee.

Too little history (fewer than ``min_history`` candles with a defined scale): the probability is
NaN (no alarm), logged once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import gammaln

from learning.core.config import _f
from learning.core.durations import candles

log = logging.getLogger(__name__)

OUTPUT_COLUMN = "changepoint_prob"
DIMS = 2  # log return, log range


@dataclass(frozen=True)
class ChangepointConfig:
    """BOCD on the market proxy (``advanced_learning.changepoint``)."""

    enabled: bool = _f(False, "Run changepoint detection on the market proxy and act on it "
                       "(off by default: it did not help on the validation bench, see README).")
    hazard: str = _f("10d", "Expected time between changepoints (the constant hazard is one "
                     "candle over this).", duration=True)
    window: str = _f("6h", "The alarm probability is P(a changepoint within this window).",
                     duration=True)
    max_run: str = _f("30d", "Longest run length the posterior keeps (memory and time per "
                      "candle).", duration=True)
    scale_window: str = _f("30d", "Trailing window of the return standard deviation the "
                           "observations are divided by.", duration=True)
    min_history: str = _f("3d", "Candles with a defined scale needed before any alarm; before "
                          "that the probability is NaN (no alarm).", duration=True)
    prior_dof: float = _f(4.0, "Degrees of freedom of the Wishart prior (> 1; heavier tails "
                          "below 4).", (1.01, 1000.0))
    prior_mean_strength: float = _f(1.0, "Pseudo-observations behind a new segment's prior mean "
                                    "of 0: large values make a change of volatility, not a "
                                    "short run of same-sign returns, what starts a segment.",
                                    (0.01, 10_000.0))
    downside_only: bool = _f(True, "An alarm also needs the close below its level one window "
                             "ago (a rally is no reason to leave).")
    block_above: float = _f(0.7, "Above this probability: no new entries or adds, and open "
                            "positions are trimmed by stake_factor (through the risk guard).",
                            (0.0, 1.0))
    exit_above: float = _f(0.9, "Above this probability: exit all positions (through the risk "
                           "guard, like CRISIS).", (0.0, 1.0))
    stake_factor: float = _f(0.5, "Share of an open position kept when an alarm first blocks "
                             "(once per trade and alarm).", (0.0, 1.0))
    feed_regime: bool = _f(True, "An alarm lets the regime detector switch before its minimum "
                           "dwell and refits it refit_after the alarm began.")
    refit_after: str = _f("12h", "Delay from an alarm's first candle to the regime detector's "
                          "extra refit (so the fit sees some of the new segment).",
                          duration=True)


class BOCD:
    """The Adams & MacKay (2007) recursion with independent Normal-Gamma segments per
    dimension, in log space, run lengths 0..``max_run``.

    ``update(x)`` takes one observation (D,) and returns the run-length posterior (a view; copy
    it to keep it). Priors: mean 0 with ``kappa0`` pseudo-observations, precision
    Gamma(``alpha0``, ``beta0``). After r observations every run's kappa and alpha are
    ``kappa0 + r`` and ``alpha0 + r/2``, so the Student-t constants per run length are computed
    once; only the means and the betas are state.
    """

    def __init__(self, dims: int, hazard: float, max_run: int, alpha0: float = 2.0,
                 beta0: float = 2.0, kappa0: float = 1.0) -> None:
        self.log_h, self.log_1mh = math.log(1.0 / hazard), math.log1p(-1.0 / hazard)
        self.m = m = max_run + 1
        self.beta0 = beta0
        r = np.arange(m, dtype="float64")
        kappa, alpha = kappa0 + r, alpha0 + r / 2.0
        df = 2.0 * alpha
        self._scale_f = ((kappa + 1.0) / (alpha * kappa))[:, None]  # scale^2 = beta * this
        self._const = (gammaln((df + 1.0) / 2.0) - gammaln(df / 2.0)
                       - 0.5 * np.log(np.pi * df))[:, None]
        self._expo = ((df + 1.0) / 2.0)[:, None]
        self._df = df[:, None]
        self._gain = (kappa / (2.0 * (kappa + 1.0)))[:, None]  # beta update factor
        self._w = (1.0 / (kappa + 1.0))[:, None]  # mean update weight of the new observation
        self.n = 1  # run lengths with mass: 0..n-1
        self.log_r = np.zeros(1)  # before any data the run length is 0
        self.mu = np.zeros((1, dims))
        self.beta = np.full((1, dims), beta0)

    def update(self, x: np.ndarray) -> np.ndarray:
        n, mu, beta = self.n, self.mu, self.beta
        scale2 = beta * self._scale_f[:n]  # (n, D)
        dev2 = (x[None, :] - mu) ** 2
        log_pred = (self._const[:n] - 0.5 * np.log(scale2)
                    - self._expo[:n] * np.log1p(dev2 / (scale2 * self._df[:n]))).sum(axis=1)
        joint = self.log_r + log_pred
        top = joint.max()
        grow = min(n + 1, self.m)
        new = np.empty(grow)
        new[0] = top + math.log(np.exp(joint - top).sum()) + self.log_h  # a changepoint
        new[1:] = joint[:grow - 1] + self.log_1mh  # the runs grow (the longest may drop)
        top = new.max()
        new -= top + math.log(np.exp(new - top).sum())
        # Posterior parameters of every run after x; a new run starts from the prior.
        nb = np.empty((grow, beta.shape[1]))
        nm = np.empty_like(nb)
        nb[0], nm[0] = self.beta0, 0.0
        nb[1:] = beta[:grow - 1] + self._gain[:grow - 1] * dev2[:grow - 1]
        nm[1:] = mu[:grow - 1] + self._w[:grow - 1] * (x[None, :] - mu[:grow - 1])
        self.log_r, self.mu, self.beta, self.n = new, nm, nb, grow
        return np.exp(new)


class ChangepointDetector:
    """Causal, incremental BOCD over a growing frame of candles (see the module docstring).

    :meth:`probabilities` on a frame that extends (or slides along) the previous one feeds only
    the new candles; any other frame starts over from its first candle.
    """

    def __init__(self, config: ChangepointConfig, timeframe: str) -> None:
        self.config = config
        self.timeframe = timeframe
        self.window = candles(config.window, timeframe)
        self.hazard = candles(config.hazard, timeframe, minimum=2)
        self.max_run = max(candles(config.max_run, timeframe), self.window + 1)
        self.scale_window = candles(config.scale_window, timeframe, minimum=2)
        self.min_history = candles(config.min_history, timeframe, minimum=2)
        self._bocd: BOCD | None = None
        self._seen = 0  # observations fed to the recursion
        self._dates = np.empty(0, dtype="int64")
        self._out = np.empty(0)
        self._logged = False

    def _new_bocd(self) -> BOCD:
        a = self.config.prior_dof / 2.0  # prior precision mean alpha/beta = 1 (unit variance)
        return BOCD(DIMS, float(self.hazard), self.max_run, alpha0=a, beta0=a,
                    kappa0=self.config.prior_mean_strength)

    def observations(self, frame: pd.DataFrame) -> np.ndarray:
        """(N, 2) per candle: the log return and the log of the high-low range, both over the
        trailing std of returns before the candle; NaN rows where that std is not yet defined
        or a price is missing. Row t reads candles <= t only."""
        close = frame["close"].to_numpy(dtype="float64")
        high = frame["high"].to_numpy(dtype="float64")
        low = frame["low"].to_numpy(dtype="float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.diff(np.log(close), prepend=np.nan)
            rng = np.log(high / low)
        # The scale of candle t is the std of the returns before it (shifted by one): a new
        # segment's prior (unit variance) then suits any pair, timeframe and epoch.
        scale = pd.Series(r).rolling(self.scale_window, min_periods=self.min_history).std()
        scale = scale.shift(1).to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.column_stack([r / scale, np.log(np.maximum(rng, 1e-12) / scale)])
        x[~np.isfinite(x).all(axis=1)] = np.nan
        return x

    def probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        """P(changepoint within the last ``window`` candles) per row of ``frame`` (date, high,
        low, close); NaN while there is too little history, and on the downside filter's
        rallies it is 0 (no alarm)."""
        dates = pd.DatetimeIndex(pd.to_datetime(frame["date"], utc=True)).as_unit("ns").asi8
        n = len(dates)
        # Resume when the frame extends (or slides along) what was fed before.
        start = 0
        if len(self._dates) and n:
            k = int(np.searchsorted(dates, self._dates[-1]))
            if k < n and dates[k] == self._dates[-1]:
                j = int(np.searchsorted(self._dates, dates[0]))
                if j < len(self._dates) and self._dates[j] == dates[0] and \
                        np.array_equal(self._dates[j:], dates[:k + 1]):
                    start = k + 1
                    head = self._out[j:]
        if start == 0:
            self._bocd, self._seen, head = None, 0, np.empty(0)
        x = self.observations(frame)
        out = np.full(n, np.nan)
        out[:start] = head
        k = self.window
        for t in range(start, n):
            if not np.isfinite(x[t]).all():
                continue  # no observation: the posterior stays where it was, no alarm
            if self._bocd is None:
                self._bocd = self._new_bocd()
            post = self._bocd.update(x[t])
            self._seen += 1
            # the first runs are all short: no evidence of a change before `window` candles
            out[t] = float(post[1:k + 1].sum()) if self._seen > k else np.nan
        if self.config.downside_only and n:
            close = frame["close"].to_numpy(dtype="float64")
            before = np.r_[np.full(self.window, np.nan), close[:-self.window]] \
                if n > self.window else np.full(n, np.nan)
            up = np.isfinite(out) & ~(close < before)
            out = np.where(up, 0.0, out)
        if not np.isfinite(out).any() and n and not self._logged:
            self._logged = True
            log.warning("changepoint: too little history (%d candles; %d with a defined scale "
                        "needed); no alarm until there is", n, self.min_history + self.window)
        self._dates, self._out = dates, out
        return out


def alarm_onsets(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Indices where ``prob`` first exceeds ``threshold`` after being at or below it."""
    above = np.nan_to_num(np.asarray(prob, dtype="float64"), nan=0.0) > threshold
    return np.flatnonzero(above & ~np.r_[False, above[:-1]])


def level(prob: float, config: ChangepointConfig) -> int:
    """0 no alarm, 1 entries and adds blocked (and stakes cut), 2 exit all positions."""
    if not (config.enabled and isinstance(prob, float) and math.isfinite(prob)):
        return 0
    return 2 if prob > config.exit_above else 1 if prob > config.block_above else 0
