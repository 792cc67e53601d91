"""FreqAI plug-in: ``--freqaimodel PPOPyramiding --freqaimodel-path freqai_models``."""

from learning.agents.pyramid_freqai import PPOPyramidingBase


class PPOPyramiding(PPOPyramidingBase):
    """PPO agent that holds a long position in tranches (hold / increase / decrease / close).

    Per FreqAI training window: pre-train the TSA-MAE encoder on the window's candles, precompute
    its embeddings (frozen, the default), train stable-baselines3 PPO on
    ``learning.agents.pyramid_env.PyramidEnv`` with the encoder as features extractor. ``predict``
    emits the greedy action for a grid of position states (``&-pyr_a_t{t}_p{pnl}``),
    ``&-pyr_flat_increase`` and ``&-action``; the strategy reads its trade's column with
    ``learning.agents.pyramid_freqai.grid_action``. Settings: ``rl_config.pyramid`` and
    ``model_reward_parameters``; dry/live needs ``freqai.conv_width >= 241``. All logic lives in
    :mod:`learning.agents.pyramid_freqai`.
    """
