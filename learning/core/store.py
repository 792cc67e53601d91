"""Persistence of everything the tiers learn, under ``user_data/learning/<identifier>/<runmode>/``.

* JSON documents (small state) and torch ``state_dict`` files (networks), each wrapped with a
  schema version, the time it was saved and metadata (data range, versions).
* Atomic writes: temp file in the same folder, flush + fsync, rename over the old file, fsync the
  folder. The previous good version is kept beside it as ``<name>.prev``.
* A corrupt or unknown-version file is moved aside to ``<name>.corrupt-<stamp>`` with an error log
  line, and the previous good version is loaded instead.
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
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from learning import __version__
from learning.core.errors import StateError

logger = logging.getLogger(__name__)

RUNMODES = ("backtest", "dry_run", "live", "other")


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


def atomic_write_bytes(path: Path, data: bytes, keep_previous: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous and path.exists():
            prev = path.with_name(path.name + ".prev")
            fd2, tmp_prev = tempfile.mkstemp(dir=path.parent, prefix=f".{prev.name}.")
            os.close(fd2)
            shutil.copy2(path, tmp_prev)
            os.replace(tmp_prev, prev)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class StateStore:
    """Versioned, atomic JSON and torch state under one root folder."""

    def __init__(self, root: str | Path, clock: Callable[[], datetime] | None = None) -> None:
        self.root = Path(root)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()

    def path(self, name: str, suffix: str = ".json") -> Path:
        if not name or "/" in name or name.startswith("."):
            raise StateError(f"invalid state name {name!r}")
        return self.root / f"{name}{suffix}"

    # ------------------------------------------------------------------ JSON
    def save_json(self, name: str, data: Any, *, schema: int,
                  meta: Mapping[str, Any] | None = None) -> Path:
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
        path = self.path(name)
        with self._lock:
            for candidate in (path, path.with_name(path.name + ".prev")):
                doc = self._read_doc(candidate, schema)
                if doc is None:
                    continue
                if accept is not None and not accept(doc.get("meta", {})):
                    logger.info("state %s not used here (meta %s)", candidate, doc.get("meta"))
                    return None
                return doc["data"]
        return None

    def load_meta(self, name: str) -> Mapping[str, Any] | None:
        path = self.path(name)
        try:
            return json.loads(path.read_text()).get("meta", {})
        except (OSError, ValueError, AttributeError):
            return None

    def _read_doc(self, path: Path, schema: int) -> dict[str, Any] | None:
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict) or "data" not in doc:
                raise ValueError("not a state document")
        except (OSError, ValueError) as err:
            self._quarantine(path, f"unreadable ({err})")
            return None
        if doc.get("schema") != schema:
            self._quarantine(path, f"schema version {doc.get('schema')!r}, expected {schema}")
            return None
        return doc

    def _quarantine(self, path: Path, why: str) -> None:
        stamp = self._clock().strftime("%Y%m%dT%H%M%S")
        target = path.with_name(f"{path.name}.corrupt-{stamp}")
        try:
            os.replace(path, target)
        except OSError:
            target = path
        logger.error("learning state %s is %s; moved to %s, using the previous good state",
                     path, why, target.name)

    # ------------------------------------------------------------------ torch
    def save_torch(self, name: str, state_dict: Mapping[str, Any], *, schema: int,
                   meta: Mapping[str, Any] | None = None) -> Path:
        import io

        import torch

        buf = io.BytesIO()
        torch.save({"schema": schema, "saved_at": self._clock().isoformat(),
                    "meta": json.loads(json.dumps(dict(meta or {}), default=str)),
                    "state_dict": dict(state_dict)}, buf)
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
                    self._quarantine(candidate, f"unreadable ({err})")
                    continue
                if doc.get("schema") != schema:
                    self._quarantine(candidate,
                                     f"schema version {doc.get('schema')!r}, expected {schema}")
                    continue
                return doc["state_dict"], doc.get("meta", {})
        return None
