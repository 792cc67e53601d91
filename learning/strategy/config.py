"""The ``advanced_learning`` section of freqtrade's config.json, assembled from every
subsystem's own config classes, and the strategy's own sections (rule pyramiding, sizing).

Unknown keys, wrong types and out-of-range values raise
:class:`~learning.core.errors.ConfigError` with the full key path (:func:`parse_section`), so
start-up stops with a message naming the problem instead of trading on a typo.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from learning.brain.budget import BudgetConfig
from learning.brain.changepoint import ChangepointConfig
from learning.brain.config import BanditSettings, BrainConfig, RegimeSettings
from learning.brain.meta import MetaConfig
from learning.brain.profiles import ProfileConfig
from learning.brain.shadow import ShadowConfig
from learning.core.config import SECTION, _f, parse_section
from learning.core.risk import RiskConfig
from learning.encoder.conformal import ConformalConfig
from learning.router.config import RouterSettings


@dataclass(frozen=True)
class PyramidingConfig:
    """The rule-based scale-in / trim used when no learned sizing agent is configured."""

    enabled: bool = _f(True, "Allow position adjustment (scale-in and trim).")
    max_adds: int = _f(2, "Most scale-in orders per trade.", (0, 10))
    add_fraction: float = _f(
        0.5, "Size of one scale-in as a fraction of the trade's initial stake.", (0.0, 2.0))
    add_min_profit: float = _f(
        0.015, "A scale-in needs at least this open profit (ratio).", (-1.0, 1.0))
    add_requires_signal: bool = _f(
        True, "A scale-in also needs the entry signal (score above the entry threshold).")
    trim_profit: float = _f(
        0.06, "Trim once when open profit reaches this ratio.", (0.0, 10.0))
    trim_fraction: float = _f(
        0.33, "Fraction of the position sold by a trim.", (0.0, 0.95))


@dataclass(frozen=True)
class SizingConfig:
    """Who sets size, stop, take profit and hold time of a trade."""

    agent: str = _f("rule", "rule: learner risk tolerance × cap, ATR stop; ppo: the Tier 3 "
                    "trade-parameter agent, clamped by the risk guard; allocator: every pair "
                    "moves toward a target weight of the book (the allocator section).",
                    choices=("rule", "ppo", "allocator"))
    vol_target: float = _f(0.5, "Volatility targeting: an entry's stake is the learner's share "
                           "× (this / the pair's forecast annualised volatility) of the "
                           "position cap, clamped by the guard; 0 turns it off (the share of "
                           "the cap alone).", (0.0, 10.0))
    vol_halflife: str = _f("3d", "Half-life of the EWMA volatility forecast (used when no "
                           "FreqAI model predicts volatility).", duration=True)
    ppo_policy: str = _f("mlp", "Network of the Tier 3 agents (ftlearn train-agents): mlp, or "
                         "moe (TREND / RANGE / PANIC experts gated by the regime "
                         "probabilities); a checkpoint of the other kind is refused.",
                         choices=("mlp", "moe"))
    ppo_short_hold_penalty: float = _f(
        1.0, "Churn penalty of the Tier 3 agents' reward: extra round-trip fees of the stake "
        "for a trade closed at once, falling linearly to 0 at 4h; 0 turns it off.",
        (0.0, 1000.0))


@dataclass(frozen=True)
class AllocatorSettings:
    """Sizing mode ``allocator`` (``sizing.agent = "allocator"``): who sets the target weights
    and how the book moves toward them (learning.strategy.allocation)."""

    policy: str = _f("ppo", "ppo: the portfolio allocation agent (ftlearn train-allocator); "
                     "equal: gross spread equally over the pairs; inverse_vol: gross in "
                     "proportion to 1 / volatility.", choices=("ppo", "equal", "inverse_vol"))
    folder: str = _f("", "Folder of the allocator checkpoints; empty: the run's state folder.")
    network: str = _f("mlp", "ppo: the allocator's head network, mlp or moe (experts gated by "
                      "the regime); a checkpoint of the other kind is refused.",
                      choices=("mlp", "moe"))
    rebalance_every: str = _f("4h", "Time between rebalancing decisions (candle closes on "
                              "multiples of it).", duration=True)
    min_rebalance: float = _f(0.02, "A pair trades only when its target differs from its "
                              "weight by at least this share of equity (fees do not eat small "
                              "corrections).", (0.0, 0.5))
    min_weight: float = _f(0.01, "Targets below this weight close the position.", (0.0, 0.5))
    gross: float = _f(1.0, "equal / inverse_vol: share of equity distributed over the pairs "
                      "before the per-pair cap (the excess stays in cash).", (0.0, 1.0))
    vol_window: str = _f("7d", "inverse_vol: window of the volatility estimate.",
                         duration=True)


@dataclass(frozen=True)
class LearningConfig:
    """The ``advanced_learning`` section of config.json."""

    identifier: str = _f(
        "default", "Namespace of the learned state: user_data/learning/<identifier>/<runmode>/.")
    state_dir: str = _f(
        "learning", "Folder for learned state, relative to user_data_dir unless absolute.")
    risk: RiskConfig = _f(RiskConfig(), "Hard risk limits.")
    pyramiding: PyramidingConfig = _f(PyramidingConfig(), "Rule-based position adjustment.")
    regime: RegimeSettings = _f(RegimeSettings(), "Tier 2 regime detector.")
    bandit: BanditSettings = _f(BanditSettings(), "Tier 1 component-weight bandit.")
    meta: MetaConfig = _f(MetaConfig(), "Tier 4 meta-learner.")
    brain: BrainConfig = _f(BrainConfig(), "Decision flow and circuit breakers.")
    shadow: ShadowConfig = _f(ShadowConfig(), "Counterfactual (shadow) feedback.")
    profiles: ProfileConfig = _f(ProfileConfig(), "Exit profiles (SCALP / SWING / RUNNER).")
    sizing: SizingConfig = _f(SizingConfig(), "Trade sizing and exit parameters.")
    allocator: AllocatorSettings = _f(AllocatorSettings(), "Sizing mode allocator.")
    router: RouterSettings = _f(RouterSettings(), "Policy router.")
    changepoint: ChangepointConfig = _f(ChangepointConfig(), "Changepoint detection (BOCD) on "
                                        "the market proxy.")
    conformal: ConformalConfig = _f(ConformalConfig(), "Conformal intervals around the FreqAI "
                                    "model's predicted return.")
    budget: BudgetConfig = _f(BudgetConfig(), "Portfolio risk budget across open trades.")


def load_learning_config(ft_config: Mapping[str, Any]) -> LearningConfig:
    """Parse the plugin section of a (merged) freqtrade config dict."""
    return parse_section(LearningConfig, ft_config.get(SECTION), SECTION)
