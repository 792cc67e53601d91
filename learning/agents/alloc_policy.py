"""The allocator's network: an autoencoder feature reducer trained end to end with the policy,
a few transformer blocks over the pairs, and sb3's actor-critic (or the mixture of experts) on
top. Checkpoints that describe themselves.

Feature reducer (seed 004), per pair with shared weights::

    x_p = the pair's window of features, flattened       (B, P, W*F)
    z_p = enc(x_p)                                        (B, P, latent)
    x̂_p = dec(z_p),  L_rec = mean over listed pairs of |x̂_p - x_p|²

**End to end**: the extractor returns ``z`` through :class:`_EncoderLoss`, an identity whose
backward scales the gradient the PPO loss sends into the encoder by ``policy_weight`` (0.7)
and adds ``recon_weight`` (0.3) times the gradient of ``L_rec``; so one ``loss.backward()`` of
sb3's own PPO update trains the encoder on ``0.7 * policy loss + 0.3 * reconstruction loss``
and the decoder on the reconstruction, with no change to sb3's training loop. The last
training batch's ``L_rec`` is kept in :attr:`AllocExtractor.last_recon` (logged).

Body: each pair's token is ``Linear(z_p | weight_p) + a learned pair embedding``, then
``n_blocks`` transformer encoder blocks over the P tokens (pairs attend to each other); the
extractor's output is the flattened tokens followed by the five regime probabilities and the
portfolio state, so the policy's gate (``policy="moe"``, :mod:`learning.agents.moe`) finds the
regime at known positions. sb3's action and value heads follow.

Checkpoint (:func:`checkpoint` / :func:`load_allocator`): format, schema version, the pairs
(in order), timeframe, feature, environment and network settings, the data range trained on
and the range it may trade, the policy's state_dict; a ``torch.load(weights_only=True)``
payload. Anything that does not match this code is refused with :class:`StateError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from learning.agents.alloc_env import (
    N_FEATURES,
    N_PORTFOLIO,
    N_REGIMES,
    AllocEnvConfig,
    FeatureConfig,
    ObsLayout,
    capped_weights,
)
from learning.agents.moe import MoEActorCriticPolicy
from learning.core.config import _f, parse_section
from learning.core.errors import ConfigError, StateError

FORMAT = "advl-allocator"
SCHEMA_VERSION = 2  # 2: "policies" (an ensemble); 1 ("policy", one network) still loads


@dataclass(frozen=True)
class NetConfig:
    """The allocator's network and training (``ftlearn train-allocator``)."""

    latent: int = _f(8, "Width of each pair's code from the feature reducer.", (1, 1024))
    hidden: int = _f(32, "Hidden width of the reducer's encoder and decoder.", (1, 4096))
    d_model: int = _f(32, "Width of the pair tokens in the transformer blocks.", (4, 1024))
    n_blocks: int = _f(2, "Transformer blocks over the pairs (0: none).", (0, 16))
    heads: int = _f(4, "Attention heads per block.", (1, 64))
    policy_weight: float = _f(0.7, "Weight of the PPO loss in the encoder's loss.",
                              (0.0, 1.0))
    recon_weight: float = _f(0.3, "Weight of the reconstruction loss in the encoder's loss.",
                             (0.0, 10.0))
    policy: str = _f("mlp", "Head network: mlp, or moe (experts gated by the regime).",
                     choices=("mlp", "moe"))
    net_arch: tuple[int, ...] = _f((64, 64), "Hidden widths of the policy and value heads.")
    learning_rate: float = _f(3e-4, "Adam learning rate.", (1e-7, 1.0))
    n_steps: int = _f(512, "Steps per PPO rollout.", (8, 10**6))
    batch_size: int = _f(64, "PPO minibatch.", (2, 10**6))
    n_epochs: int = _f(5, "Passes over each rollout.", (1, 100))
    gamma: float = _f(0.95, "Discount per step.", (0.0, 1.0))
    ent_coef: float = _f(0.0, "Entropy bonus.", (0.0, 1.0))
    log_std_init: float = _f(-0.5, "Initial log std of the Gaussian over the logits.",
                             (-5.0, 2.0))
    timesteps: int = _f(20_000, "PPO steps per training window.", (1, 10**9))
    seed: int = _f(0, "Seed of the network, PPO and the episodes.", (0, 2**31 - 1))
    lr_schedule: str = _f("constant", "constant, or cosine: cosine decays with warm restarts "
                          "(learning.agents.training).", choices=("constant", "cosine"))
    lr_cycles: int = _f(4, "cosine: restarts over a training run.", (1, 100))
    eval_share: float = _f(0.0, "Share of each training range held out (its end) to evaluate "
                           "the policy on every eval_every rollouts; the best evaluation's "
                           "weights are kept. 0: no evaluation (plateau and early stopping "
                           "need it).", (0.0, 0.5))
    eval_every: int = _f(2, "Rollouts between evaluations.", (1, 10_000))
    plateau_patience: int = _f(0, "Evaluations without improvement that halve the learning "
                               "rate (0: never).", (0, 1000))
    ensemble: int = _f(1, "Seeds trained per window (seed, seed + 1, ...); the allocator acts "
                       "on their mean action.", (1, 32))
    early_stop: bool = _f(False, "Stop a seed whose fitted evaluation curve is unlikely to beat "
                          "the best seed so far (it then leaves the ensemble).")
    curriculum: bool = _f(False, "Train through the curriculum's stages: trending, + ranging, + "
                          "panic episodes, then all (learning.agents.curriculum).")
    crash_share: float = _f(0.0, "Share of training episodes drawn from augmented crash "
                            "windows (block bootstrap of real and synthetic crashes; the "
                            "design's 0.2). 0: off.", (0.0, 1.0))

    def __post_init__(self) -> None:
        if self.n_blocks and self.d_model % self.heads:
            raise ConfigError(f"allocator d_model {self.d_model} is not a multiple of heads "
                              f"{self.heads}")


