"""The cross-pair features (theme score, the regime's dispersion) compare against a fixed peer
set: ``brain.peers``, default the whitelist as the strategy starts, declared as informative
pairs. A whitelist that changes later (a dynamic pairlist, or lookahead-analysis loading only
the traded pair) does not change them."""

from __future__ import annotations

import json

import numpy as np
from freqtrade.enums import RunMode

from strategies.AdvancedLearning import AdvancedLearning
from tests.conftest import ROOT
from tests.strategy.test_hooks import PAIRS, FrameProvider, market_frames


def build(tmp_path, peers=None):
    config = json.loads((ROOT / "config.json").read_text())
    config["advanced_learning"].pop("brain", None)
    if peers is not None:
        config["advanced_learning"]["brain"] = {"peers": peers}
    config.update({"user_data_dir": str(tmp_path), "runmode": RunMode.BACKTEST})
    config["exchange"]["pair_whitelist"] = list(PAIRS)
    return AdvancedLearning(config)


def test_peers_with_whitelist_changed_after_start_keep_theme_and_regime(tmp_path):
    frames = market_frames(3000, seed=9)
    s = build(tmp_path)
    s.dp = FrameProvider(frames)
    before = s.populate_indicators(frames[("ETH/USDT", "5m")].copy(), {"pair": "ETH/USDT"})
    assert before["score_theme"].notna().any()

    s.config["exchange"]["pair_whitelist"] = ["ETH/USDT"]  # the pairlist dropped the others
    s._context_key = None  # force the regime to be recomputed
    after = s.populate_indicators(frames[("ETH/USDT", "5m")].copy(), {"pair": "ETH/USDT"})

    for col in ("score_theme", "regime_id", "regime_prob_CHOPPY"):
        np.testing.assert_array_equal(after[col].to_numpy(), before[col].to_numpy(), col)


def test_informative_pairs_with_explicit_peers_declare_them_at_both_timeframes(tmp_path):
    s = build(tmp_path, peers=["ETH/USDT", "XRP/USDT"])
    declared = set(s.informative_pairs())
    assert {("ETH/USDT", "1h"), ("XRP/USDT", "1h"), ("BTC/USDT", "1h"), ("XRP/USDT", "5m"),
            ("BTC/USDT", "5m")} <= declared
    assert ("SOL/USDT", "1h") not in declared, "a whitelisted pair that is no peer"
