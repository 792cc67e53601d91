"""Portfolio risk budget across open trades: the design's pairwise correlation cap.

Risk parity here is inverse volatility: every entry's stake is already scaled by target / the
pair's forecast volatility (``sizing.vol_target``). What that leaves out is that most crypto pairs
move together, so a book of "independent" positions is one bet. The budget looks at the trailing
returns of the candidate and of every pair with an open trade (``window``), estimates their
covariance with Ledoit-Wolf shrinkage (scikit-learn's ``LedoitWolf``: well conditioned where the
sample covariance of a short window is not), and takes the largest correlation ρ between the
candidate and an open pair. Above the cap (0.6) the stake is cut in proportion,
``(1 - ρ) / (1 - cap)``, and refused when that is below ``refuse_below``. The factor is never
above 1 and the guard still clamps the result, so a budget can only lower a stake.

skfolio and riskfolio-lib were considered: both bring cvxpy and a conic solver (riskfolio also
vectorbt, astropy, statsmodels) for optimisations this rule does not need; the estimator they
would use for it is the same Ledoit-Wolf shrinkage.

Bad input: fewer than ``min_history`` common candles, or a covariance that is singular (a flat
price series): no correlation is estimated and the stake stays at its inverse-volatility size,
with a log line (by the caller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from learning.core.config import _f


@dataclass(frozen=True)
class BudgetConfig:
    """Portfolio risk budget (``advanced_learning.budget``)."""

    enabled: bool = _f(False, "Cut the stake of an entry whose return correlation with an open "
                       "trade's pair exceeds correlation_cap (off by default: see the README's "
                       "validation figures).")
    correlation_cap: float = _f(0.6, "Largest pairwise correlation with the open book an entry "
                                "keeps its full stake at.", (0.0, 1.0))
    window: str = _f("14d", "Trailing window of returns the covariance is estimated on.",
                     duration=True)
    min_history: str = _f("3d", "Fewest common candles for an estimate; with fewer, no cut.",
                          duration=True)
    refuse_below: float = _f(0.25, "An entry whose stake factor is below this is refused.",
                             (0.0, 1.0))


@dataclass(frozen=True)
class Budget:
    """The budget's answer for one entry: the stake factor and why."""

    factor: float  # in [0, 1]; 0 refuses
    correlation: float | None  # largest correlation with an open pair (None: not estimated)
    with_pair: str | None
    reason: str  # "no_open_trades", "ok", "correlation_cap", "refused", "too_little_history",
    # "singular_covariance"


def shrunk_correlation(returns: np.ndarray) -> np.ndarray | None:
    """Correlation matrix (K, K) from the Ledoit-Wolf covariance of ``returns`` (T, K); None when
    a column is flat or the estimate is singular."""
    from sklearn.covariance import LedoitWolf

    x = np.asarray(returns, dtype="float64")
    sd = x.std(axis=0)
    if not (np.isfinite(sd).all() and (sd > 0).all()):
        return None
    cov = LedoitWolf().fit(x / sd).covariance_  # standardised: shrinkage towards equal variances
    eig = np.linalg.eigvalsh(cov)
    if not (np.isfinite(eig).all() and eig.min() > 1e-12 * max(eig.max(), 1e-300)):
        return None
    d = np.sqrt(np.diag(cov))
    return cov / np.outer(d, d)


def correlation_budget(candidate: np.ndarray, book: dict[str, np.ndarray],
                       config: BudgetConfig, min_rows: int) -> Budget:
    """The stake factor of an entry whose trailing returns are ``candidate`` (T,) given the open
    pairs' returns on the same candles (``book``: pair -> (T,)); rows with a NaN are dropped."""
    if not book:
        return Budget(1.0, None, None, "no_open_trades")
    names = list(book)
    x = np.column_stack([candidate, *[book[p] for p in names]])
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) < max(min_rows, 3):
        return Budget(1.0, None, None, "too_little_history")
    corr = shrunk_correlation(x)
    if corr is None:
        return Budget(1.0, None, None, "singular_covariance")
    k = int(np.argmax(corr[0, 1:]))
    rho = float(corr[0, 1 + k])
    cap = config.correlation_cap
    if not math.isfinite(rho) or rho <= cap:
        return Budget(1.0, rho, names[k], "ok")
    factor = max(0.0, (1.0 - rho) / (1.0 - cap)) if cap < 1.0 else 1.0
    if factor < config.refuse_below:
        return Budget(0.0, rho, names[k], "refused")
    return Budget(min(1.0, factor), rho, names[k], "correlation_cap")
