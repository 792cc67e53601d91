"""Conformal prediction intervals around a FreqAI regressor's predicted return.

Two halves:

* **Split conformal per training window** (in the model, :class:`ConformalMixin`): after FreqAI
  fits a window's model on its train split, the absolute residuals of the *held-out* test split
  (the last ``test_size`` of the window, in time order: ``shuffle`` is false) calibrate the
  interval half-widths at the levels :data:`LEVELS`, with the finite-sample correction, through
  ``crepes`` (``ConformalRegressor``). The half-widths go out as constant prediction columns
  ``&-cq_<level>`` (e.g. ``&-cq_0900``), so backtests that reuse saved predictions keep them.
* **Adaptive conformal inference** (Gibbs & Candès 2021) for the drift between windows (in the
  strategy, :func:`aci_intervals`): the miscoverage target α_t moves after every outcome,
  α_{t+1} = α_t + γ (α − err_t), and the interval at row t uses the calibrated half-width at
  level 1 − α_t. The outcome of row s (the log return over the next ``horizon`` candles) is known
  only at row s + horizon, so err arrives with that delay: every value is causal. ``crepes``
  and MAPIE have no such delayed-feedback online update (MAPIE's ``TimeSeriesRegressor``
  refits an estimator it owns; FreqAI owns the model here), so the recursion is written out.

The *ai* component abstains (contributes nothing) on a row whose interval contains zero
(``conformal.abstain``). Too little calibration data (fewer than :data:`MIN_CALIBRATION` rows):
no columns, no interval, no abstention, logged once.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from learning.core.config import _f

logger = logging.getLogger(__name__)

#: Coverage levels whose half-widths each window calibrates (ACI interpolates between them).
LEVELS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99)
PREFIX = "&-cq_"
COLUMNS = tuple(f"{PREFIX}{round(level * 1000):04d}" for level in LEVELS)
MIN_CALIBRATION = 30
LABEL = "&-s_return"


@dataclass(frozen=True)
class ConformalConfig:
    """Conformal intervals of the *ai* component (``advanced_learning.conformal``); the model
    must emit them (``TSAMAERegressor``, ``LightGBMConformal``)."""

    abstain: bool = _f(False, "The ai component abstains (contributes nothing) where the "
                       "interval of the predicted return contains zero (off by default: see the "
                       "README's validation figures).")
    coverage: float = _f(0.9, "Target coverage of the interval.", (0.5, 0.99))
    aci_gamma: float = _f(0.005, "Step size of adaptive conformal inference (Gibbs & Candès "
                          "2021); 0: plain split conformal per training window.", (0.0, 0.5))


def half_widths(residuals: np.ndarray) -> np.ndarray | None:
    """Split-conformal half-widths at :data:`LEVELS` from absolute calibration residuals (crepes
    applies the finite-sample quantile); None with fewer than :data:`MIN_CALIBRATION`."""
    from crepes import ConformalRegressor

    r = np.abs(np.asarray(residuals, dtype="float64"))
    r = r[np.isfinite(r)]
    if len(r) < MIN_CALIBRATION:
        return None
    cr = ConformalRegressor().fit(residuals=r)
    zero = np.zeros(1)
    # A level whose finite-sample quantile exceeds the data is infinite: kept (crepes warns).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return np.array([float(cr.predict_int(zero, confidence=level)[0, 1])
                         for level in LEVELS])


def half_width_at(grid: np.ndarray, level: float) -> float:
    """The half-width at coverage ``level`` from a row's grid: linear between :data:`LEVELS`,
    and below the lowest level linear down to 0 at coverage 0 (the quantile of an absolute
    residual at level 0 is 0: the empty interval of Gibbs & Candès when α_t >= 1); above the
    highest level infinite (the interval covers everything)."""
    if level > LEVELS[-1]:
        return float("inf")
    if level <= 0.0:
        return 0.0
    if level <= LEVELS[0]:
        return float(grid[0]) * level / LEVELS[0]
    k = int(np.searchsorted(LEVELS, level))  # LEVELS[k - 1] < level <= LEVELS[k]
    if not np.isfinite(grid[k]):
        return float("inf")
    return float(np.interp(level, LEVELS[k - 1:k + 1], grid[k - 1:k + 1]))


def aci_intervals(pred: np.ndarray, grid: np.ndarray, close: np.ndarray, horizon: int,
                  coverage: float, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of the predicted log return per row: ``pred`` (N,), ``grid`` (N, L) the calibrated
    half-widths per row (NaN: no interval there), ``close`` (N,) for the realised outcomes.

    Row t's interval uses α_t, which has seen the outcomes of rows <= t - ``horizon`` only (the
    log return from row s to s + horizon is known at row s + horizon). Every row that had an
    interval feeds the recursion, an unbounded one (α_t below the grid's lowest miscoverage) as
    covered: skipping those would freeze α_t at the first unbounded interval, and every later
    interval would be unbounded too."""
    n = len(pred)
    lo, hi = np.full(n, np.nan), np.full(n, np.nan)
    target = 1.0 - coverage
    alpha = target
    logc = np.log(np.asarray(close, dtype="float64"))
    for t in range(n):
        s = t - horizon
        if gamma > 0 and s >= 0 and not np.isnan(lo[s]) and np.isfinite(logc[t] - logc[s]):
            y = logc[t] - logc[s]
            err = 0.0 if lo[s] <= y <= hi[s] else 1.0
            alpha += gamma * (target - err)
        g = grid[t]
        if not (np.isfinite(pred[t]) and not np.isnan(g).any()):
            continue
        half = half_width_at(g, 1.0 - alpha) if alpha > 0 else float("inf")
        lo[t], hi[t] = pred[t] - half, pred[t] + half
    return lo, hi


