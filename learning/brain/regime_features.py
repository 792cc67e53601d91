"""Numerical helpers of the regime detector (:mod:`learning.brain.regime`).

Plain functions on numpy arrays: the causal per-candle features, the Gaussian emission
log-likelihoods, the scaled forward filter, the hmmlearn fit with its sanity checks, the rules
that name hidden states, and the per-candle CRISIS override and hysteresis. They take scalars or
the config object, and never import :mod:`learning.brain.regime` at run time (it imports this
module);
:mod:`learning.brain.regime` wires them into the walk-forward detector.

Every series function here is causal: the value at row t reads rows <= t only (trailing pandas
windows, no centring, no whole-column statistics).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from learning.core.errors import LearningError

if TYPE_CHECKING:
    from learning.brain.regime_config import RegimeConfig

# Regime names as plain strings (``learning.brain.regime.Regime`` is a str-Enum, so its members
# compare and hash equal to these). Probability columns follow NAMES. Hidden states are never named
# CRISIS: that comes from the rule-based override alone (a high-volatility state also holds the
# calm weeks after a crash, which are no crisis).
NAMES = ("BULL_MOMENTUM", "BEAR_DEFENSIVE", "CHOPPY", "CRISIS", "THEME_DRIVEN")
CRISIS = NAMES.index("CRISIS")


class RegimeFitError(LearningError):
    """An HMM fit failed or came out degenerate; the detector keeps the previous model."""


# ----------------------------------------------------------------------------------------------
# Features

def trailing_features(close: np.ndarray, *, trend_window: int, vol_window: int,
                      baseline_window: int, drawdown_window: int) -> dict[str, np.ndarray]:
    """Per-candle trend, volatility, drawdown and volatility ratio of one close series.

    - ``trend``: log return over ``trend_window`` candles divided by its own realised volatility
      (std of one-candle log returns times sqrt(window)), a dimensionless t-statistic that is
      comparable across years whose volatility differs by a factor of three.
    - ``log_vol``: log of the std of one-candle log returns over ``vol_window``.
    - ``drawdown``: close over the highest close of the last ``drawdown_window`` candles, minus 1.
    - ``vol_ratio``: ``vol_window`` volatility over the ``baseline_window`` volatility; the
      baseline needs a quarter of its window, so a spike is measurable early in a series.
    """
    c = pd.Series(np.asarray(close, dtype="float64"))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(c).diff()
    move = r.rolling(trend_window, min_periods=trend_window).sum()
    trend_vol = r.rolling(trend_window, min_periods=trend_window).std() * np.sqrt(trend_window)
    vol = r.rolling(vol_window, min_periods=vol_window).std()
    base = r.rolling(baseline_window, min_periods=max(vol_window, baseline_window // 4)).std()
    peak = c.rolling(drawdown_window, min_periods=1).max()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "trend": (move / trend_vol).to_numpy(copy=True),
            "log_vol": np.log(vol.to_numpy(copy=True)),
            "drawdown": (c / peak - 1.0).to_numpy(copy=True),
            "vol_ratio": (vol / base).to_numpy(copy=True),
        }
    for v in out.values():
        v[~np.isfinite(v)] = np.nan
    return out


def relative_dispersion(closes: np.ndarray, *, window: int, min_pairs: int) -> np.ndarray:
    """Cross-pair std of trailing ``window``-candle log returns over their typical size.

    ``closes`` is (T, P), one column per pair (NaN where a pair has no candle). The std across
    pairs is divided by the mean across pairs of each pair's own trailing volatility times
    sqrt(window), so a crash that moves everything together stays low while pairs going their own
    ways (a theme rotation) scores high. NaN where fewer than ``min_pairs`` pairs are valid.
    """
    frame = pd.DataFrame(np.asarray(closes, dtype="float64"))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(frame).diff()
    move = r.rolling(window, min_periods=window).sum().to_numpy()  # (T, P)
    size = (r.rolling(window, min_periods=window).std() * np.sqrt(window)).to_numpy()
    valid = np.isfinite(move) & np.isfinite(size)
    count = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without pairs: NaN, masked below
        m = np.where(valid, move, np.nan)
        spread = np.nanstd(m, axis=1, ddof=1) if m.shape[1] > 1 else np.full(len(m), np.nan)
        typical = np.nanmean(np.where(valid, size, np.nan), axis=1)
        out = spread / typical
    out[(count < max(min_pairs, 2)) | ~np.isfinite(out)] = np.nan
    return out


def gaussian_log_likelihood(x: np.ndarray, means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """log N(x_t | means_k, covars_k) for every row and state: (T, D) -> (T, K).

    Full covariances (K, D, D). Rows holding a NaN get 0 for every state, which makes the filter
    step for that candle a pure prediction (no evidence) instead of poisoning alpha with NaN.
    """
    x = np.atleast_2d(np.asarray(x, dtype="float64"))
    t, d = x.shape
    out = np.zeros((t, len(means)))
    ok = np.isfinite(x).all(axis=1)
    if not ok.any():
        return out
    xo = x[ok]
    for k, (mu, cov) in enumerate(zip(means, covars)):
        chol = np.linalg.cholesky(cov)
        z = np.linalg.solve(chol, (xo - mu).T)  # (D, T_ok)
        logdet = 2.0 * np.log(np.diag(chol)).sum()
        out[ok, k] = -0.5 * ((z * z).sum(axis=0) + logdet + d * np.log(2.0 * np.pi))
    return out


def forward_filter(log_lik: np.ndarray, startprob: np.ndarray, transmat: np.ndarray,
                   alpha0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Filtered state probabilities P(s_t | x_1..x_t) by the scaled forward recursion.

    ``log_lik`` (T, K) holds log p(x_t | s_t = k). The first row uses ``startprob`` as the prior,
    unless ``alpha0`` (the filtered distribution of the candle before row 0) is given, in which
    case the prior is ``alpha0 @ transmat``. Each step is normalised to sum 1 (the scaling), and
    the emission row is shifted by its maximum before ``exp`` so no candle underflows.
    Returns (probs (T, K), alpha of the last row; ``alpha0`` or ``startprob`` when T == 0).
    """
    log_lik = np.asarray(log_lik, dtype="float64")
    trans = np.asarray(transmat, dtype="float64")
    t_len, k = log_lik.shape
    probs = np.empty((t_len, k))
    alpha = None if alpha0 is None else np.asarray(alpha0, dtype="float64")
    start = np.asarray(startprob, dtype="float64")
    for t in range(t_len):
        prior = start if alpha is None else alpha @ trans
        row = log_lik[t]
        a = prior * np.exp(row - row.max())
        total = a.sum()
        # All-zero only when the prior rules out every state that can emit x_t; fall back to the
        # evidence alone rather than dividing by zero.
        a = a / total if total > 0 and np.isfinite(total) else np.exp(row - row.max()) / np.exp(
            row - row.max()).sum()
        probs[t] = a
        alpha = a
    last = alpha if alpha is not None else start.copy()
    return probs, last



