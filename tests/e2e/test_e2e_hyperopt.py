"""End to end: ``freqtrade hyperopt --strategy AdvancedLearning`` as users run it, in parallel
joblib workers, against the local exchange. Every epoch starts from the same learning state: an
epoch's result depends on its parameters only, not on which worker ran it or after what."""

from __future__ import annotations

import json
import subprocess

import pytest

from learning.exchange.localrun import freqtrade_command, local_exchange
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

TIMERANGE = "20251101-20251108"
EPOCHS = 4


def run_hyperopt(exchange, datadir, tmp_path, jobs: int) -> dict[float, dict]:
    user_dir = tmp_path / f"user_data_j{jobs}"
    user_dir.mkdir()
    overlay = tmp_path / f"overlay_j{jobs}.json"
    overlay.write_text(json.dumps({"timeframe": "5m", "user_data_dir": str(user_dir)}))
    cmd = [*freqtrade_command(), "hyperopt", "--config", str(ROOT / "config.json"),
           "--config", str(exchange.overlay), "--config", str(overlay), "--strategy",
           "AdvancedLearning", "--datadir", str(datadir), "--timerange", TIMERANGE,
           "--epochs", str(EPOCHS), "-j", str(jobs), "--spaces", "buy", "--random-state", "7",
           "--hyperopt-loss", "SharpeHyperOptLoss", "--disable-param-export",
           "--print-json", "--no-color"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    results = list((user_dir / "hyperopt_results").glob("*.fthypt"))
    assert len(results) == 1, output[-2000:]
    epochs = [json.loads(line) for line in results[0].read_text().splitlines() if line.strip()]
    assert len(epochs) == EPOCHS
    return {e["params_dict"]["entry_threshold"]: e["results_metrics"] for e in epochs}


def test_parallel_hyperopt_epochs_depend_only_on_their_parameters(market_data_dir, tmp_path):
    with local_exchange(market_data_dir, tmp_path / "exchange") as exchange:
        parallel = run_hyperopt(exchange, market_data_dir, tmp_path, jobs=2)
        serial = run_hyperopt(exchange, market_data_dir, tmp_path, jobs=1)  # one instance reused
    assert any(m["total_trades"] > 0 for m in parallel.values()), "the epochs trade"
    shared = set(parallel) & set(serial)
    assert len(shared) >= EPOCHS - 1, (sorted(parallel), sorted(serial))
    for threshold in shared:
        a, b = parallel[threshold], serial[threshold]
        assert (a["total_trades"], a["profit_total_abs"]) == (b["total_trades"],
                                                              b["profit_total_abs"]), threshold
