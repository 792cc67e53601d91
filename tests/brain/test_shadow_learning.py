"""Dense counterfactual feedback finds an informative component within days of candles; the
same brain learning from real trades alone does not (side by side, same market)."""

from datetime import UTC, datetime, timedelta

import numpy as np

from learning.brain.decision import Brain
from learning.brain.profiles import ExitPlan
from learning.brain.shadow import PricePath, ShadowBook, ShadowTrade
from learning.strategy.config import load_learning_config

STEP = 3_600 * 1_000_000_000
T0 = datetime(2025, 1, 1, tzinfo=UTC)
REGIME = "CHOPPY"


def market(hours: int, seed: int) -> tuple[PricePath, np.ndarray]:
    """Hourly prices whose drift follows a persistent latent signal x (AR(1), ~1-day memory):
    the *theme* score is tanh(x), every other component is noise."""
    rng = np.random.default_rng(seed)
    x = np.zeros(hours)
    for t in range(1, hours):
        x[t] = 0.96 * x[t - 1] + rng.normal(0, 0.3)
    r = 0.004 * np.tanh(x) + rng.normal(0, 0.004, hours)
    close = 100 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    high, low = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
    close_ns = int(T0.timestamp() * 1e9) + (np.arange(hours) + 1) * STEP
    return PricePath(close_ns, open_, high, low, close, np.ones(hours)), x


def scores_at(x: np.ndarray, noise: np.random.Generator, t: int) -> dict[str, float]:
    return {"technical": float(np.tanh(noise.normal())), "ai": None,
            "theme": float(np.tanh(x[t])), "sentiment": float(np.tanh(noise.normal())),
            "trend": float(np.tanh(noise.normal()))}


def run(days: int, shadow: bool, seed: int = 5, pairs: int = 4) -> Brain:
    """``pairs`` markets of the same kind; shadow probes on every pair every hour, and one real
    trade a day (a strategy that takes few trades), resolved by the same exit plan."""
    brain = Brain(load_learning_config({"advanced_learning": {"brain": {"seed": 1}}}))
    markets = {f"P{k}": market(days * 24, seed + k) for k in range(pairs)}
    paths = {name: m[0] for name, m in markets.items()}
    noise = np.random.default_rng(seed + 100)
    plan = {"SWING": ExitPlan("SWING", 0.02, 0.02, 0.0, timedelta(hours=24), False)}
    book = ShadowBook(0.001)
    trades = ShadowBook(0.001)
    for t in range(days * 24):
        now_ns = int(paths["P0"].close_ns[t])
        now = T0 + timedelta(hours=t + 1)
        for o in book.release(now_ns, paths, STEP):
            brain.learn_shadow(o)
        for o in trades.release(now_ns, paths, STEP):
            brain.record_close(now, o.trade.pair, {"learner": "Balanced", "mode": "learned",
                                                   "regime": REGIME, "scores": o.trade.scores},
                               o.resolution.ret)
        for k, (name, (path, x)) in enumerate(markets.items()):
            s = scores_at(x, noise, t)
            if shadow:
                book.open(ShadowTrade("probe", name, now_ns, REGIME, s, "SWING", plan), path,
                          STEP)
            if t % 24 == 0 and k == (t // 24) % pairs:
                trades.open(ShadowTrade("real", name, now_ns, REGIME, s, "SWING", plan), path,
                            STEP)
    return brain


def theme_interval(brain: Brain) -> tuple[float, float, float]:
    return brain.meta.bandit("Balanced").intervals(brain.learning_key(REGIME))["theme"]


def theme_weight(brain: Brain) -> float:
    key = brain.learning_key(REGIME)
    return min(brain.meta.bandit(n).mean_weights(key, ["technical", "theme", "sentiment",
                                                       "trend"])["theme"]
               for n in brain.meta.learner_names)


def test_shadow_feedback_finds_the_informative_component_within_days_trades_alone_do_not():
    for seed in (5, 6, 7):
        with_shadow, trades_only = run(days=5, shadow=True, seed=seed), run(5, False, seed)
        events = with_shadow.state.events["bandit"]
        assert events["shadow"] >= 20 * trades_only.state.events["bandit"]["real"]
        # With shadows the 90% interval of theme's hit rate is above a coin flip and theme gets
        # most of the weight (uniform would be 0.25) ...
        assert theme_interval(with_shadow)[0] > 0.5, seed
        assert theme_weight(with_shadow) > 0.5, seed
        # ... five real trades cannot tell it from a coin flip.
        assert theme_interval(trades_only)[0] < 0.5, seed
