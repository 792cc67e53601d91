"""``LightGBMConformal``: freqtrade's LightGBMRegressorMultiTarget (one LightGBM per target) with
split-conformal intervals of ``&-s_return`` per training window (:mod:`learning.encoder.conformal`)
and, per window, the mean absolute SHAP value of each feature for that target (LightGBM's own
TreeSHAP, ``predict(pred_contrib=True)``; no ``shap`` package needed) in the window's metadata
(``dk.data["shap"]``, shares summing to 1), which ``ftlearn report`` summarises per regime.

``model_training_parameters`` go to LightGBM as usual, except ``shap_prune`` (default 0: off): a
feature whose SHAP share in a window's first fit is below it is dropped and the window is refitted
without it (the design's "prune features with SHAP below 0.01"; a bench variant measures it).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from freqtrade.freqai.data_kitchen import FreqaiDataKitchen
from freqtrade.freqai.prediction_models.LightGBMRegressorMultiTarget import (
    LightGBMRegressorMultiTarget,
)

from learning.encoder.conformal import ConformalMixin

logger = logging.getLogger(__name__)

TOP_FEATURES = 20  # SHAP shares kept per window


def shap_shares(estimator: Any, features: pd.DataFrame) -> dict[str, float]:
    """Mean |SHAP| per feature over ``features``, as shares of their sum (LightGBM TreeSHAP)."""
    contrib = np.asarray(estimator.predict(features, pred_contrib=True))[:, :-1]  # drop bias
    mean = np.abs(contrib).mean(axis=0)
    total = mean.sum()
    if not total > 0:
        return {}
    return {str(c): float(v / total) for c, v in zip(features.columns, mean)}


class _Pruned:
    """A fitted model that sees only the kept feature columns."""

    def __init__(self, model: Any, keep: list[str]) -> None:
        self.model, self.keep = model, keep

    @property
    def estimators_(self) -> Any:
        return self.model.estimators_

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return self.model.predict(features[self.keep])


class LightGBMConformalBase(ConformalMixin, LightGBMRegressorMultiTarget):
    """See the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        params = dict(self.model_training_parameters)
        self.shap_prune = float(params.pop("shap_prune", 0.0))
        self.model_training_parameters = params

    def fit(self, data_dictionary: dict, dk: FreqaiDataKitchen, **kwargs: Any) -> Any:
        model = super().fit(data_dictionary, dk, **kwargs)
        k = dk.label_list.index(self.conformal_label) if self.conformal_label in \
            dk.label_list else 0
        x = data_dictionary["test_features"] if len(data_dictionary["test_features"]) else \
            data_dictionary["train_features"]
        shares = shap_shares(model.estimators_[k], x)
        if self.shap_prune > 0 and shares:
            keep = [c for c in x.columns if shares.get(str(c), 0.0) >= self.shap_prune]
            if keep and len(keep) < x.shape[1]:
                logger.info("%s: SHAP pruning keeps %d of %d features", dk.pair, len(keep),
                            x.shape[1])
                dd = dict(data_dictionary)
                for key in ("train_features", "test_features"):
                    dd[key] = data_dictionary[key][keep]
                model = _Pruned(super().fit(dd, dk, **kwargs), keep)
        top = sorted(shares.items(), key=lambda kv: -kv[1])[:TOP_FEATURES]
        dk.data["shap"] = {"label": dk.label_list[k], "shares": dict(top)}
        self.calibrate(model, data_dictionary, dk)
        return model

    def predict(self, unfiltered_df: pd.DataFrame, dk: FreqaiDataKitchen,
                **kwargs: Any) -> tuple[pd.DataFrame, np.ndarray]:
        pred_df, do_predict = super().predict(unfiltered_df, dk, **kwargs)
        return self.add_conformal_columns(pred_df, dk), do_predict
