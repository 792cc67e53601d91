"""End to end: the Tier 3 trade-parameter agents, trained offline with ``ftlearn train-agents``
on an earlier range, size a later backtest through the real freqtrade CLI; an agent trained on
data after the backtest's start is refused (lookahead) and the strategy falls back to rules."""

from __future__ import annotations

import json

import pytest

from learning.cli import main as ftlearn
from learning.exchange.localrun import freqtrade_backtest, local_exchange
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_agents_trained_before_the_backtest_size_its_trades_within_the_cap(market_data_dir,
                                                                          tmp_path):
    user_dir = tmp_path / "user_data"
    user_dir.mkdir()
    overlay = tmp_path / "ppo.json"
    overlay.write_text(json.dumps({"timeframe": "5m", "user_data_dir": str(user_dir),
                                   "advanced_learning": {"sizing": {"agent": "ppo"}}}))
    cfg = ["-c", str(ROOT / "config.json"), "-c", str(overlay)]
    assert ftlearn(["train-agents", *cfg, "--runmode", "backtest", "--datadir",
                    str(market_data_dir), "--timerange", "20250601-20250801", "--steps", "1024",
                    "--no-regimes"]) == 0
    state = user_dir / "learning/default/backtest"
    assert {p.name for p in state.glob("agent_*_offline.pt")} == {
        "agent_Conservative_offline.pt", "agent_Aggressive_offline.pt",
        "agent_Balanced_offline.pt"}
    with local_exchange(market_data_dir, tmp_path / "ex") as ex:
        run = freqtrade_backtest(configs=[ROOT / "config.json", overlay], overlay=ex.overlay,
                                 datadir=market_data_dir, timerange="20250901-20251001",
                                 result_dir=tmp_path / "res", timeout=900)
        assert run.returncode == 0, run.output[-3000:]
        trades = run.trades("AdvancedLearning")
        assert len(trades) > 5
        assert "no trained trade-parameter agent" not in run.output
        # Agent-sized stakes vary and stay under 20% of the 10k wallet's equity (+ the profit).
        assert trades["stake_amount"].nunique() > 3
        assert (trades["max_stake_amount"] <= 0.2 * (10_000 + trades["profit_abs"].clip(
            lower=0).sum()) * 1.001).all()
        assert (state / "agent_Balanced.pt").exists(), "online state saved beside the offline"

        # Agents trained on data reaching into the backtest are refused.
        assert ftlearn(["train-agents", *cfg, "--runmode", "backtest", "--datadir",
                        str(market_data_dir), "--timerange", "20250801-20250915", "--steps",
                        "256", "--no-regimes"]) == 0
        run = freqtrade_backtest(configs=[ROOT / "config.json", overlay], overlay=ex.overlay,
                                 datadir=market_data_dir, timerange="20250901-20250915",
                                 result_dir=tmp_path / "res2", timeout=900)
    assert run.returncode == 0, run.output[-3000:]
    assert "refused (lookahead)" in run.output


    # A second agent version registered as a ppo policy beside the brain: the router sends it
    # a share of the entries and sizes them with its own agents.
    v2 = tmp_path / "agents-v2"
    assert ftlearn(["train-agents", *cfg, "--datadir", str(market_data_dir), "--timerange",
                    "20250601-20250801", "--steps", "256", "--no-regimes", "--out",
                    str(v2)]) == 0
    assert len(list(v2.glob("agent_*_offline.pt"))) == 3
    for name, kind, path in (("brain", "meta", ["--path", state]),
                             ("agents-v2", "ppo", ["--path", v2])):
        assert ftlearn(["policy", "register", name, "--type", kind, *map(str, path),
                        "--userdir", str(user_dir)]) == 0
    routed = tmp_path / "router.json"
    routed.write_text(json.dumps({"advanced_learning": {"router": {"enabled": True}}}))
    with local_exchange(market_data_dir, tmp_path / "ex3") as ex:
        run = freqtrade_backtest(configs=[ROOT / "config.json", overlay, routed],
                                 overlay=ex.overlay, datadir=market_data_dir,
                                 timerange="20251001-20251101", result_dir=tmp_path / "res3",
                                 timeout=900)
    assert run.returncode == 0, run.output[-3000:]
    assert f"policy agents-v2 sizes with the agents in {v2}" in run.output
    assert "refused (lookahead)" not in run.output
