"""One run of ``ftlearn bench``: a variant through the real freqtrade CLI against the local
exchange, on one data set, range, fee and wallet (the grid of such runs:
:mod:`learning.bench.pool`).

The variants are a data table (:data:`learning.bench.variants.VARIANTS`). Each freqtrade
variant runs as its own ``freqtrade backtesting`` subprocess with its own ``user_data_dir`` (so
no learned state, model or prediction file leaks between variants) and a config overlay written
next to its log; buy-and-hold is computed from the candles. Metrics come from
:mod:`learning.bench.metrics` on freqtrade's own per-candle wallet export; figures and the exact
commands go to :mod:`learning.bench.report`.

FreqAI variants are walk-forward by construction: FreqAI trains on ``train_period_days`` before
each ``backtest_period_days`` window and predicts only that window. Nothing is tuned on the
evaluated range: every setting is fixed in this table, the asset files and the project config.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from learning.bench import metrics as M
from learning.bench.grid import seeded_freqai
from learning.bench.variants import Variant, deep_merge
from learning.core.errors import ConfigError, DataError, LearningError
from learning.data.candles import list_pairs, load_candles, timeframe_to_minutes
from learning.exchange.localrun import REPO_ROOT, BacktestRun, freqtrade_command

logger = logging.getLogger(__name__)

#: Candles a strategy may need before the range (AdvancedLearning asks for up to 4,900 for its
#: regime detector); FreqAI variants need ``train_period_days`` more. Checked up front up to
#: MAX_STARTUP_DAYS; beyond that, a run freqtrade had to start later fails after the fact.
STARTUP_CANDLES = 4_900
MAX_STARTUP_DAYS = 30
FREQAI_WARMUP_DAYS = 2  # indicator warm-up on the informative timeframes before training


# ----------------------------------------------------------------------------------------------
# Settings and data


@dataclass(frozen=True)
class BenchSpec:
    """Everything a bench run shares: the data, the range, costs, and where results go."""

    datadir: Path
    pairs: tuple[str, ...]
    timeframe: str
    timerange: str
    fee: float
    wallet: float
    out: Path
    configs: tuple[Path, ...] = (REPO_ROOT / "config.json",)
    quick: bool = False
    seed: int = 0
    timeout: float | None = None
    share_predictions: bool = True


def parse_timerange(timerange: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    try:
        a, b = timerange.split("-")
        start, end = (pd.Timestamp(x, tz="UTC") for x in (a, b))
        assert len(a) == len(b) == 8
    except (ValueError, AssertionError) as err:
        raise ConfigError(f"timerange {timerange!r}: use YYYYMMDD-YYYYMMDD (both ends; FreqAI "
                          "backtests need an end date)") from err
    if end <= start:
        raise ConfigError(f"timerange {timerange!r} ends before it starts")
    return start, end


@dataclass(frozen=True)
class DataInfo:
    first: pd.Timestamp  # the earliest first candle open (a range needs one pair with data)
    last_close: pd.Timestamp  # last candle close common to all pairs
    synthetic: bool
    starts: dict[str, pd.Timestamp] = field(default_factory=dict)  # first open per pair

    def late_pairs(self, start: pd.Timestamp) -> dict[str, pd.Timestamp]:
        """Pairs whose candles begin after ``start``: they trade (and buy-and-hold buys them)
        only from their first candle; until then their share is cash."""
        return {p: t for p, t in self.starts.items() if t > start}


def data_info(datadir: Path, pairs: Sequence[str], timeframe: str) -> DataInfo:
    from learning.data.synth import read_marker

    available = list_pairs(datadir)
    missing = [p for p in pairs if timeframe not in available.get(p, [])]
    if missing:
        there = "; ".join(f"{p} ({', '.join(t)})" for p, t in available.items())
        raise DataError(f"{datadir} has no {timeframe} candles for {', '.join(missing)}; "
                        f"there: {there}")
    step = pd.Timedelta(minutes=timeframe_to_minutes(timeframe))
    frames = {p: load_candles(datadir, p, timeframe) for p in pairs}
    # Years of history exist for some pairs only (BTC from 2021, SOL from 2024): a range may
    # start before a pair's first candle, which then joins when its market opens.
    return DataInfo(min(f["date"].iloc[0] for f in frames.values()),
                    min(f["date"].iloc[-1] for f in frames.values()) + step,
                    read_marker(datadir) is not None,
                    {p: f["date"].iloc[0] for p, f in frames.items()})


def startup_days(timeframe: str) -> int:
    days = -(-STARTUP_CANDLES * timeframe_to_minutes(timeframe) // 1440)
    return min(MAX_STARTUP_DAYS, max(3, days))


def check_timerange(timerange: str, info: DataInfo, pairs: Sequence[str], timeframe: str,
                    datadir: Path) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The range must lie inside the data, after the strategies' start-up history."""
    start, end = parse_timerange(timerange)
    earliest = (info.first + pd.Timedelta(days=startup_days(timeframe))).ceil("D")
    if start < earliest or end > info.last_close:
        raise DataError(
            f"timerange {timerange} is outside the data: {', '.join(pairs)} {timeframe} candles "
            f"in {datadir} cover {info.first:%Y-%m-%d %H:%M} .. {info.last_close:%Y-%m-%d %H:%M}"
            f" UTC; with {startup_days(timeframe)} days of start-up history the range can span "
            f"{earliest:%Y%m%d}-{info.last_close.floor('D'):%Y%m%d}")
    return start, end


