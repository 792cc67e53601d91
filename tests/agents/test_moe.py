"""The mixture-of-experts policy: the gate's weights, its use by sb3 PPO and the Tier 3 agents,
and a synthetic task on which the gate must learn to route each regime to its own expert."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from learning.agents.moe import EXPERTS, REGIME_EXPERT, MoEActorCriticPolicy, MoEExtractor
from learning.agents.trade_agent import (
    STATE_DIM,
    AgentSet,
    PPOConfig,
    TradeLimits,
    TradeParamAgent,
    build_state,
)
from learning.brain.meta import DEFAULT_LEARNERS
from learning.core.errors import StateError
from learning.core.regimes import REGIMES, Regime

BULL, BEAR = REGIMES.index(Regime.BULL_MOMENTUM), REGIMES.index(Regime.BEAR_DEFENSIVE)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _features(batch: int, regime: int, x: float = 0.0) -> torch.Tensor:
    f = torch.zeros(batch, 1 + len(REGIMES))
    f[:, 0] = x
    f[:, 1 + regime] = 1.0
    return f


def test_gate_weights_sum_to_one_and_start_on_each_regimes_named_expert():
    ext = MoEExtractor(6, [8], torch.nn.Tanh, gate_index=range(1, 6), gate_prior=2.0)
    for i, regime in enumerate(REGIMES):
        g = ext.gate_weights(_features(3, i))
        assert torch.allclose(g.sum(dim=1), torch.ones(3))
        assert EXPERTS[int(g[0].argmax())] == REGIME_EXPERT[regime]
    uniform = MoEExtractor(6, [8], torch.nn.Tanh, gate_index=range(1, 6), gate_prior=0.0)
    assert torch.allclose(uniform.gate_weights(_features(2, BULL)), torch.full((2, 3), 1 / 3))


def test_experts_do_not_see_the_regime_unless_asked():
    ext = MoEExtractor(6, [8], torch.nn.Tanh, gate_index=range(1, 6))
    assert ext.expert_index.tolist() == [0]
    sees = MoEExtractor(6, [8], torch.nn.Tanh, gate_index=range(1, 6), experts_see_regime=True)
    assert sees.expert_index.tolist() == list(range(6))
    with pytest.raises(ValueError, match="gate_index"):
        MoEExtractor(6, [8], torch.nn.Tanh, gate_index=[1, 2, 3])


class RegimeSignTask(gym.Env):
    """One-step episodes: observe x and a one-hot regime; the right action is x's sign in BULL
    and the opposite in BEAR. The experts see x only, so no single expert can be right in both
    regimes: only a gate that routes the two regimes to different experts solves it."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1 + len(REGIMES),), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-1, 1))
        self.regime = BULL if self.np_random.random() < 0.5 else BEAR
        obs = np.zeros(1 + len(REGIMES), dtype=np.float32)
        obs[0], obs[1 + self.regime] = self.x, 1.0
        return obs, {}

    def step(self, action):
        up = self.x > 0 if self.regime == BULL else self.x < 0
        reward = 1.0 if int(action) == int(up) else -1.0
        return self.reset()[0], reward, True, False, {}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gate_learns_to_route_each_regime_to_its_own_expert(seed):
    env = RegimeSignTask()
    model = PPO(MoEActorCriticPolicy, env, n_steps=256, batch_size=64, learning_rate=3e-3,
                seed=seed, device="cpu", verbose=0, policy_kwargs={
                    "gate_index": list(range(1, 6)), "gate_prior": 0.0, "net_arch": [16]})
    before = model.policy.expert_weights(_features(1, BULL))
    model.learn(6000)
    policy = model.policy
    bull = policy.expert_weights(_features(1, BULL))[0]
    bear = policy.expert_weights(_features(1, BEAR))[0]
    assert torch.allclose(before, torch.full((1, 3), 1 / 3)), "the gate started uniform"
    assert int(bull.argmax()) != int(bear.argmax()), (bull, bear)
    assert bull.max() > 0.6 and bear.max() > 0.6, (bull, bear)
    xs = np.linspace(-1, 1, 41)
    xs = xs[np.abs(xs) > 0.1]
    right = 0
    for regime, want in ((BULL, xs > 0), (BEAR, xs < 0)):
        obs = np.zeros((len(xs), 6), dtype=np.float32)
        obs[:, 0], obs[:, 1 + regime] = xs, 1.0
        act, _ = model.predict(obs, deterministic=True)
        right += int((act == want).sum())
    assert right / (2 * len(xs)) > 0.9


def test_moe_policy_saves_and_loads_through_sb3(tmp_path):
    model = PPO(MoEActorCriticPolicy, RegimeSignTask(), n_steps=64, batch_size=32, seed=0,
                device="cpu", policy_kwargs={"gate_index": list(range(1, 6)), "gate_prior": 1.5})
    model.save(tmp_path / "moe")
    loaded = PPO.load(tmp_path / "moe", device="cpu")
    assert isinstance(loaded.policy, MoEActorCriticPolicy) and loaded.policy.gate_prior == 1.5
    obs = np.random.default_rng(0).uniform(-1, 1, (5, 6)).astype(np.float32)
    assert (loaded.predict(obs, deterministic=True)[0]
            == model.predict(obs, deterministic=True)[0]).all()


# -- the Tier 3 agents ----------------------------------------------------------------------------

def _state(regime: Regime) -> np.ndarray:
    return build_state({"cash_frac": 1.0, "open_positions": 0, "exposure": 0.0, "pnl": 0.0,
                        "open_pnl": 0.0, "drawdown": 0.0, "day_pnl": 0.0},
                       {"btc_trend": 0.5, "btc_vol": 0.03, "breadth": 0.5, "pair_trend": 0.2,
                        "pair_vol": 0.04, "pair_drawdown": 0.02},
                       regime_probs={regime: 1.0})


def test_trade_agent_with_moe_gates_on_the_states_regime_probabilities():
    agent = TradeParamAgent(DEFAULT_LEARNERS[2], PPOConfig(policy="moe"))
    assert isinstance(agent.policy, MoEActorCriticPolicy)
    for regime in (Regime.BULL_MOMENTUM, Regime.CHOPPY, Regime.CRISIS):
        obs = torch.as_tensor(_state(regime)).reshape(1, STATE_DIM)
        g = agent.policy.expert_weights(obs)[0]
        assert EXPERTS[int(g.argmax())] == REGIME_EXPERT[regime]
    d = agent.act(_state(Regime.CHOPPY), TradeLimits(100.0), rng=np.random.default_rng(0))
    assert d.params.source == "policy" and 0 <= d.params.stake <= 100.0


def test_trade_agent_checkpoint_carries_its_network_kind_and_is_refused_on_mismatch():
    agent = TradeParamAgent(DEFAULT_LEARNERS[0], PPOConfig(policy="moe"))
    payload = agent.checkpoint({"data_end": "2024-01-01"})
    same = TradeParamAgent.from_checkpoint(payload, config=PPOConfig(policy="moe"))
    state = _state(Regime.BEAR_DEFENSIVE)
    assert same.policy_output(state)[0] == pytest.approx(agent.policy_output(state)[0])
    with pytest.raises(StateError, match="policy 'moe' differs from the configured 'mlp'"):
        TradeParamAgent.from_checkpoint(payload, config=PPOConfig(policy="mlp"))
    agents = AgentSet.from_checkpoints({DEFAULT_LEARNERS[0].name: payload},
                                       config=PPOConfig())
    assert agents.agents[DEFAULT_LEARNERS[0].name] is None
    assert "differs" in agents.errors[DEFAULT_LEARNERS[0].name]
