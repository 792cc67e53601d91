"""Policy side of the pyramiding agent: the TSA-MAE features extractor and the grid queries.

Observation (one row, see :mod:`learning.agents.pyramid_env`): ``market (M) | state (3)``.

* **Frozen encoder** (``freeze=true``, the default): ``market`` is the precomputed window
  embedding of the encoder (``d_model`` values) plus the window's log return scale, so PPO
  never runs the transformer while it trains. The encoder's weights still live in the extractor
  (as buffers, unused by ``forward`` and invisible to PPO's optimizer) so the sb3 zip carries
  them and ``predict`` computes the same features.
* **Trainable encoder** (``freeze=false``): ``market`` is the normalized window itself,
  flattened (``window * n_features``), plus the log scale; ``forward`` runs the encoder (with
  gradients) and PPO fine-tunes it.

In both modes the extractor standardizes ``embedding | scale`` with fixed statistics of the
training window (buffers saved with the policy) and appends the state: the MLP sees
``d_model + 1 + 3`` features.

The extractor's keyword arguments (encoder config, mode, observation config and
:data:`SCHEMA_VERSION`) are stored by sb3 inside the model zip, so a saved model rebuilds itself;
a zip written by another schema version is refused when it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pandas as pd
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from learning.agents.pyramid_env import N_STATE, Action, PyramidEnvConfig, state_features
from learning.core.config import _f, parse_section
from learning.core.durations import candles
from learning.core.errors import ConfigError, StateError
from learning.encoder.model import TSAMAE, EncoderConfig, encode_windows
from learning.encoder.windows import candle_arrays, gather_windows

SCHEMA = "advl-ppo-pyramid"
SCHEMA_VERSION = 1
_CHUNK = 4096  # windows per batch when computing market features (bounds memory)
_CLAMP = 10.0  # standardized features are clamped to ±_CLAMP


def market_width(cfg: EncoderConfig, freeze: bool) -> int:
    """Columns of the market part of the observation."""
    return (cfg.d_model if freeze else cfg.window * cfg.n_features) + 1


def market_features(encoder: TSAMAE, candles: pd.DataFrame, rows: np.ndarray, freeze: bool,
                    device: torch.device | None = None) -> np.ndarray:
    """Market features (len(rows), M) float32 for candle indices ``rows``; NaN rows: no window.

    Row ``t`` uses candles ``<= t`` only (its encoder window), so the value is the same whatever
    follows it: the causality the backtest and live paths rely on.
    """
    cfg = encoder.config
    ca = candle_arrays(candles)
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full((len(rows), market_width(cfg, freeze)), np.nan, dtype=np.float32)
    for lo in range(0, len(rows), _CHUNK):
        part = rows[lo:lo + _CHUNK]
        wb = gather_windows(ca, part, cfg.window, cfg.clip)
        if not wb.valid.any():
            continue
        x = wb.x[wb.valid]
        if freeze:
            body, _ = encode_windows(encoder, x, device, score=False)
        else:
            body = x.reshape(len(x), -1)
        idx = lo + np.flatnonzero(wb.valid)
        out[idx, :-1] = body
        out[idx, -1] = wb.log_scale[wb.valid]
    return out


@dataclass(frozen=True)
class ObsConfig:
    """How the position state was encoded when the model was trained (kept in the zip)."""

    tranches: int = _f(4, "Tranches of a full position.", (1, 20))
    pnl_scale: float = _f(0.05, "Open profit observed as tanh(pnl / pnl_scale).", (1e-4, 10.0))
    duration_scale: int = _f(288, "Time in trade observed as min(candles / this, 1).",
                             (1, 100_000))

    @classmethod
    def from_env(cls, env: PyramidEnvConfig) -> ObsConfig:
        return cls(env.tranches, env.pnl_scale, env.duration_scale)

    def env(self) -> PyramidEnvConfig:
        return PyramidEnvConfig(tranches=self.tranches, pnl_scale=self.pnl_scale,
                                duration_scale=self.duration_scale)


class _FrozenWeights(nn.Module):
    """An encoder's weights as buffers: saved with the policy, never seen by its optimizer."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for key, value in state.items():
            self.register_buffer(key.replace(".", "__"), value.detach().clone())

    def state(self) -> dict[str, torch.Tensor]:
        return {k.replace("__", "."): v for k, v in self._buffers.items()}


