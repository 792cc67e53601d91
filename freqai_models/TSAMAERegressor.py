"""FreqAI plug-in: ``--freqaimodel TSAMAERegressor --freqaimodel-path freqai_models``."""

from learning.encoder.freqai import TSAMAERegressorBase


class TSAMAERegressor(TSAMAERegressorBase):
    """TSA-MAE window embeddings + ridge head, with a reconstruction-error anomaly column.

    Per FreqAI training window: pre-train (or fine-tune from
    ``model_training_parameters.checkpoint``) the masked autoencoder on that window's candles,
    embed every row's 240-candle window, fit a ridge head on the embeddings for the strategy's
    ``&`` targets. ``predict`` adds ``&-anomaly`` (declare it in ``set_freqai_targets`` as 0.0)
    and sets ``do_predict=0`` where no full valid window exists. Dry/live needs
    ``freqai.conv_width >= 241``. All logic lives in :mod:`learning.encoder.freqai`.
    """
