"""The variants of ``ftlearn bench`` as a data table (:data:`VARIANTS`).

AdvancedLearning as shipped ("full"), "frozen" (learning off), one ablation per tier (each
switches exactly one tier or feature off through configuration), the tiers that are off by
default switched on ("with_*"), opt-in FreqAI and pyramiding variants, and the baselines a
freqtrade user would run instead (buy-and-hold, the textbook trend rule, SampleStrategy,
FreqaiExampleStrategy + LightGBM, ReinforcementLearner). :mod:`learning.bench.runner` runs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from learning.core.errors import ConfigError

Kind = Literal["full", "ablation", "baseline"]
TSAMAE_CONFIG = "configs/freqai-tsamae.json"
LGBM_PARAMS = {"n_estimators": 400, "learning_rate": 0.05, "random_state": 1, "n_jobs": 1,
               "verbosity": -1}


@dataclass(frozen=True)
class Variant:
    """One line of the benchmark.

    ``freqai_config``: a FreqAI config file (``asset:NAME`` in ``learning/bench/assets`` or a
    path relative to the repo); ``freqai_required=False`` runs the variant without FreqAI when
    the file is missing (noted in the report), ``True`` skips it. ``freqai_replace`` replaces
    whole keys of its ``freqai`` section, ``freqai_merge`` is deep-merged into it (e.g. one
    reward parameter); ``quick_freqai`` is deep-merged into it with ``--quick``.
    ``allocator_training``: training settings of the walk-forward allocators (ensemble, LR
    schedule, evaluation; :class:`learning.agents.alloc_policy.NetConfig` fields).
    ``strategy_files`` (``template:NAME`` from freqtrade's templates, ``asset:NAME``) are
    copied into the run's strategy folder. ``builtin="buy_and_hold"`` needs no freqtrade.
    ``learning_section``: the strategy parses ``advanced_learning`` (checked before the run).
    """

    name: str
    strategy: str
    config_overlay: dict[str, Any] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    freqaimodel: str | None = None
    kind: Kind = "ablation"
    description: str = ""
    freqai_config: str | None = None
    freqai_required: bool = True
    freqai_replace: dict[str, Any] = field(default_factory=dict)
    freqai_merge: dict[str, Any] = field(default_factory=dict)
    allocator_training: dict[str, Any] = field(default_factory=dict)
    quick_freqai: dict[str, Any] = field(default_factory=dict)
    strategy_files: tuple[str, ...] = ()
    builtin: str | None = None
    learning_section: bool = False
    default: bool = True  # False: run only when named with --only (long comparisons)


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(
            out.get(k), Mapping) else v
    return out


def _al(name: str, overlay: dict[str, Any], description: str, kind: Kind = "ablation",
        **kw: Any) -> Variant:
    base = dict(strategy="AdvancedLearning", freqaimodel="TSAMAERegressor",
                freqai_config=TSAMAE_CONFIG, freqai_required=False, learning_section=True,
                quick_freqai={"train_period_days": 7, "backtest_period_days": 7,
                              "model_training_parameters": {"train": {"epochs": 1}}})
    base.update(kw)
    # Every tier on in the full configuration; an ablation switches exactly one off.
    section = deep_merge(FULL_LEARNING, overlay)
    return Variant(name=name, config_overlay={"advanced_learning": section},
                   kind=kind, description=description, **base)


#: "full" is the shipped configuration (config.json's defaults, no FreqAI model): every
#: learning tier that stays on by default. Ablations switch one off; "with_*" variants switch on
#: what is off by default (to show why it is).
FULL_LEARNING: dict[str, Any] = {}
#: Days of candles before the evaluated range the Tier 3 agents are trained on.
AGENT_TRAIN_DAYS = 60
#: The allocator variants' walk-forward: each window trained on ALLOC_TRAIN before it, a new
#: allocator every ALLOC_RETRAIN, ALLOC_STEPS PPO steps each.
ALLOC_TRAIN, ALLOC_RETRAIN, ALLOC_STEPS = "90d", "30d", 10_000
#: "frozen": learning off, every tier on its priors (uniform weights, the rule profile).
FROZEN = {"meta": {"learn": False}, "bandit": {"params": {"learn": False}},
          "profiles": {"learn": False}, "shadow": {"enabled": False},
          "router": {"enabled": False}}  # a router on its priors is a fixed 90/10 split


#: LightGBMConformal (freqai_models/) on the strategy's features, as the ai component.
LGBM_CONFORMAL: dict[str, Any] = dict(
    freqaimodel="LightGBMConformal", freqai_required=True,
    freqai_replace={"model_training_parameters": LGBM_PARAMS},
    quick_freqai={"train_period_days": 7, "backtest_period_days": 7,
                  "model_training_parameters": {"n_estimators": 50}})

#: The PPOPyramiding variants: the shipped config retrained every 30 days instead of 7 (a
#: two-year 1h bench would train 105 windows per pair on this 2-core machine otherwise).
PYRAMID_PPO: dict[str, Any] = dict(
    freqaimodel="PPOPyramiding", freqai_config="configs/freqai-ppo.json", freqai_required=True,
    default=False, freqai_merge={"backtest_period_days": 30},
    quick_freqai={"train_period_days": 7, "backtest_period_days": 7,
                  "rl_config": {"train_cycles": 1}})
QUICK_LGBM = {"train_period_days": 7, "backtest_period_days": 7,
              "model_training_parameters": {"n_estimators": 50}}
NO_FREQAI = {"freqaimodel": None, "freqai_config": None}
VARIANTS: tuple[Variant, ...] = (
    _al("full", {}, "AdvancedLearning as shipped: every tier on by default", "full",
        **NO_FREQAI),
    _al("frozen", FROZEN, "learning off: every tier on its priors", **NO_FREQAI),
    _al("no_shadow", {"shadow": {"enabled": False}},
        "shadow feedback off: the tiers learn from real trades only", **NO_FREQAI),
    _al("no_regime", {"regime": {"enabled": False}}, "regime detector off (every candle UNKNOWN)",
        **NO_FREQAI),
    _al("per_regime", {"regime": {"per_regime_learning": True}},
        "every tier keeps separate posteriors per regime (pooled by default)", **NO_FREQAI),
    _al("slow_meta", {"meta": {"discount": 0.995}},
        "the meta-learner forgets 30x slower (memory of ~200 trades' worth of evidence)",
        default=False, **NO_FREQAI),
    _al("with_bandit", {"bandit": {"enabled": True}},
        "the component-weight bandit on (off by default: equal weights)", **NO_FREQAI),
    _al("no_meta", {"meta": {"force_learner": "Balanced"}}, "meta-learner off: Balanced only",
        **NO_FREQAI),
    _al("no_profiles", {"profiles": {"enabled": False}},
        "exit profiles off: ATR trailing stop and the score's exit signal", **NO_FREQAI),
    _al("no_voltarget", {"sizing": {"vol_target": 0.0}},
        "volatility targeting off: the learner's share of the cap", **NO_FREQAI),
    _al("no_trend", {"bandit": {"params": {"components":
                                           ["technical", "ai", "theme", "sentiment"]}}},
        "trend component left out of the weighted score", **NO_FREQAI),
    _al("with_ppo", {"sizing": {"agent": "ppo"}},
        "the Tier 3 PPO trade-parameter agents size and exit (off by default)", **NO_FREQAI),
    _al("with_ppo_moe", {"sizing": {"agent": "ppo", "ppo_policy": "moe"}},
        "with_ppo, the agents' network a mixture of TREND / RANGE / PANIC experts gated by the "
        "regime probabilities (issue 16)", default=False, **NO_FREQAI),
    _al("with_ppo_nochurn", {"sizing": {"agent": "ppo", "ppo_short_hold_penalty": 0.0}},
        "with_ppo without the churn (short-hold) penalty in the agents' reward (issue 16)",
        default=False, **NO_FREQAI),
    _al("no_router", {"router": {"enabled": False}},
        "policy router off: the learned brain decides every entry", **NO_FREQAI),
    # Issue 14: each switched on alone (all off by default), measured against "full".
    _al("with_bocd", {"changepoint": {"enabled": True}},
        "BOCD changepoint alarms on the market proxy block entries, trim and exit (off by "
        "default)", **NO_FREQAI),
    _al("with_budget", {"budget": {"enabled": True}},
        "portfolio risk budget: stakes cut above a 0.6 correlation with the open book (off by "
        "default)", **NO_FREQAI),
    _al("lgbm_conformal", {}, "LightGBMConformal as the ai component, no abstention (the "
        "baseline of the two below)", default=False, **LGBM_CONFORMAL),
    _al("lgbm_conformal_abstain", {"conformal": {"abstain": True}},
        "LightGBMConformal; the ai component abstains where its 90% interval contains zero",
        default=False, **LGBM_CONFORMAL),
    _al("lgbm_shap_prune", {}, "LightGBMConformal refitted without features whose SHAP share "
        "is below 0.01 in the window", default=False,
        **{**LGBM_CONFORMAL, "freqai_replace": {"model_training_parameters": {
            **LGBM_PARAMS, "shap_prune": 0.01}}}),
    _al("with_tsamae", {}, "the TSA-MAE FreqAI model as the ai component (slow: it trains in "
        "every walk-forward window)", default=False),
    _al("with_lightgbm", {}, "LightGBMRegressor on the strategy's features as the ai component",
        freqaimodel="LightGBMRegressor", freqai_required=True, default=False,
        freqai_replace={"model_training_parameters": LGBM_PARAMS},
        quick_freqai={"train_period_days": 7, "backtest_period_days": 7,
                      "model_training_parameters": {"n_estimators": 50}}),
    # Issue 4's comparison (opt-in, --only pyramid_ppo,pyramid_rule): the PPOPyramiding agent
    # against the rule-based scale-in/trim, everything else equal.
    _al("pyramid_ppo", {}, "PPOPyramiding FreqAI agent drives scale-ins, trims and closes",
        **PYRAMID_PPO),
    # Issue 16: the same agent before the churn fix (no short-hold penalty in its reward, the
    # grid queried at one time in trade only), to measure what the fix changed.
    _al("pyramid_ppo_nochurn", {}, "PPOPyramiding without the short-hold (churn) penalty and "
        "without the young time-in-trade grid (the agent as measured in January 2026)",
        **{**PYRAMID_PPO, "freqai_merge": deep_merge(PYRAMID_PPO["freqai_merge"], {
            "rl_config": {"model_reward_parameters": {"short_hold_penalty": 0.0},
                          "pyramid": {"grid": {"young_time_in_trade": ""}}}})}),
    _al("pyramid_ppo_hold", {}, "PPOPyramiding with a strong short-hold penalty (5 round "
        "trips of fees for a sale at the entry, falling to 0 at 1 day)",
        **{**PYRAMID_PPO, "freqai_merge": deep_merge(PYRAMID_PPO["freqai_merge"], {
            "rl_config": {"model_reward_parameters": {"short_hold_penalty": 5.0,
                                                      "min_hold": "1d"}}})}),
    _al("pyramid_rule", {}, "rule-based scale-in and trim (no FreqAI model)",
        default=False, **NO_FREQAI),
    # Issue 16: sizing mode allocator, the agent against the two textbook allocations run
    # through the same execution (rebalance band, the guard), and the per-pair sizing (full).
    _al("alloc_ppo", {"sizing": {"agent": "allocator"}, "allocator": {"policy": "ppo"}},
        "the portfolio allocation agent sets every pair's target weight (walk-forward "
        "ftlearn train-allocator)", default=False, **NO_FREQAI),
    _al("alloc_ppo_moe", {"sizing": {"agent": "allocator"},
                          "allocator": {"policy": "ppo", "network": "moe"}},
        "alloc_ppo with the mixture-of-experts head gated by the regime", default=False,
        **NO_FREQAI),
    _al("alloc_ppo_qol", {"sizing": {"agent": "allocator"}, "allocator": {"policy": "ppo"}},
        "alloc_ppo trained with the quality-of-life settings: 3 seeds acting on their mean "
        "action, cosine learning rate with warm restarts, the last 20 % of each training range "
        "held out to keep the best evaluation, halve the rate on a plateau and stop seeds "
        "unlikely to beat the best", default=False,
        allocator_training={"ensemble": 3, "lr_schedule": "cosine", "eval_share": 0.2,
                            "plateau_patience": 3, "early_stop": True}, **NO_FREQAI),
    _al("alloc_ppo_curriculum", {"sizing": {"agent": "allocator"},
                                 "allocator": {"policy": "ppo"}},
        "alloc_ppo trained through the curriculum (trending, + ranging, + panic episodes, "
        "then all) with 20 % augmented crash windows (learning.agents.curriculum)",
        default=False, allocator_training={"curriculum": True, "crash_share": 0.2},
        **NO_FREQAI),
    _al("alloc_equal", {"sizing": {"agent": "allocator"}, "allocator": {"policy": "equal"}},
        "allocator execution with equal weights (all of equity over the pairs, capped)",
        default=False, **NO_FREQAI),
    _al("alloc_invvol", {"sizing": {"agent": "allocator"},
                         "allocator": {"policy": "inverse_vol"}},
        "allocator execution with inverse-volatility weights (capped)", default=False,
        **NO_FREQAI),
    Variant("buy_and_hold", "-", kind="baseline", builtin="buy_and_hold",
            description="equal-weight buy-and-hold of the same pairs, computed from the candles "
            "(entry at the first open, exit at the last close, same fee both ways)"),
    Variant("trend_rule", "TrendRule", kind="baseline", strategy_files=("asset:TrendRule.py",),
            description="the textbook trend rule: long while the daily close is above its "
            "50-day mean, equal weight, volatility-targeted, no risk limits"),
    Variant("sample_strategy", "SampleStrategy", kind="baseline",
            strategy_files=("template:sample_strategy.py",),
            description="freqtrade's SampleStrategy template (RSI/TEMA/Bollinger)"),
    Variant("freqai_lightgbm", "FreqaiExampleSpot", kind="baseline",
            freqaimodel="LightGBMRegressor", freqai_config="asset:freqai_lightgbm.json",
            strategy_files=("asset:FreqaiExampleSpot.py",), quick_freqai=QUICK_LGBM,
            description="freqtrade's FreqaiExampleStrategy (long-only) with LightGBMRegressor"),
    Variant("freqai_rl", "RLExampleStrategy", kind="baseline",
            freqaimodel="ReinforcementLearner", freqai_config="asset:freqai_rl.json",
            strategy_files=("asset:RLExampleStrategy.py",), default=False,
            quick_freqai={"train_period_days": 7, "backtest_period_days": 7,
                          "model_training_parameters": {"n_steps": 256, "n_epochs": 2},
                          "rl_config": {"train_cycles": 1, "net_arch": [32, 32]}},
            description="FreqAI ReinforcementLearner (PPO, 5-action env) with the docs' RL "
            "example strategy, long-only (slow over years: opt-in)"),
)


def variant_names(variants: Iterable[Variant] = VARIANTS) -> list[str]:
    return [v.name for v in variants]


def select_variants(only: Sequence[str] | None, variants: Sequence[Variant] = VARIANTS
                    ) -> list[Variant]:
    if not only:
        return [v for v in variants if v.default]
    known = {v.name: v for v in variants}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; known: "
                          f"{', '.join(known)}")
    return [known[n] for n in only]
