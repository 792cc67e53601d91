"""Data files of ``ftlearn bench`` (shipped with the package, never imported by it).

* ``RLExampleStrategy.py``: the RL example strategy of freqtrade's docs (long-only spot version):
  ``%-raw_*`` price features, the neutral ``&-action`` target, entries/exits on the agent's
  action. freqtrade does not ship it as a template, so it lives here.
* ``FreqaiExampleSpot.py``: freqtrade's own ``FreqaiExampleStrategy`` template with
  ``can_short = False`` (freqtrade refuses short strategies in spot markets); the template
  itself is imported from the installed freqtrade, not copied.
* ``TrendRule.py``: the textbook time-series trend rule (long while the daily close is above its
  50-day mean, equal weight, volatility-targeted): the simplest known edge, as a baseline.
* ``freqai_lightgbm.json`` / ``freqai_rl.json``: the FreqAI sections of the two FreqAI
  baselines (walk-forward: ``train_period_days`` then ``backtest_period_days``).

``learning.bench.runner`` copies the strategy files (and freqtrade's ``sample_strategy.py``
template) into the results folder's ``strategies/`` at run time, so each result sits beside the
exact strategy code that produced it.
"""
