"""Reading freqtrade config files from the CLI (the same files and merge rules freqtrade uses)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from learning.core.errors import ConfigError
from learning.core.store import StateStore, state_root


class StateLocation(Protocol):
    """Where learned state lives (``LearningConfig`` has both fields)."""

    state_dir: str
    identifier: str


def load_ft_config(paths: Sequence[str]) -> dict[str, Any]:
    """Merge freqtrade config files left to right (freqtrade's ``load_from_files``)."""
    from freqtrade.configuration.load_config import load_from_files
    from freqtrade.exceptions import OperationalException

    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"config file {missing[0]} does not exist")
    try:
        return load_from_files(list(paths))
    except OperationalException as err:
        raise ConfigError(str(err)) from err


def runmode_of(ft_config: dict[str, Any], override: str | None = None) -> str:
    if override:
        return override
    return "dry_run" if ft_config.get("dry_run", True) else "live"


def store_for(ft_config: dict[str, Any], runmode: str, cfg: StateLocation) -> StateStore:
    """The state store of ``runmode`` for the parsed ``advanced_learning`` section ``cfg``."""
    user_data = ft_config.get("user_data_dir", "user_data")
    return StateStore(state_root(user_data, cfg.state_dir, cfg.identifier, runmode))
