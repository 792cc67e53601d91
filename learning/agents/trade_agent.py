"""Tier 3: the trade-parameter agent. A PPO policy picks each trade's size, hold time, stop, TP.

Action (4-d, the policy's Gaussian sample clipped to [-1, 1], see :func:`decode_action`)
-------------------------------------------------------------------------------------------
=============  ================================================================================
size_frac      linear: -1 → 0 %, +1 → 100 % of the learner's allowance (risk_tolerance × the risk
               guard's max stake; the caller passes it in :class:`TradeLimits`)
hold           log-linear: -1 → patience × 1 day, +1 → patience × 30 days, clipped to 1..30
               days, then in candles of the strategy's timeframe (5m: 288..8640)
stop_loss      linear: -1 → 5 %, +1 → 25 % below the entry, never wider than the limits allow
take_profit    log-linear: -1 → 10 %, +1 → 100 % above the entry
=============  ================================================================================

State: the :data:`STATE_FIELDS` (27), each clipped to its range and scaled to [-1, 1] by
:func:`build_state`. Missing optional inputs take the documented default; a missing or NaN
required input leaves NaN in the vector, and the agent then returns the rule-based defaults and
logs once (it never acts on a state it cannot read).

Reward of one closed trade (:func:`reward_terms`, the same in the simulator and online)
-------------------------------------------------------------------------------------
With ``z = stake / equity × profit_ratio / (return_scale × √(days held / horizon))`` (the trade's
equity return in units of the volatility a position accrues over its holding time, i.e. a
per-trade Sharpe-like ratio; trades shorter than the horizon are not scaled up)::

    r = z − ½ κ min(z, 0)²              downside-penalised return (a Sortino-like utility:
                                         losses cost more than their size, wins are not taxed);
                                         z is net of both real fees (freqtrade's profit ratio)
        − c_churn / scale                 churn: short_hold_penalty × 2 fee × stake / equity ×
                                         (1 − days held / min_hold), 0 after min_hold
        − λ_dd · drawdown_after²          squared drawdown of equity once the trade is booked
        − λ_v · Σ violations              share of a proposal the limits had to cut, cash shortfall,
                                         the drawdown halt
        + β · conviction · [profit > 0]  conviction = how far size_frac exceeds the threshold

Online learning: sb3's ``PPO.learn`` wants fresh rollouts from an environment, but a real trade's
outcome exists only for the action that was executed, so a "replay env" could not answer the new
actions PPO would sample. We therefore keep (state, action, log-prob, value, reward) of each real
closed trade and, every ``online_batch`` trades, run PPO's clipped-surrogate update on exactly that
batch (the stored log-prob is the behaviour policy, so the ratio is the correct importance weight).
Each trade is one step (γ = 0, the advantage is ``reward − V(state)``), matching the offline
default ``gamma = 0``: a trade's whole outcome is in its own reward.

Checkpoints (:meth:`TradeParamAgent.checkpoint`) are plain dicts of tensors and JSON-able values
(format name, schema version, state/action field lists, config, profile, versions) that load with
``torch.load(weights_only=True)``; they fit ``StateStore.save_torch``. Never saved: the online
optimiser's moments (a restart begins them anew) and the exploration rng.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from learning import __version__
from learning.agents.moe import MoEActorCriticPolicy
from learning.agents.trade_space import (  # noqa: F401  (re-exported: the public API)
    _DEFAULT,
    _HI_T,
    _HIGH,
    _INDEX,
    _INPUT_KEYS,
    _KEYS,
    _LO_T,
    _LOG,
    _LOW,
    _PERF_KEYS,
    _REGIME_SLICE,
    ACTION_DIM,
    ACTION_FIELDS,
    ACTION_SPACE,
    FORMAT,
    HOLD_DAYS_RANGE,
    OBSERVATION_SPACE,
    SCHEMA_VERSION,
    SIZE_RANGE,
    STATE_DIM,
    STATE_FIELDS,
    STATE_NAMES,
    STOP_RANGE,
    TAKE_PROFIT_RANGE,
    FallbackParams,
    RewardConfig,
    StateField,
    TradeLimits,
    TradeParams,
    _check_keys,
    _clip,
    _fields,
    _lerp,
    _value,
    build_state,
    churn_cost,
    decode_action,
    encode_params,
    hold_candles,
    loss_at_stop,
    make_params,
    performance_stats,
    reward_terms,
    trade_reward,
)
from learning.brain.meta import DEFAULT_LEARNERS, LearnerProfile
from learning.core.config import _f
from learning.core.errors import ConfigError, StateError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PPOConfig:
    """Tier 3: the trade-parameter agent (network, offline PPO, online batch updates)."""

    net_arch: tuple[int, ...] = _f((64, 64), "Hidden layer widths of the policy and value nets.")
    activation: str = _f("tanh", "Hidden activation.", choices=("tanh", "relu"))
    policy: str = _f("mlp", "Network: mlp (one policy and one value MLP) or moe (three experts, "
                     "TREND / RANGE / PANIC, mixed by a gate fed the state's regime "
                     "probabilities; learning.agents.moe).", choices=("mlp", "moe"))
    gate_prior: float = _f(2.0, "moe: prior logit of each regime's expert (0: uniform gate at "
                           "the start).", (0.0, 20.0))
    log_std_init: float = _f(-0.5, "Initial log std of the Gaussian policy (raw action units).",
                             (-5.0, 1.0))
    learning_rate: float = _f(3e-4, "Adam learning rate of offline PPO.", (1e-7, 1.0))
    n_steps: int = _f(512, "Simulated trades per PPO rollout (all envs together).", (8, 10**6))
    n_envs: int = _f(8, "Simulated accounts stepped together in offline training.", (1, 256))
    batch_size: int = _f(64, "Minibatch size of the PPO update.", (2, 10**6))
    n_epochs: int = _f(5, "Passes over each rollout.", (1, 100))
    gamma: float = _f(0.0, "Discount between successive trades; 0: each trade's reward is its "
                      "whole outcome (a contextual bandit with portfolio state).", (0.0, 1.0))
    gae_lambda: float = _f(0.95, "GAE λ (no effect with gamma 0).", (0.0, 1.0))
    clip_range: float = _f(0.2, "PPO clipping of the probability ratio.", (0.01, 1.0))
    ent_coef: float = _f(0.0, "Entropy bonus.", (0.0, 1.0))
    vf_coef: float = _f(0.5, "Weight of the value loss.", (0.0, 10.0))
    max_grad_norm: float = _f(0.5, "Gradient norm clip.", (0.01, 100.0))
    total_timesteps: int = _f(20_000, "Simulated trades of offline training.", (1, 10**9))
    online_learning: bool = _f(True, "Update the policy from real closed trades.")
    online_batch: int = _f(10, "Closed trades per online update.", (1, 10_000))
    online_epochs: int = _f(4, "Gradient steps per online update.", (1, 1000))
    online_learning_rate: float = _f(
        1e-4, "Adam learning rate of online updates, × the learner's learning_rate.", (0.0, 1.0))
    online_clip_range: float = _f(0.2, "PPO ratio clipping of online updates.", (0.01, 1.0))
    explore: bool = _f(True, "Sample live actions from the policy (online updates need it; "
                       "false uses the mean, and the policy mean then cannot learn).")
    seed: int = _f(0, "Seed of the network initialisation, PPO and exploration.", (0, 2**31 - 1))
    torch_threads: int = _f(
        1, "Torch CPU threads while training (a small MLP is fastest on one; more threads on a "
        "busy machine made offline training 20x slower here).", (1, 256))
    fallback: FallbackParams = _f(FallbackParams(), "Rule-based parameters.")
    reward: RewardConfig = _f(RewardConfig(), "Reward weights.")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            rng, v = f.metadata.get("range"), getattr(self, f.name)
            if rng is not None and not (rng[0] <= v <= rng[1]):
                raise ConfigError(f"ppo.{f.name}: {v!r} is out of range [{rng[0]}, {rng[1]}]")
        if not self.net_arch or any(int(w) < 1 for w in self.net_arch):
            raise ConfigError(f"ppo.net_arch: need positive widths, got {self.net_arch!r}")
        if self.n_steps % self.n_envs:
            raise ConfigError(f"ppo.n_steps {self.n_steps} is not a multiple of n_envs "
                              f"{self.n_envs}")
        if self.batch_size > self.n_steps:
            raise ConfigError(f"ppo.batch_size {self.batch_size} exceeds n_steps {self.n_steps}")


_ARCH_FIELDS = ("net_arch", "activation", "policy", "gate_prior")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads, restoring the previous setting after."""
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def make_policy(config: PPOConfig, seed: int | None = None) -> ActorCriticPolicy:
    """A fresh actor-critic policy; initialisation seeded without touching torch's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed if seed is None else seed)
        policy = policy_class(config)(OBSERVATION_SPACE, ACTION_SPACE,
                                      lambda _: config.learning_rate, **policy_kwargs(config))
    policy.set_training_mode(False)
    return policy


def policy_class(config: PPOConfig) -> type[ActorCriticPolicy]:
    """sb3's actor-critic, or the mixture of experts (:mod:`learning.agents.moe`)."""
    return MoEActorCriticPolicy if config.policy == "moe" else ActorCriticPolicy


