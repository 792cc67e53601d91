"""The TSA-MAE encoder: model, candle windows, pre-training and the TSAMAERegressor FreqAI base.
"""