def default_timerange(info: DataInfo, timeframe: str, days: int, train_days: int) -> str:
    """The last ``days`` whole days, leaving start-up and FreqAI training history before."""
    end = info.last_close.floor("D")
    earliest = (info.first + pd.Timedelta(days=startup_days(timeframe) + train_days
                                          + FREQAI_WARMUP_DAYS)).ceil("D")
    start = max(end - pd.Timedelta(days=days), earliest)
    if end - start < pd.Timedelta(days=7):
        raise DataError(f"too little history for a walk-forward bench: the data covers "
                        f"{info.first:%Y-%m-%d} .. {info.last_close:%Y-%m-%d}; FreqAI needs "
                        f"{train_days} training days and the strategies {startup_days(timeframe)}"
                        " start-up days before at least 7 evaluated days")
    return f"{start:%Y%m%d}-{end:%Y%m%d}"


def train_days_needed(variants: Iterable[Variant], quick: bool) -> int:
    """The longest FreqAI ``train_period_days`` among ``variants`` (0 without FreqAI)."""
    from learning.core.ftconfig import load_ft_config

    days = [0]
    for v in variants:
        path = freqai_file(v.freqai_config) if v.freqai_config else None
        if path is None or not path.is_file():
            continue
        section = load_ft_config([str(path)]).get("freqai", {})
        if quick:
            section = deep_merge(section, v.quick_freqai)
        days.append(int(section.get("train_period_days", 0)))
    return max(days)


def closes_frame(datadir: Path, pairs: Sequence[str], timeframe: str, start: pd.Timestamp,
                 end: pd.Timestamp) -> tuple[pd.DataFrame, dict[str, float]]:
    """Closes indexed by candle close time for candles opening in [start, end) (NaN before a
    pair's first candle), and each pair's first open (the buy-and-hold entry)."""
    step = pd.Timedelta(minutes=timeframe_to_minutes(timeframe))
    cols, opens = {}, {}
    for pair in pairs:
        df = load_candles(datadir, pair, timeframe)
        df = df[(df["date"] >= start) & (df["date"] < end)]
        if df.empty:
            raise DataError(f"no {pair} {timeframe} candles in {start} .. {end}")
        cols[pair] = pd.Series(df["close"].to_numpy(), index=df["date"] + step)
        opens[pair] = float(df["open"].iloc[0])
    grid = pd.date_range(start + step, end, freq=step)
    return pd.DataFrame(cols).reindex(grid).ffill(), opens


# ----------------------------------------------------------------------------------------------
# Regimes for the "returns by regime" breakdown


