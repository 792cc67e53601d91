"""The bench grid: flags, job ids, keys, the output lock, resume, failures, data on workers,
parallel and Ray runs giving the process pool's figures, and kill-safety."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learning.bench import grid as G
from learning.bench import jobs as J
from learning.bench import metrics as M
from learning.bench import pool as P
from learning.bench import runner as B
from learning.bench import variants as BV
from learning.cli import main as ftlearn
from learning.core.errors import ConfigError
from learning.data.synth import SynthConfig, generate_market, write_market
from tests.bench import mtm as X
from tests.conftest import ROOT

PAIRS = ("BTC/USDT", "ETH/USDT")
RANGE = "20250128-20250211"
NOW = pd.Timestamp("2026-01-01", tz="UTC")
HOLD = BV.Variant("buy_and_hold", "-", kind="baseline", builtin="buy_and_hold")


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    """41 days of two synthetic pairs: start-up history and two evaluated weeks."""
    out = tmp_path_factory.mktemp("grid-market")
    write_market(generate_market(SynthConfig(days=41, pairs=PAIRS, seed=5)), out, ("5m", "1h"))
    return out


def spec_for(market: Path, out: Path, **kw) -> B.BenchSpec:
    return B.BenchSpec(market, PAIRS, "5m", RANGE, 0.001, 10_000.0, out, quick=True,
                       timeout=600, **kw)


def rule_grid() -> list[BV.Variant]:
    """AdvancedLearning as shipped (rule sizing, no FreqAI model), and SampleStrategy."""
    table = {v.name: v for v in BV.VARIANTS}
    return [table["full"], table["sample_strategy"]]


def figures(result: B.BenchResult) -> dict[str, dict]:
    return {r.job_id: {k: v for k, v in r.metrics.items()} for r in result.results}


# ---------------------------------------------------------------------------------- flags, keys


def test_parse_period_with_bad_text_names_the_expected_form():
    assert G.parse_period("test=20250101-20260201") == G.Period("test", "20250101-20260201")
    for bad in ("20250101-20260201", "test=2025-01-01", "a b=20250101-20260201"):
        with pytest.raises(ConfigError, match="--period"):
            G.parse_period(bad)


def test_parse_universe_and_seeds_with_bad_text_name_the_flag():
    assert G.parse_universe("maj=btc_usdt, ETH/USDT") == G.Universe("maj", PAIRS)
    assert G.parse_seeds("3") == (3,) and G.parse_seeds("0,4,7") == (0, 4, 7)
    for bad in ("", "1,1", "x", "-1"):
        with pytest.raises(ConfigError, match="--seeds"):
            G.parse_seeds(bad)
    with pytest.raises(ConfigError, match="--universe"):
        G.parse_universe("maj=")


def test_expand_orders_jobs_by_cell_with_full_first_and_unique_ids():
    full, other = BV.VARIANTS[0], BV.VARIANTS[1]
    jobs = G.expand([full, other], (0, 1), [G.Universe("u", PAIRS)],
                    [G.Period("a", RANGE), G.Period("b", "20250211-20250218")])
    assert len(jobs) == 8 and len({j.id for j in jobs}) == 8
    assert jobs[0].id == "a.u.s0.full" and jobs[1].id == f"a.u.s0.{other.name}"
    assert [j.cell for j in jobs[::2]] == ["a.u.s0", "a.u.s1", "b.u.s0", "b.u.s1"]


def test_allocator_variants_train_one_allocator_set_per_seed(market, tmp_path):
    table = {v.name: v for v in BV.VARIANTS}
    jobs = G.expand([table["alloc_ppo"]], (0, 1), [G.Universe("u", PAIRS)],
                    [G.Period("a", RANGE)])
    planned = P.plan_jobs(spec_for(market, tmp_path / "out"), jobs, tmp_path / "scratch")
    tasks = [p.agents for p in planned]
    assert [t.seed for t in tasks] == [0, 1] and tasks[0].id != tasks[1].id
    assert tasks[0].id == "agents.a.u.allocator-mlp"  # seed 0 keeps the earlier folder name


def test_seeded_freqai_offsets_every_model_seed_and_seed_zero_changes_nothing():
    section = {"model_training_parameters": {"random_state": 1, "seed": 2,
                                             "train": {"seed": 0, "epochs": 3}}}
    assert G.seeded_freqai(section, 0) == section
    mtp = G.seeded_freqai(section, 5)["model_training_parameters"]
    assert (mtp["random_state"], mtp["seed"], mtp["train"]["seed"]) == (6, 7, 5)


def test_freqai_key_changes_with_features_and_with_data_content(tmp_path):
    data = tmp_path / "BTC_USDT-5m.feather"
    data.write_bytes(b"candles v1")
    code = tmp_path / "Strategy.py"
    code.write_text("features v1")
    base = dict(strategy="S", strategy_sources=[code], freqaimodel="M",
                section={"feature_parameters": {"label_period_candles": 24}}, pairs=PAIRS,
                timeframe="5m", timerange=RANGE, data_files=[data])
    key = G.freqai_key(**base)
    assert key == G.freqai_key(**base)
    assert key != G.freqai_key(**{**base, "section": {"feature_parameters": {
        "label_period_candles": 12}}})
    data.write_bytes(b"candles v2 (corrected)")
    assert G.freqai_key(**base) != key, "new candle data must invalidate the shared windows"
    data.write_bytes(b"candles v1")
    code.write_text("features v2")
    assert G.freqai_key(**base) != key, "changed feature code must invalidate them"


# ---------------------------------------------------------------------------------- paired maths


def test_paired_difference_of_a_series_with_itself_is_exactly_zero(rng):
    r = rng.normal(0.001, 0.02, 90)
    d = M.paired_difference([(r, r), (r[:60], r[:60])], seed=0)
    assert d["cells"] == 2
    assert d["d_sharpe"] == d["d_sharpe_low"] == d["d_sharpe_high"] == 0.0
    assert d["d_return"] == d["d_return_low"] == d["d_return_high"] == 0.0


def test_paired_difference_with_a_daily_edge_has_an_interval_above_zero(rng):
    cells = []
    for _ in range(3):
        base = rng.normal(0.0, 0.02, 120)
        cells.append((base + 0.004 + rng.normal(0, 0.001, 120), base))
    d = M.paired_difference(cells, seed=1)
    assert 0 < d["d_return_low"] < d["d_return"] < d["d_return_high"]
    assert d["d_sharpe_low"] > 0
    assert d == M.paired_difference(cells, seed=1), "seeded"


# ---------------------------------------------------------------------------------- lock, resume


def test_second_bench_on_the_same_output_folder_refuses(tmp_path):
    with P.output_lock(tmp_path), pytest.raises(ConfigError, match="another bench.*pid"), \
            P.output_lock(tmp_path):
        pass
    with P.output_lock(tmp_path):  # released when the first one ends
        pass


def test_bench_cli_refuses_an_existing_bench_folder_without_resume(market, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / P.MANIFEST).write_text("{}")
    assert ftlearn(["bench", "--datadir", str(market), "--pairs", *PAIRS, "--timerange", RANGE,
                    "--only", "buy_and_hold", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert ftlearn(["bench", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no bench there" in capsys.readouterr().err


def test_resume_skips_finished_jobs_and_reruns_an_interrupted_one(market, tmp_path, monkeypatch):
    spec = spec_for(market, tmp_path / "out")
    ran: list[str] = []
    real = J.run_job

    def counting(job, *args, **kwargs):
        ran.append(job.id)
        return real(job, *args, **kwargs)

    monkeypatch.setattr(J, "run_job", counting)
    first = P.run_bench(spec, [HOLD], NOW, progress=lambda m: None, seeds=(0, 1, 2))
    assert len(first.results) == 3 and len(ran) == 3
    (J.job_dir(spec.out, G.Job(HOLD, 1, G.Universe("main", PAIRS), G.Period("main", RANGE)))
     / J.RESULT).unlink()  # as if the bench was killed while this job ran
    ran.clear()
    later = NOW + pd.Timedelta(days=1)
    again = P.run_bench(spec, [HOLD], later, progress=lambda m: None, seeds=(0, 1, 2),
                        resume=True)
    assert ran == ["main.main.s1.buy_and_hold"]
    assert figures(again) == figures(first)
    assert again.started == NOW, "a resumed bench keeps the date it was started"
    manifest = json.loads((spec.out / P.MANIFEST).read_text())
    assert pd.Timestamp(manifest["created"]) == NOW and manifest["resumed"] == [str(later)]


def test_job_with_data_dir_missing_on_the_worker_fails_naming_the_path(market, tmp_path):
    missing = tmp_path / "not-mounted"
    spec = dataclasses.replace(spec_for(market, tmp_path / "out"), datadir=missing)
    job = G.Job(HOLD, 0, G.Universe("main", PAIRS), G.Period("main", RANGE))
    out = J.execute(job, spec)
    assert out["status"] == "failed" and str(missing) in out["reason"]
    assert json.loads((J.job_dir(spec.out, job) / J.RESULT).read_text())["status"] == "failed"


def test_ray_address_that_does_not_answer_fails_within_seconds_and_starts_nothing(
        market, tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is an optional extra (pip install '.[distributed]')")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "o"
    t0 = time.perf_counter()
    code = ftlearn(["bench", "--datadir", str(market), "--pairs", *PAIRS, "--timerange", RANGE,
                    "--only", "buy_and_hold", "--out", str(out), "--ray", f"127.0.0.1:{port}"])
    assert code == 2 and time.perf_counter() - t0 < 10
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
    assert not out.exists(), "nothing may be started or written"


# ---------------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def serial_run(market, tmp_path_factory) -> B.BenchResult:
    spec = spec_for(market, tmp_path_factory.mktemp("serial") / "out")
    return P.run_bench(spec, rule_grid(), NOW, progress=lambda m: None, seeds=(0, 1),
                       workers=1)


@pytest.mark.slow
def test_two_workers_give_the_same_figures_as_one(market, tmp_path, serial_run):
    spec = spec_for(market, tmp_path / "out")
    parallel = P.run_bench(spec, rule_grid(), NOW, progress=lambda m: None, seeds=(0, 1),
                           workers=2)
    assert [r.status for r in serial_run.results] == ["ok"] * 4, [
        r.reason for r in serial_run.results]
    assert figures(parallel) == figures(serial_run)
    by_id = {r.job_id: r for r in serial_run.results}
    assert by_id["main.main.s0.full"].metrics != by_id["main.main.s1.full"].metrics, \
        "the job seed must reach the brain's sampler"


@pytest.mark.slow
def test_wallet_equity_agrees_with_a_ledger_rebuilt_from_the_fills(market, serial_run):
    from freqtrade.data.btanalysis import load_backtest_data

    r = next(x for x in serial_run.results if x.job_id == "main.main.s0.full")
    assert r.metrics["trades"] > 5
    start, end = B.parse_timerange(RANGE)
    closes, _ = B.closes_frame(market, PAIRS, "5m", start, end)
    trades = load_backtest_data(Path(r.log).parent / "results", "AdvancedLearning")
    ledger = X.mark_to_market(X.fills_from_trades(trades, 0.001), closes, 10_000.0, start,
                              pd.Timedelta(minutes=5))
    wallet = r.book.equity.reindex(ledger.equity.index)
    # Same marks; the wallet values positions at the next candle's open, the ledger at the
    # close before it: they may differ by the gap between two candles, never more.
    assert wallet.notna().all()
    assert np.allclose(wallet, ledger.equity, rtol=2e-3)
    assert wallet.iloc[-1] == pytest.approx(ledger.equity.iloc[-1], rel=1e-9)
    assert r.metrics["fees"] == pytest.approx(ledger.fees, rel=1e-9)
    assert (r.book.in_market == ledger.in_market.reindex(r.book.in_market.index)).all()


@pytest.mark.slow
def test_ray_local_instance_gives_the_process_pool_s_figures(market, tmp_path, serial_run):
    pytest.importorskip("ray", reason="Ray is an optional extra (pip install '.[distributed]')")
    from learning.bench.ray_backend import RayBackend

    backend = RayBackend.connect(None, num_cpus=2, include_dashboard=False)
    try:
        spec = spec_for(market, tmp_path / "out")
        result = P.run_bench(spec, rule_grid()[:1], NOW, progress=lambda m: None,
                             seeds=(0, 1), backend=backend)
    finally:
        backend.shutdown()
    def own(figs: dict) -> dict:  # the deflated Sharpe depends on the other variants of a cell
        return {job: {k: v for k, v in m.items() if not k.startswith("dsr")}
                for job, m in figs.items() if job.endswith(".full")}

    assert len(result.results) == 2 and own(figures(result)) == own(figures(serial_run))
    for r in result.results:  # the job folders came back into the driver's layout
        assert Path(r.log).is_file() and str(spec.out) in r.log


@pytest.mark.slow
def test_a_failed_job_is_reported_with_its_log_tail_and_the_others_run(market, tmp_path):
    broken = BV.Variant("broken_strategy", "NoSuchStrategy", kind="baseline")
    lines: list[str] = []
    result = P.run_bench(spec_for(market, tmp_path / "out"), [broken, HOLD], NOW,
                         progress=lines.append, workers=2)
    assert [r.status for r in result.results] == ["failed", "ok"]
    text = "\n".join(lines)
    assert "FAILED  main.main.s0.broken_strategy" in text and "NoSuchStrategy" in text
    assert "        " in text.split("broken_strategy", 1)[1], "the log tail, indented"


@pytest.mark.slow
def test_killed_bench_loses_at_most_the_job_in_flight_and_resume_finishes(market, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "learning.cli", "bench", "--datadir", str(market), "--pairs",
           *PAIRS, "--timerange", RANGE, "--timeframe", "5m", "--only", "sample_strategy", "--seeds", "0,1,2",
           "--workers", "1", "--out", str(out), "--quick"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = out / "jobs" / "main.main.s0.sample_strategy" / J.RESULT
    deadline = time.time() + 300
    while not first.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert first.is_file(), "the first job never finished"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_then = {p.parent.name for p in out.glob("jobs/*/result.json")}
    assert "main.main.s0.sample_strategy" in finished_then and len(finished_then) < 3
    kept = first.stat().st_mtime_ns
    done = subprocess.run([*cmd[:4], "--resume", str(out), "--workers", "1"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"{len(finished_then)} already finished" in done.stdout
    assert {p.parent.name for p in out.glob("jobs/*/result.json")} == {
        f"main.main.s{s}.sample_strategy" for s in range(3)}
    assert first.stat().st_mtime_ns == kept, "a finished job must not run again"
    assert json.loads((out / "results.json").read_text())["cells"] == [
        "main.main.s0", "main.main.s1", "main.main.s2"]


def test_window_jobs_deal_the_pairs_round_robin_into_at_most_slots_groups():
    table = {v.name: v for v in BV.VARIANTS}
    job = G.Job(table["with_lightgbm"], 1, G.Universe("majors", ("A/U", "B/U", "C/U", "D/U",
                                                                 "E/U")), G.Period("v", RANGE))
    groups = P.window_jobs(job, 2)
    assert [w.universe.pairs for w in groups] == [("A/U", "C/U", "E/U"), ("B/U", "D/U")]
    assert [w.id for w in groups] == ["v.majors-windows1of2.s1.with_lightgbm",
                                      "v.majors-windows2of2.s1.with_lightgbm"]
    assert all(w.variant is job.variant and w.seed == 1 for w in groups)
    assert len(P.window_jobs(job, 8)) == 5 and P.window_jobs(job, 1) == []
    one = dataclasses.replace(job, universe=G.Universe("btc", ("A/U",)))
    assert P.window_jobs(one, 4) == []


def predictions_of(result: B.BenchResult) -> dict[str, pd.DataFrame]:
    (r,) = result.results
    folder = Path(r.models_dir) if r.models_dir else None
    if folder is None or not folder.is_dir():
        folder = next(Path(r.log).parent.glob("user_data/models/*"))
    return {f.name: pd.read_feather(f) for f in sorted(
        (folder / "backtesting_predictions").glob("*.feather"))}


@pytest.mark.slow
def test_freqai_windows_trained_in_parallel_pair_groups_give_the_sequential_figures(
        market, tmp_path):
    variant = {v.name: v for v in BV.VARIANTS}["with_lightgbm"]
    lines: list[str] = []
    serial = P.run_bench(spec_for(market, tmp_path / "serial"), [variant], NOW,
                         progress=lambda m: None, workers=1)
    split = P.run_bench(spec_for(market, tmp_path / "split"), [variant], NOW,
                        progress=lines.append, workers=2)
    (a,), (b,) = serial.results, split.results
    assert a.status == b.status == "ok", (a.reason, b.reason)
    text = "\n".join(lines)
    assert "training its FreqAI windows in 2 parallel runs" in text, text
    for w in ("main.main-windows1of2.s0.with_lightgbm", "main.main-windows2of2.s0.with_lightgbm"):
        log = (tmp_path / "split" / "jobs" / w / "run" / "freqtrade.log").read_text()
        assert "Starting training" in log, w
    log = Path(b.log).read_text()
    assert "Found backtesting prediction file" in log and "Starting training" not in log
    assert any("2 parallel runs" in n for n in b.notes), b.notes
    assert figures(split) == figures(serial) and a.metrics["trades"] > 0
    pa, pb = predictions_of(serial), predictions_of(split)
    assert set(pa) == set(pb) and len(pa) >= 4  # two pairs, two windows or more each
    for name in pa:
        pd.testing.assert_frame_equal(pa[name], pb[name])


def test_pool_workers_share_the_cores_among_their_thread_pools_unless_the_user_chose(
        monkeypatch):
    monkeypatch.setattr(P, "die_with_parent", lambda: None)
    monkeypatch.setattr(P.signal, "signal", lambda *a: None)
    for var in P.THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    P._pool_worker_init(3)
    assert os.environ["OMP_NUM_THREADS"] == "3" and os.environ["OPENBLAS_NUM_THREADS"] == "3"
    assert os.environ["MKL_NUM_THREADS"] == "7"
