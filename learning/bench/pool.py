"""The bench driver: plans the grid, runs its tasks on a backend (this process, a local process
pool or a Ray cluster), shows progress, and merges the finished jobs into one result.

Order and dependencies: a job that sizes with the Tier 3 agents waits for the agents of its
(universe, period); of the jobs with the same FreqAI key (:func:`learning.bench.grid.freqai_key`)
the first trains and the others wait for it and start from its trained windows, kept in the
FreqAI cache (``--freqai-cache``, default ``<out>/freqai-cache``) for later benches too.
With more than one slot, the windows of a key are trained in parallel first (:func:`window_jobs`:
FreqAI trains every pair's windows on that pair's candles alone, so one freqtrade run per group
of pairs trains exactly the windows the whole run would), merged into the cache, and every job
of the key then starts from them.
At most as many tasks are in flight as the backend has slots, so a killed bench loses at most
those: every finished job has its atomic ``result.json``, and ``--resume`` skips it.

One bench writes an output folder at a time: the driver holds an exclusive ``flock`` on
``<out>/.lock`` while it runs (the kernel releases it when the process dies, even by SIGKILL).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import fcntl
import json
import multiprocessing as mp
import os
import shutil
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from learning.bench import jobs as J
from learning.bench import runner as R
from learning.bench.grid import Job, Period, Universe, expand, freqai_key
from learning.bench.variants import Variant
from learning.core.errors import ConfigError, LearningError
from learning.exchange.localrun import REPO_ROOT

LOCK = ".lock"
MANIFEST = "bench.json"


# ----------------------------------------------------------------------------------------------
# Output folder lock


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold ``<out>/.lock`` exclusively; a second bench on the same folder refuses at once."""
    out.mkdir(parents=True, exist_ok=True)
    fh = open(out / LOCK, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown process"
            raise ConfigError(f"{out} is being written by another bench ({holder}); wait for it "
                              "to finish or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, started {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M:%S} "
                 "UTC\n")
        fh.flush()
        yield
    finally:
        fh.close()  # releases the flock


# ----------------------------------------------------------------------------------------------
# Backends


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies, so a killed bench leaves no worker
    (and, through the launcher, no freqtrade) running into its folder."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


#: Thread pools of numerical libraries (torch's intra-op threads follow OMP_NUM_THREADS).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _pool_worker_init(threads: int = 1) -> None:
    die_with_parent()
    # Each worker's freqtrade (torch, numpy) gets its share of the cores: with every worker's
    # torch on all cores, OpenMP threads spin against each other and two TSA-MAE runs side by
    # side took 4x the time of one. A value the user set is kept. (Ray sets these per task.)
    for var in THREAD_VARS:
        os.environ.setdefault(var, str(threads))
    # Ctrl-C reaches the whole process group: the driver decides, workers just stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Backend(Protocol):
    slots: int
    name: str

    def submit(self, task: Job | J.AgentsTask, spec: R.BenchSpec, inputs: R.JobInputs,
               duplicate_of: str | None) -> cf.Future: ...

    def close(self, cancel: bool) -> None: ...


class SerialBackend:
    """Runs each task in this process when submitted (``--workers 1``)."""

    name = "this process"
    slots = 1

    def submit(self, task, spec, inputs, duplicate_of) -> cf.Future:  # noqa: ANN001
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(J.execute(task, spec, inputs, duplicate_of))
        except BaseException as err:  # KeyboardInterrupt included: the driver re-raises it
            fut.set_exception(err)
        return fut

    def close(self, cancel: bool) -> None:
        pass


class ProcessBackend:
    """A local process pool (forkserver: workers do not inherit the driver's threads)."""

    def __init__(self, workers: int) -> None:
        self.slots = workers
        self.name = f"{workers} local worker processes"
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("forkserver"),
                                           initializer=_pool_worker_init,
                                           initargs=(self.threads,))

    def submit(self, task, spec, inputs, duplicate_of) -> cf.Future:  # noqa: ANN001
        return self.pool.submit(J.execute, task, spec, inputs, duplicate_of)

    def close(self, cancel: bool) -> None:
        if cancel:
            procs = list((self.pool._processes or {}).values())  # noqa: SLF001
            self.pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:  # their freqtrade runs die with them (die_with_parent)
                with contextlib.suppress(Exception):
                    p.kill()
        else:
            self.pool.shutdown(wait=True)


