"""End to end: FreqUI's backtest view shows a backtest's real decisions. A ``freqtrade
backtesting`` run through the CLI records them; ``freqtrade webserver`` (what FreqUI talks to)
answers ``/pair_history`` for that run with non-empty decision, drawdown and guard columns."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest
import requests

from learning.exchange.localrun import freqtrade_backtest, freqtrade_command, local_exchange
from tests.conftest import ROOT
from tests.e2e.test_e2e_dryrun import AUTH, Bot, free_port

pytestmark = pytest.mark.slow

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
TIMERANGE = "20251101-20251115"


class Webserver(Bot):
    datadir = ""

    def start(self) -> None:
        # freqtrade reads the data folder from --datadir only (the config key is ignored)
        cmd = [*freqtrade_command(), "webserver", "--datadir", str(self.datadir)]
        for c in self.configs:
            cmd += ["--config", str(c)]
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.wait_for(lambda: requests.get(f"{self.url}/ping", timeout=2).json()
                      .get("status") == "pong", 120, "the webserver to answer /ping")


def test_backtest_view_pair_history_carries_the_runs_decisions(market_data_dir, tmp_path):
    user_dir = tmp_path / "user_data"
    user_dir.mkdir()
    port = free_port()
    overlay = tmp_path / "overlay.json"
    overlay.write_text(json.dumps({
        "timeframe": "5m", "user_data_dir": str(user_dir),
        "exchange": {"pair_whitelist": PAIRS},
        "api_server": {"enabled": True, "listen_ip_address": "127.0.0.1", "listen_port": port,
                       "username": AUTH[0], "password": AUTH[1], "jwt_secret_key": "y" * 40}}))
    with local_exchange(market_data_dir, tmp_path / "exchange") as ex:
        run = freqtrade_backtest(configs=[ROOT / "config.json", overlay], overlay=ex.overlay,
                                 datadir=market_data_dir, timerange=TIMERANGE,
                                 result_dir=tmp_path / "results", timeout=900)
        assert run.returncode == 0, run.output[-3000:]
        trades = run.trades("AdvancedLearning")
        assert len(trades) > 0
        server = Webserver([ROOT / "config.json", ex.overlay, overlay], tmp_path / "web.log",
                           port)
        server.datadir = market_data_dir
        server.start()
        try:
            pair = trades["pair"].iloc[0]
            resp = requests.get(f"{server.url}/pair_history", auth=AUTH, timeout=600,
                                params={"pair": pair, "timeframe": "5m",
                                        "timerange": TIMERANGE, "strategy": "AdvancedLearning"})
            assert resp.status_code == 200, resp.text + server.log_tail()
            history = resp.json()
        finally:
            server.stop()
    cols = history["columns"]
    rows = [dict(zip(cols, r)) for r in history["data"]]
    assert rows, history.get("detail")
    decided = [r for r in rows if r["brain_overall"] is not None]
    assert decided, "the run's decisions on this pair"
    assert [r for r in decided if r["decision_taken"] is not None], "a taken one (a trade)"
    assert all(r["w_technical"] is not None and r["brain_learner"] >= 0 for r in decided)
    guarded = [r for r in rows if r["guard_drawdown"] is not None]
    assert len(guarded) > 0.9 * len(rows), "the guard's state on (nearly) every candle"
    assert max(r["guard_drawdown"] for r in guarded) > 0
    assert {r["guard_state"] for r in guarded} <= {0, 1, 2, 3, 4}
    # The trade's entry candle carries a taken decision.
    first = trades[trades["pair"] == pair].iloc[0]
    entry_candle = first["open_date"] - pd.Timedelta(minutes=5)
    at_entry = [r for r in decided if pd.Timestamp(r["date"]) == entry_candle]
    assert at_entry and at_entry[0]["decision_taken"] is not None, (entry_candle, decided[:3])