class TSAMAEExtractor(BaseFeaturesExtractor):
    """sb3 features extractor holding the TSA-MAE encoder; see the module docstring.

    Frozen, the encoder's weights are stored as buffers (``frozen``): PPO's optimizer, gradient
    clipping and train/eval switching never walk them, and :attr:`encoder` rebuilds the module
    from them when ``predict`` needs embeddings. Trainable, it is a submodule (``net``).
    """

    def __init__(self, observation_space: gym.Space, *, encoder_config: dict, freeze: bool,
                 obs_config: dict, schema_version: int) -> None:
        if schema_version != SCHEMA_VERSION:
            raise StateError(
                f"PPOPyramiding model was saved by schema version {schema_version}, this code "
                f"reads version {SCHEMA_VERSION}: retrain it (use a new freqai.identifier or "
                "delete the old models folder)")
        try:
            cfg = parse_section(EncoderConfig, encoder_config, "extractor.encoder_config")
            obs = parse_section(ObsConfig, obs_config, "extractor.obs_config")
        except ConfigError as err:
            raise StateError(f"PPOPyramiding model does not match this code: {err}") from err
        n_market = market_width(cfg, freeze)
        if tuple(observation_space.shape) != (n_market + N_STATE,):
            raise StateError(f"PPOPyramiding: observation shape {observation_space.shape} does "
                             f"not match the encoder ({n_market} market + {N_STATE} state)")
        super().__init__(observation_space, features_dim=cfg.d_model + 1 + N_STATE)
        self.config = cfg
        self.freeze = freeze
        self.obs_config = obs
        self.n_market = n_market
        if freeze:
            self.frozen = _FrozenWeights(TSAMAE(cfg).state_dict())
        else:
            self.net = TSAMAE(cfg)
        self.register_buffer("feat_mean", torch.zeros(cfg.d_model + 1))
        self.register_buffer("feat_std", torch.ones(cfg.d_model + 1))

    @property
    def encoder(self) -> TSAMAE:
        """The encoder module (frozen: rebuilt from the stored weights, in eval mode)."""
        if not self.freeze:
            return self.net
        model = TSAMAE(self.config)
        model.load_state_dict(self.frozen.state())
        model.requires_grad_(False)
        return model.to(self.feat_mean.device).eval()

    def load_encoder(self, state: dict[str, torch.Tensor]) -> None:
        if self.freeze:
            for key, value in state.items():
                getattr(self.frozen, key.replace(".", "__")).copy_(value)
        else:
            self.net.load_state_dict(state)

    def set_normalization(self, mean: np.ndarray, std: np.ndarray) -> None:
        std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        self.feat_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feat_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def embed(self, market: torch.Tensor) -> torch.Tensor:
        """Market part -> ``embedding | scale`` (B, d_model + 1), before standardizing."""
        if self.freeze:
            return market
        cfg = self.config
        window = market[:, :-1].reshape(-1, cfg.window, cfg.n_features)  # (B, W, C)
        tokens = self.net.encode(window)  # (B, P, d)
        emb = tokens.mean(dim=1) if cfg.pool == "mean" else tokens[:, -1]
        return torch.cat([emb, market[:, -1:]], dim=1)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        market, state = observations[:, :self.n_market], observations[:, self.n_market:]
        feats = ((self.embed(market) - self.feat_mean) / self.feat_std).clamp(-_CLAMP, _CLAMP)
        return torch.cat([feats, state], dim=1)


