"""Candles: reading and checking freqtrade candle files, and the synthetic market generator.
"""
