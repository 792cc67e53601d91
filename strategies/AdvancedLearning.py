"""AdvancedLearning: a self-learning freqtrade strategy with hard risk limits.

All behaviour lives in the installed ``learning`` package (``learning.strategy.strategy``); this
file only names the class freqtrade loads (``--strategy AdvancedLearning``). Hyperoptable
parameters:
``entry_threshold`` (buy space), ``exit_threshold`` and ``stop_atr_mult`` (sell space).
"""

from learning.strategy.strategy import AdvancedLearningStrategy


class AdvancedLearning(AdvancedLearningStrategy):
    """Long-only spot strategy: regime-aware component scores, learned weights, risk guard."""