def feature_stats(encoder: TSAMAE, market: np.ndarray, freeze: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of ``embedding | scale`` over the valid rows of ``market``."""
    rows = market[np.isfinite(market).all(axis=1)]
    if not freeze and len(rows):
        cfg = encoder.config
        x = rows[:, :-1].reshape(len(rows), cfg.window, cfg.n_features)
        emb, _ = encode_windows(encoder, x, score=False)
        rows = np.concatenate([emb, rows[:, -1:]], axis=1)
    if not len(rows):
        width = encoder.config.d_model + 1
        return np.zeros(width), np.ones(width)
    return rows.mean(axis=0), rows.std(axis=0)


# ----------------------------------------------------------------------------------------------
# Grid queries: the policy's action for a small grid of position states, per candle


@dataclass(frozen=True)
class GridConfig:
    """Position states queried per candle in ``predict`` (backtest-faithful use)."""

    pnl: tuple[float, ...] = _f((-0.02, 0.0, 0.02), "Open-profit buckets (ratios) queried for "
                                "every held tranche count; a trade maps to the nearest.")
    time_in_trade: int = _f(24, "Time in trade (candles) assumed for the held grid states.",
                            (0, 100_000))
    young_time_in_trade: str = _f(
        "", "A second, younger time in trade (a duration, e.g. '1h') queried for every held "
        "state (columns suffixed _young); a trade closer in age to it than to time_in_trade "
        "reads those. Empty: none (a young trade reads the time_in_trade columns).",
        duration=True)

    def __post_init__(self) -> None:
        names = [_pnl_tag(p) for p in self.pnl]
        if not self.pnl or len(set(names)) != len(names):
            raise ConfigError(f"grid.pnl {list(self.pnl)}: need distinct buckets (to 0.01 %)")
        if list(self.pnl) != sorted(self.pnl):
            raise ConfigError(f"grid.pnl {list(self.pnl)}: buckets must be increasing")


def _pnl_tag(pnl: float) -> str:
    return f"{round(pnl * 100, 2):+g}"


def grid_column(tranches: int, pnl: float, young: bool = False) -> str:
    """Prediction column of the greedy action at ``tranches`` held and open profit ``pnl``
    (``young``: at the grid's young time in trade)."""
    suffix = "_young" if young and tranches else ""
    return f"&-pyr_a_t{tranches}_p{_pnl_tag(0.0 if tranches == 0 else pnl)}{suffix}"


def grid_states(obs: ObsConfig, grid: GridConfig, young: int = 0
                ) -> list[tuple[int, float, int, bool]]:
    """(tranches, pnl, time in trade in candles, young) of every grid state; the flat state
    once, with pnl 0; the held states at ``time_in_trade`` and, when ``young`` (candles) > 0,
    again at that age."""
    ages = [(grid.time_in_trade, False)] + ([(young, True)] if young > 0 else [])
    return [(0, 0.0, 0, False)] + [(t, p, age, is_young) for age, is_young in ages
                                   for t in range(1, obs.tranches + 1) for p in grid.pnl]


def young_candles(grid: GridConfig, timeframe: str) -> int:
    """The grid's young time in trade in candles of ``timeframe`` (0: none)."""
    if not grid.young_time_in_trade:
        return 0
    young = candles(grid.young_time_in_trade, timeframe)
    if young >= grid.time_in_trade:
        raise ConfigError(f"grid.young_time_in_trade {grid.young_time_in_trade!r} is {young} "
                          f"candles of {timeframe}, not younger than time_in_trade "
                          f"({grid.time_in_trade} candles)")
    return young


def state_mask(tranches: int, max_tranches: int) -> np.ndarray:
    """Actions valid at a tranche count (the cap by value is the strategy's risk guard's job)."""
    mask = np.ones(len(Action), dtype=bool)
    if tranches == 0:
        mask[[Action.DECREASE, Action.CLOSE]] = False
    if tranches >= max_tranches:
        mask[Action.INCREASE] = False
    return mask


@torch.no_grad()
def action_probs(policy, obs: np.ndarray) -> np.ndarray:
    """The policy's action probabilities (N, n_actions) for observations (N, obs_dim)."""
    policy.set_training_mode(False)
    out = []
    for lo in range(0, len(obs), _CHUNK):
        x = torch.as_tensor(obs[lo:lo + _CHUNK], dtype=torch.float32, device=policy.device)
        out.append(policy.get_distribution(x).distribution.probs.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(Action)))


def grid_predictions(policy, market: np.ndarray, obs: ObsConfig, grid: GridConfig,
                     flat_column: str, young: int = 0) -> pd.DataFrame:
    """Greedy masked action per grid state and P(increase | flat) for every market row
    (``young``: the young time in trade in candles, 0 for none).

    Rows whose market features are not finite get HOLD everywhere and probability 0.
    """
    n = len(market)
    valid = np.isfinite(market).all(axis=1)
    states = grid_states(obs, grid, young)
    env = obs.env()
    cols: dict[str, np.ndarray] = {}
    m = market[valid]
    for tranches, pnl, duration, is_young in states:
        st = state_features(tranches, pnl, duration, env)  # (3,)
        x = np.concatenate([m, np.broadcast_to(st, (len(m), N_STATE))], axis=1)
        probs = action_probs(policy, x) * state_mask(tranches, obs.tranches)
        action = np.full(n, float(Action.HOLD))
        action[valid] = probs.argmax(axis=1)
        cols[grid_column(tranches, pnl, is_young)] = action
        if tranches == 0:
            p_inc = np.zeros(n)
            denom = probs.sum(axis=1)
            p_inc[valid] = np.divide(probs[:, Action.INCREASE], denom,
                                     out=np.zeros(len(m)), where=denom > 0)
            cols[flat_column] = p_inc
    return pd.DataFrame(cols)
