"""Run the unmodified freqtrade CLI against the local exchange (tests, demo and benchmarks).

``local_exchange()`` starts the server in a background thread of this process and writes the
config overlay; ``freqtrade_backtest()`` runs ``freqtrade backtesting`` as a subprocess with that
overlay and returns the parsed result file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learning.core.errors import LearningError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ExchangeHandle:
    url: str
    overlay: Path


@contextlib.contextmanager
def local_exchange(datadir: str | Path, workdir: str | Path,
                   now_fn: Any = None) -> Iterator[ExchangeHandle]:
    """Serve ``datadir`` on a free 127.0.0.1 port for the duration of the ``with`` block."""
    from learning.exchange.api import LocalExchange
    from learning.exchange.server import serve, write_overlay

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    exchange = LocalExchange(datadir, now_fn=now_fn) if now_fn else LocalExchange(datadir)
    with serve(exchange, "127.0.0.1", 0) as server:
        overlay = write_overlay(workdir / "localexchange-overlay.json", server.url,
                                workdir / "localexchange-data")
        yield ExchangeHandle(server.url, overlay)


def freqtrade_command() -> list[str]:
    """freqtrade's CLI from the running interpreter's environment."""
    exe = Path(sys.executable).with_name("freqtrade")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "freqtrade"]


@dataclass(frozen=True)
class BacktestRun:
    returncode: int
    output: str
    result_dir: Path
    command: tuple[str, ...]

    def stats(self, strategy: str) -> dict[str, Any]:
        from freqtrade.data.btanalysis import load_backtest_stats

        stats = load_backtest_stats(self.result_dir)
        return stats["strategy"][strategy]

    def trades(self, strategy: str):
        from freqtrade.data.btanalysis import load_backtest_data

        return load_backtest_data(self.result_dir, strategy)


def freqtrade_backtest(*, configs: Sequence[str | Path], overlay: str | Path,
                       datadir: str | Path, timerange: str, result_dir: str | Path,
                       strategy: str = "AdvancedLearning", fee: float | None = 0.001,
                       extra: Sequence[str] = (), timeout: float | None = None,
                       cwd: str | Path = REPO_ROOT, echo: bool = False) -> BacktestRun:
    """``freqtrade backtesting`` through the CLI; ``echo`` streams its output to our stdout."""
    result_dir = Path(result_dir)
    result_dir.mkdir(parents=True, exist_ok=True)
    cmd = [*freqtrade_command(), "backtesting"]
    for c in [*configs, overlay]:
        cmd += ["--config", str(c)]
    cmd += ["--strategy", strategy, "--datadir", str(datadir), "--timerange", timerange,
            "--backtest-directory", str(result_dir), "--export", "trades", "--cache", "none"]
    if fee is not None:
        cmd += ["--fee", str(fee)]
    cmd += list(extra)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if echo:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
        proc.wait(timeout=timeout)
        return BacktestRun(proc.returncode, "".join(lines), result_dir, tuple(cmd))
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return BacktestRun(done.returncode, done.stdout + done.stderr, result_dir, tuple(cmd))


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def require_ok(run: BacktestRun) -> BacktestRun:
    if run.returncode != 0:
        tail = "\n".join(run.output.splitlines()[-30:])
        raise LearningError(f"freqtrade exited with {run.returncode}:\n{tail}")
    return run