def contains_zero(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Rows whose interval contains zero (False where there is no interval)."""
    with np.errstate(invalid="ignore"):
        return (lo <= 0) & (hi >= 0)  # NaN (no interval) compares False


class ConformalMixin:
    """Split conformal per FreqAI training window, for :class:`BaseRegressionModel` subclasses:
    call :meth:`calibrate` at the end of ``fit`` and :meth:`add_conformal_columns` in
    ``predict``."""

    conformal_label = LABEL

    def calibrate(self, model: Any, data_dictionary: dict[str, Any], dk: Any) -> None:
        """Residuals of the window's held-out test split, in the label's own units."""
        label = self.conformal_label
        test_x = data_dictionary.get("test_features")
        test_y = data_dictionary.get("test_labels")
        grid = None
        if label in dk.label_list and test_x is not None and len(test_x) >= MIN_CALIBRATION:
            pred = np.asarray(model.predict(test_x)).reshape(len(test_x), -1)
            pred_df = pd.DataFrame(pred, columns=dk.label_list)
            pred_df, _, _ = dk.label_pipeline.inverse_transform(pred_df)
            true_df, _, _ = dk.label_pipeline.inverse_transform(test_y.copy())
            grid = half_widths(true_df[label].to_numpy() - pred_df[label].to_numpy())
        if grid is None:
            logger.info("%s: too few held-out rows to calibrate conformal intervals (%d, %d "
                        "needed); this window has none", dk.pair,
                        0 if test_x is None else len(test_x), MIN_CALIBRATION)
            dk.data["conformal"] = None
            return
        dk.data["conformal"] = {"label": label, "levels": list(LEVELS),
                                "half_widths": [float(q) for q in grid], "n": int(len(test_x))}
        for col, q in zip(COLUMNS, grid):
            # live: FreqAI's data drawer looks up every prediction column's mean and std
            dk.data.setdefault("labels_mean", {})[col] = float(q) if np.isfinite(q) else 0.0
            dk.data.setdefault("labels_std", {})[col] = 0.0

    def add_conformal_columns(self, pred_df: pd.DataFrame, dk: Any) -> pd.DataFrame:
        info = dk.data.get("conformal")
        for i, col in enumerate(COLUMNS):
            pred_df[col] = float(info["half_widths"][i]) if info else np.nan
        return pred_df
