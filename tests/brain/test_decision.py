"""The decision flow: thresholds per learner, ablations, circuit breakers, state round trip."""

from datetime import UTC, datetime, timedelta

import numpy as np

from learning.brain.decision import Brain
from learning.strategy.config import load_learning_config

T0 = datetime(2025, 5, 1, tzinfo=UTC)
STRONG = {"technical": 0.9, "ai": None, "theme": 0.8, "sentiment": 0.7}


def brain(**section) -> Brain:
    return Brain(load_learning_config({"advanced_learning": section}))


def test_decide_takes_a_strong_signal_and_records_everything():
    b = brain()
    d = b.decide(T0, "ETH/USDT", STRONG, "BULL_MOMENTUM", 0.8, 0.0, 0.3)
    assert d.take and d.mode == "learned" and d.learner in b.meta.learner_names
    assert set(d.weights) == {"technical", "theme", "sentiment"}, "ai is absent: not weighted"
    assert abs(sum(d.weights.values()) - 1) < 1e-3
    assert b.recent_decisions()[-1]["pair"] == "ETH/USDT"


def test_learner_threshold_scales_with_risk_tolerance():
    for learner, factor in (("Aggressive", 1.0), ("Balanced", 1.25), ("Conservative", 1.5)):
        b = brain(meta={"force_learner": learner})
        d = b.decide(T0, "BTC/USDT", STRONG, "CHOPPY", 0.5, 0.0, 0.3)
        assert np.isclose(d.threshold, 0.3 * factor), learner
        assert d.stake_share == b.meta.profile(learner).risk_tolerance


def test_bandit_disabled_gives_equal_weights():
    d = brain(bandit={"enabled": False}).decide(T0, "BTC/USDT", STRONG, "CHOPPY", 0.5, 0, 0.3)
    assert set(d.weights.values()) == {round(1 / 3, 4)}


def test_a_component_left_out_of_the_list_counts_neither_with_nor_without_the_bandit():
    scores = {**STRONG, "trend": -0.9}
    for enabled in (False, True):
        without = brain(bandit={"enabled": enabled, "params": {
            "components": ["technical", "ai", "theme", "sentiment"]}})
        d = without.decide(T0, "BTC/USDT", scores, "CHOPPY", 0.5, 0, 0.3)
        assert set(d.weights) == {"technical", "theme", "sentiment"}, enabled
        assert d.overall > 0.7, "the strongly negative trend score does not pull it down"
        d = brain(bandit={"enabled": enabled}).decide(T0, "BTC/USDT", scores, "CHOPPY", 0.5, 0,
                                                      0.3)
        assert "trend" in d.weights and d.overall < 0.6, enabled
        take, overall, _ = without.shadow_decision("Balanced", scores, "CHOPPY", 0.3,
                                                   np.random.default_rng(0))
        assert overall > 0.7, enabled


def test_regime_disabled_decides_as_unknown():
    d = brain(regime={"enabled": False}).decide(T0, "BTC/USDT", STRONG, "CRISIS", 0.9, 0, 0.3)
    assert d.regime == "UNKNOWN"


def test_unknown_regime_from_too_little_history_is_decided_by_the_most_cautious_learner():
    b = brain()
    selections_before = b.meta.report()
    for i in range(20):  # Thompson sampling would pick other learners some of the time
        d = b.decide(T0 + timedelta(minutes=5 * i), "BTC/USDT", STRONG, "UNKNOWN", 0.0, 0.0, 0.3)
        assert d.mode == "cautious" and d.learner == "Conservative"
        assert np.isclose(d.threshold, 0.3 * 1.5) and d.stake_share == 0.5
    assert b.meta.report() == selections_before, "the meta-policy made no selection"
    # Its outcome teaches the bandits but not the meta-policy (it was not the meta's choice).
    out = b.record_close(T0 + timedelta(hours=3), "BTC/USDT", b.recent_decisions()[-1], 0.02)
    assert out["recorded"]
    # Switched off or forced, UNKNOWN is not "too little history": the learners decide as usual.
    assert brain(regime={"enabled": False}).decide(
        T0, "BTC/USDT", STRONG, "UNKNOWN", 0.0, 0.0, 0.3).mode == "learned"
    forced = brain(meta={"force_learner": "Aggressive"}).decide(
        T0, "BTC/USDT", STRONG, "UNKNOWN", 0.0, 0.0, 0.3)
    assert forced.mode == "learned" and forced.learner == "Aggressive"


