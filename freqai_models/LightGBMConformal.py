"""FreqAI plug-in: ``--freqaimodel LightGBMConformal --freqaimodel-path freqai_models``."""

from learning.encoder.lightgbm import LightGBMConformalBase


class LightGBMConformal(LightGBMConformalBase):
    """LightGBM per target (freqtrade's LightGBMRegressorMultiTarget) with split-conformal
    intervals of ``&-s_return`` per training window (``&-cq_*`` columns) and per-window SHAP
    shares of the features in the metadata. All logic lives in :mod:`learning.encoder.lightgbm`.
    """
