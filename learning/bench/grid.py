"""The job grid of ``ftlearn bench``: variant x seed x pair universe x period.

A :class:`Job` is one freqtrade backtest (or the buy-and-hold computation) with its own folder
``jobs/<id>/`` and its own local exchange; jobs never share a process, so they run in any order,
in parallel, on a Ray cluster, and a finished one (its atomic ``result.json``) never runs again
under ``--resume``. Today's single run is the one-cell grid: one seed, one universe (the
``--pairs``), one period (the ``--timerange``).

The seed of a job is the seed of everything random in it: AdvancedLearning's decision sampler
(``advanced_learning.brain.seed``) and the seeds in the FreqAI model's training parameters
(``random_state``, ``seed``, ``train.seed``: offset by the job seed, so seed 0 is the
configured model). Strategies without randomness give the same figures for every seed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learning.bench.variants import Variant
from learning.core.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


def _check_name(kind: str, name: str, flag: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"{flag} {name!r}: a {kind} name is 1-40 letters, digits, '_' or '-' "
                          "(it names the job folders)")
    return name


@dataclass(frozen=True)
class Period:
    """A named evaluation range (candles opening in [start, end), UTC)."""

    name: str
    timerange: str  # YYYYMMDD-YYYYMMDD


@dataclass(frozen=True)
class Universe:
    """A named set of pairs traded together in one backtest."""

    name: str
    pairs: tuple[str, ...]


def parse_period(text: str) -> Period:
    """``NAME=YYYYMMDD-YYYYMMDD`` (``--period``)."""
    name, sep, timerange = text.partition("=")
    if not sep or not re.fullmatch(r"\d{8}-\d{8}", timerange.strip()):
        raise ConfigError(f"--period {text!r}: use NAME=YYYYMMDD-YYYYMMDD, e.g. "
                          "test=20250101-20260201")
    return Period(_check_name("period", name.strip(), "--period"), timerange.strip())


def normalize_pair(pair: str) -> str:
    return pair.strip().upper().replace("_", "/")


def parse_universe(text: str) -> Universe:
    """``NAME=PAIR,PAIR,...`` (``--universe``)."""
    name, sep, pairs = text.partition("=")
    members = tuple(normalize_pair(p) for p in pairs.split(",") if p.strip())
    if not sep or not members:
        raise ConfigError(f"--universe {text!r}: use NAME=PAIR,PAIR, e.g. "
                          "majors=BTC/USDT,ETH/USDT")
    return Universe(_check_name("universe", name.strip(), "--universe"), members)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds 0,1,2`` (a comma list; ``--seeds 5`` is seed 5 alone)."""
    try:
        parts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ConfigError(f"--seeds {text!r}: a comma list of seeds, e.g. 0,1,2") from err
    if not parts or any(s < 0 for s in parts) or len(set(parts)) != len(parts):
        raise ConfigError(f"--seeds {text!r}: distinct non-negative seeds, e.g. 0,1,2")
    return tuple(parts)


def unique_names(items: Sequence[Period] | Sequence[Universe], flag: str) -> None:
    names = [i.name for i in items]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{flag}: the name(s) {', '.join(dup)} appear more than once")


@dataclass(frozen=True)
class Job:
    """One cell of the grid for one variant."""

    variant: Variant
    seed: int
    universe: Universe
    period: Period

    @property
    def cell(self) -> str:
        """The cell (everything but the variant): jobs of one cell are compared with each
        other (deflated Sharpe, variant minus full)."""
        return f"{self.period.name}.{self.universe.name}.s{self.seed}"

    @property
    def id(self) -> str:
        return f"{self.cell}.{self.variant.name}"

    def identity(self) -> dict[str, Any]:
        """What a finished job's ``result.json`` must match to be reused by ``--resume``."""
        v = self.variant
        return {"variant": v.name, "strategy": v.strategy, "freqaimodel": v.freqaimodel,
                "freqai_config": v.freqai_config, "config_overlay": v.config_overlay,
                "seed": self.seed, "pairs": list(self.universe.pairs),
                "timerange": self.period.timerange}


def expand(variants: Sequence[Variant], seeds: Iterable[int], universes: Sequence[Universe],
           periods: Sequence[Period]) -> list[Job]:
    """Every job, cell by cell (period, universe, seed), variants in table order within a cell
    so that ``full`` (the reference of the pairwise table) comes first."""
    return [Job(v, s, u, p) for p in periods for u in universes for s in seeds for v in variants]


def seeded_freqai(section: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The FreqAI section with its model seeds offset by ``seed`` (0: unchanged)."""
    out = dict(section)
    if not seed:
        return out
    mtp = dict(out.get("model_training_parameters", {}))
    for key in ("random_state", "seed"):
        if isinstance(mtp.get(key), int):
            mtp[key] = mtp[key] + seed
    if isinstance(mtp.get("train"), Mapping) and isinstance(mtp["train"].get("seed"), int):
        mtp["train"] = {**mtp["train"], "seed": mtp["train"]["seed"] + seed}
    out["model_training_parameters"] = mtp
    return out


# ----------------------------------------------------------------------------------------------
# Keys of shared FreqAI windows


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's content (memoised per process by path, size and mtime)."""
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _FILE_HASHES[memo] = h.hexdigest()
    return _FILE_HASHES[memo]


def source_digest(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(set(paths)):
        h.update(str(p.name).encode())
        h.update(file_digest(p).encode())
    return h.hexdigest()


def freqai_key(*, strategy: str, strategy_sources: Iterable[Path], freqaimodel: str,
               section: Mapping[str, Any], pairs: Sequence[str], timeframe: str, timerange: str,
               data_files: Iterable[Path]) -> str:
    """Key of a FreqAI run's trained windows and saved predictions: the same key means the same
    model, features, training windows and candles, so another variant may start from them.

    It covers the FreqAI section (model settings, feature parameters, windows, seeds), the
    model class, the strategy and the source code that computes features and trains (so a code
    change invalidates), the pairs, timeframe and range, and the content of every candle file
    read (so new or corrected data invalidates). FreqAI itself only checks row counts.
    """
    blob = json.dumps({"strategy": strategy, "freqaimodel": freqaimodel, "freqai": section,
                       "pairs": list(pairs), "timeframe": timeframe, "timerange": timerange,
                       "code": source_digest(strategy_sources),
                       "data": source_digest(data_files)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]
