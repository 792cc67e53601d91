"""A mixture-of-experts actor-critic for stable-baselines3, gated by the regime probabilities.

Three experts, TREND, RANGE and PANIC (seed 003), each a policy and a value MLP of the same
shape as the plain policy's (``net_arch``). A gating network turns the regime probabilities of
the observation into one weight per expert (a softmax: **soft routing**, every expert
contributes, none is switched off), and the policy's and value's latent vectors are the
weighted sums of the experts' (sb3's ``mlp_extractor`` is replaced, everything downstream is
sb3's own)::

    g = softmax(W_g · regime + b_g + prior)          (B, E)      gate, E = 3 experts
    h_pi = Σ_e g_e · pi_e(x),  h_vf = Σ_e g_e · vf_e(x)          x = the other features

The experts see every feature but the regime probabilities (``experts_see_regime=False``, the
default): the regime decides *which* expert acts, the market and the portfolio *what* it does,
so an expert cannot quietly learn every regime's behaviour by itself and ignore the gate.
``gate_prior`` adds a fixed logit per (regime, expert), so that at the start TREND answers
BULL_MOMENTUM and THEME_DRIVEN, RANGE answers CHOPPY and PANIC answers BEAR_DEFENSIVE and
CRISIS (the names mean something); 0 starts from a uniform gate. The learned part ``W_g``
starts at zero either way.

The policy class is :class:`MoEActorCriticPolicy` (``policy_kwargs``: ``gate_index``, the
positions of the five regime probabilities in the features, in
:data:`~learning.core.regimes.REGIMES` order, and optionally ``gate_prior``,
``experts_see_regime``). Its weights are an ordinary state_dict; the agents that use it record
``policy = "moe"`` and the gate settings with their checkpoints and refuse a checkpoint of
another architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import MlpExtractor
from torch import nn

from learning.core.regimes import REGIMES, Regime

EXPERTS: tuple[str, ...] = ("TREND", "RANGE", "PANIC")
#: Which expert answers which regime at the start (the prior logits' +1 entries).
REGIME_EXPERT: dict[Regime, str] = {
    Regime.BULL_MOMENTUM: "TREND", Regime.THEME_DRIVEN: "TREND", Regime.CHOPPY: "RANGE",
    Regime.BEAR_DEFENSIVE: "PANIC", Regime.CRISIS: "PANIC"}


def prior_logits(strength: float) -> torch.Tensor:
    """(len(REGIMES), E): ``strength`` where the regime's expert is, 0 elsewhere."""
    out = torch.zeros(len(REGIMES), len(EXPERTS))
    for i, regime in enumerate(REGIMES):
        out[i, EXPERTS.index(REGIME_EXPERT[regime])] = strength
    return out


class MoEExtractor(nn.Module):
    """sb3 ``mlp_extractor`` of the mixture: the experts and the gate (module docstring)."""

    def __init__(self, feature_dim: int, net_arch: list[int] | dict[str, list[int]],
                 activation_fn: type[nn.Module], gate_index: Sequence[int],
                 gate_prior: float = 2.0, experts_see_regime: bool = False,
                 device: torch.device | str = "auto") -> None:
        super().__init__()
        gate_index = [int(i) for i in gate_index]
        if len(gate_index) != len(REGIMES) or len(set(gate_index)) != len(gate_index) or \
                not all(0 <= i < feature_dim for i in gate_index):
            raise ValueError(f"MoE gate_index {gate_index}: need {len(REGIMES)} distinct "
                             f"feature positions below {feature_dim}")
        self.register_buffer("gate_index", torch.tensor(gate_index, dtype=torch.long))
        keep = [i for i in range(feature_dim) if experts_see_regime or i not in gate_index]
        self.register_buffer("expert_index", torch.tensor(keep, dtype=torch.long))
        self.experts = nn.ModuleList(
            MlpExtractor(len(keep), net_arch, activation_fn, device="cpu") for _ in EXPERTS)
        self.latent_dim_pi = self.experts[0].latent_dim_pi
        self.latent_dim_vf = self.experts[0].latent_dim_vf
        self.gate = nn.Linear(len(REGIMES), len(EXPERTS))
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        self.register_buffer("prior", prior_logits(gate_prior))

    def gate_weights(self, features: torch.Tensor) -> torch.Tensor:
        """(B, E) expert weights, each row summing to 1."""
        regime = features.index_select(1, self.gate_index)  # (B, 5)
        return torch.softmax(self.gate(regime) + regime @ self.prior, dim=-1)

    def _mix(self, features: torch.Tensor, head: str) -> torch.Tensor:
        g = self.gate_weights(features)  # (B, E)
        x = features.index_select(1, self.expert_index)
        outs = torch.stack([getattr(e, head)(x) for e in self.experts], dim=1)  # (B, E, D)
        return (g.unsqueeze(-1) * outs).sum(dim=1)  # (B, D)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self._mix(features, "forward_actor")

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self._mix(features, "forward_critic")


class MoEActorCriticPolicy(ActorCriticPolicy):
    """sb3's actor-critic with :class:`MoEExtractor` as its ``mlp_extractor``."""

    def __init__(self, *args: Any, gate_index: Sequence[int], gate_prior: float = 2.0,
                 experts_see_regime: bool = False, **kwargs: Any) -> None:
        # set before super().__init__, which builds the networks
        self.gate_index = [int(i) for i in gate_index]
        self.gate_prior = float(gate_prior)
        self.experts_see_regime = bool(experts_see_regime)
        super().__init__(*args, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        # sb3's orthogonal initialisation walks every Linear of the mlp_extractor, the gate's
        # too: the learned part of the gate starts at zero (the prior alone decides at first).
        with torch.no_grad():
            self.mlp_extractor.gate.weight.zero_()
            self.mlp_extractor.gate.bias.zero_()

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = MoEExtractor(
            self.features_dim, self.net_arch, self.activation_fn, self.gate_index,
            self.gate_prior, self.experts_see_regime)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(gate_index=self.gate_index, gate_prior=self.gate_prior,
                    experts_see_regime=self.experts_see_regime)
        return data

    @torch.no_grad()
    def expert_weights(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, E) gate weights for observations (B, obs_dim)."""
        features = self.extract_features(obs, self.pi_features_extractor)
        return self.mlp_extractor.gate_weights(features)
