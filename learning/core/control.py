"""Manual controls a user sets from the CLI while the bot runs (``ftlearn halt/resume``).

The CLI writes ``control.json`` atomically into the run's state folder; the strategy re-reads it
whenever its modification time changes (once per bot loop costs one ``stat``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from learning.core.store import StateStore

CONTROL_NAME = "control"
CONTROL_SCHEMA = 1


@dataclass(frozen=True)
class Control:
    halted: bool = False
    reason: str = ""
    #: Incremented by ``ftlearn resume --reset-drawdown``; the guard applies each token once.
    reset_token: int = 0
    updated_at: str = ""


def read_control(store: StateStore) -> Control:
    data = store.load_json(CONTROL_NAME, schema=CONTROL_SCHEMA) or {}
    known = {k: v for k, v in data.items() if k in Control.__dataclass_fields__}
    return Control(**known)


def write_control(store: StateStore, control: Control) -> None:
    store.save_json(CONTROL_NAME, asdict(control), schema=CONTROL_SCHEMA)


def halt(store: StateStore, reason: str, now: datetime) -> Control:
    current = read_control(store)
    new = Control(True, reason or "manual halt", current.reset_token, now.isoformat())
    write_control(store, new)
    return new


def resume(store: StateStore, now: datetime, reset_drawdown: bool = False) -> Control:
    current = read_control(store)
    token = current.reset_token + (1 if reset_drawdown else 0)
    new = Control(False, "", token, now.isoformat())
    write_control(store, new)
    return new
