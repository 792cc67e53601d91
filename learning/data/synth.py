"""A deterministic synthetic crypto market in freqtrade's candle format, with its true regimes.

For machines without real candles (a fresh user's machine, CI) and for scoring the regime
detector against regimes that are known by construction. Prices are not real.

The model, at the base timeframe (5m):

* a hidden semi-Markov chain over the five named regimes (:data:`REGIMES`): each segment lasts
  ``min_hours`` plus an exponential tail (hours to weeks), then jumps by :data:`TRANSITIONS`;
* a common "BTC" factor whose log return is ``drift(regime) + sigma_t * z_t`` with
  ``sigma_t = vol(regime) * exp(h_fast + h_slow) * intraday(t)``: two log-vol AR(1) processes
  give volatility clustering, ``z`` is Student-t (fat tails) and correlated with the vol shocks
  (a falling price raises the next candle's vol, the leverage effect);
* CHOPPY pulls the log price back to its level at the segment's start (an OU process), so it
  ranges instead of trending;
* CRISIS opens with a crash: a Brownian bridge that ends exactly ``depth`` (10-30 %) lower after
  ``crash_hours`` under a vol spike, then an aftermath with elevated vol and a partial rebound;
* THEME_DRIVEN: BTC moves moderately while one or two alts trend hard (a strong idiosyncratic
  drift and doubled idiosyncratic vol) and the rest drift the other way (rotation);
* every other pair is ``beta * factor + idiosyncratic noise`` (betas and noise calibrated on
  Binance 5m returns); volume rises with the candle's vol and ``|return|``; high/low are the
  sampled extremes of a Brownian bridge between open and close, so OHLC is consistent.

All randomness flows from ``numpy.random.default_rng`` seeded by ``cfg.seed``: one child stream
per purpose and one per pair *name* (``SeedSequence(seed, spawn_key=...)``), so the same seed gives
identical frames, dropping a pair leaves the others unchanged, and a shorter market is a prefix
of a longer one except for its last (truncated) regime segment.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from learning import __version__
from learning.core.config import _f
from learning.core.errors import ConfigError
from learning.core.regimes import Regime
from learning.data.candles import OHLCV, pair_to_filename, timeframe_to_minutes

GENERATOR_VERSION = 1
MARKER_FILE = "synthetic.json"
REGIMES_FILE = "regimes.feather"  # lowercase, so no tool mistakes it for a pair
DEFAULT_TIMEFRAMES = ("5m", "15m", "1h", "4h", "1d")
NOTE = ("Synthetic market from learning.data.synth: prices, volumes and regimes are simulated and "
        "NOT real. Use it to test code and score the regime detector, never to judge a strategy's "
        "real-world profit.")

REGIMES: tuple[Regime, ...] = (Regime.BULL_MOMENTUM, Regime.BEAR_DEFENSIVE, Regime.CHOPPY,
                               Regime.CRISIS, Regime.THEME_DRIVEN)
BULL, BEAR, CHOPPY, CRISIS, THEME = range(5)
# Jump probabilities between segments (row: from, column: to; a regime never follows itself).
# Crises come mostly out of bear markets and end in chop, a grind lower or a recovery.
TRANSITIONS = np.array([
    # BULL  BEAR  CHOP  CRIS  THEME
    [0.00, 0.20, 0.42, 0.08, 0.30],  # BULL_MOMENTUM
    [0.20, 0.00, 0.45, 0.20, 0.15],  # BEAR_DEFENSIVE
    [0.35, 0.30, 0.00, 0.08, 0.27],  # CHOPPY
    [0.35, 0.20, 0.45, 0.00, 0.00],  # CRISIS
    [0.35, 0.15, 0.42, 0.08, 0.00],  # THEME_DRIVEN
])
_USD_QUOTES = frozenset({"USDT", "USDC", "FDUSD", "USD", "BUSD", "DAI", "TUSD"})
_PAIR_RE = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+$")
_REF_VOL_PER_DAY = 0.025
# Stream keys for SeedSequence(seed, spawn_key=(key, ...)).
_S_CHAIN, _S_SHOCK, _S_VOL_FAST, _S_VOL_SLOW, _S_PAIR = range(5)


def _check_ranges(obj: Any) -> None:
    """Enforce the ``range`` metadata of a config dataclass (also on direct construction)."""
    for f in dataclasses.fields(obj):
        rng = f.metadata.get("range")
        if rng is None:
            continue
        value = getattr(obj, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    rng[0] <= v <= rng[1]):
                raise ConfigError(f"{f.name}: {v!r} is out of range [{rng[0]}, {rng[1]}]")


@dataclass(frozen=True)
class PairProfile:
    """How one pair relates to the factor (from Binance 5m data, 2025-2026)."""

    price: float          # start price in the quote currency
    beta: float           # loading on the factor's log return
    idio: float           # idiosyncratic vol as a multiple of the factor's vol
    quote_volume: float   # typical (about median) traded quote amount per 5m candle


KNOWN_PAIRS: dict[str, PairProfile] = {
    "BTC": PairProfile(60000.0, 1.00, 0.00, 4.0e6),
    "ETH": PairProfile(3000.0, 1.25, 0.95, 3.0e6),
    "SOL": PairProfile(150.0, 1.35, 1.25, 1.3e6),
    "BNB": PairProfile(600.0, 0.90, 1.00, 4.0e5),
    "XRP": PairProfile(2.0, 1.35, 1.35, 9.0e5),
}


@dataclass(frozen=True)
class RegimeSpec:
    """How the factor behaves in one regime and how long the regime lasts."""

    drift_per_day: float = _f(0.0, "Mean log return of the factor per day.", (-0.5, 0.5))
    vol_per_day: float = _f(0.025, "RMS volatility of the factor per day (log return).",
                            (0.001, 1.0))
    mean_days: float = _f(3.0, "Mean length of one segment, in days.", (0.01, 365.0))
    min_hours: float = _f(6.0, "Shortest segment (minimum dwell), in hours.", (0.1, 24.0 * 60))

    def __post_init__(self) -> None:
        _check_ranges(self)
        if self.mean_days * 24 < self.min_hours:
            raise ConfigError(f"mean_days {self.mean_days} is shorter than min_hours "
                              f"{self.min_hours}")


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a synthetic market (same config, same frames)."""

    pairs: tuple[str, ...] = _f(
        ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT"),
        "Pairs to generate (BASE/QUOTE). BTC is the common factor; unknown bases get a random "
        "price level, beta and idiosyncratic vol.")
    start: str = _f("2025-01-01", "First candle's open time (UTC), e.g. '2025-01-01'.")
    days: int = _f(180, "Length of the market in days.", (1, 3650))
    timeframe: str = _f("5m", "Base timeframe of the simulation (must divide one day).")
    seed: int = _f(42, "Seed of numpy.random.default_rng; the only source of randomness.",
                   (0, 2**63 - 1))
    bull: RegimeSpec = _f(RegimeSpec(0.015, 0.022, 6.0, 12.0), "BULL_MOMENTUM: steady uptrend.")
    bear: RegimeSpec = _f(RegimeSpec(-0.010, 0.028, 4.0, 12.0), "BEAR_DEFENSIVE: downtrend.")
    choppy: RegimeSpec = _f(RegimeSpec(0.0, 0.018, 3.0, 6.0), "CHOPPY: range-bound.")
    crisis: RegimeSpec = _f(
        RegimeSpec(0.05, 0.05, 1.0, 6.0),
        "CRISIS aftermath (after the crash): elevated vol, partial rebound. The segment lasts "
        "the crash plus this.")
    theme: RegimeSpec = _f(RegimeSpec(0.002, 0.022, 3.0, 12.0),
                           "THEME_DRIVEN: moderate BTC, one or two alts trend hard.")
    crash_depth: tuple[float, ...] = _f(
        (0.10, 0.30), "Range of a crash's drop of the factor (fraction), drawn uniformly.",
        (0.01, 0.9))
    crash_hours: tuple[float, ...] = _f(
        (2.0, 24.0), "Range of a crash's length in hours, drawn uniformly.", (0.1, 24.0 * 7))
    crash_vol_per_day: float = _f(0.10, "Factor vol during the crash itself (per day).",
                                  (0.001, 2.0))
    choppy_half_life_hours: float = _f(
        8.0, "Half-life of the pull back to the range's level in CHOPPY.", (0.1, 24.0 * 30))
    vol_half_life_hours: tuple[float, ...] = _f(
        (1.0, 48.0), "Half-lives of the fast and slow log-vol AR(1) processes.", (0.05, 24.0 * 90))
    vol_of_vol: tuple[float, ...] = _f(
        (0.40, 0.30), "Stationary std of the fast and slow log-vol processes.", (0.0, 2.0))
    leverage_corr: float = _f(
        -0.3, "Correlation of a return shock with the fast vol shock (negative: drops raise vol).",
        (-0.95, 0.95))
    tail_df: float = _f(5.0, "Degrees of freedom of the Student-t return shocks.", (2.5, 1000.0))
    intraday_amplitude: float = _f(
        0.35, "Amplitude of the daily vol/volume cycle (peak at 15:00 UTC).", (0.0, 0.9))
    regime_blend_hours: float = _f(
        0.5, "Half-life over which the vol level moves to a new regime's level.", (0.0, 48.0))
    theme_drift_per_day: float = _f(
        0.05, "Idiosyncratic drift per day of a THEME_DRIVEN segment's leading alt(s).",
        (0.0, 1.0))
    theme_rotation_per_day: float = _f(
        0.01, "Opposite drift per day of the other alts during a theme (capital rotation).",
        (0.0, 1.0))
    theme_vol_mult: float = _f(2.0, "Idiosyncratic vol multiplier of the theme's leaders.",
                               (1.0, 10.0))
    theme_up_prob: float = _f(0.75, "Chance that a theme's leaders trend up (else down).",
                              (0.0, 1.0))
    volume_noise: float = _f(0.4, "Log-normal sigma of the volume noise.", (0.0, 3.0))
    volume_return_weight: float = _f(
        0.6, "Volume multiplier per unit |standardised return| (volume rises with |return|).",
        (0.0, 10.0))

    def __post_init__(self) -> None:
        _check_ranges(self)
        if not self.pairs or len(set(self.pairs)) != len(self.pairs):
            raise ConfigError(f"pairs must be a non-empty list without duplicates: {self.pairs}")
        for pair in self.pairs:
            if not _PAIR_RE.match(pair):
                raise ConfigError(f"pair {pair!r} is not of the form BASE/QUOTE (e.g. BTC/USDT)")
        try:
            minutes = timeframe_to_minutes(self.timeframe)
        except Exception as err:
            raise ConfigError(f"timeframe {self.timeframe!r} is not a timeframe ({err})") from err
        if minutes <= 0 or 1440 % minutes:
            raise ConfigError(f"timeframe {self.timeframe!r} must divide one day")
        try:
            start = pd.Timestamp(self.start)
        except ValueError as err:
            raise ConfigError(f"start {self.start!r} is not a date (YYYY-MM-DD)") from err
        if start != start.floor(f"{minutes}min"):
            raise ConfigError(f"start {self.start!r} is not aligned to {self.timeframe}")
        for name in ("crash_depth", "crash_hours", "vol_half_life_hours", "vol_of_vol"):
            value = getattr(self, name)
            if len(value) != 2:
                raise ConfigError(f"{name} needs two values, got {value}")
        for name in ("crash_depth", "crash_hours"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f"{name}: low {lo} is above high {hi}")

    @property
    def start_ts(self) -> pd.Timestamp:
        ts = pd.Timestamp(self.start)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    def spec(self, regime: int) -> RegimeSpec:
        return (self.bull, self.bear, self.choppy, self.crisis, self.theme)[regime]


