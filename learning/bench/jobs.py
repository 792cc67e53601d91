"""Running one task of the bench grid in a worker (a pool process, a Ray worker or this
process), and its files.

Two kinds of task: :class:`AgentsTask` trains the Tier 3 agents once per (universe, period) on
the days before the period (every job that sizes with PPO starts from them), and a
:class:`~learning.bench.grid.Job` runs one variant. A job owns ``jobs/<id>/``: its freqtrade
run (``run/``, with ``freqtrade.log``), its own local exchange on a free port, ``equity.feather``
(the candle-level account curve) and, written last and atomically, ``result.json``. A job whose
folder has no valid ``result.json`` was interrupted and runs again from scratch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from learning.bench import metrics as M
from learning.bench import runner as R
from learning.bench.grid import Job, Period, Universe
from learning.bench.report import clean
from learning.bench.variants import AGENT_TRAIN_DAYS, ALLOC_RETRAIN, ALLOC_STEPS, ALLOC_TRAIN
from learning.core.errors import LearningError

RESULT = "result.json"
EQUITY = "equity.feather"
RESULT_SCHEMA = 1


@dataclass(frozen=True)
class AgentsTask:
    """Train the Tier 3 agents for one (universe, period) and agent settings (the network kind
    and the churn penalty of ``advanced_learning.sizing``: variants that differ there need
    their own agents)."""

    universe: Universe
    period: Period
    policy: str = "mlp"
    short_hold_penalty: float = 1.0
    kind: str = "agents"  # or "allocator": the walk-forward allocators of the period
    training: tuple[tuple[str, Any], ...] = ()  # allocator training settings (NetConfig)
    seed: int = 0  # allocator: the job's seed seeds its networks and episodes

    def __post_init__(self) -> None:
        if self.kind != "allocator" and self.seed:
            raise ValueError("only the allocator's training is per seed")

    @property
    def settings(self) -> str:
        """'' for the default settings (the folder names of earlier benches), else a tag."""
        if self.kind == "allocator":
            extra = "".join(f"-{k}{v}" for k, v in self.training)
            extra += f".s{self.seed}" if self.seed else ""
            return f".allocator-{self.policy}{extra}"
        if (self.policy, self.short_hold_penalty) == ("mlp", 1.0):
            return ""
        return f".{self.policy}-shp{self.short_hold_penalty:g}"

    @property
    def id(self) -> str:
        return f"agents.{self.period.name}.{self.universe.name}{self.settings}"


def agents_dir(out: Path, task: AgentsTask) -> Path:
    return out / "agents" / f"{task.period.name}.{task.universe.name}{task.settings}"


def run_allocator(task: AgentsTask, spec: R.BenchSpec) -> dict[str, Any]:
    """Train the period's allocators walk-forward (each window on the ALLOC_TRAIN before it,
    a new one every ALLOC_RETRAIN); writes ``done.json`` like :func:`run_agents`."""
    from learning.agents.alloc_train import train_allocator
    from learning.core.ftconfig import load_ft_config, store_for
    from learning.strategy.config import load_learning_config

    folder = agents_dir(spec.out, task)
    done = folder / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    _check_data(spec)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    user = folder / "user_data"
    user.mkdir()
    overlay = folder / "overlay.json"
    write_json_atomic(overlay, {"user_data_dir": str(user), "timeframe": spec.timeframe,
                                "exchange": {"pair_whitelist": list(task.universe.pairs)},
                                "advanced_learning": {"allocator": {"network": task.policy}}})
    ft = load_ft_config([*map(str, spec.configs), str(overlay)])
    cfg = load_learning_config(ft)
    with open(folder / "train.log", "w") as log, contextlib.redirect_stdout(log):
        paths = train_allocator(ft, cfg, store_for(ft, "backtest", cfg), spec.datadir,
                                task.period.timerange, ALLOC_TRAIN, ALLOC_RETRAIN,
                                512 if spec.quick else ALLOC_STEPS, task.policy,
                                regimes=not spec.quick, seed=task.seed,
                                training=dict(task.training))
    result = {"status": "ok" if paths else "failed",
              "agents": str(user / "learning" / "default" / "backtest") if paths else None,
              "note": f"{len(paths)} allocator(s) trained walk-forward ({task.policy}; "
                      f"{ALLOC_TRAIN} before each {ALLOC_RETRAIN} window, {ALLOC_STEPS} PPO "
                      f"steps each, seed {task.seed})" if paths
                      else "no allocator trained (too little history)"}
    write_json_atomic(done, result)
    return result


def job_dir(out: Path, job: Job) -> Path:
    return out / "jobs" / job.id


def write_json_atomic(path: Path, data: Any) -> None:
    """Temp file in the same folder, fsync, rename: a reader sees the old file or the new one,
    never half of one (a bench killed mid-write leaves no valid result)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def log_tail(path: str | Path | None, lines: int = 15) -> str:
    if not path or not Path(path).is_file():
        return ""
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def _check_data(spec: R.BenchSpec) -> None:
    if not spec.datadir.is_dir():
        raise LearningError(f"data dir {spec.datadir} does not exist on worker "
                            f"{socket.gethostname()} (put it on shared storage at the same path, "
                            "or ship it with the jobs)")