def build_features(btc: pd.DataFrame, others: Mapping[str, pd.DataFrame], *,
                   columns: Sequence[str], trend_window: int, vol_window: int,
                   baseline_window: int, drawdown_window: int, dispersion_window: int,
                   min_pairs: int) -> pd.DataFrame:
    """The feature frame of :func:`learning.brain.regime.regime_features` (``date`` + ``columns``).

    Other pairs are aligned on BTC's dates by reindexing: a missing candle stays NaN, nothing is
    forward-filled.
    """
    if "date" not in btc or "close" not in btc:
        raise ValueError("btc candles need 'date' and 'close' columns")
    dates = pd.to_datetime(btc["date"], utc=True).reset_index(drop=True)
    if not dates.is_monotonic_increasing or dates.duplicated().any():
        raise ValueError("btc candles must have unique, increasing dates")
    close = btc["close"].to_numpy(dtype="float64")
    feats = trailing_features(close, trend_window=trend_window, vol_window=vol_window,
                              baseline_window=baseline_window, drawdown_window=drawdown_window)
    closes = [close]
    for pair, df in others.items():
        aligned = pd.Series(df["close"].to_numpy(dtype="float64"),
                            index=pd.to_datetime(df["date"], utc=True))
        if aligned.index.duplicated().any():
            raise ValueError(f"candles of {pair} have duplicate dates")
        closes.append(aligned.reindex(dates).to_numpy())
    feats["dispersion"] = relative_dispersion(np.column_stack(closes), window=dispersion_window,
                                              min_pairs=min_pairs)
    out = pd.DataFrame({"date": dates})
    for name in columns:
        out[name] = feats[name]
    return out


# ----------------------------------------------------------------------------------------------
# Fitting