def causal_regime_labels(candles: pd.DataFrame, threshold: float = 0.10,
                         window_days: int = 30) -> pd.Series:
    """A simple causal rule on one pair's candles (BTC): every candle of UTC day d gets the
    label of the ``window_days`` closing before d: ``up`` (return > +threshold), ``down``
    (< −threshold), else ``range-volatile`` / ``range-calm`` (annualized daily-return
    volatility above / at most its expanding median over past days). Indexed by candle open.
    Only days strictly before d are used, so a label never changes when later candles arrive."""
    dates = pd.to_datetime(candles["date"], utc=True)
    close = pd.Series(candles["close"].to_numpy(dtype="float64"), index=dates)
    daily = close.groupby(dates.dt.floor("D").to_numpy()).last()
    complete = daily.iloc[:-1]  # the last day may still be forming; it labels nothing yet
    ret = complete / complete.shift(window_days) - 1
    vol = np.log(complete).diff().rolling(window_days).std() * np.sqrt(365)
    calm_line = vol.expanding().median()
    label = pd.Series("range-calm", index=complete.index, dtype=object)
    label[vol > calm_line] = "range-volatile"
    label[ret > threshold] = "up"
    label[ret < -threshold] = "down"
    label[ret.isna() | vol.isna()] = "unknown"
    by_day = label.copy()
    by_day.index = by_day.index + pd.Timedelta(days=1)  # known at the start of the next day
    day_of = dates.dt.floor("D")
    out = day_of.map(by_day).fillna("unknown")
    return pd.Series(out.to_numpy(), index=dates)


def regime_labels(datadir: Path, pairs: Sequence[str], timeframe: str
                  ) -> tuple[pd.Series, str]:
    """True regimes of a synthetic market, else :func:`causal_regime_labels` on BTC/USDT (or
    the first pair). Returns the labels (by candle open time) and a sentence saying which."""
    from learning.data.synth import REGIMES_FILE, load_regimes, read_marker

    if read_marker(datadir) and (datadir / REGIMES_FILE).is_file():
        reg = load_regimes(datadir)
        return (pd.Series(reg["regime"].astype(str).to_numpy(), index=reg["date"]),
                "true regimes of the synthetic market (regimes.feather)")
    ref = "BTC/USDT" if timeframe in list_pairs(datadir).get("BTC/USDT", []) else pairs[0]
    return (causal_regime_labels(load_candles(datadir, ref, timeframe)),
            f"a causal rule on {ref}: trailing 30-day return > +10 % up, < -10 % down, else "
            "range-volatile/range-calm by 30-day volatility against its expanding median "
            "(not the strategy's detector)")


# ----------------------------------------------------------------------------------------------
# Running one variant


@dataclass
class VariantResult:
    variant: Variant
    status: Literal["ok", "failed", "skipped"] = "ok"
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    command: list[str] | None = None
    log: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    freqtrade: dict[str, Any] = field(default_factory=dict)
    by_regime: dict[str, dict[str, float]] = field(default_factory=dict)
    exits: dict[str, Any] = field(default_factory=dict)  # M.exit_breakdown of its trades
    book: M.Book | None = None
    duplicate_of: str | None = None  # same configuration as this variant: not a separate trial
    cell: str = ""  # the grid cell (period.universe.seed) it belongs to
    job_id: str = ""
    models_dir: Path | None = None  # its FreqAI models folder (shared with later variants)
    diagnostics: dict[str, Any] = field(default_factory=dict)  # halts, fallbacks, learning


def asset_path(name: str) -> Path:
    return Path(str(resources.files("learning.bench.assets").joinpath(name)))


def _strategy_source(spec: str) -> Path:
    kind, _, name = spec.partition(":")
    if kind == "template":
        import freqtrade

        return Path(freqtrade.__file__).parent / "templates" / name
    if kind == "asset":
        return asset_path(name)
    raise ConfigError(f"strategy file {spec!r}: use template:NAME or asset:NAME")


def freqai_file(spec: str) -> Path:
    return asset_path(spec[6:]) if spec.startswith("asset:") else REPO_ROOT / spec


