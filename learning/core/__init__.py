"""Foundation every other subpackage may use: errors, config parsing, the risk guard, the state
store, manual controls and freqtrade-config helpers. Imports nothing else of ours.
"""
