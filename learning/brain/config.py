"""The brain's sections of the ``advanced_learning`` config: regime detector, bandit, decision
flow. The parameters of each model (``RegimeConfig``, ``BanditConfig``, ``MetaConfig``) live
with the model; :mod:`learning.strategy.config` assembles the whole section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from learning.brain.bandit import BanditConfig
from learning.brain.meta import MetaConfig
from learning.brain.profiles import ProfileConfig
from learning.brain.regime_config import RegimeConfig
from learning.brain.shadow import ShadowConfig
from learning.core.config import _f


def _regime_defaults() -> RegimeConfig:
    # Windows that fit in the history freqtrade can provide at start-up (5000 candles of the
    # main timeframe, about 17 days of 5m): a two-week fit window, refitted weekly.
    return RegimeConfig(fit_window=336, min_fit_candles=168, vol_baseline_window=168,
                        refit_every=168, burn_in=48)


@dataclass(frozen=True)
class RegimeSettings:
    """Tier 2: the market regime detector, run on BTC and the whitelist at
    ``detector.timeframe`` (an informative timeframe, 1h by default)."""

    enabled: bool = _f(True, "Detect regimes; false: every candle is UNKNOWN (an ablation).")
    btc_pair: str = _f("BTC/USDT", "The market factor: regime and sentiment are read from it.")
    per_regime_learning: bool = _f(False, "The tiers keep separate posteriors per regime; "
                                   "false (the default, chosen on the validation bench): one "
                                   "posterior pooled over every regime (the regime still "
                                   "decides CRISIS = cash).")
    detector: RegimeConfig = _f(_regime_defaults(), "Detector parameters (RegimeConfig); defaults "
                                "suit 1h candles and a two-week fit window.")


@dataclass(frozen=True)
class BanditSettings:
    """Tier 1: the component-weight bandit (per learner and regime)."""

    enabled: bool = _f(False, "Learn component weights (Thompson-sampled); false (the default: "
                       "on the validation bench learned weights did not beat equal weights): "
                       "equal weights over the components present.")
    params: BanditConfig = _f(BanditConfig(), "Bandit parameters.")


@dataclass(frozen=True)
class BrainConfig:
    """Decision flow and circuit breakers."""

    seed: int = _f(0, "Seed of the decision sampler: each decision's Thompson draws are seeded "
                   "by (seed, pair, candle time), so they do not depend on other pairs.",
                   (0, 2**31 - 1))
    peers: tuple[str, ...] = _f((), "Pairs the theme score and the regime's dispersion feature "
                                "compare against, declared as informative pairs so freqtrade "
                                "loads them; empty: exchange.pair_whitelist as the strategy "
                                "starts (a pairlist that changes the whitelist later does not "
                                "change them).")
    theme_window: str = _f("1d", "Trailing window of the theme score's relative returns.",
                           duration=True)
    volatility_baseline: str = _f("1d", "Trailing window of the ATR% median that the technical "
                                  "score's volatility term compares against.", duration=True)
    trend_window: str = _f("50d", "The trend component: distance of the price from the mean "
                           "of this many completed daily closes (time-series momentum).",
                           duration=True)
    breaker_trades: int = _f(20, "Risk is cut while the Sharpe of the last N closed trades is "
                             "below 0 (N = this); learning goes on.", (2, 10_000))
    risk_cut_stake: float = _f(0.5, "While risk is cut: stakes are multiplied by this.",
                               (0.0, 1.0))
    risk_cut_threshold: float = _f(1.25, "While risk is cut: entry thresholds are multiplied "
                                   "by this.", (1.0, 10.0))
    abstain_below: float = _f(0.0, "A learner whose learned mean trade return in the regime "
                              "(after fees, from real and shadow trades) is below this does not "
                              "enter (-1 turns the gate off). Shadow trades keep measuring it, "
                              "so it enters again once its mean recovers.", (-1.0, 1.0))
    abstain_evidence: float = _f(2.0, "Trades' worth of evidence the learner needs in the "
                                 "regime before the gate can close.", (0.0, 1000.0))
    fallback_drawdown: float = _f(0.10, "Rule-based fallback (technical score, Balanced "
                                  "learner, no sampling) while drawdown exceeds this.",
                                  (0.0, 1.0))
    warm_start: bool = _f(False, "Backtests load learned state from an earlier backtest whose "
                          "data ended before this one starts (never dry/live state).")
    decision_log: int = _f(2000, "Decisions kept in the state (oldest dropped).", (0, 10**6))


class BrainSections(Protocol):
    """What the decision flow reads of the plugin's config (``LearningConfig`` has it all)."""

    @property
    def regime(self) -> RegimeSettings: ...

    @property
    def bandit(self) -> BanditSettings: ...

    @property
    def meta(self) -> MetaConfig: ...

    @property
    def brain(self) -> BrainConfig: ...

    @property
    def shadow(self) -> ShadowConfig: ...

    @property
    def profiles(self) -> ProfileConfig: ...
