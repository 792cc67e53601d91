"""Reading freqtrade config files from the CLI (the same files and merge rules freqtrade uses),
and start-up checks on the parts of freqtrade's config the plugin ships."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from learning.core.errors import ConfigError
from learning.core.store import StateStore, state_root

#: The API credentials the shipped config.json carries as placeholders (never to be used).
SHIPPED_JWT_SECRET = "change-this-to-a-long-random-secret-of-32+chars"
SHIPPED_PASSWORD = "change-me"


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


def user_data_dir(ft_config: Mapping[str, Any], override: str | None = None) -> Path:
    """The user_data folder exactly as freqtrade resolves it: ``--userdir``, else the config's
    ``user_data_dir``, else ``user_data``; a relative path is taken from the current folder
    (freqtrade's ``Configuration._process_datadir_options``). It must exist: freqtrade refuses
    to start without it, so a missing one means this is not the bot's folder."""
    raw = override or ft_config.get("user_data_dir") or "user_data"
    folder = Path(raw).expanduser().resolve()
    if not folder.is_dir():
        how = "" if Path(raw).is_absolute() else (
            f" ({raw!r} is relative: freqtrade and ftlearn resolve it against the current "
            "folder; run from the bot's folder or pass --userdir)")
        raise ConfigError(f"user_data_dir {folder} does not exist{how}")
    return folder


def store_for(ft_config: dict[str, Any], runmode: str, cfg: StateLocation, *,
              userdir: str | None = None, read_only: bool = False) -> StateStore:
    """The state store of ``runmode`` for the parsed ``advanced_learning`` section ``cfg``."""
    root = state_root(user_data_dir(ft_config, userdir), cfg.state_dir, cfg.identifier, runmode)
    return StateStore(root, read_only=read_only)


def shipped_api_credentials(ft_config: Mapping[str, Any]) -> list[str]:
    """Names of the API credentials that are still the shipped placeholders (or empty) while the
    REST API server is enabled; empty when the API is off or everything was set."""
    api = ft_config.get("api_server") or {}
    if not isinstance(api, Mapping) or not api.get("enabled"):
        return []
    bad = []
    if api.get("jwt_secret_key") in (None, "", SHIPPED_JWT_SECRET):
        bad.append("api_server.jwt_secret_key")
    if api.get("password") in (None, "", SHIPPED_PASSWORD):
        bad.append("api_server.password")
    return bad


def credentials_message(names: Sequence[str]) -> str:
    return (f"the REST API server is enabled but {' and '.join(names)} "
            f"{'is' if len(names) == 1 else 'are'} still the value shipped in config.json (or "
            "empty): anyone who can reach the port could log in or forge a token. Put your own "
            "values in a private file passed as a second --config, e.g. user_data/secrets.json "
            '{"api_server": {"jwt_secret_key": "...", "password": "..."}}, generated with '
            "`python -c \"import secrets; print(secrets.token_hex(32))\"`")
