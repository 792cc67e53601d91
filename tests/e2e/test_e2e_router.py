"""End to end: two policies registered with the CLI share the entries of a backtest through the
real freqtrade CLI, and each gets its outcomes recorded (in the backtest's own copy of the
registry: the live database is never written by a backtest)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from learning.cli import main as ftlearn
from learning.exchange.localrun import freqtrade_backtest, local_exchange
from learning.router.router import Router
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_backtest_with_two_registered_policies_records_outcomes_for_both(market_data_dir,
                                                                        tmp_path):
    user_dir = tmp_path / "user_data"
    (user_dir / "learning").mkdir(parents=True)
    main_db = user_dir / "learning/policy_bandit.db"
    assert ftlearn(["policy", "register", "rules-v1", "--type", "rule",
                    "--db", str(main_db)]) == 0
    assert ftlearn(["policy", "register", "brain-v1", "--type", "meta",
                    "--path", str(ROOT / "config.json"), "--db", str(main_db)]) == 0
    overlay = tmp_path / "router.json"
    overlay.write_text(json.dumps({
        "timeframe": "5m", "user_data_dir": str(user_dir),
        "advanced_learning": {"router": {"enabled": True,
                                         "params": {"new_policy_floor": 0.3,
                                                    "floor_trades": 1000}}},
    }))
    with local_exchange(market_data_dir, tmp_path / "ex") as ex:
        run = freqtrade_backtest(configs=[ROOT / "config.json", overlay], overlay=ex.overlay,
                                 datadir=market_data_dir, timerange="20251001-20251101",
                                 result_dir=tmp_path / "results", timeout=900)
    assert run.returncode == 0, run.output[-3000:]
    trades = run.trades("AdvancedLearning")
    bt_db = user_dir / "learning/default/backtest/policy_bandit.db"
    router = Router(bt_db, create=False)
    import numpy as np

    report = {r.name: r for r in router.report(np.random.default_rng(0))}
    assert set(report) == {"rules-v1", "brain-v1"}
    assert report["rules-v1"].trades > 0 and report["brain-v1"].trades > 0
    # Every closed trade is one real outcome (weight 1) of the policy that decided it; the
    # shadow outcomes of both policies count a fraction each on top.
    with sqlite3.connect(bt_db) as conn:
        real = dict(conn.execute(
            "SELECT p.name, COUNT(*) FROM outcomes o JOIN policies p ON p.id = o.policy_id "
            "WHERE o.weight = 1.0 GROUP BY p.name").fetchall())
        shadow = conn.execute("SELECT COUNT(*) FROM outcomes WHERE weight < 1.0").fetchone()[0]
    assert sum(real.values()) == len(trades) and real.get("rules-v1", 0) > 0
    assert shadow > len(trades)
    # The live registry only holds the two registrations, no outcomes.
    live = {r.name: r.trades for r in Router(main_db, create=False).report(
        np.random.default_rng(0))}
    assert live == {"rules-v1": 0, "brain-v1": 0}