def test_drawdown_above_fallback_uses_rules_without_sampling():
    b = brain()

    def no_sampling(*args, **kwargs):
        raise AssertionError("the fallback sampled a learner")

    b.meta.select = no_sampling
    d = b.decide(T0, "BTC/USDT", STRONG, "CHOPPY", 0.5, 0.11, 0.3)
    assert d.mode == "fallback" and d.learner == "Balanced" and d.weights == {"technical": 1.0}
    assert d.threshold == 0.3


def test_decision_with_other_pairs_deciding_first_draws_the_same():
    alone, crowded = brain(), brain()
    for i in range(7):  # other pairs' decisions at the same and earlier candles
        crowded.decide(T0 - timedelta(minutes=5 * i), "BTC/USDT", STRONG, "CHOPPY", 0.5, 0.0, 0.3)
        crowded.decide(T0, f"P{i}/USDT", STRONG, "CHOPPY", 0.5, 0.0, 0.3)
    a = alone.decide(T0, "ETH/USDT", STRONG, "CHOPPY", 0.5, 0.0, 0.3)
    b = crowded.decide(T0, "ETH/USDT", STRONG, "CHOPPY", 0.5, 0.0, 0.3)
    assert (a.learner, a.weights) == (b.learner, b.weights)
    # ... and is keyed by pair and candle: another candle or pair draws differently.
    draws = {tuple(alone.rng_for(p, T0 + timedelta(minutes=m)).random(4))
             for p in ("ETH/USDT", "SOL/USDT") for m in (0, 5)}
    assert len(draws) == 4


def test_non_finite_scores_are_left_out_and_none_left_means_skip():
    b = brain()
    d = b.decide(T0, "BTC/USDT", {"technical": float("nan"), "theme": float("inf")}, "CHOPPY",
                 float("nan"), None, 0.3)
    assert not d.take and d.weights == {}


def test_negative_rolling_sharpe_cuts_risk_and_learning_goes_on():
    b = brain(brain={"breaker_trades": 5}, meta={"force_learner": "Balanced"})
    calm = b.decide(T0, "BTC/USDT", STRONG, "CHOPPY", 0.5, 0.0, 0.3)
    d = calm.to_dict()
    for i in range(5):
        b.record_close(T0 + timedelta(hours=i), "BTC/USDT", d, -0.01 - 0.001 * i)
    assert b.risk_cut()
    before = b.meta.to_state()
    result = b.record_close(T0 + timedelta(hours=9), "BTC/USDT", d, 0.02)
    assert result["risk_cut"] and b.meta.to_state() != before, "the posteriors still learn"
    cut = b.decide(T0 + timedelta(hours=10), "BTC/USDT", STRONG, "CHOPPY", 0.5, 0.0, 0.3)
    assert cut.risk_cut and not calm.risk_cut
    assert np.isclose(cut.threshold, calm.threshold * 1.25, atol=1e-3)
    assert np.isclose(cut.stake_share, calm.stake_share * 0.5)
    assert b.report()["circuit_breakers"]["risk_cut"]
    assert b.report()["learning_events"]["meta"]["real"] == 6


def test_trade_the_brain_never_saw_open_is_recorded_without_crashing():
    b = brain()
    result = b.record_close(T0, "XRP/USDT", None, 0.03, "CHOPPY")
    assert result["recorded"] and b.state.unattributed_trades == 1
    assert b.regime_perf.to_state()["regimes"]["CHOPPY"]["trades"] == 1


def test_state_round_trip_reproduces_the_next_decisions():
    import json

    a = brain()
    for i in range(30):
        d = a.decide(T0 + timedelta(minutes=5 * i), "ETH/USDT", STRONG, "CHOPPY", 0.5, 0.0, 0.3)
        a.record_close(T0 + timedelta(minutes=5 * i + 1), "ETH/USDT", d.to_dict(),
                       0.01 if i % 3 else -0.01)
    b = Brain(a.config, json.loads(json.dumps(a.to_state())))
    later = T0 + timedelta(days=1)
    for _ in range(10):
        da = a.decide(later, "SOL/USDT", STRONG, "CHOPPY", 0.5, 0.0, 0.3)
        db = b.decide(later, "SOL/USDT", STRONG, "CHOPPY", 0.5, 0.0, 0.3)
        assert da == db