# ----------------------------------------------------------------------------------------------
# Planning


@dataclass
class Planned:
    job: Job
    duplicate_of: str | None = None
    agents: J.AgentsTask | None = None
    freqai_key: str | None = None
    identifier: str = ""
    continual: bool = False  # FreqAI continual_learning: a window starts from the one before


def _code_files() -> list[Path]:
    """Source whose change must invalidate shared FreqAI windows: the package, the plug-ins."""
    pkg = Path(R.__file__).resolve().parents[1]
    return [*pkg.rglob("*.py"), *(REPO_ROOT / "strategies").glob("*.py"),
            *(REPO_ROOT / "freqai_models").glob("*.py"), *(pkg / "bench" / "assets").glob("*")]


def _data_files(datadir: Path, pairs: Sequence[str], section: dict[str, Any]) -> list[Path]:
    corr = section.get("feature_parameters", {}).get("include_corr_pairlist", [])
    names = {p.replace("/", "_") for p in [*pairs, *corr, "BTC/USDT"]}
    return [f for f in datadir.glob("*.feather") if f.name.split("-")[0] in names]


def plan_jobs(spec: R.BenchSpec, jobs: Sequence[Job], scratch: Path) -> list[Planned]:
    """What each job depends on and shares, from the same pre-flight the job runs itself
    (:func:`learning.bench.runner.prepare`, a fraction of a second per job)."""
    out: list[Planned] = []
    full_sig: dict[str, Any] = {}
    code = _code_files() if spec.share_predictions else []
    infos: dict[tuple[str, ...], R.DataInfo] = {}
    for job in jobs:
        p = Planned(job)
        out.append(p)
        if job.variant.builtin:
            continue
        pairs = job.universe.pairs
        info = infos.get(pairs) or infos.setdefault(
            pairs, R.data_info(spec.datadir, pairs, spec.timeframe))
        start, _ = R.parse_timerange(job.period.timerange)
        jspec = J._job_spec(spec, job.universe, job.period, scratch)
        plan = R.prepare(job.variant, jspec, scratch / job.id / "user_data", scratch, start,
                         info, job.seed)
        if plan.status != "run":
            continue
        freqai = plan.overlay.get("freqai") if plan.freqaimodel else None
        if plan.learning is not None:
            sig = (plan.learning, plan.freqaimodel, json.dumps(freqai, sort_keys=True))
            if job.variant.kind == "full":
                full_sig[job.cell] = sig
            elif sig == full_sig.get(job.cell):
                p.duplicate_of = "full"
            if plan.learning.sizing.agent == "ppo":
                sizing = plan.learning.sizing
                p.agents = J.AgentsTask(job.universe, job.period, sizing.ppo_policy,
                                        sizing.ppo_short_hold_penalty)
            elif plan.learning.sizing.agent == "allocator" and \
                    plan.learning.allocator.policy == "ppo":
                p.agents = J.AgentsTask(
                    job.universe, job.period, plan.learning.allocator.network,
                    kind="allocator",
                    training=tuple(sorted(job.variant.allocator_training.items())),
                    seed=job.seed)
        if freqai and spec.share_predictions:
            sources = [*code, *(R._strategy_source(f) for f in job.variant.strategy_files)]
            p.freqai_key = freqai_key(
                strategy=job.variant.strategy, strategy_sources=sources,
                freqaimodel=str(plan.freqaimodel), section=freqai, pairs=pairs,
                timeframe=spec.timeframe, timerange=job.period.timerange,
                data_files=_data_files(spec.datadir, pairs, freqai))
            p.identifier = str(freqai.get("identifier", ""))
            p.continual = bool(freqai.get("continual_learning", False))
    shutil.rmtree(scratch, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------------------------
# The run


@dataclass
class GridState:
    todo: list[Planned]
    done: dict[str, dict[str, Any]] = field(default_factory=dict)  # task id -> summary
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)  # agents id -> result
    producing: dict[str, str] = field(default_factory=dict)  # freqai key -> producer job id
    windows: dict[str, WindowSplit] = field(default_factory=dict)  # freqai key -> its split
    unsplit: set[str] = field(default_factory=set)  # keys whose window jobs failed


