"""Typed, frozen configuration: the parsing machinery every subsystem's config uses.

Each subsystem defines its own frozen config dataclasses next to its code (``RiskConfig`` in
:mod:`learning.core.risk`, ``RegimeConfig`` in :mod:`learning.brain.regime_config`, ...), with
:func:`_f` fields; :mod:`learning.strategy.config` assembles them into the
``advanced_learning`` section of freqtrade's config.json, which is parsed here, in one place, into
frozen dataclasses. Unknown keys, wrong types and out-of-range values raise
:class:`~learning.core.errors.ConfigError` with the full key path, so start-up stops with a message
naming the problem instead of trading on a typo.

Every field carries a docstring-like ``help`` and optional ``range`` in its metadata; the README's
configuration reference is generated from the same metadata (``ftlearn config-reference``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from learning.core.durations import parse_duration
from learning.core.errors import ConfigError

SECTION = "advanced_learning"


def _f(default: Any, help: str, range: tuple[float, float] | None = None,  # noqa: A002
       choices: tuple[str, ...] | None = None, duration: bool = False) -> Any:
    """A config field: default, help text (the README reference), optional numeric range,
    allowed values, or ``duration=True`` for a string like ``"36h"`` (empty allowed when the
    default is empty: "off")."""
    meta = {"help": help, "range": range, "choices": choices, "duration": duration}
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------------------
# Parsing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected an object, got {type(value).__name__} {value!r}")
        return parse_section(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], path, meta)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        return tuple(_coerce(v, inner, f"{path}[{i}]", meta) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
    elif tp is Any:
        return value
    else:  # pragma: no cover - a programming error in a config class
        raise ConfigError(f"{path}: unsupported config type {_type_name(tp)}")
    rng = meta.get("range")
    if rng is not None and not (rng[0] <= value <= rng[1]):
        raise ConfigError(f"{path}: {value!r} is out of range [{rng[0]}, {rng[1]}]")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(str, choices))}")
    if meta.get("duration") and value != "":
        try:
            parse_duration(value)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return value


def parse_section(cls: type, raw: Mapping[str, Any] | None, path: str = SECTION) -> Any:
    """Build the frozen dataclass ``cls`` from ``raw``, rejecting unknown keys and bad values."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected an object, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
            f"known keys: {', '.join(sorted(fields))}")
    # A key left out takes the field's default (for a nested section: its documented default
    # instance); a nested section given in part is parsed against its class's defaults.
    kwargs = {name: _coerce(value, hints[name], f"{path}.{name}", fields[name].metadata)
              for name, value in raw.items()}
    return cls(**kwargs)


def _format_default(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
        return ", ".join(getattr(v, "name", type(v).__name__) for v in value)
    return str(value)


def reference_rows(cls: type, prefix: str = SECTION,
                   instance: Any = None) -> list[tuple[str, str, str]]:
    """(key, default, help) rows for the README's configuration reference."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if instance is not None:
            default = getattr(instance, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(reference_rows(hints[f.name], key, default))
            continue
        extra = []
        if f.metadata.get("range"):
            extra.append(f"range {f.metadata['range'][0]}..{f.metadata['range'][1]}")
        if f.metadata.get("choices"):
            extra.append("one of " + ", ".join(f.metadata["choices"]))
        help_ = f.metadata.get("help", "") + (f" ({'; '.join(extra)})" if extra else "")
        rows.append((key, _format_default(default), help_))
    return rows