def policy_kwargs(config: PPOConfig) -> dict[str, Any]:
    arch = [int(w) for w in config.net_arch]
    out = {"net_arch": {"pi": arch, "vf": list(arch)}, "log_std_init": config.log_std_init,
           "activation_fn": nn.Tanh if config.activation == "tanh" else nn.ReLU}
    if config.policy == "moe":  # the gate reads the five regime probabilities of the state
        out.update(gate_index=list(range(_REGIME_SLICE.start, _REGIME_SLICE.stop)),
                   gate_prior=config.gate_prior)
    return out


# ---------------------------------------------------------------------------------- agent
@dataclass(frozen=True)
class Decision:
    """What the agent decided for one entry, and what the online update needs later."""

    params: TradeParams
    obs: tuple[float, ...] | None = None
    """The (27,) state; None for a fallback decision (nothing to learn from)."""
    raw: tuple[float, ...] | None = None
    """The sampled, unclipped action (its log-prob is under this action)."""
    log_prob: float = math.nan
    value: float = math.nan

    def to_record(self) -> dict[str, Any] | None:
        """JSON-able dict to keep with the open trade (e.g. freqtrade custom data)."""
        if self.obs is None or self.raw is None:
            return None
        return {"obs": list(self.obs), "raw": list(self.raw), "log_prob": self.log_prob,
                "value": self.value, "size_frac": self.params.size_frac,
                "violations": dict(self.params.violations)}