def fit_gaussian_hmm(z: np.ndarray, *, n_states: int, n_iter: int, tol: float,
                     starts: Sequence[tuple[np.ndarray, ...]], seeds: Sequence[int],
                     fallback_seed: int, min_variance: float) -> Any:
    """Best of several EM fits of a full-covariance ``GaussianHMM`` on standardised ``z`` (T, D).

    One run from each of ``starts`` (startprob, transmat, means, covars) and one from k-means per
    seed; the highest final log-likelihood wins. When every planned run fails and none was a
    k-means run, one k-means run with ``fallback_seed`` is tried (a start whose state no longer
    gets data collapses). Raises :class:`RegimeFitError` when every run fails or is degenerate
    (see :func:`check_fit`).
    """
    from hmmlearn.hmm import GaussianHMM

    runs: list[tuple[np.ndarray, ...] | int] = [*starts, *seeds]
    best, best_ll, reason = None, -np.inf, "no EM run was planned"
    for i, run in enumerate(runs):
        kmeans = isinstance(run, int)
        # "scaling" runs the same EM as "log" about 2.5x faster; standardised features keep it
        # far from underflow.
        model = GaussianHMM(n_components=n_states, covariance_type="full", n_iter=n_iter,
                            tol=tol, implementation="scaling", random_state=run if kmeans else 0,
                            init_params="stmc" if kmeans else "")
        try:
            if not kmeans:
                model.startprob_, model.transmat_, model.means_, model.covars_ = run
            with _quiet_hmmlearn():  # it warns per EM step; check_fit judges the result once
                model.fit(z)
            check_fit(model, tol=tol, min_variance=min_variance)
        except (ValueError, np.linalg.LinAlgError, RegimeFitError) as err:
            reason = f"{f'k-means seed {run}' if kmeans else 'start'}: {err}"
            if i == len(runs) - 1 and best is None and not seeds and run != fallback_seed:
                runs.append(fallback_seed)
            continue
        ll = float(model.monitor_.history[-1])
        if ll > best_ll:
            best, best_ll = model, ll
    if best is None:
        raise RegimeFitError(reason)
    return best


def prototype_start(names: Sequence[str], mean: np.ndarray, scale: np.ndarray, n_states: int,
                    cfg: RegimeConfig) -> tuple[np.ndarray, ...]:
    """EM start with one state at a typical point of each named regime, from the window alone.

    Means in the window's standardised units: trend from the rule thresholds (raw t-statistic),
    volatility and dispersion as z-scores. Unit covariances, sticky transitions. Because it
    depends on nothing but the fit window, refits are independent of each other, so a bot that
    starts late fits the same models as a backtest over the same candles.
    """
    b, e = cfg.bull_trend or 0.5, cfg.bear_trend or 0.5
    #       trend, log_vol z, dispersion z
    table = [(2 * b, 0.0, 0.0),  # BULL_MOMENTUM
             (-2 * e, 0.3, 0.0),  # BEAR_DEFENSIVE
             (0.0, -0.7, -0.3),  # CHOPPY
             (-3 * e, 2.0, 0.0),  # CRISIS
             (0.0, 0.0, 2 * max(cfg.theme_dispersion_z, 0.5)),  # THEME_DRIVEN
             (0.0, 1.0, 0.0),  # a volatile range
             (4 * b, 0.5, 0.0),  # a strong rally
             (-2 * e, -0.7, 0.0)]  # a quiet decline
    protos = np.array(table[:n_states])
    col = {"trend": 0, "log_vol": 1, "dispersion": 2}
    means = np.zeros((n_states, len(names)))
    for j, name in enumerate(names):
        means[:, j] = protos[:, col[name]] if name in col else 0.0
        if name == "trend":
            means[:, j] = (means[:, j] - mean[j]) / scale[j]
    trans = np.full((n_states, n_states), 0.05 / (n_states - 1))
    np.fill_diagonal(trans, 0.95)
    covars = np.tile(np.eye(len(names)) * 0.5, (n_states, 1, 1))
    return np.full(n_states, 1.0 / n_states), trans, means, covars


@contextmanager
def _quiet_hmmlearn() -> Iterator[None]:
    """Silence hmmlearn's per-iteration warnings and log records for the duration of a fit."""
    hmm_log = logging.getLogger("hmmlearn.base")
    drop = logging.Filter("__none__")  # a filter whose name matches no logger drops everything
    hmm_log.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hmm_log.removeFilter(drop)


