"""Manual controls a user sends from the CLI to a running bot (``ftlearn halt/resume``).

The channel is two files in the run's state folder:

* ``control.jsonl``, an append-only command log. The CLI appends one JSON line per command under
  an exclusive file lock, so concurrent commands are all kept, in the order they took the lock
  (a read-modify-write of one JSON document lost updates when two commands raced).
* ``control_ack.json``, written atomically by the bot after it applied commands and saved the
  guard's state: the ids it applied, when, and the guard's halts afterwards. The CLI waits for
  its command's id there, so a halt is confirmed by the bot itself, not assumed.

The guard remembers how many log lines it has applied (``RiskState.control_seen``), so every
command is applied exactly once, also across restarts; a command sent while no bot runs is applied
by the next bot that starts on this folder. Nothing here creates the state folder: a command for a
folder no bot has used fails, instead of waiting in a place no bot reads.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from learning.core.errors import StateError
from learning.core.risk import RiskGuard
from learning.core.store import StateStore

logger = logging.getLogger(__name__)

LOG_NAME = "control.jsonl"
ACK_NAME = "control_ack"
ACK_SCHEMA = 1
#: Acknowledgements kept in ``control_ack.json`` (oldest dropped).
MAX_ACKS = 100
COMMANDS = ("halt", "resume")


@dataclass(frozen=True)
class Command:
    """One line of the command log."""

    id: str
    command: str  # "halt" | "resume"
    reason: str = ""
    #: ``resume --reset-drawdown``: also lift a max-drawdown halt.
    reset_drawdown: bool = False
    #: When the user sent it (for the record; the bot applies commands in log order).
    sent_at: str = ""

    @classmethod
    def new(cls, command: str, now: datetime, reason: str = "",
            reset_drawdown: bool = False) -> Command:
        if command not in COMMANDS:
            raise ValueError(f"unknown control command {command!r}")
        return cls(uuid.uuid4().hex, command, reason, reset_drawdown, now.isoformat())

    @classmethod
    def parse(cls, line: str) -> Command | None:
        """A log line as a command, or None for a line that is not one (logged by the caller)."""
        try:
            raw = json.loads(line)
            cmd = cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
        except (ValueError, TypeError, KeyError):
            return None
        ok = (isinstance(cmd.id, str) and cmd.id and cmd.command in COMMANDS
              and isinstance(cmd.reason, str) and isinstance(cmd.reset_drawdown, bool))
        return cmd if ok else None


def _lock(root: Path):
    from filelock import FileLock  # cross-platform advisory lock (fcntl/msvcrt)

    return FileLock(str(root / f"{LOG_NAME}.lock"))


def append_command(root: Path, command: Command, timeout_s: float = 10.0) -> Path:
    """Append ``command`` to the log in the existing state folder ``root``."""
    from filelock import Timeout

    if not root.is_dir():
        raise StateError(f"state folder {root} does not exist: no AdvancedLearning bot has run "
                         "with this config and user_data_dir")
    path = root / LOG_NAME
    line = json.dumps(asdict(command), sort_keys=True).encode() + b"\n"
    try:
        with _lock(root).acquire(timeout=timeout_s), open(path, "ab") as fh:
            # A crash mid-append can leave a last line without its newline; start a fresh line
            # so this command is not glued to it.
            if fh.tell() > 0:
                with open(path, "rb") as rd:
                    rd.seek(-1, os.SEEK_END)
                    if rd.read(1) != b"\n":
                        line = b"\n" + line
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
    except Timeout as err:
        raise StateError(f"{path} stayed locked for {timeout_s:g} s") from err
    return path


def read_commands(root: Path) -> list[Command | None]:
    """Every complete line of the log in order (None for a line that is not a command).

    Reads without the lock, so a read-only reader (``ftlearn status``) writes nothing: a writer
    appends a whole line in one write, and a last line without its newline (being written, or
    torn by a crash) is left for later; the next append puts it on a line of its own.
    """
    path = root / LOG_NAME
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines = text.split("\n")[:-1]  # the part after the last newline is not a whole line yet
    return [Command.parse(line) for line in lines if line.strip()]


def read_acks(store: StateStore) -> list[dict[str, Any]]:
    data = store.load_json(ACK_NAME, schema=ACK_SCHEMA)
    acks = data.get("applied") if isinstance(data, Mapping) else None
    return [a for a in acks if isinstance(a, Mapping)] if isinstance(acks, list) else []


def find_ack(store: StateStore, command_id: str) -> dict[str, Any] | None:
    return next((a for a in read_acks(store) if a.get("id") == command_id), None)


def apply_commands(store: StateStore, guard: RiskGuard, now: datetime,
                   equity: float | None) -> list[dict[str, Any]]:
    """Apply the log's commands the guard has not applied yet; returns one acknowledgement per
    command (write them with :func:`acknowledge` once the guard's state is saved)."""
    commands = read_commands(store.root)
    s = guard.state
    skip: set[str] = set()
    if len(commands) < s.control_seen:
        # The log was replaced or cut. Apply what it holds now, except what was acknowledged
        # before (a drawdown reset must not be applied twice).
        logger.error("AdvancedLearning: %s has %d commands, fewer than the %d already applied; "
                     "it was replaced or truncated. Applying the commands not acknowledged "
                     "before", store.root / LOG_NAME, len(commands), s.control_seen)
        skip = {a.get("id") for a in read_acks(store)}
        s.control_seen = 0
    acks = []
    for k, cmd in enumerate(commands[s.control_seen:], start=s.control_seen):
        if cmd is None:
            logger.error("AdvancedLearning: line %d of %s is not a control command; ignored",
                         k + 1, store.root / LOG_NAME)
            continue
        if cmd.id in skip:
            continue
        events = guard.apply_command(now, cmd.command, cmd.reason, cmd.reset_drawdown, equity)
        acks.append({"id": cmd.id, "command": cmd.command, "reason": cmd.reason,
                     "reset_drawdown": cmd.reset_drawdown, "sent_at": cmd.sent_at,
                     "applied_at": now.isoformat(), "events": events,
                     "manual_halt": s.manual_halt, "drawdown_halt": s.drawdown_halt})
    s.control_seen = len(commands)
    return acks


def acknowledge(store: StateStore, acks: list[dict[str, Any]], now: datetime) -> None:
    """Record applied commands for the CLI (atomic; the newest :data:`MAX_ACKS` are kept)."""
    if not acks:
        return
    kept = (read_acks(store) + acks)[-MAX_ACKS:]
    store.save_json(ACK_NAME, {"applied": kept, "pid": os.getpid(),
                               "written_at": now.isoformat()}, schema=ACK_SCHEMA)