def _job_spec(spec: R.BenchSpec, universe: Universe, period: Period, out: Path) -> R.BenchSpec:
    return dataclasses.replace(spec, pairs=universe.pairs, timerange=period.timerange, out=out)


# ----------------------------------------------------------------------------------------------
# Agents


def run_agents(task: AgentsTask, spec: R.BenchSpec) -> dict[str, Any]:
    """Train the agents on the AGENT_TRAIN_DAYS before the period (walk-forward: they never see
    it); writes ``done.json`` with the folder and a note, or only the note when there is too
    little history."""
    from learning.agents.offline import train_agents_offline
    from learning.core.ftconfig import load_ft_config, store_for
    from learning.strategy.config import load_learning_config

    folder = agents_dir(spec.out, task)
    done = folder / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    _check_data(spec)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    start, _ = R.parse_timerange(task.period.timerange)
    info = R.data_info(spec.datadir, task.universe.pairs, spec.timeframe)
    first = max(info.first, start - pd.Timedelta(days=AGENT_TRAIN_DAYS))
    if start - first < pd.Timedelta(days=14):
        result = {"status": "ok", "agents": None,
                  "note": f"PPO agents not trained: fewer than 14 days of candles before "
                          f"{start:%Y-%m-%d}; those variants size by rules"}
        write_json_atomic(done, result)
        return result
    user = folder / "user_data"
    user.mkdir()
    overlay = folder / "overlay.json"
    write_json_atomic(overlay, {"user_data_dir": str(user), "timeframe": spec.timeframe,
                                "exchange": {"pair_whitelist": list(task.universe.pairs)},
                                "advanced_learning": {"sizing": {
                                    "ppo_policy": task.policy,
                                    "ppo_short_hold_penalty": task.short_hold_penalty}}})
    ft = load_ft_config([*map(str, spec.configs), str(overlay)])
    cfg = load_learning_config(ft)
    with open(folder / "train.log", "w") as log, contextlib.redirect_stdout(log):
        train_agents_offline(ft, cfg, store_for(ft, "backtest", cfg), spec.datadir,
                             f"{first:%Y%m%d}-{start:%Y%m%d}", 1024 if spec.quick else None,
                             regimes=not spec.quick)
    result = {"status": "ok", "agents": str(user / "learning" / "default" / "backtest"),
              "note": f"PPO agents trained on {first:%Y-%m-%d} .. {start:%Y-%m-%d} (before the "
                      "evaluated range)"}
    write_json_atomic(done, result)
    return result


# ----------------------------------------------------------------------------------------------
# Jobs


def _result_json(job: Job, res: R.VariantResult, elapsed: float) -> dict[str, Any]:
    return {"schema": RESULT_SCHEMA, "job": job.id, "cell": job.cell, "identity": job.identity(),
            "status": res.status, "reason": res.reason, "notes": res.notes,
            "command": res.command, "log": res.log, "metrics": res.metrics, "cost": res.cost,
            "freqtrade": res.freqtrade, "by_regime": res.by_regime, "exits": res.exits,
            "duplicate_of": res.duplicate_of, "elapsed_s": round(elapsed, 1),
            "diagnostics": res.diagnostics,
            "host": socket.gethostname()}


