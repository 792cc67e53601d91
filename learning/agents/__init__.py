"""Reinforcement-learning agents: the Tier 3 trade-parameter agents (spaces, simulator) and the PPO
pyramiding agent (environment, policy, FreqAI base).
"""
