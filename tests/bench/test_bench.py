"""``ftlearn bench``: the variant table, data checks, the causal regime rule, the measured
subprocess, and a CI-sized smoke run of every variant through the real freqtrade CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learning.bench import runner as B
from learning.bench import variants as BV
from learning.bench.pool import run_bench
from learning.bench.report import write_outputs
from learning.cli import main as ftlearn
from learning.core.errors import ConfigError, DataError
from learning.data.synth import SynthConfig, generate_market, write_market
from tests.conftest import make_ohlcv

PAIR = "BTC/USDT"
METRICS = ("total_return", "cagr", "sharpe", "sharpe_ci_low", "sharpe_ci_high", "sortino",
           "calmar", "max_drawdown", "profit_factor", "win_rate", "trades", "exposure", "fees",
           "dsr")


@pytest.fixture(scope="module")
def market_dir(tmp_path_factory) -> Path:
    """48 days of one synthetic pair (5m and 1h): start-up history, 7 training days, 3 weeks."""
    out = tmp_path_factory.mktemp("bench-market")
    write_market(generate_market(SynthConfig(days=48, pairs=(PAIR,), seed=11)), out, ("5m", "1h"))
    return out


# ---------------------------------------------------------------------------------- table, data


def test_variants_table_holds_full_ablations_and_baselines_with_the_agreed_keys():
    by_name = {v.name: v for v in BV.VARIANTS}
    assert [v.name for v in BV.VARIANTS if v.kind == "full"] == ["full"]
    full = by_name["full"].config_overlay["advanced_learning"]
    assert full == {}, "full is the shipped configuration"
    assert by_name["full"].freqaimodel is None
    # Each ablation switches exactly one tier (or feature) off relative to full; with_* turn on
    # what is off by default.
    for name, change in (("no_regime", {"regime": {"enabled": False}}),
                         ("with_bandit", {"bandit": {"enabled": True}}),
                         ("no_meta", {"meta": {"force_learner": "Balanced"}}),
                         ("no_shadow", {"shadow": {"enabled": False}}),
                         ("no_profiles", {"profiles": {"enabled": False}}),
                         ("no_voltarget", {"sizing": {"vol_target": 0.0}}),
                         ("with_ppo", {"sizing": {"agent": "ppo"}}),
                         ("no_router", {"router": {"enabled": False}}),
                         ("per_regime", {"regime": {"per_regime_learning": True}}),
                         ("frozen", BV.FROZEN)):
        assert by_name[name].config_overlay == {"advanced_learning": BV.deep_merge(full, change)}
    assert by_name["with_lightgbm"].freqaimodel == "LightGBMRegressor"
    assert by_name["with_tsamae"].freqaimodel == "TSAMAERegressor"
    assert {"buy_and_hold", "trend_rule", "sample_strategy", "freqai_lightgbm", "freqai_rl"} <= {
        v.name for v in BV.VARIANTS if v.kind == "baseline"}
    for v in BV.VARIANTS:
        for f in v.strategy_files:
            assert B._strategy_source(f).is_file(), f


def test_select_variants_with_unknown_name_raises_naming_the_known_ones():
    with pytest.raises(ConfigError, match="nope.*known: full"):
        BV.select_variants(["full", "nope"])
    assert [v.name for v in BV.select_variants(["freqai_rl", "full"])] == ["freqai_rl", "full"]


def test_check_timerange_outside_data_raises_naming_the_available_range(market_dir):
    info = B.data_info(market_dir, [PAIR], "5m")
    with pytest.raises(DataError, match=r"outside the data.*2025-01-01 00:00 \.\. 2025-02-18"):
        B.check_timerange("20240101-20240201", info, [PAIR], "5m", market_dir)


def test_bench_cli_with_timerange_outside_data_exits_2_naming_the_range(market_dir, capsys,
                                                                     tmp_path):
    code = ftlearn(["bench", "--datadir", str(market_dir), "--pairs", PAIR,
                    "--timerange", "20300101-20300201", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "20300101-20300201 is outside the data" in err and "2025-01-01" in err


def test_bench_cli_without_data_dir_suggests_make_data(monkeypatch, capsys):
    monkeypatch.delenv("ADVL_DATA_DIR", raising=False)
    assert ftlearn(["bench"]) == 2
    assert "ftlearn make-data" in capsys.readouterr().err


def test_a_variant_that_crashes_is_reported_failed_and_the_rest_still_run(market_dir, tmp_path,
                                                                          monkeypatch):
    real = B.run_variant

    def crashing(v, *args, **kwargs):
        if v.name == "crash":
            raise RuntimeError("disk full while copying the models folder")
        return real(v, *args, **kwargs)

    monkeypatch.setattr(B, "run_variant", crashing)
    hold = BV.Variant("buy_and_hold", "-", kind="baseline", builtin="buy_and_hold")
    variants = [dataclasses.replace(hold, name="crash"), hold]
    spec = B.BenchSpec(market_dir, (PAIR,), "5m", "20250125-20250201", 0.001, 1000.0, tmp_path)
    result = run_bench(spec, variants, pd.Timestamp("2026-01-01", tz="UTC"),
                       progress=lambda m: None)
    crashed, held = result.results
    assert crashed.status == "failed" and "RuntimeError: disk full" in crashed.reason
    assert held.status == "ok" and math.isfinite(held.metrics["total_return"])


def test_default_timerange_leaves_startup_and_training_history(market_dir):
    info = B.data_info(market_dir, [PAIR], "5m")
    start, end = B.parse_timerange(B.default_timerange(info, "5m", days=90, train_days=7))
    assert end == pd.Timestamp("2025-02-18", tz="UTC")
    assert start - info.first >= pd.Timedelta(days=B.startup_days("5m") + 7)


def test_train_days_needed_follows_the_selected_freqai_configs():
    lgbm = BV.select_variants(["freqai_lightgbm"])
    assert B.train_days_needed(lgbm, quick=False) == 30
    assert B.train_days_needed(lgbm, quick=True) == 7
    assert B.train_days_needed(BV.select_variants(["buy_and_hold", "sample_strategy"]), False) == 0


def test_causal_regime_labels_with_prefix_are_unchanged():
    candles = make_ohlcv(n=288 * 80, seed=3, vol=0.003)
    full = B.causal_regime_labels(candles)
    assert set(full.unique()) - {"unknown"}, "the rule must label something"
    for cut in (288 * 40 + 17, 288 * 55, 288 * 70 + 200):
        part = B.causal_regime_labels(candles.iloc[:cut])
        pd.testing.assert_series_equal(part, full.iloc[:cut])


def test_prepare_with_missing_freqai_file_skips_or_runs_without_freqai(market_dir, tmp_path):
    spec = B.BenchSpec(market_dir, (PAIR,), "5m", "20250125-20250201", 0.001, 1000.0, tmp_path)
    info = B.data_info(market_dir, [PAIR], "5m")
    start = pd.Timestamp("2025-01-25", tz="UTC")
    required = BV.Variant("x", "AdvancedLearning", freqai_config="configs/missing.json",
                         freqaimodel="LightGBMRegressor", learning_section=True)
    plan = B.prepare(required, spec, tmp_path / "a" / "ud", tmp_path, start, info)
    assert plan.status == "skipped" and "not available" in plan.reason
    optional = dataclasses.replace(required, freqai_required=False)
    plan = B.prepare(optional, spec, tmp_path / "b" / "ud", tmp_path, start, info)
    assert plan.status == "run" and plan.freqaimodel is None and "without FreqAI" in plan.notes[0]


def test_prepare_with_unknown_learning_key_fails_before_freqtrade(market_dir, tmp_path):
    spec = B.BenchSpec(market_dir, (PAIR,), "5m", "20250125-20250201", 0.001, 1000.0, tmp_path)
    bad = BV.Variant("bad", "AdvancedLearning", {"advanced_learning": {"no_such_tier": {}}},
                    learning_section=True)
    plan = B.prepare(bad, spec, tmp_path / "ud", tmp_path, pd.Timestamp("2025-01-25", tz="UTC"),
                     B.data_info(market_dir, [PAIR], "5m"))
    assert plan.status == "failed" and "no_such_tier" in plan.reason


def test_run_measured_reports_the_child_s_own_peak_memory(tmp_path):
    code = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    big = B.run_measured([sys.executable, "-c", code], tmp_path / "big.log")
    small = B.run_measured([sys.executable, "-c", "pass"], tmp_path / "small.log")
    assert big.returncode == 0 and big.peak_rss_mb > 300
    assert small.peak_rss_mb < 100, "the earlier, larger child must not leak into this figure"


def test_run_measured_with_timeout_kills_and_says_so(tmp_path):
    out = B.run_measured([sys.executable, "-c", "import time; time.sleep(30)"],
                         tmp_path / "t.log", timeout=1)
    assert out.timed_out and out.returncode != 0 and out.wall_s < 20


# ---------------------------------------------------------------------------------- smoke run


def smoke_variants() -> list[BV.Variant]:
    """The real table, with AdvancedLearning's TSA-MAE training (minutes per window on a CPU)
    left out of the CI run, plus two deliberately broken variants."""
    table = [dataclasses.replace(v, freqai_config=None) if v.freqaimodel == "TSAMAERegressor"
             else v for v in BV.VARIANTS]
    lgbm = next(v for v in table if v.name == "with_lightgbm")
    return table + [
        # Same strategy, model and FreqAI settings as with_lightgbm: reuses its predictions.
        dataclasses.replace(lgbm, name="with_lightgbm_bandit",
                            config_overlay={"advanced_learning": {"bandit": {"enabled": True}}}),
        BV.Variant("broken_config", "AdvancedLearning",
                  {"advanced_learning": {"no_such_tier": {"enabled": False}}},
                  learning_section=True),
        BV.Variant("broken_strategy", "NoSuchStrategy", kind="baseline"),
    ]


@pytest.mark.slow
def test_bench_smoke_runs_every_available_variant_and_reports_broken_ones(market_dir, tmp_path):
    spec = B.BenchSpec(market_dir, (PAIR,), "5m", "20250128-20250218", 0.001, 10_000.0,
                       tmp_path / "out", quick=True, timeout=600)
    result = run_bench(spec, smoke_variants(), pd.Timestamp("2026-01-01", tz="UTC"),
                       progress=lambda m: None, argv=["bench", "--quick"], workers=2)
    by_name = {r.variant.name: r for r in result.results}
    assert by_name["broken_config"].status == "failed"
    assert "no_such_tier" in by_name["broken_config"].reason
    assert by_name["broken_strategy"].status == "failed"
    assert "NoSuchStrategy" in by_name["broken_strategy"].reason
    ran = [r for r in result.results if not r.variant.name.startswith("broken")]
    for r in ran:
        assert r.status == "ok", (r.variant.name, r.reason, r.log)
        assert set(METRICS) <= set(r.metrics), r.variant.name
        for key in ("total_return", "cagr", "max_drawdown", "exposure", "fees"):
            assert math.isfinite(r.metrics[key]), (r.variant.name, key)
        if r.metrics["trades"]:  # a flat curve (no trade) has no Sharpe ratio
            for key in ("sharpe", "sharpe_ci_low", "sharpe_ci_high", "dsr"):
                assert math.isfinite(r.metrics[key]), (r.variant.name, key)
        assert r.by_regime, r.variant.name
        if r.variant.builtin is None and r.metrics["trades"]:
            counted = sum(x["trades"] for x in r.exits["by_exit_reason"].values())
            assert counted == r.metrics["trades"], r.variant.name
        if r.variant.builtin is None:
            assert r.cost["wall_s"] > 0 and r.cost["peak_rss_mb"] > 50
            # The equity curve (freqtrade's wallet export) ends at freqtrade's final balance.
            assert r.book.equity.iloc[-1] == pytest.approx(r.freqtrade["final_balance"])
            assert "--timerange" in r.command and "20250128-20250218" in r.command
    assert by_name["buy_and_hold"].metrics["exposure"] == 1.0
    reused = by_name["with_lightgbm_bandit"]
    assert any("reused from the cache" in n for n in reused.notes)
    log = Path(reused.log).read_text()
    assert "Found backtesting prediction file" in log and "Starting training" not in log
    assert "Starting training" in Path(by_name["with_lightgbm"].log).read_text()
    assert by_name["freqai_lightgbm"].freqtrade["freqaimodel"] == "LightGBMRegressor"
    assert by_name["freqai_rl"].freqtrade["freqaimodel"] == "ReinforcementLearner"

    paths = write_outputs(result)
    data = json.loads(Path(paths["results"]).read_text())
    assert data["data"]["timerange"] == "20250128-20250218" and data["fee_per_side"] == 0.001
    assert {v["name"] for v in data["variants"]} == set(by_name)
    report = Path(paths["report"]).read_text()
    assert "SYNTHETIC" in report and "broken_strategy" in report and "deflated" in report
    assert "## Trades by exit reason" in report and "median hold" in report
    for name in ("equity", "drawdown", "regimes"):
        assert Path(paths[name]).stat().st_size > 5_000


def test_deflated_sharpe_counts_a_duplicate_variant_once():
    idx = pd.date_range("2025-01-01", periods=61, freq="D", tz="UTC")

    def result(name: str, seed: int, duplicate_of: str | None = None) -> B.VariantResult:
        steps = np.random.default_rng(seed).normal(0.002, 0.02, 61)
        equity = pd.Series(1000 * np.cumprod(1 + steps), index=idx)
        book = B.M.Book(equity, pd.Series(True, index=idx), 0.0)
        return B.VariantResult(BV.Variant(name, "S"), book=book, duplicate_of=duplicate_of,
                               metrics={})

    results = [result("full", 1), result("copy", 1, "full"), result("other", 2)]
    B.add_deflated_sharpe(results)
    assert [r.metrics["dsr_trials"] for r in results] == [2, 2, 2]
    assert results[0].metrics["dsr"] == results[1].metrics["dsr"]
