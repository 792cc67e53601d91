"""Minimal FreqAI RL strategy for benchmarks/bench_pyramid.py (long-only spot).

The same file serves freqtrade's ``ReinforcementLearner`` and ``PPOPyramiding`` so both runs
compute identical features and trade on the same rule: enter on ``&-action == 1`` (enter long /
increase), exit on ``&-action == 2`` (exit long; the pyramiding agent's flat-state action is never
2, so its trades end by ROI or stoploss). Features and signals are those of the bench's
``RLExampleStrategy`` (learning.bench.assets); only the ROI and the warm-up differ.
"""

from learning.bench.assets.RLExampleStrategy import RLExampleStrategy


class RLBenchStrategy(RLExampleStrategy):
    minimal_roi = {"0": 0.05, "240": -1}
    startup_candle_count: int = 100
