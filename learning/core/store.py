"""Persistence of everything the tiers learn, under ``user_data/learning/<identifier>/<runmode>/``.

* JSON documents (small state) and torch ``state_dict`` files (networks), each wrapped with a
  schema version, the time it was saved and metadata (data range, versions).
* Atomic writes: temp file in the same folder, flush + fsync, rename over the old file, fsync the
  folder. The previous good version is kept beside it as ``<name>.prev`` (itself written through
  a synced temp file, so a crash never leaves a torn ``.prev``). Temp files a crash left behind
  are removed by :meth:`StateStore.clean_temp` (the strategy calls it at start).
* A corrupt or unknown-version file is moved aside to ``<name>.corrupt-<stamp>[-<n>]`` (never
  over an earlier quarantined copy) with an error log line, and the previous good version is
  loaded instead. :meth:`StateStore.load_json_checked` also tells the caller which file was used
  and what was wrong, so state that must not silently roll back (the risk guard's) can refuse it.
* A read-only store (``read_only=True``: the CLI's ``status``, ``stats``, ``report``, a policy's
  agent folder) never writes, renames or creates anything: a bad file is reported and skipped.
* One lock per store makes concurrent threads (freqtrade's FreqAI training thread and the bot
  thread) safe; cross-process writers only ever see whole files because of the rename.
* Backtests live in their own ``backtest`` namespace and only accept state whose data ended no
  later than the backtest's first candle (``accept``), so they never load live state or state
  from a later period.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from learning import __version__
from learning.core.errors import StateError

logger = logging.getLogger(__name__)

RUNMODES = ("backtest", "dry_run", "live", "other")
#: Every temp file a write creates ends with this (see :meth:`StateStore.clean_temp`).
TMP_SUFFIX = ".tmp"


def runmode_namespace(runmode: str) -> str:
    """Map freqtrade's RunMode value to a state namespace."""
    value = getattr(runmode, "value", runmode)
    if value in ("backtest", "hyperopt"):
        return "backtest"
    if value in ("dry_run", "live"):
        return value
    return "other"


