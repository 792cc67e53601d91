"""freqtrade's own bias checks, as users run them first, on a small range: lookahead-analysis
flags no indicator (an entry or exit may differ only because learning is stateful: with
learning frozen nothing is flagged), and recursive-analysis finds no variance at the strategy's
own startup_candle_count nor any indicator-only lookahead."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess

import pytest

from learning.bench import variants as BV
from learning.exchange.localrun import freqtrade_command, local_exchange
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

TIMERANGE = "20250901-20251201"  # frozen priors trade rarely: three months give 6 signals
FROZEN = {"advanced_learning": BV.FROZEN}  # every tier on its priors, no shadow learning


@pytest.fixture(scope="module")
def run(market_data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bias")
    user_dir = tmp / "user_data"
    user_dir.mkdir()
    overlay = tmp / "overlay.json"
    overlay.write_text(json.dumps({"timeframe": "5m", "user_data_dir": str(user_dir)}))
    with local_exchange(market_data_dir, tmp / "exchange") as exchange:
        def freqtrade(command: str, *extra: str, configs=()) -> str:
            cmd = [*freqtrade_command(), command, "--strategy", "AdvancedLearning",
                   "--datadir", str(market_data_dir), "--timerange", TIMERANGE]
            for c in (ROOT / "config.json", exchange.overlay, overlay, *configs):
                cmd += ["--config", str(c)]
            # Wide enough that rich neither wraps the log lines nor squeezes the tables.
            done = subprocess.run([*cmd, *extra], cwd=ROOT, capture_output=True, text=True,
                                  timeout=900, env={**os.environ, "COLUMNS": "250"})
            output = done.stdout + done.stderr
            assert done.returncode == 0, output[-4000:]
            return output
        yield freqtrade, tmp


def lookahead(run, name: str, configs=()) -> dict:
    freqtrade, tmp = run
    out = tmp / f"{name}.csv"
    freqtrade("lookahead-analysis", "--minimum-trade-amount", "2", "--targeted-trade-amount",
              "6", "--lookahead-analysis-exportfilename", str(out), configs=configs)
    rows = list(csv.DictReader(out.open())) if out.exists() else []
    assert len(rows) == 1, (name, out.exists())
    return rows[0]


def test_lookahead_analysis_with_fixed_peers_flags_no_indicator(run):
    """Learning on: no indicator is biased. An entry or exit may still differ between the
    tool's full and cut runs because the learned state differs (the cut run has learned less,
    and exits follow the learned exit profile); with learning frozen nothing does (below)."""
    row = lookahead(run, "default")
    assert int(row["total_signals"]) >= 2
    assert row["biased_indicators"] == "", row


def test_lookahead_analysis_with_learning_frozen_reports_no_bias(run):
    frozen = run[1] / "frozen.json"
    frozen.write_text(json.dumps(FROZEN))
    row = lookahead(run, "frozen", configs=[frozen])
    assert row["has_bias"] == "False" and int(row["total_signals"]) >= 2, row


def test_recursive_analysis_at_the_strategy_startup_shows_no_variance(run):
    freqtrade, _ = run
    output = freqtrade("recursive-analysis")
    assert "No lookahead bias on indicators found." in " ".join(output.split())
    header = next(line for line in output.splitlines() if "(from strategy)" in line)
    cells = [c.strip() for c in header.strip("┃│ ").split("┃")]
    column = next(i for i, c in enumerate(cells) if "(from strategy)" in c)
    checked = 0
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) > column and re.fullmatch(r"-?[\d.]+%|nan%|-", cells[column] or "x"):
            value = cells[column]
            # "-" is no difference; a printed 0.000% is rounding noise of rolling sums (< 5e-6 %)
            assert value in ("-", "0.000%", "-0.000%"), (cells[0], value)
            checked += 1
    assert checked >= 10, output[-3000:]


def test_bias_tools_write_no_learning_state(run):
    freqtrade, tmp = run
    freqtrade("recursive-analysis", "--startup-candle", "999")
    written = [p for p in (tmp / "user_data").rglob("*") if p.is_file() and "learning" in p.parts]
    assert not written, written
