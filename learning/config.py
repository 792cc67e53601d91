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


def _regime_defaults() -> Any:
    from learning.regime import RegimeConfig

    # Windows that fit in the history freqtrade can provide at start-up (5000 candles of the
    # main timeframe, about 17 days of 5m): a two-week fit window, refitted weekly.
    return RegimeConfig(fit_window=336, min_fit_candles=168, vol_baseline_window=168,
                        refit_every=168, burn_in=48)


@dataclass(frozen=True)
class RegimeSettings:
    """Tier 2: the market regime detector, run on BTC and the whitelist at
    ``detector.timeframe`` (an informative timeframe, 1h by default)."""

    enabled: bool = _f(True, "Detect regimes; false: every candle is UNKNOWN (an ablation).")
    btc_pair: str = _f("BTC/USDT", "The market factor: regime and sentiment are read from it.")
    detector: Any = _f(None, "Detector parameters (learning.regime.RegimeConfig); defaults suit "
                       "1h candles and a two-week fit window.")


@dataclass(frozen=True)
class BanditSettings:
    """Tier 1: the component-weight bandit (per learner and regime)."""

    enabled: bool = _f(True, "Learn component weights; false: equal weights (an ablation).")
    params: Any = _f(None, "Bandit parameters (learning.bandit.BanditConfig).")


@dataclass(frozen=True)
class BrainConfig:
    """Decision flow and circuit breakers."""

    seed: int = _f(0, "Seed of the decision sampler (Thompson draws); stored with the state.",
                   (0, 2**31 - 1))
    theme_window: int = _f(288, "Candles of trailing return for the theme score (288 = 1 day "
                           "of 5m).", (2, 100_000))
    breaker_trades: int = _f(20, "Learning pauses while the Sharpe of the last N closed trades "
                             "is below 0 (N = this).", (2, 10_000))
    fallback_drawdown: float = _f(0.10, "Rule-based fallback (technical score, Balanced "
                                  "learner, no sampling) while drawdown exceeds this.",
                                  (0.0, 1.0))
    warm_start: bool = _f(False, "Backtests load learned state from an earlier backtest whose "
                          "data ended before this one starts (never dry/live state).")
    decision_log: int = _f(2000, "Decisions kept in the state (oldest dropped).", (0, 10**6))


@dataclass(frozen=True)
class SizingConfig:
    """Who sets size, stop, take profit and hold time of a trade."""

    agent: str = _f("rule", "rule: learner risk tolerance × cap, ATR stop; ppo: the Tier 3 "
                    "trade-parameter agent, clamped by the risk guard.", choices=("rule", "ppo"))


@dataclass(frozen=True)
class RouterSettings:
    """Champion/challenger A/B tests between policies (learning.policy)."""

    enabled: bool = _f(False, "Ask the router which registered policy decides each entry.")
    db: str = _f("", "SQLite file; empty: user_data/learning/policy_bandit.db (dry/live) or "
                 "the run's state folder (backtests, which never write the live database).")
    params: Any = _f(None, "Router parameters (learning.policy.RouterConfig).")


@dataclass(frozen=True)
class LearningConfig:
    """The ``advanced_learning`` section of config.json."""

    identifier: str = _f(
        "default", "Namespace of the learned state: user_data/learning/<identifier>/<runmode>/.")
    state_dir: str = _f(
        "learning", "Folder for learned state, relative to user_data_dir unless absolute.")
    risk: RiskConfig = _f(RiskConfig(), "Hard risk limits.")
    pyramiding: PyramidingConfig = _f(PyramidingConfig(), "Rule-based position adjustment.")
    regime: RegimeSettings = _f(RegimeSettings(), "Tier 2 regime detector.")
    bandit: BanditSettings = _f(BanditSettings(), "Tier 1 component-weight bandit.")
    meta: Any = _f(None, "Tier 4 meta-learner (learning.meta.MetaConfig).")
    brain: BrainConfig = _f(BrainConfig(), "Decision flow and circuit breakers.")
    sizing: SizingConfig = _f(SizingConfig(), "Trade sizing and exit parameters.")
    router: RouterSettings = _f(RouterSettings(), "Policy router.")


#: Sections typed ``Any`` above are parsed with the owning module's config class (imported
#: lazily: those modules import this one).
_LAZY_SECTIONS = {
    (RegimeSettings, "detector"): ("learning.regime", "RegimeConfig", _regime_defaults),
    (BanditSettings, "params"): ("learning.bandit", "BanditConfig", None),
    (LearningConfig, "meta"): ("learning.meta", "MetaConfig", None),
    (RouterSettings, "params"): ("learning.policy", "RouterConfig", None),
}


def _lazy_class(owner: type, name: str) -> tuple[type, Any] | None:
    entry = _LAZY_SECTIONS.get((owner, name))
    if entry is None:
        return None
    import importlib

    module, cls_name, default = entry
    return getattr(importlib.import_module(module), cls_name), default


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
        lazy = _lazy_class(cls, name)
        tp = lazy[0] if lazy else hints[name]
        kwargs[name] = _coerce(value, tp, f"{path}.{name}", fields[name].metadata)
    for name in fields:
        if name in kwargs:
            continue
        lazy = _lazy_class(cls, name)
        if lazy:
            kwargs[name] = lazy[1]() if lazy[1] else lazy[0]()
        elif dataclasses.is_dataclass(hints[name]):
            # A nested section left out entirely still gets its own lazy defaults filled in.
            kwargs[name] = parse_section(hints[name], {}, f"{path}.{name}")
    return cls(**kwargs)


def load_learning_config(ft_config: Mapping[str, Any]) -> LearningConfig:
    """Parse the plugin section of a (merged) freqtrade config dict."""
    return parse_section(LearningConfig, ft_config.get(SECTION), SECTION)


def _format_default(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
        return ", ".join(getattr(v, "name", type(v).__name__) for v in value)
    return str(value)


def reference_rows(cls: type = LearningConfig, prefix: str = SECTION,
                   instance: Any = None) -> list[tuple[str, str, str]]:
    """(key, default, help) rows for the README's configuration reference."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        lazy = _lazy_class(cls, f.name)
        if lazy:
            rows.extend(reference_rows(lazy[0], key, lazy[1]() if lazy[1] else None))
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(reference_rows(hints[f.name], key))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if instance is not None:
            default = getattr(instance, f.name)
        extra = []
        if f.metadata.get("range"):
            extra.append(f"range {f.metadata['range'][0]}..{f.metadata['range'][1]}")
        if f.metadata.get("choices"):
            extra.append("one of " + ", ".join(f.metadata["choices"]))
        help_ = f.metadata.get("help", "") + (f" ({'; '.join(extra)})" if extra else "")
        rows.append((key, _format_default(default), help_))
    return rows
