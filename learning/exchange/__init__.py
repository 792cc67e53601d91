"""The local Binance-compatible exchange (server, API responses, markets, replay) and running the
freqtrade CLI against it.
"""