def test_pooled_learning_shares_one_posterior_across_regimes():
    b = brain(regime={"per_regime_learning": False}, meta={"force_learner": "Balanced"})
    d = b.decide(T0, "BTC/USDT", STRONG, "BULL_MOMENTUM", 0.9, 0.0, 0.3).to_dict()
    assert d["regime"] == "BULL_MOMENTUM", "the decision still names the regime"
    b.record_close(T0 + timedelta(hours=5), "BTC/USDT", d, 0.04)
    assert set(b.meta.state.arms) == {"ALL"}
    expected, evidence = b.meta.expected_return("ALL", "Balanced")
    assert expected > 0 and evidence == 1.0
    later = b.decide(T0 + timedelta(hours=6), "BTC/USDT", STRONG, "CHOPPY", 0.9, 0.0, 0.3)
    assert later.expected == round(expected, 6), "CHOPPY decides on the pooled evidence"


def test_could_take_with_every_taken_decision_is_true():
    """The candidates are a superset of the entries: whatever the posteriors, mode or regime,
    a decision that takes is on a candle could_take marks."""
    r = np.random.default_rng(3)
    for config in ({}, {"bandit": {"params": {"weight_map": "linear"}}},
                   {"bandit": {"enabled": False}}, {"meta": {"force_learner": "Balanced"}}):
        b = brain(**config)
        for i in range(300):
            # learned posteriors: random outcomes in random regimes
            scores = {c: (None if c == "ai" and i % 3 == 0 else float(r.uniform(-1, 1)))
                      for c in ("technical", "ai", "theme", "sentiment")}
            regime = ["CHOPPY", "BULL_MOMENTUM", "UNKNOWN"][i % 3]
            dd = 0.12 if i % 7 == 0 else 0.0
            d = b.decide(T0 + timedelta(minutes=5 * i), "ETH/USDT", scores, regime, 0.5, dd,
                         0.2)
            b.record_close(T0, "ETH/USDT", d.to_dict(), float(r.normal(0, 0.02)))
            could = b.could_take({c: np.array([np.nan if v is None else v])
                                  for c, v in scores.items()},
                                 np.array([regime == "UNKNOWN"]), 0.2, fallback_possible=True)
            if d.take:
                assert could[0], (config, scores, regime, d)


def test_could_take_with_only_sentiment_barely_above_threshold_is_false():
    b = brain()
    scores = {"technical": np.array([-1.0, 0.44]), "ai": np.array([np.nan, np.nan]),
              "theme": np.array([-1.0, 0.0]), "sentiment": np.array([0.32, 0.0])}
    # row 0: best 0.32 > 0.3, but 0.9 * 0.32 + 0.1 * mean = 0.19 can never pass
    could = b.could_take(scores, np.array([False, False]), 0.3, fallback_possible=True)
    assert list(could) == [False, True]
    cautious = b.could_take(scores, np.array([False, True]), 0.3, fallback_possible=False)
    assert list(cautious) == [False, False], "UNKNOWN: Conservative's 0.45 bar"


def test_explanation_contributions_sum_to_the_overall_score():
    import re

    b = brain()
    for i, scores in enumerate(({"technical": 0.9, "ai": -0.2, "theme": 0.8, "sentiment": 0.1,
                                 "trend": 0.4},
                                {"technical": -0.3, "ai": None, "theme": 0.05, "sentiment": 0.7,
                                 "trend": -0.6})):
        d = b.decide(T0 + timedelta(hours=i), "ETH/USDT", scores, "CHOPPY", 0.5, 0.0, 0.3,
                     context={"changepoint": 0.12, "ai_interval": (-0.004, 0.006),
                              "ai_abstained": scores["ai"] is None})
        assert abs(sum(d.contributions.values()) - d.overall) <= 1e-4 + 1e-6 * len(scores)
        assert set(d.contributions) == set(d.weights)
        terms = [float(x) for x in re.findall(r"[a-z]+ ([+-]\d\.\d\d)", d.explanation)]
        total = float(re.search(r"= ([+-]\d\.\d\d)", d.explanation).group(1))
        assert abs(sum(terms) - total) <= 0.005 * len(terms) + 0.005, d.explanation
        assert "BOCD 0.12" in d.explanation
        assert ("ai abstained (interval [-0.40%, +0.60%])" in d.explanation) == (
            scores["ai"] is None)
    assert b.recent_decisions()[-1]["explanation"] == d.explanation