@dataclass
class WindowSplit:
    """A key's windows being trained by window jobs (:func:`window_jobs`) for ``owner``."""

    owner: str  # the job id that waits for them
    models: list[Path]  # the window jobs' models folders, merged once all are done
    results: dict[str, dict[str, Any] | None]  # window job id -> its summary once finished


#: Window jobs are named after their job's universe: ``<universe>-windows<i>of<k>``.
WINDOWS = "-windows"


def window_jobs(job: Job, slots: int) -> list[Job]:
    """The job split into one job per group of its pairs (at most ``slots`` groups, pairs dealt
    round-robin), each training its pairs' FreqAI windows; [] when there is nothing to split.

    Why this is exact: FreqAI trains and predicts each pair's windows in that pair's own
    ``populate_indicators``, on features from that pair's candles and its ``include_corr_pairlist``
    (never the rest of the whitelist), with the same window boundaries (they depend on the
    timerange only) and the model's fixed seeds, and saves them per pair and window
    (``cb_<coin>_<window end>``). A run on a group of pairs therefore writes the same files as
    the whole run would for those pairs; the whole run then reads them back."""
    pairs = list(job.universe.pairs)
    k = min(slots, len(pairs))
    if k < 2:
        return []
    return [Job(job.variant, job.seed,
                Universe(f"{job.universe.name}{WINDOWS}{i + 1}of{k}", tuple(pairs[i::k])),
                job.period) for i in range(k)]


def merge_models(folders: Sequence[Path], dest: Path) -> None:
    """One FreqAI models folder from the window jobs' folders: their per-window files are
    disjoint (named by pair), ``pair_dictionary.json`` is the union of theirs."""
    dest.mkdir(parents=True)
    pair_dict: dict[str, Any] = {}
    for folder in folders:
        for item in sorted(folder.iterdir()):
            target = dest / item.name
            if item.name == "pair_dictionary.json":
                pair_dict.update(json.loads(item.read_text()))
            elif item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            elif not target.exists():
                shutil.copy2(item, target)
    if pair_dict:
        (dest / "pair_dictionary.json").write_text(json.dumps(pair_dict))


def _publish(cache: Path, key: str, models: Path | Sequence[Path]) -> None:
    """Keep a producer's trained windows for later jobs (copy, or merge the window jobs'
    folders, then an atomic rename)."""
    final = cache / key
    folders = [models] if isinstance(models, Path) else list(models)
    if final.exists() or not all(f.is_dir() for f in folders):
        return
    tmp = cache / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    merge_models(folders, tmp / "models")
    try:
        os.replace(tmp, final)
    except OSError:  # another bench published it first
        shutil.rmtree(tmp, ignore_errors=True)


def _progress_bar(enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]bench"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled,
                    transient=False)