@dataclass
class AgentState:
    """What an agent accumulates besides its weights (JSON-able, saved in its checkpoint)."""

    buffer: list[dict[str, Any]] = field(default_factory=list)
    """Closed trades waiting for the next online update: obs, raw, log_prob, value, reward."""
    decisions: int = 0
    fallbacks: int = 0
    trades: int = 0
    updates: int = 0
    last_update: dict[str, float] = field(default_factory=dict)


def _versions() -> dict[str, str]:
    import stable_baselines3

    return {"learning": __version__, "torch": str(torch.__version__),
            "stable_baselines3": str(stable_baselines3.__version__)}


def _plain(value: Any) -> Any:
    """Tuples → lists and dataclasses → dicts, so weights_only loading accepts the payload."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _config_from(raw: Mapping[str, Any]) -> PPOConfig:
    kw = dict(raw)
    kw["net_arch"] = tuple(kw.get("net_arch", ()))
    kw["fallback"] = FallbackParams(**kw.get("fallback", {}))
    kw["reward"] = RewardConfig(**kw.get("reward", {}))
    return PPOConfig(**kw)


class TradeParamAgent:
    """One learner's PPO policy: act at entries, learn from closed trades in batches."""

    def __init__(self, profile: LearnerProfile, config: PPOConfig | None = None, *,
                 policy: ActorCriticPolicy | None = None, state: AgentState | None = None) -> None:
        self.profile = profile
        self.config = config or PPOConfig()
        self.policy = policy if policy is not None else make_policy(
            self.config, self.config.seed + learner_seed(profile.name))
        self.state = state if state is not None else AgentState()
        self._rng = np.random.default_rng([self.config.seed, learner_seed(profile.name)])
        self._optimizer: torch.optim.Optimizer | None = None
        self._logged: set[str] = set()

    def _log_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(msg, *args)

    # -- acting ------------------------------------------------------------------------------
    def policy_output(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(mean (4,), std (4,), value) of the policy at one state."""
        with torch.no_grad():
            obs_t = torch.as_tensor(np.clip(obs, -1, 1), dtype=torch.float32).reshape(1, -1)
            dist = self.policy.get_distribution(obs_t).distribution
            value = self.policy.predict_values(obs_t)
        return dist.mean[0].numpy(), dist.stddev[0].numpy(), float(value[0, 0])

    def act(self, state: np.ndarray | Sequence[float], limits: TradeLimits, *,
            timeframe: str = "5m", explore: bool | None = None,
            rng: np.random.Generator | None = None) -> Decision:
        """Trade parameters for one entry. Never raises on bad state: a state that is not a
        finite (27,) vector gives the rule-based parameters (``source='fallback'``), logged once."""
        self.state.decisions += 1
        with np.errstate(over="ignore", invalid="ignore"):  # huge values become inf: refused
            obs = np.asarray(state, dtype=np.float32).reshape(-1)
        if obs.shape != (STATE_DIM,) or not np.isfinite(obs).all():
            self.state.fallbacks += 1
            bad = ([STATE_NAMES[i] for i in np.flatnonzero(~np.isfinite(obs))]
                   if obs.shape == (STATE_DIM,) else [f"shape {obs.shape}"])
            self._log_once("nan-state", "trade-param agent %s: unusable state (%s); using the "
                           "rule-based parameters", self.profile.name, ", ".join(bad))
            return Decision(self.config.fallback.params(self.profile, limits, timeframe,
                                                        "fallback"))
        obs = np.clip(obs, -1.0, 1.0)
        mean, std, value = self.policy_output(obs)
        explore = self.config.explore if explore is None else explore
        raw = mean + std * (rng or self._rng).standard_normal(ACTION_DIM) if explore else mean
        raw = raw.astype(np.float32)
        with torch.no_grad():
            dist = self.policy.get_distribution(torch.as_tensor(obs).reshape(1, -1))
            log_prob = float(dist.log_prob(torch.as_tensor(raw).reshape(1, -1))[0])
        params = decode_action(raw, self.profile, limits, timeframe=timeframe,
                               fallback=self.config.fallback)
        return Decision(params, tuple(map(float, obs)), tuple(map(float, raw)), log_prob, value)

    # -- learning ----------------------------------------------------------------------------
    def reward_for(self, record: Decision | Mapping[str, Any], profit_ratio: float,
                   stake_frac: float, drawdown_after: float, days_held: float = 0.0,
                   fee: float = 0.001) -> float:
        """:func:`trade_reward` of a closed trade from its decision record, its profit ratio,
        stake / equity at entry, the equity drawdown once it is booked, its duration and the
        fee per side."""
        if isinstance(record, Decision):
            record = record.to_record() or {"size_frac": record.params.size_frac,
                                            "violations": dict(record.params.violations)}
        return trade_reward(profit_ratio, stake_frac, float(record.get("size_frac", 0.0)),
                            drawdown_after, record.get("violations") or {}, self.config.reward,
                            days_held, fee)

    def record_outcome(self, record: Decision | Mapping[str, Any] | None,
                       reward: float) -> dict[str, float] | None:
        """Add one closed trade (its decision record and :func:`trade_reward`); every
        ``online_batch`` trades run the batch update. Returns the update's stats when one ran.
        Fallback decisions, malformed records and non-finite rewards are skipped (logged once)."""
        if isinstance(record, Decision):
            record = record.to_record()
        if record is None or not self.config.online_learning:
            return None
        try:
            item = {"obs": [float(x) for x in record["obs"]],
                    "raw": [float(x) for x in record["raw"]],
                    "log_prob": float(record["log_prob"]), "value": float(record["value"]),
                    "reward": float(reward)}
            ok = (len(item["obs"]) == STATE_DIM and len(item["raw"]) == ACTION_DIM and all(
                math.isfinite(v) for v in (*item["obs"], *item["raw"], item["log_prob"],
                                           item["value"], item["reward"])))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            self._log_once("bad-record", "trade-param agent %s: closed trade with an unusable "
                           "decision record or reward skipped", self.profile.name)
            return None
        self.state.buffer.append(item)
        self.state.trades += 1
        if len(self.state.buffer) >= self.config.online_batch:
            return self.update()
        return None

    def update(self) -> dict[str, float] | None:
        """PPO's clipped-surrogate update on the buffered real trades (module doc); empties it."""
        batch, self.state.buffer = self.state.buffer, []
        if not batch:
            return None
        cfg = self.config
        obs = torch.tensor([b["obs"] for b in batch], dtype=torch.float32)      # (B, 27)
        act = torch.tensor([b["raw"] for b in batch], dtype=torch.float32)      # (B, 4)
        old_logp = torch.tensor([b["log_prob"] for b in batch])                  # (B,)
        rewards = torch.tensor([b["reward"] for b in batch])                     # (B,)
        adv = rewards - torch.tensor([b["value"] for b in batch])
        if len(batch) > 1 and adv.std() > 1e-8:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(
                self.policy.parameters(), lr=cfg.online_learning_rate * self.profile.learning_rate)
        self.policy.set_training_mode(True)
        with torch_threads(cfg.torch_threads):
            stats = self._ppo_steps(self._optimizer, obs, act, old_logp, rewards, adv)
        self.policy.set_training_mode(False)
        self.state.updates += 1
        self.state.last_update = {**stats, "n": float(len(batch)),
                                  "mean_reward": float(rewards.mean())}
        return self.state.last_update

    def _ppo_steps(self, optimizer: torch.optim.Optimizer, obs: torch.Tensor, act: torch.Tensor,
                   old_logp: torch.Tensor, rewards: torch.Tensor,
                   adv: torch.Tensor) -> dict[str, float]:
        cfg, stats = self.config, {}
        for _ in range(cfg.online_epochs):
            values, logp, entropy = self.policy.evaluate_actions(obs, act)
            ratio = torch.exp(logp - old_logp)
            clipped = torch.clamp(ratio, 1 - cfg.online_clip_range, 1 + cfg.online_clip_range)
            policy_loss = -torch.min(adv * ratio, adv * clipped).mean()
            value_loss = nn.functional.mse_loss(values.flatten(), rewards)
            ent = entropy.mean() if entropy is not None else torch.zeros(())
            loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * ent
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                stats = {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                         "approx_kl": ((ratio - 1) - torch.log(ratio)).mean().item()}
        return stats

    # -- persistence -------------------------------------------------------------------------
    def checkpoint(self, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Self-describing payload for ``StateStore.save_torch`` (module doc)."""
        return {"format": FORMAT, "schema_version": SCHEMA_VERSION,
                "state_fields": list(STATE_NAMES), "action_fields": list(ACTION_FIELDS),
                "config": _plain(self.config), "profile": _plain(self.profile),
                "versions": _versions(), "meta": _plain(dict(meta or {})),
                "agent_state": _plain(self.state),
                "policy": {k: v.detach().clone() for k, v in self.policy.state_dict().items()}}

    @classmethod
    def from_checkpoint(cls, payload: Any, *, profile: LearnerProfile | None = None,
                        config: PPOConfig | None = None,
                        source: str = "checkpoint") -> TradeParamAgent:
        """Rebuild an agent; :class:`StateError` names whatever does not match this version.

        The checkpoint's config defines the network; a ``config`` given here may change the
        other settings (online learning, exploration, reward) but not the architecture."""
        fmt = payload.get("format") if isinstance(payload, Mapping) else None
        if fmt != FORMAT:
            raise StateError(f"{source} is not a trade-parameter agent checkpoint "
                             f"(format {fmt!r}, expected {FORMAT!r})")
        if payload.get("schema_version") != SCHEMA_VERSION:
            raise StateError(f"{source}: schema version {payload.get('schema_version')!r} is not "
                             f"the supported version {SCHEMA_VERSION}; retrain the agent")
        for key, want in (("state_fields", STATE_NAMES), ("action_fields", ACTION_FIELDS)):
            got = tuple(payload.get(key) or ())
            if got != want:
                diff = sorted(set(got) ^ set(want)) or "order"
                raise StateError(f"{source}: its {key} differ from this version's ({diff}); "
                                 "retrain the agent")
        try:
            saved = _config_from(payload["config"])
            saved_profile = LearnerProfile(**payload["profile"])
            state = AgentState(**payload.get("agent_state", {}))
        except (KeyError, TypeError, ValueError, ConfigError) as err:
            raise StateError(f"{source}: config/profile is malformed ({err})") from err
        if profile is not None and profile.name != saved_profile.name:
            raise StateError(f"{source} belongs to learner {saved_profile.name!r}, "
                             f"not {profile.name!r}")
        if config is not None:
            for name in _ARCH_FIELDS:
                if getattr(config, name) != getattr(saved, name):
                    raise StateError(f"{source}: {name} {getattr(saved, name)!r} differs from "
                                     f"the configured {getattr(config, name)!r}; retrain")
        cfg = config or saved
        policy = make_policy(cfg)
        try:
            policy.load_state_dict(payload["policy"])
        except (KeyError, RuntimeError) as err:
            raise StateError(f"{source}: network weights do not fit ({err})") from err
        policy.set_training_mode(False)
        return cls(profile or saved_profile, cfg, policy=policy, state=state)

    def to_bytes(self, meta: Mapping[str, Any] | None = None) -> bytes:
        buf = io.BytesIO()
        torch.save(self.checkpoint(meta), buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, **kwargs: Any) -> TradeParamAgent:
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for foreign or truncated files
            raise StateError(f"not a loadable agent checkpoint ({err})") from err
        return cls.from_checkpoint(payload, **kwargs)


#: Schema of the state-store files that hold one learner's agent (``StateStore.save_torch``).
AGENT_SCHEMA = 1


def agent_state_name(learner: str, offline: bool = False) -> str:
    """``agent_<learner>``: the agent as trading left it (online updates included);
    ``agent_<learner>_offline``: as ``ftlearn train-agents`` trained it."""
    return f"agent_{learner}_offline" if offline else f"agent_{learner}"


def learner_seed(name: str) -> int:
    """A stable per-learner offset, so the three agents of one seed differ (not hash())."""
    return sum((i + 1) * ord(c) for i, c in enumerate(name)) % 10_007


class AgentSet:
    """One :class:`TradeParamAgent` per meta-learner personality; None = rule-based."""

    def __init__(self, agents: Mapping[str, TradeParamAgent | None],
                 profiles: Sequence[LearnerProfile] = DEFAULT_LEARNERS,
                 config: PPOConfig | None = None) -> None:
        self.config = config or PPOConfig()
        self.profiles = {p.name: p for p in profiles}
        self.agents = {name: agents.get(name) for name in self.profiles}
        self.errors: dict[str, str] = {}

    @classmethod
    def create(cls, profiles: Sequence[LearnerProfile] = DEFAULT_LEARNERS,
               config: PPOConfig | None = None) -> AgentSet:
        cfg = config or PPOConfig()
        return cls({p.name: TradeParamAgent(p, cfg) for p in profiles}, profiles, cfg)

    @classmethod
    def from_checkpoints(cls, payloads: Mapping[str, Any],
                         profiles: Sequence[LearnerProfile] = DEFAULT_LEARNERS,
                         config: PPOConfig | None = None) -> AgentSet:
        """Load each learner's checkpoint; a missing or refused one leaves that learner on the
        rule-based parameters, with the reason in ``errors`` and an error log line."""
        agents: dict[str, TradeParamAgent | None] = {}
        errors: dict[str, str] = {}
        for p in profiles:
            payload = payloads.get(p.name)
            if payload is None:
                agents[p.name] = None
                continue
            try:
                agents[p.name] = TradeParamAgent.from_checkpoint(
                    payload, profile=p, config=config, source=f"agent checkpoint of {p.name}")
            except StateError as err:
                agents[p.name], errors[p.name] = None, str(err)
                logger.error("%s; %s uses rule-based trade parameters", err, p.name)
        out = cls(agents, profiles, config)
        out.errors = errors
        return out

    def decide(self, learner: str, state: np.ndarray | Sequence[float], limits: TradeLimits, *,
               timeframe: str = "5m", rng: np.random.Generator | None = None) -> Decision:
        """The learner's decision; rule-based parameters when it has no agent."""
        agent = self.agents.get(learner)
        if agent is None:
            profile = self.profiles.get(learner) or LearnerProfile(learner or "unknown")
            return Decision(self.config.fallback.params(profile, limits, timeframe, "rule"))
        return agent.act(state, limits, timeframe=timeframe, rng=rng)

    def record_outcome(self, learner: str, record: Decision | Mapping[str, Any] | None,
                       reward: float) -> dict[str, float] | None:
        agent = self.agents.get(learner)
        return agent.record_outcome(record, reward) if agent is not None else None

    def checkpoints(self, meta: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        return {n: a.checkpoint(meta) for n, a in self.agents.items() if a is not None}
