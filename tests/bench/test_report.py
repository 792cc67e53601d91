"""The bench report keeps periods apart: validation and test figures are never averaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from learning.bench import metrics as M
from learning.bench import report as R
from learning.bench import runner as B
from learning.bench.variants import Variant


def _run(variant: str, cell: str, total_return: float, rng: np.random.Generator) -> B.VariantResult:
    days = pd.date_range("2024-01-01", periods=41, freq="D", tz="UTC")
    log_r = rng.normal(0.0, 0.01, len(days) - 1)
    log_r += (np.log1p(total_return) - log_r.sum()) / len(log_r)  # compounds to the return
    equity = pd.Series(10_000 * np.exp(np.concatenate([[0.0], np.cumsum(log_r)])), index=days)
    book = M.Book(equity=equity, in_market=pd.Series(True, index=days), fees=0.0)
    return B.VariantResult(variant=Variant(name=variant, strategy="X"), cell=cell, book=book,
                           metrics={"total_return": total_return, "sharpe": 1.0,
                                    "max_drawdown": 0.1, "trades": 10, "cagr": 0.0})


def _bench(tmp_path: Path) -> B.BenchResult:
    rng = np.random.default_rng(0)
    cells = ["validation.u.s0", "validation.u.s1", "test.u.s0", "test.u.s1"]
    figures = {"validation": {"full": 0.30, "other": 0.10}, "test": {"full": -0.20, "other": 0.05}}
    results = [_run(v, c, figures[c.split(".")[0]][v], rng) for c in cells for v in ("full", "other")]
    spec = B.BenchSpec(datadir=tmp_path, pairs=("BTC/USDT",), timeframe="1h",
                       timerange="20240101-20240210", fee=0.001, wallet=10_000, out=tmp_path)
    now = pd.Timestamp("2026-01-01", tz="UTC")
    info = B.DataInfo(first=now, last_close=now, synthetic=False)
    return B.BenchResult(spec=spec, info=info, regime_source="-", results=results, started=now,
                         finished=now, cells=cells,
                         argv=["bench", "--period", "validation=20240101-20240210",
                               "--period", "test=20240101-20240210"])


def test_summary_of_a_two_period_bench_gives_each_period_its_own_means(tmp_path):
    text = R.summary_text(_bench(tmp_path))
    assert "periods validation=20240101-20240210, test=20240101-20240210" in text
    validation, test = text.split("Period `validation`")[1].split("Period `test`")
    assert "| full | 2/2 | +30.00%" in validation and "| other | 2/2 | +10.00%" in validation
    assert "| full | 2/2 | -20.00%" in test and "| other | 2/2 | +5.00%" in test
    # the paired differences are per period too: -20 points on validation, +25 on test
    assert "| other | 2 |" in validation and "-20.00%" in validation.split("variant - full")[1]
    assert "+25.00%" in test.split("variant - full")[1]
    assert "+5.00% [" not in text.split("Period `validation`")[0]  # no mixed-period table


def test_by_period_of_a_one_cell_bench_is_the_bench_itself(tmp_path):
    bench = _bench(tmp_path)
    one = B.BenchResult(spec=bench.spec, info=bench.info, regime_source="-",
                        results=[r for r in bench.results if r.cell == "test.u.s0"],
                        started=bench.started, finished=bench.finished, cells=["test.u.s0"])
    assert list(R.by_period(one)) == ["test"]
    assert "Period `" not in "\n".join(R.period_tables(one))
