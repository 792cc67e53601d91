"""The policy router's configuration and posterior maths (pure functions): posterior draws and
summaries, probability-matching allocation with the warm-up floor, promotion tests and
rebalance plans. The rules they implement are in :mod:`learning.router.router`'s docstring."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from learning.core.config import _f
from learning.core.errors import ConfigError
from learning.router.registry import (
    OutcomeTotals,
    PolicyInfo,
)

DB_RELPATH = Path("learning") / "policy_bandit.db"


@dataclass(frozen=True)
class RouterConfig:
    """How the router shares entries between policies and when a champion is replaced."""

    posterior: str = _f(
        "beta", "Posterior of a policy's quality: 'beta' on the win rate (profit_ratio > 0) or "
        "'normal' on the mean trade return.", choices=("beta", "normal"))
    new_policy_floor: float = _f(
        0.10, "Share of entries a challenger gets during its warm-up.", (0.001, 0.5))
    floor_trades: int = _f(
        30, "Outcomes after which a challenger leaves warm-up and competes by Thompson sampling "
        "(0: no warm-up).", (0, 1_000_000))
    max_warmup_share: float = _f(
        0.5, "Most of the traffic all warm-up policies together may get.", (0.001, 1.0))
    retire_probability: float = _f(
        0.95, "Posterior probability that a challenger beats the champion at which the champion "
        "is retired and the challenger promoted.", (0.5, 1.0))
    min_trades_for_retirement: int = _f(
        100, "Outcomes both the champion and the challenger need before a promotion.",
        (1, 1_000_000))
    rebalance_every_trades: int = _f(
        20, "New outcomes (all policies together) between allocation snapshots.", (1, 1_000_000))
    mc_draws: int = _f(
        20_000, "Monte Carlo draws per posterior for P(best) and P(challenger better).",
        (100, 10_000_000))
    prior_wins: float = _f(1.0, "Beta prior: pseudo-wins of a new policy.", (0.01, 1000.0))
    prior_losses: float = _f(1.0, "Beta prior: pseudo-losses of a new policy.", (0.01, 1000.0))
    normal_prior_mean: float = _f(
        0.0, "Normal posterior: prior mean trade return (ratio).", (-1.0, 1.0))
    normal_prior_sd: float = _f(
        0.02, "Normal posterior: prior guess of the spread of one trade's return (ratio).",
        (1e-6, 10.0))
    normal_prior_trades: float = _f(
        1.0, "Normal posterior: weight of the prior mean, in trades.", (0.01, 1000.0))
    busy_timeout_s: float = _f(
        5.0, "How long a write waits for another process's lock before giving up.", (0.0, 600.0))

    def __post_init__(self) -> None:
        # parse_section checks user input; this also catches bad values set in code.
        for f in dataclasses.fields(self):
            value, rng, choices = getattr(self, f.name), f.metadata["range"], f.metadata["choices"]
            if rng is not None and not rng[0] <= value <= rng[1]:
                raise ConfigError(f"RouterConfig.{f.name}: {value!r} is out of range "
                                  f"[{rng[0]}, {rng[1]}]")
            if choices is not None and value not in choices:
                raise ConfigError(f"RouterConfig.{f.name}: {value!r} is not one of "
                                  f"{', '.join(choices)}")


def default_db_path(userdir: Path | str | None = None) -> Path:
    """``<userdir>/learning/policy_bandit.db``; ``userdir`` defaults to ``./user_data``."""
    return Path(userdir if userdir is not None else "user_data") / DB_RELPATH


# ----------------------------------------------------------------------------------------------
# Posterior maths (pure functions of outcome totals)


def _nig(t: OutcomeTotals, cfg: RouterConfig) -> tuple[float, float, float, float]:
    """Normal-Inverse-Gamma posterior (mu, kappa, alpha, beta) of the trade-return mean/var."""
    mu0, k0, a0 = cfg.normal_prior_mean, cfg.normal_prior_trades, 2.0
    b0 = cfg.normal_prior_sd ** 2  # with a0 = 2 the prior mean of the variance is b0
    n = t.trades
    if n == 0:
        return mu0, k0, a0, b0
    mean = t.sum_ratio / n
    ss = max(t.sum_ratio_sq - n * mean * mean, 0.0)  # sum of squared deviations
    kn = k0 + n
    return ((k0 * mu0 + n * mean) / kn, kn, a0 + n / 2,
            b0 + 0.5 * ss + k0 * n * (mean - mu0) ** 2 / (2 * kn))


def posterior_draws(totals: Sequence[OutcomeTotals], cfg: RouterConfig,
                    rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` joint draws of every policy's quality: shape (size, len(totals))."""
    if cfg.posterior == "beta":
        a = np.array([cfg.prior_wins + t.wins for t in totals])
        b = np.array([cfg.prior_losses + t.trades - t.wins for t in totals])
        return rng.beta(a, b, size=(size, len(totals)))
    mu, kappa, alpha, beta = (np.array(v) for v in zip(*(_nig(t, cfg) for t in totals),
                                                       strict=True))
    scale = np.sqrt(beta / (alpha * kappa))
    return mu + scale * rng.standard_t(2 * alpha, size=(size, len(totals)))


