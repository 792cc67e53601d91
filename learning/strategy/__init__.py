"""The freqtrade strategy class and its hook mixins (brain, sizing, FreqAI, charts) and the
plugin's configuration section.
"""
