"""AdvancedLearning: a self-learning layer for freqtrade.

All logic lives in this installable package; the files under ``strategies/`` and
``freqai_models/`` are thin plug-ins that freqtrade's resolver loads (torch can only
pickle classes that live in an importable module, see docs/freqai-notes §1.3).
"""

__version__ = "0.1.0"

from learning.core import legacy as _legacy

_legacy.install()  # saved FreqAI/sb3 models name pre-subpackage module paths