def run_job(job: Job, spec: R.BenchSpec, inputs: R.JobInputs | None = None,
            duplicate_of: str | None = None) -> dict[str, Any]:
    """Run one job in its folder against its own local exchange; write ``equity.feather`` and
    then ``result.json`` (atomically). Never raises for a failed run: the result says why."""
    from learning.exchange.localrun import local_exchange

    inputs = inputs or R.JobInputs()
    folder = job_dir(spec.out, job)
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted earlier attempt
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    res = R.VariantResult(job.variant, cell=job.cell, job_id=job.id, duplicate_of=duplicate_of)
    if duplicate_of:
        res.notes.append(f"same configuration as {duplicate_of} (the component is already off "
                         "there): this ablation measures nothing")
    try:
        _check_data(spec)
        jspec = _job_spec(spec, job.universe, job.period, folder)
        info = R.data_info(spec.datadir, job.universe.pairs, spec.timeframe)
        start, end = R.check_timerange(job.period.timerange, info, job.universe.pairs,
                                       spec.timeframe, spec.datadir)
        closes, opens = R.closes_frame(spec.datadir, job.universe.pairs, spec.timeframe, start,
                                       end)
        strategy_dir = R.prepare_strategy_dir(folder, [job.variant])
        if job.variant.builtin:
            ran = R.run_variant(job.variant, jspec, Path(), strategy_dir, start, info, closes,
                                opens, folder / "run", inputs, job.seed)
        else:
            with local_exchange(spec.datadir, folder / "exchange") as ex:
                ran = R.run_variant(job.variant, jspec, ex.overlay, strategy_dir, start, info,
                                    closes, opens, folder / "run", inputs, job.seed)
        ran.notes = res.notes + ran.notes
        ran.cell, ran.job_id, ran.duplicate_of = res.cell, res.job_id, res.duplicate_of
        res = ran
        if res.book is not None:
            labels, _ = R.regime_labels(spec.datadir, job.universe.pairs, spec.timeframe)
            step = pd.Timedelta(minutes=R.timeframe_to_minutes(spec.timeframe))
            res.by_regime = M.returns_by_regime(res.book.equity, labels, step)
            pd.DataFrame({"date": res.book.equity.index, "equity": res.book.equity.to_numpy(),
                          "in_market": res.book.in_market.to_numpy()}).to_feather(
                folder / EQUITY)
    except Exception as err:  # noqa: BLE001 - one job's crash must not end the bench
        res.status, res.reason = "failed", f"{type(err).__name__}: {err}"
        (folder / "job-error.log").write_text(traceback.format_exc())
        res.log = res.log or str(folder / "job-error.log")
    data = _result_json(job, res, time.perf_counter() - t0)
    data["fees_total"] = res.book.fees if res.book is not None else None
    write_json_atomic(folder / RESULT, clean(data))
    return summary(data)


def summary(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the driver needs to know right away (the rest is in the folder)."""
    return {"job": data["job"], "status": data["status"], "reason": data["reason"],
            "log_tail": log_tail(data.get("log")) if data["status"] == "failed" else "",
            "total_return": (data.get("metrics") or {}).get("total_return"),
            "trades": (data.get("metrics") or {}).get("trades")}


def read_result(folder: Path, job: Job) -> dict[str, Any] | None:
    """The job's finished result, or None when absent, unreadable or from another job."""
    try:
        data = json.loads((folder / RESULT).read_text())
    except (OSError, ValueError):
        return None
    if data.get("schema") != RESULT_SCHEMA or data.get("identity") != json.loads(
            json.dumps(job.identity(), default=str)):
        return None
    return data


def load_variant_result(folder: Path, job: Job, data: Mapping[str, Any]) -> R.VariantResult:
    """A :class:`~learning.bench.runner.VariantResult` back from a job folder."""
    def num(x: Any) -> Any:
        if x is None:
            return float("nan")
        if x in ("inf", "-inf"):
            return float(x)
        return x

    res = R.VariantResult(
        job.variant, status=data["status"], reason=data.get("reason", ""),
        notes=list(data.get("notes") or []), command=data.get("command"), log=data.get("log"),
        metrics={k: num(v) for k, v in (data.get("metrics") or {}).items()},
        cost={k: num(v) for k, v in (data.get("cost") or {}).items()},
        freqtrade=dict(data.get("freqtrade") or {}), by_regime=dict(data.get("by_regime") or {}),
        exits=dict(data.get("exits") or {}), duplicate_of=data.get("duplicate_of"),
        cell=job.cell, job_id=job.id, diagnostics=dict(data.get("diagnostics") or {}))
    if res.exits.get("median_hold_minutes") is None and res.exits:
        res.exits["median_hold_minutes"] = float("nan")
    eq = folder / EQUITY
    if res.status == "ok" and eq.is_file():
        df = pd.read_feather(eq)
        idx = pd.DatetimeIndex(pd.to_datetime(df["date"], utc=True))
        res.book = M.Book(pd.Series(df["equity"].to_numpy(dtype="float64"), index=idx),
                          pd.Series(df["in_market"].to_numpy(dtype=bool), index=idx),
                          float(num(data.get("fees_total")) or 0.0))
    return res


def execute(task: Job | AgentsTask, spec: R.BenchSpec, inputs: R.JobInputs | None = None,
            duplicate_of: str | None = None) -> dict[str, Any]:
    """The worker entry point (pickled to pool processes and Ray workers)."""
    if isinstance(task, AgentsTask) and task.kind == "allocator":
        try:
            return run_allocator(task, spec)
        except Exception as err:  # noqa: BLE001 - reported; the jobs then hold cash
            return {"status": "failed", "agents": None,
                    "note": f"allocators could not be trained ({type(err).__name__}: {err}); "
                            "those variants hold cash"}
    if isinstance(task, AgentsTask):
        try:
            return run_agents(task, spec)
        except Exception as err:  # noqa: BLE001 - reported, the jobs then size by rules
            return {"status": "failed", "agents": None,
                    "note": f"PPO agents could not be trained ({type(err).__name__}: {err}); "
                            "those variants size by rules"}
    return run_job(task, spec, inputs, duplicate_of)