def _data_adapted(section: dict[str, Any], datadir: Path, pairs: Sequence[str],
                  timeframe: str) -> dict[str, Any]:
    """Our baselines' informative timeframes and correlated pair, limited to what the data
    holds (1h beside a shorter main timeframe; BTC/USDT as the correlated pair)."""
    available = list_pairs(datadir)
    tfs = [timeframe]
    if timeframe_to_minutes(timeframe) < 60 and all("1h" in available.get(p, []) for p in pairs):
        tfs.append("1h")
    corr = ["BTC/USDT"] if all(t in available.get("BTC/USDT", []) for t in tfs) else []
    fp = {**section.get("feature_parameters", {}), "include_timeframes": tfs,
          "include_corr_pairlist": corr}
    return {**section, "feature_parameters": fp}


def _no_faster_timeframes(section: dict[str, Any], timeframe: str) -> dict[str, Any]:
    """FreqAI refuses ``include_timeframes`` faster than the main timeframe (the shipped TSA-MAE
    config names 5m): run such a config at another timeframe with the main one instead."""
    fp = section.get("feature_parameters", {})
    tfs = fp.get("include_timeframes") or [timeframe]
    keep = [t for t in tfs if timeframe_to_minutes(t) >= timeframe_to_minutes(timeframe)]
    keep = list(dict.fromkeys([timeframe, *keep])) if len(keep) < len(tfs) else tfs
    return {**section, "feature_parameters": {**fp, "include_timeframes": keep}}


@dataclass(frozen=True)
class Plan:
    """What :func:`prepare` decided for a variant: the overlay and command, or why not."""

    status: Literal["run", "failed", "skipped"]
    reason: str = ""
    notes: tuple[str, ...] = ()
    overlay: dict[str, Any] = field(default_factory=dict)
    freqaimodel: str | None = None
    train_days: int = 0
    learning: Any = None


def prepare(v: Variant, spec: BenchSpec, user_data: Path, strategy_dir: Path,
            start: pd.Timestamp, info: DataInfo, seed: int = 0) -> Plan:
    """Pre-flight: availability, the merged config (freqtrade's loader) and, for
    AdvancedLearning, its ``advanced_learning`` parser, so a bad key fails in a second.
    ``seed`` is the job's seed (:mod:`learning.bench.grid`)."""
    from learning.core.ftconfig import load_ft_config
    from learning.strategy.config import load_learning_config

    notes: list[str] = []
    for f in v.strategy_files:
        if not _strategy_source(f).is_file():
            return Plan("skipped", f"not available: {_strategy_source(f)} is missing")
    overlay: dict[str, Any] = {"user_data_dir": str(user_data), "dry_run_wallet": spec.wallet,
                               "timeframe": spec.timeframe,
                               "exchange": {"pair_whitelist": list(spec.pairs)}}
    freqaimodel, train_days = v.freqaimodel, 0
    if v.freqai_config:
        path = freqai_file(v.freqai_config)
        if not path.is_file():
            if v.freqai_required:
                return Plan("skipped", f"not available: {v.freqai_config} is missing")
            notes.append(f"ran without FreqAI: {v.freqai_config} is missing")
            freqaimodel = None
        else:
            try:
                loaded = load_ft_config([str(path)])
            except ConfigError as err:
                return Plan("failed", f"FreqAI config {path}: {err}")
            section = deep_merge({**loaded.get("freqai", {}), **v.freqai_replace},
                                 v.freqai_merge)
            if v.freqai_config.startswith("asset:"):
                section = _data_adapted(section, spec.datadir, spec.pairs, spec.timeframe)
            else:
                section = _no_faster_timeframes(section, spec.timeframe)
            if spec.quick:
                section = deep_merge(section, v.quick_freqai)
            section = seeded_freqai(section, seed)
            overlay = deep_merge({k: x for k, x in loaded.items() if k != "freqai"}, overlay)
            overlay["freqai"] = section
            train_days = int(section.get("train_period_days", 0))
    overlay = deep_merge(overlay, v.config_overlay)
    if v.learning_section:
        overlay = deep_merge(overlay, {"advanced_learning": {"brain": {"seed": seed}}})
    if freqaimodel is None:
        overlay.pop("freqaimodel", None)
    if train_days:
        need = start - pd.Timedelta(days=train_days + FREQAI_WARMUP_DAYS)
        if info.first > need:
            return Plan("failed", f"FreqAI trains on {train_days} days before the range: data "
                        f"from {need:%Y-%m-%d} is needed, the candles start {info.first:%Y-%m-%d}")
    learning = None
    try:
        merged = load_ft_config([*map(str, spec.configs), _write_json(
            user_data.parent / "overlay.json", overlay)])
        if v.learning_section:
            learning = load_learning_config(merged)
    except ConfigError as err:
        return Plan("failed", f"configuration not accepted: {err}", tuple(notes), overlay)
    return Plan("run", "", tuple(notes), overlay, freqaimodel, train_days, learning)


