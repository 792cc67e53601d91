"""Running the bench's jobs as Ray tasks on an existing cluster (``--ray ADDRESS|auto``).

Ray is an optional extra (``pip install '.[distributed]'``). Each task is the same
:func:`learning.bench.jobs.execute` the process pool runs, on a worker node, in a scratch folder
of that node; its job folder comes back to the driver as a tar archive and lands in the same
layout as a local run. The candle files are either shipped with the tasks (put once in Ray's
object store, unpacked once per node) or, with ``--ray-shared-data``, read from the same path on
every node (shared storage); a node without them fails its jobs with the path named.

Connecting: a ``host:port`` that does not answer a TCP connection within a few seconds is
refused before Ray is asked (Ray itself retries for minutes), so nothing is started.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import io
import os
import shutil
import socket
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from learning.bench import jobs as J
from learning.bench import runner as R
from learning.bench.grid import Job, file_digest
from learning.core.errors import ConfigError

CONNECT_TIMEOUT_S = 3.0


def _tar(folder: Path, arcname: str = ".") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buf.getvalue()


def _untar(blob: bytes, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")


def check_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse an address whose port does not accept a TCP connection (``auto`` and Ray
    Client ``ray://`` addresses included: the host and port are checked the same way)."""
    if address == "auto":
        return  # Ray finds a local cluster from its own files and says so at once if none
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--ray {address!r}: use HOST:PORT (e.g. 10.0.0.5:6379), "
                          "ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise ConfigError(f"--ray {address}: no Ray cluster answers there ({err}); start one "
                          "with `ray start --head` and pass the address it prints") from None


def _data_files(datadir: Path) -> list[Path]:
    return sorted(datadir.glob("*.feather")) + sorted(datadir.glob("*.json"))


def pack_data(datadir: Path) -> tuple[str, bytes]:
    """The candle folder as a tar archive and a content key (to unpack it once per node)."""
    h = hashlib.sha256()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:  # feather files are compressed already
        for f in _data_files(datadir):
            h.update(f.name.encode())
            h.update(file_digest(f).encode())
            tar.add(f, arcname=f.name)
    return h.hexdigest()[:16], buf.getvalue()


def _node_data(key: str, blob: bytes) -> Path:
    """Unpack shipped candles once per node (an atomic rename publishes them)."""
    base = Path(tempfile.gettempdir()) / "advl-bench-data"
    final = base / key
    if not final.is_dir():
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=base))
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
            tar.extractall(tmp, filter="data")
        with contextlib.suppress(OSError):  # another task of this node published it first
            os.replace(tmp, final)
    return final


def remote_execute(task: Job | J.AgentsTask, spec: R.BenchSpec, inputs: dict[str, Any],
                   duplicate_of: str | None, data: tuple[str, bytes] | None
                   ) -> tuple[dict[str, Any], bytes, str]:
    """On a worker node: run the task in a scratch copy of the output layout, return its
    summary, its folder as a tar archive and the scratch root (to rewrite paths)."""
    scratch = Path(tempfile.mkdtemp(prefix="advl-bench-"))
    if data is not None:
        spec = dataclasses.replace(spec, datadir=_node_data(*data))
    spec = dataclasses.replace(spec, out=scratch)
    agents = models = None
    if inputs.get("agents"):
        _untar(inputs["agents"], scratch / "inputs" / "agents")
        agents = scratch / "inputs" / "agents"
    if inputs.get("models"):
        _untar(inputs["models"], scratch / "inputs" / "models")
        models = scratch / "inputs" / "models"
    local = R.JobInputs(agents, inputs.get("agents_note", ""), models,
                        inputs.get("models_note", ""))
    try:
        summary = J.execute(task, spec, local, duplicate_of)
        folder = (J.agents_dir(scratch, task) if isinstance(task, J.AgentsTask)
                  else J.job_dir(scratch, task))
        return summary, _tar(folder), str(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class RayBackend:
    """Submits tasks to a Ray cluster; results land in the driver's output folder."""

    def __init__(self, ray: Any, shared_data: bool) -> None:
        self.ray = ray
        self.shared_data = shared_data
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.name = f"Ray ({self.slots} CPUs in the cluster)"
        self._remote = ray.remote(num_cpus=1, max_retries=0)(remote_execute)
        self._data: Any = None
        self._datadir: Path | None = None
        self._refs: list[Any] = []

    @classmethod
    def connect(cls, address: str, *, shared_data: bool = False,
                **init_kwargs: Any) -> RayBackend:
        """Connect to the cluster at ``address`` (``ray.init``); ``init_kwargs`` start a
        local instance instead when ``address`` is None (tests: ``num_cpus=2``)."""
        try:
            import ray
        except ImportError as err:
            raise ConfigError("--ray needs Ray: pip install 'freqtrade-advanced-learning"
                              "[distributed]' (or pip install 'ray[default]')") from err
        if address is not None:
            check_address(address)
        try:
            ray.init(address=address, log_to_driver=False, **init_kwargs)
        except ConnectionError as err:
            raise ConfigError(f"--ray {address}: {err}") from None
        return cls(ray, shared_data)

    def submit(self, task: Job | J.AgentsTask, spec: R.BenchSpec, inputs: R.JobInputs,
               duplicate_of: str | None) -> cf.Future:
        data = None
        if not self.shared_data:
            if self._data is None or self._datadir != spec.datadir:
                self._data, self._datadir = self.ray.put(pack_data(spec.datadir)), spec.datadir
            data = self._data
        shipped: dict[str, Any] = {"agents_note": inputs.agents_note,
                                   "models_note": inputs.models_note}
        if inputs.agents is not None:
            shipped["agents"] = _tar(inputs.agents)
        if inputs.models is not None:
            shipped["models"] = _tar(inputs.models)
        ref = self._remote.remote(task, spec, shipped, duplicate_of, data)
        self._refs.append(ref)
        out: cf.Future = cf.Future()

        def land(done: cf.Future) -> None:
            try:
                summary, blob, scratch = done.result()
                dest = (J.agents_dir(spec.out, task) if isinstance(task, J.AgentsTask)
                        else J.job_dir(spec.out, task))
                _untar(blob, dest)
                _rewrite_paths(dest, scratch, str(spec.out))
                if isinstance(task, J.AgentsTask) and summary.get("agents"):
                    summary = {**summary, "agents": summary["agents"].replace(
                        scratch, str(spec.out))}
                out.set_result(summary)
            except BaseException as err:  # noqa: BLE001 - handed to the driver
                out.set_exception(err)

        ref.future().add_done_callback(land)
        return out

    def close(self, cancel: bool) -> None:
        if cancel:
            for ref in self._refs:
                with contextlib.suppress(Exception):  # finished already
                    self.ray.cancel(ref, force=True)
        self._refs.clear()

    def shutdown(self) -> None:
        self.ray.shutdown()


def _rewrite_paths(folder: Path, old: str, new: str) -> None:
    """Paths recorded on the worker (logs, commands) point into the driver's folder."""
    for name in (J.RESULT, "done.json"):
        f = folder / name
        if f.is_file():
            text = f.read_text()
            if old in text:
                tmp = f.with_name(f".{name}.tmp")
                tmp.write_text(text.replace(old, new))
                os.replace(tmp, f)