def state_root(user_data_dir: str | Path, state_dir: str, identifier: str, runmode: str) -> Path:
    """``<user_data_dir>/<state_dir>/<identifier>/<runmode>`` (state_dir may be absolute)."""
    base = Path(state_dir)
    if not base.is_absolute():
        base = Path(user_data_dir) / base
    if not identifier or any(c in identifier for c in "/\\") or identifier in (".", ".."):
        raise StateError(f"invalid identifier {identifier!r}: use a plain folder name")
    return base / identifier / runmode_namespace(runmode)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_synced(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: Path, data: bytes, keep_previous: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temps: list[str] = []
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        temps.append(tmp)
        _write_synced(fd, data)
        if keep_previous and path.exists():
            # The copy is synced before its rename like the file itself: after a power loss the
            # fallback must not be the torn one.
            prev = path.with_name(path.name + ".prev")
            fd2, tmp_prev = tempfile.mkstemp(dir=path.parent, prefix=f".{prev.name}.",
                                             suffix=TMP_SUFFIX)
            temps.append(tmp_prev)
            _write_synced(fd2, path.read_bytes())
            os.replace(tmp_prev, prev)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        for t in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(t)
        raise


@dataclass(frozen=True)
class Loaded:
    """What :meth:`StateStore.load_json_checked` found."""

    data: Any | None
    #: The file ``data`` came from (None: nothing usable was found).
    source: Path | None
    #: One line per file that could not be used (corrupt, unknown schema, missing newest copy).
    problems: tuple[str, ...] = ()

    @property
    def fell_back(self) -> bool:
        """The newest copy was not used (its ``.prev`` was, or nothing)."""
        return bool(self.problems)


class StateStore:
    """Versioned, atomic JSON and torch state under one root folder."""

    def __init__(self, root: str | Path, clock: Callable[[], datetime] | None = None, *,
                 read_only: bool = False) -> None:
        self.root = Path(root)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self.read_only = read_only

    def path(self, name: str, suffix: str = ".json") -> Path:
        if not name or "/" in name or name.startswith("."):
            raise StateError(f"invalid state name {name!r}")
        return self.root / f"{name}{suffix}"

    def _writable(self) -> None:
        if self.read_only:
            raise StateError(f"state folder {self.root} was opened read-only")

    def clean_temp(self, max_age_s: float = 300.0) -> int:
        """Remove temp files older than ``max_age_s`` that a crash left behind; returns how many.

        A write takes milliseconds, so a temp file that old belongs to no live writer.
        """
        if self.read_only or not self.root.is_dir():
            return 0
        removed, limit = 0, time.time() - max_age_s
        for p in self.root.glob(f".*{TMP_SUFFIX}"):
            with contextlib.suppress(OSError):  # another process may remove it first
                if p.stat().st_mtime < limit:
                    p.unlink()
                    removed += 1
        if removed:
            logger.info("learning state %s: removed %d temp file(s) left by an interrupted write",
                        self.root, removed)
        return removed

    # ------------------------------------------------------------------ JSON
    def save_json(self, name: str, data: Any, *, schema: int,
                  meta: Mapping[str, Any] | None = None) -> Path:
        self._writable()
        doc = {"schema": schema, "saved_at": self._clock().isoformat(),
               "package_version": __version__, "meta": dict(meta or {}), "data": data}
        blob = json.dumps(doc, indent=1, sort_keys=True, default=str).encode()
        path = self.path(name)
        with self._lock:
            atomic_write_bytes(path, blob)
        return path

    def load_json(self, name: str, *, schema: int,
                  accept: Callable[[Mapping[str, Any]], bool] | None = None) -> Any | None:
        """The newest good document's ``data``, or None when there is none.

        A document that cannot be parsed or has another schema version is quarantined and the
        previous version tried. ``accept(meta)`` may reject a good document (e.g. state from a
        later period in a backtest); rejected documents are left in place.
        """
        return self.load_json_checked(name, schema=schema, accept=accept).data

    def load_json_checked(self, name: str, *, schema: int,
                          accept: Callable[[Mapping[str, Any]], bool] | None = None,
                          check: Callable[[Any], Any] | None = None) -> Loaded:
        """Like :meth:`load_json`, and says which file was used and what was wrong.

        ``check(data)`` may raise :class:`StateError` for content the caller cannot use (e.g. a
        non-finite equity); such a file is treated as corrupt, like one that does not parse.
        """
        path = self.path(name)
        prev = path.with_name(path.name + ".prev")
        problems: list[str] = []
        with self._lock:
            if not path.exists() and prev.exists():
                problems.append(f"{path.name} is missing but {prev.name} exists")
            for candidate in (path, prev):
                doc = self._read_doc(candidate, schema, problems, check)
                if doc is None:
                    continue
                if accept is not None and not accept(doc.get("meta", {})):
                    logger.info("state %s not used here (meta %s)", candidate, doc.get("meta"))
                    return Loaded(None, None, tuple(problems))
                if problems:
                    logger.error("learning state %s: using the previous version %s (saved at "
                                 "%s)", path, candidate.name, doc.get("saved_at"))
                return Loaded(doc["data"], candidate, tuple(problems))
        if problems:
            logger.error("learning state %s: no usable version left; starting without it", path)
        return Loaded(None, None, tuple(problems))

    def load_meta(self, name: str) -> Mapping[str, Any] | None:
        path = self.path(name)
        try:
            return json.loads(path.read_text()).get("meta", {})
        except (OSError, ValueError, AttributeError):
            return None

    def _read_doc(self, path: Path, schema: int, problems: list[str] | None = None,
                  check: Callable[[Any], Any] | None = None) -> dict[str, Any] | None:
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict) or "data" not in doc:
                raise ValueError("not a state document")
        except (OSError, ValueError) as err:
            self._bad(path, f"unreadable ({err})", problems)
            return None
        if doc.get("schema") != schema:
            self._bad(path, f"schema version {doc.get('schema')!r}, expected {schema}", problems)
            return None
        if check is not None:
            try:
                check(doc["data"])
            except StateError as err:
                self._bad(path, f"invalid ({err})", problems)
                return None
        return doc

    def _bad(self, path: Path, why: str, problems: list[str] | None) -> None:
        if self.read_only:
            logger.error("learning state %s is %s; left in place (read-only)", path, why)
            where = "left in place"
        else:
            where = f"moved to {self._quarantine(path, why).name}"
        if problems is not None:
            problems.append(f"{path.name} is {why} ({where})")

    def _quarantine(self, path: Path, why: str) -> Path:
        """Move ``path`` aside under a name no earlier quarantine used; returns the new path."""
        target = self._move_aside(path)
        logger.error("learning state %s is %s; moved to %s", path, why, target.name)
        return target

    def _move_aside(self, path: Path) -> Path:
        stamp = self._clock().strftime("%Y%m%dT%H%M%S")
        for n in range(1000):
            candidate = path.with_name(f"{path.name}.corrupt-{stamp}" + (f"-{n}" if n else ""))
            try:
                # link() fails when the name is taken (also by another process at the same
                # instant), where a rename would overwrite an earlier quarantined copy.
                os.link(path, candidate)
            except FileExistsError:
                continue
            except OSError:  # no hard links on this filesystem: rename if the name is free
                if candidate.exists():
                    continue
                try:
                    os.replace(path, candidate)
                except OSError:
                    return path
                return candidate
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return candidate
        return path

    # ------------------------------------------------------------------ torch
    def save_torch(self, name: str, state_dict: Mapping[str, Any], *, schema: int,
                   meta: Mapping[str, Any] | None = None) -> Path:
        import io

        import torch

        buf = io.BytesIO()
        torch.save({"schema": schema, "saved_at": self._clock().isoformat(),
                    "meta": json.loads(json.dumps(dict(meta or {}), default=str)),
                    "state_dict": dict(state_dict)}, buf)
        self._writable()
        path = self.path(name, ".pt")
        with self._lock:
            atomic_write_bytes(path, buf.getvalue())
        return path

    def load_torch(self, name: str, *, schema: int) -> tuple[dict[str, Any], dict] | None:
        """(state_dict, meta) of the newest good checkpoint, loaded with ``weights_only=True``."""
        import torch

        path = self.path(name, ".pt")
        with self._lock:
            for candidate in (path, path.with_name(path.name + ".prev")):
                if not candidate.exists():
                    continue
                try:
                    doc = torch.load(candidate, map_location="cpu", weights_only=True)
                    if not isinstance(doc, dict) or "state_dict" not in doc:
                        raise ValueError("not a state checkpoint")
                except Exception as err:  # torch raises many types for truncated files
                    self._bad(candidate, f"unreadable ({err})", None)
                    continue
                if doc.get("schema") != schema:
                    self._bad(candidate, f"schema version {doc.get('schema')!r}, expected "
                              f"{schema}", None)
                    continue
                return doc["state_dict"], doc.get("meta", {})
        return None