def run_bench(spec: R.BenchSpec, variants: Sequence[Variant], now: pd.Timestamp, *,
             progress: Callable[[str], None] = print, argv: Sequence[str] = (),
             seeds: Sequence[int] = (0,), universes: Sequence[Universe] | None = None,
             periods: Sequence[Period] | None = None, workers: int = 1,
             backend: Backend | None = None, resume: bool = False,
             freqai_cache: Path | None = None, show_bar: bool = False) -> R.BenchResult:
    """Run every job of the grid that has no finished result yet (all of them without
    ``resume``) and merge all finished jobs into a :class:`~learning.bench.runner.BenchResult`.

    Without grid arguments: the one-cell bench of ``spec.pairs`` over ``spec.timerange``,
    seed 0, in this process (``workers=1``).
    """
    universes = list(universes or [Universe("main", spec.pairs)])
    periods = list(periods or [Period("main", spec.timerange)])
    for u in universes:
        info = R.data_info(spec.datadir, u.pairs, spec.timeframe)
        for p in periods:
            R.check_timerange(p.timerange, info, u.pairs, spec.timeframe, spec.datadir)
    jobs = expand(variants, seeds, universes, periods)
    cache = (freqai_cache or spec.out / "freqai-cache").resolve()
    with output_lock(spec.out):
        created, resumed = now, []
        if resume:  # the bench keeps the date it was started; each resume is added to it
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                saved = json.loads((spec.out / MANIFEST).read_text())
                created = pd.Timestamp(saved["created"])
                resumed = [*saved.get("resumed", []), str(now)]
        J.write_json_atomic(spec.out / MANIFEST, {
            "argv": list(argv), "created": str(created),
            **({"resumed": resumed} if resumed else {}), "jobs": [j.id for j in jobs]})
        planned = plan_jobs(spec, jobs, spec.out / ".plan")
        state = GridState([])
        for p in planned:
            old = J.read_result(J.job_dir(spec.out, p.job), p.job) if resume else None
            if old is not None:
                state.done[p.job.id] = J.summary(old)
            else:
                state.todo.append(p)
        skipped = len(planned) - len(state.todo)
        if backend is None:
            backend = SerialBackend() if workers <= 1 else ProcessBackend(workers)
        progress(f"{len(jobs)} jobs ({len(variants)} variants x {len(seeds)} seeds x "
                 f"{len(universes)} universes x {len(periods)} periods)"
                 + (f", {skipped} already finished" if skipped else "")
                 + f", on {backend.name}")
        try:
            _schedule(state, spec, backend, cache, progress, show_bar)
        except BaseException:
            backend.close(cancel=True)
            raise
        backend.close(cancel=False)
    results = []
    for job in jobs:
        folder = J.job_dir(spec.out, job)
        data = J.read_result(folder, job)
        if data is not None:
            results.append(J.load_variant_result(folder, job, data))
    R.add_deflated_sharpe(results)
    first = universes[0]
    info = R.data_info(spec.datadir, first.pairs, spec.timeframe)
    _, regime_source = R.regime_labels(spec.datadir, first.pairs, spec.timeframe)
    return R.BenchResult(spec, info, regime_source, results, created,
                         pd.Timestamp.now(tz="UTC"),
                         list(argv), list(dict.fromkeys(j.cell for j in jobs)))


