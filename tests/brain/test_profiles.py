"""Exit profiles: plans from volatility, and the profile learner finding the profile that pays."""

import math

import numpy as np
import pytest

from learning.brain.profiles import (
    DEFAULT_PROFILES,
    ExitPlan,
    ProfileConfig,
    ProfileLearner,
    plan_for,
)
from learning.core.config import parse_section
from learning.core.errors import ConfigError


def test_plan_for_scales_barriers_with_volatility_and_clamps_the_stop():
    cfg = ProfileConfig()
    runner = cfg.profile("RUNNER")
    calm, wild = plan_for(runner, 0.01, cfg), plan_for(runner, 0.2, cfg)
    assert calm.stop == pytest.approx(0.03) and calm.trail == pytest.approx(0.04)
    assert wild.stop == cfg.max_stop and wild.trail == cfg.max_trail
    assert math.isinf(wild.take_profit) and wild.trend_exit
    assert plan_for(cfg.profile("SCALP"), 0.001, cfg).stop == cfg.min_stop
    assert plan_for(runner, float("nan"), cfg) is None
    swing = plan_for(cfg.profile("SWING"), 0.02, cfg)
    assert ExitPlan.from_dict(swing.to_dict()) == swing


def test_profile_learner_prefers_the_profile_that_pays_in_a_regime():
    learner = ProfileLearner(ProfileConfig())
    rng = np.random.default_rng(0)
    for _ in range(300):
        for name, mean in (("SCALP", -0.002), ("SWING", 0.0), ("RUNNER", 0.02)):
            learner.record("BULL_MOMENTUM", name, rng.normal(mean, 0.03), weight=0.2,
                           shadow=True)
    picks = [learner.select("BULL_MOMENTUM", rng) for _ in range(200)]
    assert picks.count("RUNNER") > 150
    again = ProfileLearner.from_state(learner.to_state(), ProfileConfig())
    assert again.report() == learner.report()


def test_profile_learner_frozen_or_off_uses_the_rule_profile():
    off = ProfileLearner(ProfileConfig(enabled=False))
    frozen = ProfileLearner(ProfileConfig(learn=False))
    rng = np.random.default_rng(1)
    assert {off.select("CHOPPY", rng), frozen.select("CHOPPY", rng)} == {"SWING"}
    assert not frozen.record("CHOPPY", "RUNNER", 0.1)


def test_profiles_config_rejects_an_unknown_rule_profile_and_bad_durations():
    with pytest.raises(ConfigError, match="rule_profile"):
        parse_section(ProfileConfig, {"rule_profile": "HODL"})
    with pytest.raises(ConfigError, match="max_hold"):
        parse_section(ProfileConfig, {"profiles": [{"name": "X", "max_hold": "forever"}],
                                      "rule_profile": "X"})
    assert [p.name for p in DEFAULT_PROFILES] == ["SCALP", "SWING", "RUNNER"]