def _write_json(path: Path, data: Mapping[str, Any]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return str(path)


@dataclass(frozen=True)
class Measured:
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    timed_out: bool


# Linux records the RSS of the image a process replaces at exec in its peak (ru_maxrss), so a
# command started straight from this (large) process would report at least our own size. A
# small interpreter forks the command instead and hands back the command's own rusage.
# Both the launcher and the command ask Linux to SIGKILL them when their parent dies
# (PR_SET_PDEATHSIG, kept across exec), so a killed bench worker leaves no freqtrade behind.
_LAUNCHER = """
import ctypes, json, os, signal, sys
def die_with_parent():
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
die_with_parent()
pid = os.fork()
if pid == 0:
    try:
        die_with_parent()
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    json.dump({"maxrss_kb": ru.ru_maxrss, "cpu_s": ru.ru_utime + ru.ru_stime}, fh)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(cmd: Sequence[str], log_path: Path, cwd: Path = REPO_ROOT,
                 timeout: float | None = None) -> Measured:
    """Run ``cmd`` with its output in ``log_path``: wall time, and CPU time and peak RSS of
    that command alone (``os.wait4`` in a small launcher; NaN when it was killed). On timeout
    the whole process group is killed."""
    # A wide console: freqtrade's log handler wraps long records at the terminal width (80
    # columns without one), which splits the error line the report quotes.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "1000"}
    timed_out = threading.Event()
    usage_path = log_path.with_suffix(".rusage.json")
    usage_path.unlink(missing_ok=True)
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(usage_path), *cmd],
                                cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer:
            timer.start()
        try:
            proc.wait()
        except BaseException:
            kill()
            proc.wait()
            raise
        finally:
            if timer:
                timer.cancel()
    wall = time.perf_counter() - t0
    try:
        usage = json.loads(usage_path.read_text())
        cpu, peak = float(usage["cpu_s"]), usage["maxrss_kb"] / 1024
    except (OSError, ValueError, KeyError):
        cpu = peak = float("nan")
    return Measured(proc.returncode, wall, cpu, peak, timed_out.is_set())


def backtest_command(configs: Sequence[str | Path], strategy: str, spec: BenchSpec,
                     result_dir: Path, strategy_dir: Path | None, freqaimodel: str | None,
                     extra: Sequence[str] = ()) -> list[str]:
    """The ``freqtrade backtesting`` command line (as
    :func:`learning.exchange.localrun.freqtrade_backtest` builds it, plus the strategy folder,
    timeframe and FreqAI model)."""
    cmd = [*freqtrade_command(), "backtesting"]
    for c in configs:
        cmd += ["--config", str(c)]
    cmd += ["--strategy", strategy]
    if strategy_dir:
        cmd += ["--strategy-path", str(strategy_dir)]
    cmd += ["--datadir", str(spec.datadir), "--timerange", spec.timerange,
            "--timeframe", spec.timeframe, "--backtest-directory", str(result_dir),
            "--export", "trades", "--cache", "none", "--fee", str(spec.fee)]
    if freqaimodel:
        cmd += ["--freqaimodel", freqaimodel]
    return cmd + list(extra)


def error_from_log(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if " - ERROR - " in ln or "Error" in ln.split(" - ")[-1][:40]]
    picked = (errors or lines or ["no output"])[-1]
    return picked.split(" - ERROR - ")[-1][:600]


@dataclass(frozen=True)
class JobInputs:
    """What a job starts from besides the data: the Tier 3 agents trained before its range,
    and a FreqAI models folder with trained windows and predictions to reuse."""

    agents: Path | None = None  # folder holding agent_*_offline.pt
    agents_note: str = ""
    models: Path | None = None  # a models/<identifier> folder (saved predictions)
    models_note: str = ""


def run_variant(v: Variant, spec: BenchSpec, exchange_overlay: Path, strategy_dir: Path,
                start: pd.Timestamp, info: DataInfo, closes: pd.DataFrame,
                opens: Mapping[str, float], run_dir: Path, inputs: JobInputs = JobInputs(),
                seed: int = 0) -> VariantResult:
    """Run one variant in ``run_dir`` and compute its metrics; failures become a result,
    never an exception.

    With ``inputs.models`` the variant starts from a copy of that FreqAI models folder, so
    FreqAI reuses its walk-forward predictions instead of training the same windows again
    (:func:`learning.bench.grid.freqai_key` decides when that is allowed; FreqAI still checks
    that the strategy's feature list matches). Its cost figures then exclude training; the
    report says so."""
    res = VariantResult(v)
    if v.builtin == "buy_and_hold":
        book, pnl = M.buy_and_hold(opens, closes, spec.wallet, spec.fee, start)
        res.book, res.metrics = book, M.summarize(book, list(pnl.values()), spec.seed)
        res.notes.append("computed from the candles, not by freqtrade")
        return res
    if run_dir.exists():
        shutil.rmtree(run_dir)
    user_data = run_dir / "user_data"
    user_data.mkdir(parents=True)
    plan = prepare(v, spec, user_data, strategy_dir, start, info, seed)
    res.notes += plan.notes
    if plan.status != "run":
        res.status, res.reason = plan.status, plan.reason
        return res
    freqai = plan.overlay.get("freqai") if plan.freqaimodel else None
    res.models_dir = user_data / "models" / str((freqai or {}).get("identifier", ""))
    if freqai and inputs.models is not None:
        shutil.copytree(inputs.models, res.models_dir)
        res.notes.append(inputs.models_note or "FreqAI predictions reused: cost figures "
                         "exclude training")
    if plan.learning is not None and (plan.learning.sizing.agent == "ppo" or (
            plan.learning.sizing.agent == "allocator"
            and plan.learning.allocator.policy == "ppo")):
        res.notes.append(inputs.agents_note)
        if inputs.agents is not None:
            target = user_data / "learning" / plan.learning.identifier / "backtest"
            target.mkdir(parents=True, exist_ok=True)
            for pattern in ("agent_*_offline.pt", "allocator_*.pt"):
                for f in inputs.agents.glob(pattern):
                    shutil.copy2(f, target / f.name)
    configs = [*spec.configs, run_dir / "overlay.json", exchange_overlay]
    # Our baselines load from the run's strategy folder; AdvancedLearning from config.json's.
    res.command = backtest_command(configs, v.strategy, spec, run_dir / "results",
                                   strategy_dir if v.strategy_files else None,
                                   plan.freqaimodel, v.extra_args)
    (run_dir / "results").mkdir()
    log = run_dir / "freqtrade.log"
    res.log = str(log)
    measured = run_measured(res.command, log, timeout=spec.timeout)
    res.cost = {"wall_s": round(measured.wall_s, 1), "cpu_s": round(measured.cpu_s, 1),
                "peak_rss_mb": round(measured.peak_rss_mb, 1)}
    if measured.timed_out or measured.returncode != 0:
        res.status = "failed"
        res.reason = (f"timed out after {spec.timeout:.0f} s" if measured.timed_out else
                      f"freqtrade exited with {measured.returncode}: "
                      f"{error_from_log(log.read_text(errors='replace'))}")
        return res
    try:
        _collect(res, run_dir / "results", v, spec, start)
    except Exception as err:  # a result we cannot read is a failed variant, not a crash
        res.status, res.reason = "failed", f"could not read freqtrade's results: {err}"
    return res


def _collect(res: VariantResult, result_dir: Path, v: Variant, spec: BenchSpec,
             start: pd.Timestamp) -> None:
    """Metrics from freqtrade's result zip: equity from its per-candle wallet export."""
    from freqtrade.data.btanalysis import (
        get_backtest_wallet_change,
        get_latest_backtest_filename,
    )

    run = BacktestRun(0, "", result_dir, tuple(res.command or ()))
    stats = run.stats(v.strategy)
    ft_start = pd.Timestamp(stats["backtest_start_ts"], unit="ms", tz="UTC")
    if ft_start != start:
        raise LearningError(f"freqtrade backtested from {ft_start} instead of {start} (not "
                            "enough start-up history); choose a later --timerange")
    _, end = parse_timerange(spec.timerange)
    trades = run.trades(v.strategy)
    wallet = get_backtest_wallet_change(result_dir / get_latest_backtest_filename(result_dir),
                                        v.strategy)
    if wallet is None or wallet.empty:
        raise LearningError("freqtrade's result zip holds no wallet export (*_wallet.feather)")
    per_trade_fees = M.trade_fees(trades, spec.fee) if len(trades) else np.zeros(0)
    fees = float(per_trade_fees.sum())
    book = M.book_from_wallet(wallet, str(stats.get("stake_currency", "USDT")), start, end,
                              spec.wallet, float(stats["final_balance"]), fees)
    pnl = trades["profit_abs"].to_numpy(dtype="float64") if len(trades) else np.array([])
    res.book, res.metrics = book, M.summarize(book, pnl, spec.seed)
    res.exits = M.exit_breakdown(trades, per_trade_fees)
    if v.learning_section:
        from learning.bench.diagnostics import diagnostics, notes

        res.diagnostics = diagnostics(result_dir.parent / "user_data", end)
        res.notes += notes(res.diagnostics)
        try:
            from learning.bench.diagnostics import volatility

            res.diagnostics["volatility"] = volatility(trades, spec.datadir, spec.timeframe,
                                                       book.equity)
        except Exception as err:  # a report figure, never a failed variant
            res.notes.append(f"realised volatility not computed: {err}")
    res.freqtrade = {k: stats.get(k) for k in (
        "total_trades", "profit_total", "final_balance", "max_drawdown_account", "sharpe",
        "sortino", "calmar", "cagr", "winrate", "profit_factor", "backtest_start",
        "backtest_end", "freqai_identifier", "freqaimodel")}


def prepare_strategy_dir(out: Path, variants: Sequence[Variant]) -> Path:
    sdir = out / "strategies"
    sdir.mkdir(parents=True, exist_ok=True)
    for v in variants:
        for f in v.strategy_files:
            src = _strategy_source(f)
            if src.is_file() and not (sdir / src.name).is_file():
                shutil.copy2(src, sdir / src.name)
    return sdir


# ----------------------------------------------------------------------------------------------
# The whole bench


@dataclass
class BenchResult:
    spec: BenchSpec
    info: DataInfo
    regime_source: str
    results: list[VariantResult]
    started: pd.Timestamp
    finished: pd.Timestamp
    argv: list[str] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)  # in grid order


def add_deflated_sharpe(results: Sequence[VariantResult]) -> None:
    """DSR of every successful run, cell by cell; the trials of a cell are its successful runs
    with a defined Sharpe ratio, a variant with the same configuration as another counted
    once."""
    by_cell: dict[str, list[VariantResult]] = {}
    for r in results:
        by_cell.setdefault(r.cell, []).append(r)
    for cell in by_cell.values():
        ok = [r for r in cell if r.status == "ok" and r.book is not None]
        daily = {id(r): M.daily_returns(r.book.equity).to_numpy() for r in ok}
        trial_sr = [M.period_sharpe(daily[id(r)]) for r in ok if r.duplicate_of is None]
        for r in ok:
            d = M.deflated_sharpe(daily[id(r)], trial_sr)
            r.metrics.update({"dsr": d["dsr"], "dsr_sr0_per_day": d["sr0"],
                              "dsr_trials": d["n_trials"]})