def _schedule(state: GridState, spec: R.BenchSpec, backend: Backend, cache: Path,
              progress: Callable[[str], None], show_bar: bool) -> None:
    waiting = list(state.todo)
    running: dict[cf.Future, Planned | J.AgentsTask | tuple[str, Job]] = {}
    agents_wanted = list(dict.fromkeys(p.agents for p in waiting if p.agents))
    windows_wanted: list[tuple[str, Job]] = []  # (freqai key, window job)
    total = len(waiting)
    finished = 0
    with _progress_bar(show_bar) as bar:
        task_id = bar.add_task("jobs", total=total, info="")

        def split(p: Planned) -> bool:
            """Train the key's windows in parallel first (see :func:`window_jobs`)."""
            key = str(p.freqai_key)
            if backend.slots < 2 or p.continual or key in state.unsplit:
                return False
            wjobs = window_jobs(p.job, backend.slots)
            if not wjobs:
                return False
            state.producing[key] = f"windows of {p.job.id}"
            split_ = state.windows[key] = WindowSplit(
                p.job.id, [J.job_dir(spec.out, w) / "run" / "user_data" / "models" / p.identifier
                           for w in wjobs], {})
            for w in wjobs:
                old = J.read_result(J.job_dir(spec.out, w), w)  # --resume: finished ones stay
                if old is not None and old.get("status") == "ok":
                    split_.results[w.id] = J.summary(old)
                else:
                    split_.results[w.id] = None
                    windows_wanted.append((key, w))
            progress(f"windows {p.job.id}: training its FreqAI windows in {len(wjobs)} "
                     "parallel runs, one per group of pairs: " + "; ".join(
                         ", ".join(w.universe.pairs) for w in wjobs))
            nonlocal total
            total += len(wjobs)
            bar.update(task_id, total=total)
            windows_done(key)
            return True

        def windows_done(key: str) -> None:
            """All of the key's window jobs finished: publish their merged windows, or let the
            job train them itself when one failed."""
            split_ = state.windows[key]
            if any(v is None for v in split_.results.values()):
                return
            if all(v["status"] == "ok" for v in split_.results.values()):
                _publish(cache, key, split_.models)
            if not (cache / key / "models").is_dir():
                progress(f"windows {split_.owner}: a window job failed; the job trains its "
                         "windows itself")
                state.unsplit.add(key)
                state.producing.pop(key, None)

        def ready(p: Planned) -> R.JobInputs | None:
            """The job's inputs when everything it waits for is there, else None."""
            inputs = R.JobInputs()
            if p.agents is not None:
                got = state.agents.get(p.agents.id)
                if got is None:
                    return None
                agents = J.agents_dir(spec.out, p.agents) / "user_data" / "learning" / \
                    "default" / "backtest" if got.get("agents") else None
                inputs = R.JobInputs(agents=agents, agents_note=got.get("note", ""))
            if p.freqai_key:
                hit = cache / p.freqai_key / "models"
                producer = state.producing.get(p.freqai_key)
                if hit.is_dir():
                    split_ = state.windows.get(p.freqai_key)
                    how = (f"trained in {len(split_.models)} parallel runs (one per group of "
                           "pairs) and reused" if split_ else "reused from the cache")
                    return R.JobInputs(inputs.agents, inputs.agents_note, hit,
                                       f"FreqAI windows and predictions {how} "
                                       f"({p.freqai_key}, same model, features, data and "
                                       "range): cost figures exclude training")
                if producer is not None and producer != p.job.id and \
                        producer not in state.done:
                    return None  # the producer is training these windows right now
                if producer is None and split(p):
                    return ready(p) if (cache / p.freqai_key / "models").is_dir() else None
                state.producing.setdefault(p.freqai_key, p.job.id)
            return inputs

        def submit_windows() -> None:
            """Window jobs go first: every job of their key waits for them."""
            while windows_wanted and len(running) < backend.slots:
                key, w = windows_wanted.pop(0)
                running[backend.submit(w, spec, R.JobInputs(), None)] = (key, w)

        while waiting or running or agents_wanted or windows_wanted:
            while agents_wanted and len(running) < backend.slots:
                a = agents_wanted.pop(0)
                running[backend.submit(a, spec, R.JobInputs(), None)] = a
            for p in list(waiting):
                submit_windows()
                if len(running) >= backend.slots:
                    break
                inputs = ready(p)
                if inputs is None:
                    continue
                waiting.remove(p)
                running[backend.submit(p.job, spec, inputs, p.duplicate_of)] = p
            submit_windows()
            if not running:
                if waiting:  # cannot happen: every dependency is submitted before its waiters
                    raise LearningError(f"bench: {len(waiting)} jobs wait for nothing running")
                break
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                item = running.pop(fut)
                out = fut.result()  # a worker never raises for a failed job; a crash does
                if isinstance(item, J.AgentsTask):
                    state.agents[item.id] = out
                    if out.get("status") != "ok":
                        progress(f"agents {item.id}: {out.get('note')}")
                    continue
                if isinstance(item, tuple):
                    key, w = item
                    state.windows[key].results[w.id] = out
                    finished += 1
                    if out["status"] == "ok":
                        progress(f"windows {w.id}: trained ({', '.join(w.universe.pairs)})")
                    else:
                        _report(out, w, progress)
                    windows_done(key)
                    bar.update(task_id, advance=1, info=w.id)
                    continue
                state.done[item.job.id] = out
                finished += 1
                if out["status"] == "ok" and item.freqai_key:
                    models = J.job_dir(spec.out, item.job) / "run" / "user_data" / "models" / \
                        item.identifier
                    _publish(cache, item.freqai_key, models)
                _report(out, item.job, progress)
                bar.update(task_id, advance=1, info=item.job.id)


def _report(out: dict[str, Any], job: Job, progress: Callable[[str], None]) -> None:
    if out["status"] == "ok":
        tr = out.get("total_return")
        figures = (f"total return {tr:+.2%}, {out.get('trades')} trades"
                   if isinstance(tr, (int, float)) else "")
        progress(f"ok      {job.id}: {figures}")
    else:
        progress(f"{out['status'].upper():7} {job.id}: {out['reason']}")
        if out.get("log_tail"):
            progress("        " + out["log_tail"].replace("\n", "\n        "))


def ensure_new_or_resumed(out: Path, resume: bool) -> None:
    """A folder that already holds a bench is continued only with --resume."""
    if not resume and (out / MANIFEST).is_file():
        raise ConfigError(f"{out} already holds a bench; continue it with --resume {out} or "
                          "choose another --out")
    if resume and not (out / MANIFEST).is_file():
        raise ConfigError(f"--resume {out}: no bench there ({MANIFEST} is missing)")

