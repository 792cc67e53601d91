"""Configuration of the regime detector (``advanced_learning.regime.detector``).

Its own module so that :mod:`learning.brain.regime` and :mod:`learning.brain.regime_features`
can both import it without importing each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from learning.core.config import _f
from learning.core.errors import ConfigError

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