def check_fit(model: Any, *, tol: float, min_variance: float) -> None:
    """Raise :class:`RegimeFitError` for a fit that cannot be trusted."""
    history = list(model.monitor_.history)
    params = (model.means_, model.covars_, model.transmat_, model.startprob_)
    if not history or not np.isfinite(history).all():
        raise RegimeFitError("non-finite log-likelihood")
    if not all(np.isfinite(p).all() for p in params):
        raise RegimeFitError("non-finite parameters")
    # EM never lowers the likelihood; a clear drop means numerical trouble, not rounding.
    if len(history) >= 2 and history[-1] < history[-2] - 10 * max(tol, 1e-6):
        raise RegimeFitError(f"log-likelihood fell from {history[-2]:.3f} to {history[-1]:.3f}")
    smallest = float(np.linalg.eigvalsh(model.covars_).min())
    if smallest < min_variance:
        raise RegimeFitError(f"a state has ~zero variance (eigenvalue {smallest:.2e})")


def stationary(transmat: np.ndarray) -> np.ndarray:
    """Stationary distribution of an ergodic transition matrix (the filter's neutral prior)."""
    w, v = np.linalg.eig(np.asarray(transmat).T)
    p = np.abs(np.real(v[:, int(np.argmin(np.abs(w - 1.0)))]))
    return p / p.sum()


# ----------------------------------------------------------------------------------------------
# Naming states

def state_margins(trend: np.ndarray, vol_z: np.ndarray, disp_z: np.ndarray | None, *,
                  bull_trend: float, bear_trend: float, theme_dispersion_z: float,
                  bear_vol_z: float) -> dict[str, np.ndarray]:
    """How far each state's emission mean is inside each regime's rule (> 0 means it is).

    ``trend`` is the state's mean trend t-statistic; ``vol_z`` and ``disp_z`` are its mean
    volatility and dispersion in units of the fit window's std around the window's mean.
    """
    inf = np.full(len(trend), -np.inf)
    falling_volatile = np.minimum(-trend, vol_z - bear_vol_z)
    return {
        "THEME_DRIVEN": inf if disp_z is None else disp_z - theme_dispersion_z,
        "BULL_MOMENTUM": trend - bull_trend,
        # Falling clearly, or falling at all while volatility is high ...
        "BEAR_DEFENSIVE": np.maximum(-trend - bear_trend, falling_volatile),
        # ... and CHOPPY is the band between, less that corner.
        "CHOPPY": np.minimum(np.minimum(bull_trend - trend, trend + bear_trend),
                             -falling_volatile),
    }


def soft_names(margins: dict[str, np.ndarray], softness: float) -> np.ndarray:
    """How much of each state belongs to each regime: (K, 5) rows summing to 1, NAMES order.

    The rules as smooth gates: THEME_DRIVEN takes sigmoid(margin / softness) of a state, the
    rest goes to BULL_MOMENTUM, BEAR_DEFENSIVE and CHOPPY by a softmax of their margins. A
    state whose mean sits on a threshold is split between the two regimes, so a refit that
    nudges the mean across it moves probability a little instead of renaming the state; and the
    naming depends on this fit alone, not on earlier ones. softness -> 0 gives the hard rules.
    """
    tau = max(softness, 1e-9)
    k = len(margins["CHOPPY"])
    with np.errstate(over="ignore"):
        theme = 1.0 / (1.0 + np.exp(-np.clip(margins["THEME_DRIVEN"] / tau, -500, 500)))
    trend = np.column_stack([margins[n] for n in ("BULL_MOMENTUM", "BEAR_DEFENSIVE", "CHOPPY")])
    trend = np.exp((trend - trend.max(axis=1, keepdims=True)) / tau)
    trend /= trend.sum(axis=1, keepdims=True)
    out = np.zeros((k, len(NAMES)))
    for j, name in enumerate(("BULL_MOMENTUM", "BEAR_DEFENSIVE", "CHOPPY")):
        out[:, NAMES.index(name)] = (1.0 - theme) * trend[:, j]
    out[:, NAMES.index("THEME_DRIVEN")] = theme
    return out


def fit_margins(means: np.ndarray, mean: np.ndarray, scale: np.ndarray, names: Sequence[str],
                cfg: RegimeConfig) -> dict[str, np.ndarray]:
    """Rule margins of each state of a fit with standardised ``means`` (K, D) over ``names``:
    trend in raw units (t-statistic), volatility and dispersion as the window's z-scores."""
    k = len(means)
    col = {n: i for i, n in enumerate(names)}
    raw = means * scale + mean
    trend = raw[:, col["trend"]] if "trend" in col else np.zeros(k)
    vol_z = means[:, col["log_vol"]] if "log_vol" in col else np.zeros(k)
    disp_z = means[:, col["dispersion"]] if "dispersion" in col else None
    return state_margins(trend, vol_z, disp_z, bull_trend=cfg.bull_trend,
                         bear_trend=cfg.bear_trend, theme_dispersion_z=cfg.theme_dispersion_z,
                         bear_vol_z=cfg.bear_vol_z)


