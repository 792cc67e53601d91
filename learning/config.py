"""Typed, frozen configuration for the plugin.

The ``advanced_learning`` section of freqtrade's config.json is parsed here, in one place, into
frozen dataclasses. Unknown keys, wrong types and out-of-range values raise
:class:`~learning.errors.ConfigError` with the full key path, so start-up stops with a message
naming the problem instead of trading on a typo.

Every field carries a docstring-like ``help`` and optional ``range`` in its metadata; the README's
configuration reference is generated from the same metadata (``ftlearn config-reference``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from learning.errors import ConfigError

SECTION = "advanced_learning"


def _f(default: Any, help: str, range: tuple[float, float] | None = None,  # noqa: A002
       choices: tuple[str, ...] | None = None) -> Any:
    meta = {"help": help, "range": range, "choices": choices}
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RiskConfig:
    """Hard risk limits. No code path may exceed them."""

    max_position_pct: float = _f(
        0.20, "Largest stake of one trade, pyramiding adds included, as a fraction of equity.",
        (0.001, 1.0))
    max_daily_loss_pct: float = _f(
        0.02, "Loss from the UTC day's opening equity that blocks entries and adds for the rest "
        "of the day and exits open positions.", (0.001, 1.0))
    max_drawdown_pct: float = _f(
        0.15, "Drawdown from the equity peak that flattens all positions and halts entries "
        "until a manual reset (ftlearn resume --reset-drawdown).", (0.001, 1.0))
    crisis_cash_only: bool = _f(
        True, "In the CRISIS regime hold cash only: no entries, open positions exited.")


@dataclass(frozen=True)
class PyramidingConfig:
    """The rule-based scale-in / trim used when no learned sizing agent is configured."""

    enabled: bool = _f(True, "Allow position adjustment (scale-in and trim).")
    max_adds: int = _f(2, "Most scale-in orders per trade.", (0, 10))
    add_fraction: float = _f(
        0.5, "Size of one scale-in as a fraction of the trade's initial stake.", (0.0, 2.0))
    add_min_profit: float = _f(
        0.015, "A scale-in needs at least this open profit (ratio).", (-1.0, 1.0))
    add_requires_signal: bool = _f(
        True, "A scale-in also needs the entry signal (score above the entry threshold).")
    trim_profit: float = _f(
        0.06, "Trim once when open profit reaches this ratio.", (0.0, 10.0))
    trim_fraction: float = _f(
        0.33, "Fraction of the position sold by a trim.", (0.0, 0.95))


@dataclass(frozen=True)
class LearningConfig:
    """The ``advanced_learning`` section of config.json."""

    identifier: str = _f(
        "default", "Namespace of the learned state: user_data/learning/<identifier>/<runmode>/.")
    state_dir: str = _f(
        "learning", "Folder for learned state, relative to user_data_dir unless absolute.")
    risk: RiskConfig = _f(RiskConfig(), "Hard risk limits.")
    pyramiding: PyramidingConfig = _f(PyramidingConfig(), "Rule-based position adjustment.")


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
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(value, hints[name], f"{path}.{name}", fields[name].metadata)
    return cls(**kwargs)


def load_learning_config(ft_config: Mapping[str, Any]) -> LearningConfig:
    """Parse the plugin section of a (merged) freqtrade config dict."""
    return parse_section(LearningConfig, ft_config.get(SECTION), SECTION)


def reference_rows(cls: type = LearningConfig, prefix: str = SECTION) -> list[tuple[str, str, str]]:
    """(key, default, help) rows for the README's configuration reference."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(reference_rows(hints[f.name], key))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        extra = []
        if f.metadata.get("range"):
            extra.append(f"range {f.metadata['range'][0]}..{f.metadata['range'][1]}")
        if f.metadata.get("choices"):
            extra.append("one of " + ", ".join(f.metadata["choices"]))
        help_ = f.metadata.get("help", "") + (f" ({'; '.join(extra)})" if extra else "")
        rows.append((key, repr(default) if isinstance(default, str) else str(default).lower()
                     if isinstance(default, bool) else str(default), help_))
    return rows