@dataclass(frozen=True)
class SynthMarket:
    """A generated market: candles per pair, the true regimes per candle and the crashes."""

    config: SynthConfig
    candles: dict[str, pd.DataFrame]  # pair -> date (UTC), open, high, low, close, volume
    # date, regime (Regime value), segment, crash (episode id or -1), theme_pairs, factor_vol
    regimes: pd.DataFrame
    # episode, start, end (open time of the last crash candle), depth (intended drop), hours
    crashes: pd.DataFrame


@dataclass
class _Segment:
    regime: int
    start: int
    end: int              # exclusive
    crash_end: int = -1   # CRISIS: end of the crash (exclusive)
    depth: float = 0.0    # CRISIS: intended drop of the factor over the crash
    leaders: tuple[str, ...] = ()
    sign: float = 0.0     # THEME: +1 leaders trend up, -1 down


def _stream(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _pair_key(pair: str) -> int:
    return zlib.crc32(pair.encode())


def _sample_segments(cfg: SynthConfig, n: int, steps_per_hour: float,
                     rng: np.random.Generator) -> list[_Segment]:
    """The regime chain. Draws happen segment by segment, so a longer market extends a shorter."""
    alts = [p for p in cfg.pairs if p.split("/")[0] != "BTC"]
    segments: list[_Segment] = []
    regime = int(rng.choice([BULL, BEAR, CHOPPY, THEME]))
    t = 0
    while t < n:
        spec = cfg.spec(regime)
        tail_hours = max(spec.mean_days * 24 - spec.min_hours, 0.0)
        hours = spec.min_hours + rng.exponential(tail_hours) if tail_hours else spec.min_hours
        seg = _Segment(regime, t, 0)
        if regime == CRISIS:
            crash_hours = rng.uniform(*cfg.crash_hours)
            seg.depth = float(rng.uniform(*cfg.crash_depth))
            seg.crash_end = t + max(1, round(crash_hours * steps_per_hour))
            hours += crash_hours
        if regime == THEME:
            k = min(len(alts), int(rng.integers(1, 3)))
            picks = rng.permutation(len(alts))[:k]
            seg.leaders = tuple(alts[i] for i in sorted(picks))
            seg.sign = 1.0 if rng.random() < cfg.theme_up_prob else -1.0
        seg.end = t + max(1, round(hours * steps_per_hour))
        segments.append(seg)
        t = seg.end
        regime = int(rng.choice(len(REGIMES), p=TRANSITIONS[regime]))
    segments[-1].end = n
    return segments


def _ar1(shocks: np.ndarray, half_life_steps: float, std: float,
         rng: np.random.Generator) -> np.ndarray:
    """Stationary AR(1) with the given half-life and std, driven by unit ``shocks``."""
    phi = 0.5 ** (1.0 / max(half_life_steps, 1e-9))
    h0 = rng.normal(0.0, std)
    out, _ = lfilter([std * np.sqrt(1 - phi**2)], [1.0, -phi], shocks, zi=[phi * h0])
    return out


def _ema(x: np.ndarray, half_life_steps: float) -> np.ndarray:
    if half_life_steps <= 0:
        return x
    phi = 0.5 ** (1.0 / half_life_steps)
    out, _ = lfilter([1 - phi], [1.0, -phi], x, zi=[phi * x[0]])
    return out


def _student_t(rng: np.random.Generator, df: float, size: Any) -> np.ndarray:
    """Student-t draws scaled to unit variance."""
    return rng.standard_t(df, size) * np.sqrt((df - 2) / df)


def _profile(pair: str, seed: int) -> PairProfile:
    base, quote = pair.split("/")
    if base in KNOWN_PAIRS and quote in _USD_QUOTES:
        return KNOWN_PAIRS[base]
    rng = _stream(seed, _S_PAIR, _pair_key(pair), 0)
    return PairProfile(price=float(10 ** rng.uniform(-1, 2.5)), beta=float(rng.uniform(0.8, 1.5)),
                       idio=float(rng.uniform(0.9, 1.5)),
                       quote_volume=float(10 ** rng.uniform(5, 6)))


def _bar_extremes(c: np.ndarray, s: np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Max and min of a Brownian bridge from 0 to ``c`` with vol ``s`` (exact marginals).

    P(max > m) = exp(-2 m (m - c) / s^2) for m >= max(0, c), inverted at a uniform draw.
    """
    u = rng.random((len(c), 2))  # (n, 2): row-major, so a longer draw extends a shorter one
    root_hi = np.sqrt(c**2 - 2 * s**2 * np.log1p(-u[:, 0]))
    root_lo = np.sqrt(c**2 - 2 * s**2 * np.log1p(-u[:, 1]))
    return (c + root_hi) / 2, (c - root_lo) / 2


def _candles(dates: pd.DatetimeIndex, price0: float, logret: np.ndarray, sigma: np.ndarray,
             sigma_ref: float, z: np.ndarray, quote_volume: float, cfg: SynthConfig,
             streams: Sequence[np.random.Generator]) -> pd.DataFrame:
    """OHLCV from log returns, rounded to a price tick of ~7 significant digits.

    Volume is ``quote_volume`` (in the quote currency) at vol ``sigma_ref`` and rises with the
    candle's vol and its standardised ``|z|``.
    """
    n = len(logret)
    logp = np.log(price0) + np.concatenate([[0.0], np.cumsum(logret)])
    hi_off, lo_off = _bar_extremes(logret, sigma, streams[0])
    tick = 10.0 ** (np.floor(np.log10(price0)) - 6)
    decimals = max(0, int(-np.floor(np.log10(tick))))
    k_close = np.maximum(np.rint(np.exp(logp) / tick), 1.0)
    close_k = k_close[1:]
    open_k = k_close[:-1]  # open = previous close, exactly
    # ceil/floor of the unrounded extremes keep high >= max(open, close), low <= min(open, close)
    high_k = np.maximum(np.ceil(np.exp(logp[:-1] + hi_off) / tick), np.maximum(open_k, close_k))
    low_k = np.clip(np.floor(np.exp(logp[:-1] + lo_off) / tick), 1.0, np.minimum(open_k, close_k))
    volume = (quote_volume / np.exp(logp[1:]) * (sigma / sigma_ref)
              * (1 + cfg.volume_return_weight * np.abs(z))
              * streams[1].lognormal(0.0, cfg.volume_noise, n))
    return pd.DataFrame({
        "date": dates,
        "open": np.round(open_k * tick, decimals), "high": np.round(high_k * tick, decimals),
        "low": np.round(low_k * tick, decimals), "close": np.round(close_k * tick, decimals),
        "volume": np.maximum(np.round(volume, 6), 1e-6),
    })


def generate_market(cfg: SynthConfig | None = None) -> SynthMarket:
    """Simulate the market described by ``cfg`` (vectorised: 5 pairs x 180 days of 5m in ~0.3 s)."""
    cfg = cfg or SynthConfig()
    minutes = timeframe_to_minutes(cfg.timeframe)
    steps_per_day = 1440 // minutes
    steps_per_hour = 60 / minutes
    n = cfg.days * steps_per_day
    dates = pd.date_range(cfg.start_ts, periods=n, freq=f"{minutes}min")
    segments = _sample_segments(cfg, n, steps_per_hour, _stream(cfg.seed, _S_CHAIN))

    # Per-step regime parameters, in per-step units.
    regime = np.empty(n, np.int8)
    seg_id = np.empty(n, np.int32)
    crash_id = np.full(n, -1, np.int32)
    drift = np.empty(n)
    base_vol = np.empty(n)
    leaders = np.full(n, "", dtype=object)
    root_day = np.sqrt(steps_per_day)
    n_crashes = 0
    for i, seg in enumerate(segments):
        sl = slice(seg.start, seg.end)
        spec = cfg.spec(seg.regime)
        regime[sl], seg_id[sl] = seg.regime, i
        drift[sl] = spec.drift_per_day / steps_per_day
        base_vol[sl] = spec.vol_per_day / root_day
        leaders[sl] = ",".join(seg.leaders)
        if seg.regime == CRISIS:
            cl = slice(seg.start, min(seg.crash_end, n))
            base_vol[cl] = cfg.crash_vol_per_day / root_day
            crash_id[cl] = n_crashes
            n_crashes += 1
    # The vol level moves to a new regime's level fast but not in one candle.
    log_level = _ema(np.log(base_vol), cfg.regime_blend_hours * steps_per_hour)

    # Clustering: two log-vol AR(1)s; sigma_t uses h_{t-1}, so the leverage effect is causal.
    eps = _stream(cfg.seed, _S_VOL_FAST).standard_normal(n)
    h = (_ar1(eps, cfg.vol_half_life_hours[0] * steps_per_hour, cfg.vol_of_vol[0],
              _stream(cfg.seed, _S_VOL_FAST, 1))
         + _ar1(_stream(cfg.seed, _S_VOL_SLOW).standard_normal(n),
                cfg.vol_half_life_hours[1] * steps_per_hour, cfg.vol_of_vol[1],
                _stream(cfg.seed, _S_VOL_SLOW, 1)))
    h = np.concatenate([[h[0]], h[:-1]])
    hour = (dates.hour + dates.minute / 60).to_numpy(dtype=float)
    a = cfg.intraday_amplitude
    season = (1 + a * np.cos(2 * np.pi * (hour - 15) / 24)) / np.sqrt(1 + a**2 / 2)
    # Subtracting the log-vol variance keeps vol_per_day the RMS vol (E[exp(2h)] = exp(2 var)).
    var_h = cfg.vol_of_vol[0] ** 2 + cfg.vol_of_vol[1] ** 2
    sigma = np.exp(log_level + h - var_h) * season  # (n,) factor vol per step
    rho = cfg.leverage_corr
    z = rho * eps + np.sqrt(1 - rho**2) * _student_t(_stream(cfg.seed, _S_SHOCK), cfg.tail_df, n)
    ret = drift + sigma * z

    for seg in segments:
        if seg.regime == CHOPPY:
            # OU around the level at the segment's start: y_t = (1 - k) y_{t-1} + e_t.
            k = 1 - 0.5 ** (1 / (cfg.choppy_half_life_hours * steps_per_hour))
            y = lfilter([1.0], [1.0, -(1 - k)], ret[seg.start:seg.end])
            ret[seg.start:seg.end] = np.diff(y, prepend=0.0)
        elif seg.regime == CRISIS:
            # Brownian bridge: the crash ends exactly log(1 - depth) below its start.
            s, e = seg.start, seg.crash_end
            frac = np.arange(1, min(e, n) - s + 1) / (e - s)
            noise = np.cumsum(sigma[s:e] * z[s:e])
            if e <= n:  # a crash cut off by the market's end is not pinned
                noise -= frac * noise[-1]
            path = np.log1p(-seg.depth) * frac + noise
            ret[s:min(e, n)] = np.diff(path, prepend=0.0)

    candles: dict[str, pd.DataFrame] = {}
    for pair in cfg.pairs:
        prof = _profile(pair, cfg.seed)
        key = _pair_key(pair)
        is_factor = pair.split("/")[0] == "BTC"
        idio_drift = np.zeros(n)
        idio_mult = np.ones(n)
        if not is_factor:
            for seg in segments:
                if seg.regime == THEME:
                    lead = pair in seg.leaders
                    per_day = cfg.theme_drift_per_day if lead else -cfg.theme_rotation_per_day
                    idio_drift[seg.start:seg.end] = seg.sign * per_day / steps_per_day
                    idio_mult[seg.start:seg.end] = cfg.theme_vol_mult if lead else 1.0
        u = _student_t(_stream(cfg.seed, _S_PAIR, key, 1), cfg.tail_df, n)
        idio_sigma = prof.idio * sigma * idio_mult
        pair_ret = prof.beta * ret + idio_drift + idio_sigma * u
        pair_sigma = np.sqrt((prof.beta * sigma) ** 2 + idio_sigma**2)
        # Standardised return drives volume; the factor's shock for BTC itself.
        z_pair = z if is_factor else (prof.beta * sigma * z + idio_sigma * u) / pair_sigma
        # A fixed volume reference (a 2.5 %/day factor) keeps a shorter market a prefix.
        sigma_ref = _REF_VOL_PER_DAY / root_day * np.sqrt(prof.beta**2 + prof.idio**2)
        candles[pair] = _candles(
            dates, prof.price, pair_ret, pair_sigma, sigma_ref, z_pair, prof.quote_volume, cfg,
            [_stream(cfg.seed, _S_PAIR, key, 2), _stream(cfg.seed, _S_PAIR, key, 3)])

    regimes = pd.DataFrame({
        "date": dates,
        "regime": np.array([REGIMES[i].value for i in range(len(REGIMES))], dtype=object)[regime],
        "segment": seg_id, "crash": crash_id, "theme_pairs": leaders.astype(str),
        "factor_vol": sigma,
    })
    crisis = [s for s in segments if s.regime == CRISIS]
    crashes = pd.DataFrame({
        "episode": np.arange(len(crisis), dtype=np.int32),
        "start": pd.DatetimeIndex([dates[s.start] for s in crisis], tz="UTC"),
        "end": pd.DatetimeIndex([dates[min(s.crash_end, n) - 1] for s in crisis], tz="UTC"),
        "depth": [s.depth for s in crisis],
        "hours": [(min(s.crash_end, n) - s.start) / steps_per_hour for s in crisis],
        "complete": [s.crash_end <= n for s in crisis],
    })
    return SynthMarket(cfg, candles, regimes, crashes)


# ----------------------------------------------------------------------------------------------
# Writing


def resample_candles(df: pd.DataFrame, timeframe: str, base_timeframe: str = "5m"
                     ) -> pd.DataFrame:
    """Aggregate candles to ``timeframe`` by open time (left-closed, left-labelled buckets,
    aligned to the epoch like exchange candles); incomplete buckets are dropped."""
    minutes = timeframe_to_minutes(timeframe)
    per = minutes // timeframe_to_minutes(base_timeframe)
    grouped = df.set_index("date").resample(f"{minutes}min", closed="left", label="left",
                                             origin="epoch")
    out = grouped.agg({"open": "first", "high": "max", "low": "min", "close": "last",
                       "volume": "sum"})
    out = out[grouped["close"].count() == per]
    return out.reset_index()[OHLCV]


def check_timeframes(base: str, timeframes: Sequence[str]) -> None:
    base_min = timeframe_to_minutes(base)
    for tf in timeframes:
        try:
            minutes = timeframe_to_minutes(tf)
        except Exception as err:
            raise ConfigError(f"timeframe {tf!r} is not a timeframe ({err})") from err
        if minutes < base_min or minutes % base_min or 1440 % minutes:
            raise ConfigError(f"timeframe {tf!r} must be a multiple of {base} that divides one day")


def read_marker(datadir: str | Path) -> dict[str, Any] | None:
    """The ``synthetic.json`` of ``datadir`` when it marks synthetic data, else None."""
    path = Path(datadir) / MARKER_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("synthetic") is True else None


def real_candle_files(datadir: str | Path) -> list[Path]:
    """Candle files in ``datadir`` that the generator did not write (so may be real)."""
    datadir = Path(datadir)
    if not datadir.is_dir():
        return []
    ours = set((read_marker(datadir) or {}).get("files", []))
    return sorted(p for p in datadir.glob("*.feather")
                  if p.name != REGIMES_FILE and p.name not in ours)


def write_market(market: SynthMarket, outdir: str | Path,
                 timeframes: Sequence[str] = DEFAULT_TIMEFRAMES,
                 on_file: Callable[[Path], None] | None = None) -> list[Path]:
    """Write candles with freqtrade's feather handler, plus ``regimes.feather`` and the
    ``synthetic.json`` marker. Files of an earlier synthetic run that this one does not rewrite
    are removed, so the folder never mixes seeds. Returns the paths written."""
    from freqtrade.data.history import get_datahandler
    from freqtrade.enums import CandleType

    cfg = market.config
    check_timeframes(cfg.timeframe, timeframes)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    names = [pair_to_filename(p, tf) for p in market.candles for tf in timeframes]
    old = read_marker(outdir)
    dates = market.regimes["date"]
    meta = {
        "synthetic": True, "note": NOTE, "generator": "learning.data.synth",
        "generator_version": GENERATOR_VERSION, "learning_version": __version__,
        "seed": cfg.seed, "config": dataclasses.asdict(cfg),
        "pairs": list(market.candles), "timeframes": list(timeframes),
        "first": dates.iloc[0].isoformat(), "last": dates.iloc[-1].isoformat(),
        "regime_share": {k: round(float(v), 4) for k, v in
                         market.regimes["regime"].value_counts(normalize=True).items()},
        "crashes": json.loads(market.crashes.to_json(orient="records", date_format="iso")),
        "files": names + [REGIMES_FILE],
    }
    # The marker goes first: an interrupted run leaves a folder that still says synthetic.
    marker = outdir / MARKER_FILE
    tmp = marker.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(marker)
    if old:
        for name in set(old.get("files", [])) - set(meta["files"]):
            stale = outdir / Path(name).name
            if stale.is_file():
                stale.unlink()
    handler = get_datahandler(outdir, "feather")
    written = []
    for pair, df in market.candles.items():
        for tf in timeframes:
            data = df if tf == cfg.timeframe else resample_candles(df, tf, cfg.timeframe)
            handler.ohlcv_store(pair, tf, data, CandleType.SPOT)
            written.append(outdir / pair_to_filename(pair, tf))
            if on_file:
                on_file(written[-1])
    path = outdir / REGIMES_FILE
    market.regimes.to_feather(path, compression_level=9, compression="lz4")
    written.append(path)
    if on_file:
        on_file(path)
    return [marker, *written]


def load_regimes(datadir: str | Path) -> pd.DataFrame:
    """The true regimes written next to synthetic candles (``regimes.feather``)."""
    df = pd.read_feather(Path(datadir) / REGIMES_FILE)
    df["date"] = pd.to_datetime(df["date"], utc=True)
    return df