# ----------------------------------------------------------------------------------------------
# Per-candle decision


@dataclass
class Carry:
    """What the per-candle pass needs from the candle before; the detector resumes from it."""

    model: Any = None  # the RegimeHMM in use, None before the first successful fit
    alpha: np.ndarray | None = None  # filtered state distribution of the last candle
    regime: int | None = None  # index into NAMES; None while UNKNOWN
    dwell: int = 0  # candles spent in ``regime``
    crisis: bool = False  # the CRISIS override holds
    crisis_dwell: int = 0
    overridden: bool = False  # the last candle's regime came from the override


def theme_rule(rp: np.ndarray, disp_z: np.ndarray, threshold: float, weight: float
               ) -> np.ndarray:
    """Mix ``weight`` into THEME_DRIVEN where ``disp_z`` >= ``threshold`` (NaN: no change)."""
    hit = np.nan_to_num(disp_z, nan=-np.inf) >= threshold
    out = rp.copy()
    out[hit] *= 1.0 - weight
    out[hit, NAMES.index("THEME_DRIVEN")] += weight
    return out


def decide(rp: np.ndarray | None, drawdown: np.ndarray, vol_ratio: np.ndarray, carry: Carry,
           cfg: RegimeConfig, probs: np.ndarray, regime: np.ndarray, conf: np.ndarray,
           alarm: np.ndarray | None = None) -> None:
    """Per candle: the rule-based CRISIS override, then minimum dwell and switching margin
    (an ``alarm`` candle, e.g. a changepoint, needs no minimum dwell to switch).

    ``rp`` (T, 5) are the HMM's regime probabilities (None: no model yet). Writes ``probs``,
    ``regime`` (index into NAMES, -1 = UNKNOWN) and ``conf`` in place and advances ``carry``.
    The override needs no model, so a crash is flagged even before the first fit.
    """
    cc = cfg.crisis_confidence
    neutral = np.full(len(NAMES), 1.0 / (len(NAMES) - 1))
    neutral[CRISIS] = 0.0
    for t in range(len(drawdown)):
        dd, vr = drawdown[t], vol_ratio[t]  # NaN compares False: no data, no override
        if carry.crisis:
            calm = not (dd <= -cfg.crisis_exit_drawdown and vr >= cfg.crisis_exit_vol_ratio)
            if carry.crisis_dwell >= cfg.crisis_min_dwell and calm:
                carry.crisis = False
            else:
                carry.crisis_dwell += 1
        elif dd <= -cfg.crisis_drawdown and vr >= cfg.crisis_vol_ratio:
            carry.crisis, carry.crisis_dwell = True, 1
        if rp is None and not carry.crisis:
            carry.regime, carry.dwell, carry.overridden = None, 0, False
            continue  # UNKNOWN: probabilities stay 0
        p = (neutral if rp is None else rp[t]).copy()
        cur = carry.regime
        if carry.crisis:
            p *= 1.0 - cc
            p[CRISIS] += cc
            new = CRISIS
        else:
            best = int(np.argmax(p))
            if cur is None or carry.overridden:
                new = best  # nothing to hold, or the override's own dwell already applied
            elif (best != cur and (carry.dwell >= cfg.min_dwell
                                   or (alarm is not None and alarm[t]))
                  and p[best] - p[cur] >= cfg.switch_margin):
                new = best
            else:
                new = cur
        carry.dwell = carry.dwell + 1 if new == cur else 1
        carry.regime, carry.overridden = new, carry.crisis
        probs[t], regime[t], conf[t] = p, new, p[new]


def output_frame(dates: pd.Series, probs: np.ndarray, regime: np.ndarray, conf: np.ndarray, *,
                 names: Sequence[str], ids: Sequence[int]) -> pd.DataFrame:
    """The detector's output frame; ``regime`` holds indices into NAMES, -1 for UNKNOWN."""
    labels = np.array([*NAMES, "UNKNOWN"], dtype=object)
    codes = np.array([*ids, 0], dtype=np.int8)
    data: dict[str, Any] = {"date": dates, "regime": labels[regime], "regime_confidence": conf}
    data.update({col: probs[:, i] for i, col in enumerate(names)})
    data["regime_id"] = codes[regime]
    # One constructor call, and the date Series itself (to_numpy() of tz-aware dates makes
    # objects): this frame is rebuilt on every live call.
    return pd.DataFrame(data, index=dates.index)