#: Fields that shape the network: a checkpoint whose values differ is refused.
ARCH_FIELDS = ("latent", "hidden", "d_model", "n_blocks", "heads", "policy", "net_arch")


class _EncoderLoss(torch.autograd.Function):
    """Identity on ``z``; backward: ``policy_weight * grad(z)`` for ``z`` and ``recon_weight``
    for the reconstruction loss (whose graph carries it into the encoder and decoder)."""

    @staticmethod
    def forward(ctx, z, recon, policy_weight: float, recon_weight: float):
        ctx.weights = (policy_weight, recon_weight)
        ctx.recon_shape = recon.shape
        return z.clone()

    @staticmethod
    def backward(ctx, grad):
        policy_weight, recon_weight = ctx.weights
        scale = torch.full(ctx.recon_shape, recon_weight, dtype=grad.dtype, device=grad.device)
        return grad * policy_weight, scale, None, None


class AllocExtractor(BaseFeaturesExtractor):
    """Feature reducer + transformer over the pairs (module docstring)."""

    def __init__(self, observation_space: gym.Space, *, layout: dict, net: dict) -> None:
        lay = ObsLayout(**layout)
        cfg = _net_from(net)
        if tuple(observation_space.shape) != (lay.size,):
            raise StateError(f"allocator: observation shape {observation_space.shape} does "
                             f"not match the layout ({lay.size})")
        width = lay.n_pairs * cfg.d_model + N_REGIMES + N_PORTFOLIO
        super().__init__(observation_space, features_dim=width)
        self.layout, self.cfg = lay, cfg
        x = lay.window * lay.n_features
        self.encoder = nn.Sequential(nn.Linear(x, cfg.hidden), nn.Tanh(),
                                     nn.Linear(cfg.hidden, cfg.latent))
        self.decoder = nn.Sequential(nn.Linear(cfg.latent, cfg.hidden), nn.Tanh(),
                                     nn.Linear(cfg.hidden, x))
        self.token = nn.Linear(cfg.latent + 1, cfg.d_model)
        self.pair_embedding = nn.Parameter(torch.zeros(lay.n_pairs, cfg.d_model))
        self.blocks = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(cfg.d_model, cfg.heads, 2 * cfg.d_model, dropout=0.0,
                                       batch_first=True), cfg.n_blocks,
            enable_nested_tensor=False) if cfg.n_blocks else None
        self.last_recon = float("nan")

    @property
    def regime_index(self) -> list[int]:
        """Positions of the regime probabilities in this extractor's output."""
        start = self.layout.n_pairs * self.cfg.d_model
        return list(range(start, start + N_REGIMES))

    def split(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        lay = self.layout
        x = obs[:, :lay.market].reshape(-1, lay.n_pairs, lay.window * lay.n_features)
        return x, obs[:, lay.weights], obs[:, lay.regime], obs[:, lay.portfolio]

    def reconstruction(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z (B, P, latent), reconstruction loss) of a batch; pairs whose window is all zero
        (unlisted) are left out of the loss."""
        x, *_ = self.split(obs)
        z = self.encoder(x)
        err = ((self.decoder(z) - x) ** 2).mean(dim=-1)  # (B, P)
        listed = (x.abs().sum(dim=-1) > 0).float()
        loss = (err * listed).sum() / listed.sum().clamp(min=1.0)
        return z, loss

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        _, weights, regime, portfolio = self.split(obs)
        z, recon = self.reconstruction(obs)
        if torch.is_grad_enabled() and self.training:
            self.last_recon = float(recon.detach())
            z = _EncoderLoss.apply(z, recon, self.cfg.policy_weight, self.cfg.recon_weight)
        tokens = self.token(torch.cat([z, weights.unsqueeze(-1)], dim=-1)) \
            + self.pair_embedding  # (B, P, d)
        if self.blocks is not None:
            tokens = self.blocks(tokens)
        return torch.cat([tokens.flatten(1), regime, portfolio], dim=1)


def _net_from(raw: Mapping[str, Any]) -> NetConfig:
    kw = dict(raw)
    if "net_arch" in kw:
        kw["net_arch"] = tuple(int(w) for w in kw["net_arch"])
    try:
        return NetConfig(**kw)
    except TypeError as err:
        raise StateError(f"allocator network settings do not match this code ({err})") from err


def policy_spec(layout: ObsLayout, net: NetConfig) -> tuple[type[ActorCriticPolicy],
                                                            dict[str, Any]]:
    """sb3 policy class and ``policy_kwargs`` for this layout and network."""
    arch = [int(w) for w in net.net_arch]
    kwargs: dict[str, Any] = {
        "features_extractor_class": AllocExtractor,
        "features_extractor_kwargs": {"layout": layout.to_dict(),
                                      "net": _plain(net)},
        "net_arch": {"pi": arch, "vf": list(arch)}, "log_std_init": net.log_std_init,
        "activation_fn": nn.Tanh}
    if net.policy == "moe":
        start = layout.n_pairs * net.d_model
        kwargs["gate_index"] = list(range(start, start + N_REGIMES))
        return MoEActorCriticPolicy, kwargs
    return ActorCriticPolicy, kwargs


def make_policy(layout: ObsLayout, net: NetConfig, action_dim: int,
                seed: int | None = None) -> ActorCriticPolicy:
    cls, kwargs = policy_spec(layout, net)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (layout.size,), np.float32)
    act_space = gym.spaces.Box(-5.0, 5.0, (action_dim,), np.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(net.seed if seed is None else seed)
        policy = cls(obs_space, act_space, lambda _: net.learning_rate, **kwargs)
    policy.set_training_mode(False)
    return policy


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# Checkpoints and inference


@dataclass
class Allocator:
    """A trained allocator: its policies (one per ensemble member) and everything needed to read
    the market as trained."""

    pairs: tuple[str, ...]
    timeframe: str
    features: FeatureConfig
    env: AllocEnvConfig
    net: NetConfig
    layout: ObsLayout
    policies: list[ActorCriticPolicy]
    meta: dict[str, Any]

    @property
    def policy(self) -> ActorCriticPolicy:
        return self.policies[0]

    @torch.no_grad()
    def logits(self, obs: np.ndarray) -> np.ndarray:
        """(B, P + 1) deterministic action for observations (B, size): the members' mean
        logits (an ensemble's mean action)."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(-1, self.layout.size))
        out = []
        for policy in self.policies:
            policy.set_training_mode(False)
            out.append(policy.get_distribution(x).distribution.mean.clamp(-5.0, 5.0).numpy())
        return np.mean(out, axis=0)

    def target(self, obs: np.ndarray, listed: np.ndarray) -> np.ndarray:
        """Target weights (P + 1,) for one observation (the last entry is cash)."""
        return capped_weights(self.logits(obs)[0], self.env.cap, self.env.min_weight, listed)


def checkpoint(allocator: Allocator) -> dict[str, Any]:
    """Self-describing payload for ``StateStore.save_torch`` (module docstring)."""
    import stable_baselines3

    from learning import __version__

    return {"format": FORMAT, "schema_version": SCHEMA_VERSION,
            "pairs": list(allocator.pairs), "timeframe": allocator.timeframe,
            "features": _plain(allocator.features), "env": _plain(allocator.env),
            "net": _plain(allocator.net), "layout": allocator.layout.to_dict(),
            "meta": _plain(allocator.meta),
            "versions": {"learning": __version__, "torch": str(torch.__version__),
                         "stable_baselines3": str(stable_baselines3.__version__)},
            "policies": [{k: v.detach().clone() for k, v in p.state_dict().items()}
                         for p in allocator.policies]}


def load_allocator(payload: Any, source: str = "allocator checkpoint",
                   net: NetConfig | None = None) -> Allocator:
    """Rebuild an :class:`Allocator`; :class:`StateError` names what does not match. ``net``:
    the configured network, whose architecture fields must equal the checkpoint's."""
    fmt = payload.get("format") if isinstance(payload, Mapping) else None
    if fmt != FORMAT:
        raise StateError(f"{source} is not an allocator checkpoint (format {fmt!r})")
    if payload.get("schema_version") not in (1, SCHEMA_VERSION):
        raise StateError(f"{source}: schema version {payload.get('schema_version')!r} is not "
                         f"{SCHEMA_VERSION}; retrain it (ftlearn train-allocator)")
    try:
        features = parse_section(FeatureConfig, payload["features"], "features")
        env = parse_section(AllocEnvConfig, payload["env"], "env")
        saved = _net_from(payload["net"])
        layout = ObsLayout(**payload["layout"])
        pairs = tuple(payload["pairs"])
    except (KeyError, TypeError, ConfigError) as err:
        raise StateError(f"{source}: settings are malformed or from another version "
                         f"({err}); retrain it") from err
    if layout.n_features != N_FEATURES or layout.n_pairs != len(pairs):
        raise StateError(f"{source}: its observation layout {layout} does not fit this code "
                         f"({N_FEATURES} features, {len(pairs)} pairs)")
    if net is not None:
        for name in ARCH_FIELDS:
            if getattr(net, name) != getattr(saved, name):
                raise StateError(f"{source}: {name} {getattr(saved, name)!r} differs from the "
                                 f"configured {getattr(net, name)!r}; retrain it")
    states = payload.get("policies") if payload.get("schema_version") == SCHEMA_VERSION \
        else [payload.get("policy")]
    if not states or not isinstance(states, list):
        raise StateError(f"{source}: no network weights")
    policies = []
    for state in states:
        policy = make_policy(layout, saved, len(pairs) + 1)
        try:
            policy.load_state_dict(state)
        except (KeyError, RuntimeError, TypeError, AttributeError) as err:
            raise StateError(f"{source}: network weights do not fit ({err})") from err
        policy.set_training_mode(False)
        policies.append(policy)
    return Allocator(pairs, str(payload.get("timeframe")), features, env, saved, layout,
                     policies, dict(payload.get("meta") or {}))