def posterior_summary(t: OutcomeTotals, cfg: RouterConfig,
                      level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lower, upper) of the posterior, with an equal-tailed ``level`` interval."""
    from scipy import stats  # slow import, kept off the trading path

    q = ((1 - level) / 2, (1 + level) / 2)
    if cfg.posterior == "beta":
        a, b = cfg.prior_wins + t.wins, cfg.prior_losses + t.trades - t.wins
        lo, hi = stats.beta.ppf(q, a, b)
        return a / (a + b), float(lo), float(hi)
    mu, kappa, alpha, beta = _nig(t, cfg)
    lo, hi = stats.t.ppf(q, 2 * alpha, loc=mu, scale=math.sqrt(beta / (alpha * kappa)))
    return mu, float(lo), float(hi)


def _posterior_mean(t: OutcomeTotals, cfg: RouterConfig) -> float:
    if cfg.posterior == "beta":
        a, b = cfg.prior_wins + t.wins, cfg.prior_losses + t.trades - t.wins
        return a / (a + b)
    return _nig(t, cfg)[0]


@dataclass(frozen=True)
class Allocation:
    """Traffic shares (summing to 1) and P(best among all active) per policy, in input order."""

    names: tuple[str, ...]
    share: tuple[float, ...]
    p_best: tuple[float, ...]


def allocate(names: Sequence[str], totals: Sequence[OutcomeTotals], champion: str,
             cfg: RouterConfig, draws: np.ndarray) -> Allocation:
    """Rules 3 and 4: warm-up floors, then probability matching among the others.

    ``draws``: posterior draws of these policies, shape (n_draws, len(names)).
    """
    k, n_draws = len(names), draws.shape[0]
    warm = np.array([n != champion and t.trades < cfg.floor_trades
                     for n, t in zip(names, totals, strict=True)], dtype=bool)
    p_best = np.bincount(draws.argmax(axis=1), minlength=k) / n_draws
    share = np.zeros(k)
    n_warm = int(warm.sum())
    warm_each = min(cfg.new_policy_floor, cfg.max_warmup_share / n_warm) if n_warm else 0.0
    share[warm] = warm_each
    contenders = np.flatnonzero(~warm)  # never empty: the champion is always a contender
    wins = np.bincount(draws[:, contenders].argmax(axis=1), minlength=len(contenders))
    share[contenders] = (1.0 - warm_each * n_warm) * wins / n_draws
    return Allocation(tuple(names), tuple(share.tolist()), tuple(p_best.tolist()))


@dataclass(frozen=True)
class Promotion:
    """A champion retired because a challenger beat it (rule 6)."""

    retired: str
    champion: str
    probability: float  # P(new champion better than the old one)
    retired_trades: int
    champion_trades: int

    def reason(self) -> str:
        return (f"beaten by {self.champion}: P(better) = {self.probability:.3f} after "
                f"{self.retired_trades} / {self.champion_trades} trades")


def find_promotion(names: Sequence[str], totals: Sequence[OutcomeTotals], champion: str,
                   cfg: RouterConfig, draws: np.ndarray) -> Promotion | None:
    """The challenger that beats the champion with the stated probability, if any (rule 6).

    ``draws``: posterior draws of these policies, shape (n_draws, len(names)).
    """
    c = names.index(champion)
    m = cfg.min_trades_for_retirement
    if totals[c].trades < m:
        return None
    rivals = [i for i, t in enumerate(totals) if i != c and t.trades >= m]
    if not rivals:
        return None
    p_better = (draws[:, rivals] > draws[:, [c]]).mean(axis=0)
    j = int(np.argmax(p_better))
    if p_better[j] < cfg.retire_probability:
        return None
    i = rivals[j]
    return Promotion(champion, names[i], float(p_better[j]), totals[c].trades, totals[i].trades)


@dataclass(frozen=True)
class RebalancePlan:
    """What a rebalance decides: an optional promotion, then the allocation after it."""

    promotion: Promotion | None
    allocation: Allocation  # over the policies still active after the promotion


def plan_rebalance(names: Sequence[str], totals: Sequence[OutcomeTotals], champion: str,
                   cfg: RouterConfig, rng: np.random.Generator) -> RebalancePlan:
    """Rules 6 then 3-4 on in-memory totals; :meth:`Router.rebalance` stores the result."""
    names, totals = list(names), list(totals)
    draws = posterior_draws(totals, cfg, rng, cfg.mc_draws)  # one set serves both rules
    promotion = find_promotion(names, totals, champion, cfg, draws)
    if promotion is not None:
        i = names.index(champion)
        del names[i], totals[i]
        draws = np.delete(draws, i, axis=1)
        champion = promotion.champion
    return RebalancePlan(promotion, allocate(names, totals, champion, cfg, draws))


def _successor(active: Sequence[PolicyInfo], totals: dict[int, OutcomeTotals],
               cfg: RouterConfig) -> PolicyInfo | None:
    """Rule 2: the new champion after a manual retirement (deterministic)."""
    def key(p: PolicyInfo) -> tuple:
        t = totals.get(p.id, OutcomeTotals())
        return (t.trades >= cfg.floor_trades, _posterior_mean(t, cfg), t.trades, -p.id)
    return max(active, key=key, default=None)


def _draw(names: Sequence[str], shares: Sequence[float], rng: np.random.Generator) -> str:
    cum = np.cumsum(shares)
    i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
    return names[min(i, len(names) - 1)]



