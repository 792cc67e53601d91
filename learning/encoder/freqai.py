"""FreqAI model: TSA-MAE embeddings of candle windows + a ridge head (``TSAMAERegressor``).

In each FreqAI training window the encoder is pre-trained (or fine-tuned from
``model_training_parameters.checkpoint``) on **that window's candles only**, every row with a
full valid window gets an embedding (the encoder's window embedding, see
``EncoderConfig.pool``) plus its window's log return scale, and a ridge head (``RidgeCV``) is
fitted on those for every numeric ``&`` target.
``predict`` returns the head's predictions and, in the anomaly column (default ``&-anomaly``),
the encoder's reconstruction error of the row's window (:meth:`TSAMAE.anomaly_score`); its
``labels_mean``/``labels_std`` are the score's mean/std over the training window.

Why ``BaseRegressionModel``: after turning candles into embedding rows, the rest is exactly its
flow (NaN filtering, train/test split, ``fit_labels``, feature and label pipelines, DI/SVM
outlier steps, inverse label scaling), so ``train``/``predict`` only wrap it: they build the
embedding frame and call ``super()``. The feature pipeline runs on the fixed-width embeddings
(``define_data_pipeline`` drops VarianceThreshold, so the width never changes between windows).

Inputs: raw OHLCV comes from the strategy dataframe's ``open/high/low/close/volume`` columns
(always present), or from ``%-raw_open`` ... ``%-raw_volume`` when the frame lacks them. Rows
without a full, valid window (first ``window`` candles, NaN/inf/flat windows) get
``do_predict = 0`` and neutral predictions, with a log line. In backtesting, the last
``window`` training candles are kept with the model and prepended when the prediction frame
starts right after them, so the first backtest candles are predicted too. In dry/live FreqAI
predicts on ``dataframe.iloc[-conv_width:]``: set ``freqai.conv_width`` to at least
``window + 1`` (241 by default).

Lookahead guard: a checkpoint whose ``last_candle`` is after the end of the training window is
refused (``LearningError``; FreqAI logs it and emits neutral predictions for that window).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from datasieve.pipeline import Pipeline
from freqtrade.freqai.base_models.BaseRegressionModel import BaseRegressionModel
from freqtrade.freqai.data_kitchen import FreqaiDataKitchen

from learning.core.config import _f, parse_section
from learning.core.errors import DataError, LearningError
from learning.data.candles import timeframe_to_minutes
from learning.encoder.conformal import ConformalMixin
from learning.encoder.model import TSAMAE, EncoderConfig, encode_windows, resolve_device
from learning.encoder.pretrain import (
    TrainConfig,
    checkpoint_payload,
    load_checkpoint,
    model_from_payload,
    pretrain,
)
from learning.encoder.windows import candle_arrays, gather_windows

logger = logging.getLogger(__name__)

OHLCV = ("open", "high", "low", "close", "volume")
RAW_PREFIX = "%-raw_"
FEATURE_PREFIX = "%-tsamae_"


@dataclass(frozen=True)
class TSAMAEModelConfig:
    """``freqai.model_training_parameters`` of TSAMAERegressor (unknown keys are refused)."""

    encoder: EncoderConfig = _f(
        EncoderConfig(), "Architecture when pre-training from scratch (a checkpoint's own config "
        "wins when one is given).")
    train: TrainConfig = _f(
        TrainConfig(), "Pre-training / fine-tuning settings used in each FreqAI training window "
        "(e.g. {\"epochs\": 3} keeps a 30-day 5m window to about a minute on one CPU core).")
    checkpoint: str = _f("", "Encoder checkpoint (ftlearn train-encoder) to fine-tune; empty: "
                         "pre-train from scratch in each window.")
    fine_tune: bool = _f(True, "With a checkpoint: fine-tune it on the window (true) or use it "
                         "frozen (false).")
    ridge_alphas: tuple[float, ...] = _f((0.1, 1.0, 10.0, 100.0, 1000.0),
                                         "Ridge penalties tried by RidgeCV (efficient LOO CV).")
    anomaly_label: str = _f("&-anomaly", "Column that receives the anomaly score.")
    include_scale: bool = _f(True, "Give the head the window's log return scale too.")


class TSAMAEPredictor:
    """What FreqAI stores per pair and window: encoder, ridge head and the training tail.

    Pickles (cloudpickle, FreqAI's joblib path) as plain data: the encoder as a checkpoint
    payload (tensors + plain types), so a saved model reloads in a fresh process from the
    installed ``learning`` package alone.
    """

    def __init__(self, encoder: TSAMAE, head: Any, tail: pd.DataFrame, step: pd.Timedelta,
                 meta: dict) -> None:
        self.encoder = encoder.cpu().eval()
        self.head = head
        self.tail = tail.reset_index(drop=True)  # last `window` training candles (date+OHLCV)
        self.step = step
        self.meta = meta

    def predict(self, features: Any) -> np.ndarray:
        """Head predictions for pipeline-transformed embedding rows (FreqAI calls this)."""
        return np.asarray(self.head.predict(features))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["encoder"] = checkpoint_payload(self.encoder, self.meta)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state["encoder"], _ = model_from_payload(state["encoder"], "saved TSAMAE model")
        self.__dict__.update(state)


def ohlcv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """date + OHLCV from a strategy frame (plain columns, else the ``%-raw_*`` features)."""
    if all(c in df.columns for c in OHLCV):
        cols = list(OHLCV)
    elif all(f"{RAW_PREFIX}{c}" in df.columns for c in OHLCV):
        cols = [f"{RAW_PREFIX}{c}" for c in OHLCV]
    else:
        raise DataError("TSAMAERegressor needs open/high/low/close/volume columns or the "
                        f"features {', '.join(RAW_PREFIX + c for c in OHLCV)}")
    out = df[cols].astype("float64").set_axis(list(OHLCV), axis=1)
    out = out.reset_index(drop=True)
    out.insert(0, "date", pd.to_datetime(df["date"], utc=True).reset_index(drop=True))
    return out


def embedding_frame(encoder: TSAMAE, candles: pd.DataFrame, rows: np.ndarray,
                    include_scale: bool, device=None) -> tuple[pd.DataFrame, np.ndarray]:
    """Embedding features (NaN where no valid window) and anomaly scores for ``rows``.

    ``rows`` index ``candles``; the window of row t uses candles <= t only.
    """
    cfg = encoder.config
    wb = gather_windows(candle_arrays(candles), rows, cfg.window, cfg.clip)
    d = cfg.d_model
    emb = np.full((len(rows), d), np.nan)
    scores = np.full(len(rows), np.nan)
    if wb.valid.any():
        e, s = encode_windows(encoder, wb.x[wb.valid], device)
        emb[wb.valid], scores[wb.valid] = e, s
    cols = {f"{FEATURE_PREFIX}e{i}": emb[:, i] for i in range(d)}
    if include_scale:
        cols[f"{FEATURE_PREFIX}scale"] = np.where(wb.valid, wb.log_scale, np.nan)
    return pd.DataFrame(cols), scores


class EncoderWindowMixin:
    """The encoder for one FreqAI training window, shared by TSAMAERegressor and PPOPyramiding.

    Expects ``self.tsa`` (``checkpoint``, ``fine_tune``, ``encoder``, ``train``),
    ``self.init_model``/``self.init_meta`` (the loaded checkpoint, if any), ``self.config`` and
    ``self.activate_tensorboard``.
    """

    def _check_lookahead(self, train_last: pd.Timestamp) -> None:
        last = self.init_meta.get("last_candle")
        seen = pd.Timestamp(last) if last else None
        if seen is not None and seen.tzinfo is None:
            seen = seen.tz_localize("UTC")  # checkpoints store UTC; tolerate a naive string
        if seen is not None and seen > train_last:
            raise LearningError(
                f"encoder checkpoint {self.tsa.checkpoint} has seen candles up to {last}, after "
                f"this training window's end {train_last.isoformat()}: using it would leak the "
                "future into the backtest; pre-train it on an earlier range")

    def _encoder_for_window(self, candles: pd.DataFrame, pair: str,
                            dk: FreqaiDataKitchen) -> tuple[TSAMAE, dict]:
        if self.init_model is not None and not self.tsa.fine_tune:
            return self.init_model, dict(self.init_meta)
        enc_cfg = self.init_model.config if self.init_model is not None else self.tsa.encoder
        init_state = self.init_model.state_dict() if self.init_model is not None else None
        tb_dir = Path(dk.data_path) / "tensorboard" if self.activate_tensorboard else None
        result, meta = pretrain({pair: candles}, enc_cfg, self.tsa.train,
                                self.config["timeframe"], init_state=init_state,
                                prior_meta=self.init_meta or None, tb_dir=tb_dir, progress=False)
        logger.info("%s: TSA-MAE pre-trained on %d windows, loss %.4f (val %.4f)", pair,
                    result.n_train, result.train_losses[-1], result.val_losses[-1])
        return result.model, meta


class TSAMAERegressorBase(ConformalMixin, EncoderWindowMixin, BaseRegressionModel):
    """TSA-MAE embeddings + ridge head for FreqAI; see the module docstring. Each window's
    held-out split calibrates conformal intervals of ``&-s_return`` (``&-cq_*`` columns,
    :mod:`learning.encoder.conformal`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tsa = parse_section(TSAMAEModelConfig, self.model_training_parameters,
                                 "freqai.model_training_parameters")
        self.step = pd.Timedelta(minutes=timeframe_to_minutes(self.config["timeframe"]))
        self.device = resolve_device(self.tsa.train.device)
        self.init_model: TSAMAE | None = None
        self.init_meta: dict = {}
        if self.tsa.checkpoint:  # fail at start-up, not in the first training window
            self.init_model, self.init_meta = load_checkpoint(Path(self.tsa.checkpoint))
        window = (self.init_model.config if self.init_model else self.tsa.encoder).window
        conv_width = self.CONV_WIDTH
        if conv_width <= window:
            logger.warning("TSAMAERegressor: freqai.conv_width is %d; dry/live predictions need "
                           "conv_width >= %d (window + 1) or they abstain (do_predict=0)",
                           conv_width, window + 1)

    def define_data_pipeline(self, threads: int = -1) -> Pipeline:
        """The base pipeline without VarianceThreshold: the embedding width stays fixed."""
        base = super().define_data_pipeline(threads=threads)
        return Pipeline([s for s in base.steps if s[0] != "const"], fitparams={})

    # -- training -------------------------------------------------------------------------------
    def train(self, unfiltered_df: pd.DataFrame, pair: str, dk: FreqaiDataKitchen,
              **kwargs: Any) -> Any:
        candles = ohlcv_frame(unfiltered_df)
        self._check_lookahead(candles["date"].iloc[-1])
        encoder, meta = self._encoder_for_window(candles, pair, dk)
        rows = np.arange(len(candles))
        emb, scores = embedding_frame(encoder, candles, rows, self.tsa.include_scale, self.device)
        if not np.isfinite(scores).any():
            raise DataError(f"{pair}: no valid {encoder.config.window}-candle window in the "
                            "training data")
        frame = emb.assign(date=unfiltered_df["date"].reset_index(drop=True))
        for label in dk.label_list:
            frame[label] = unfiltered_df[label].to_numpy()
        strategy_features = list(dk.training_features_list)
        dk.training_features_list = list(emb.columns)
        try:
            head = super().train(frame, pair, dk, **kwargs)
        finally:
            # FreqAI saves and later checks the strategy's own feature list, not ours.
            dk.training_features_list = strategy_features
        label = self.tsa.anomaly_label
        dk.data.setdefault("labels_mean", {})[label] = float(np.nanmean(scores))
        dk.data.setdefault("labels_std", {})[label] = float(np.nanstd(scores))
        extra = dk.data.get("extra_returns_per_train", {})
        for key, value in (("tsamae_train_loss", meta.get("train_losses", [np.nan])[-1]),
                           ("tsamae_val_loss", meta.get("val_losses", [np.nan])[-1])):
            if key in extra:
                extra[key] = float(value)
        tail = candles.iloc[-encoder.config.window:]
        return TSAMAEPredictor(encoder, head, tail, self.step, meta)

    def fit(self, data_dictionary: dict[str, Any], dk: FreqaiDataKitchen, **kwargs: Any) -> Any:
        """Ridge head on the (pipeline-scaled) embeddings, for every numeric target."""
        from sklearn.linear_model import RidgeCV

        y = data_dictionary["train_labels"]
        non_numeric = [c for c in y.columns if not pd.api.types.is_numeric_dtype(y[c])]
        if non_numeric:
            raise LearningError(f"TSAMAERegressor needs numeric targets; {non_numeric} are not")
        head = RidgeCV(alphas=list(self.tsa.ridge_alphas))
        head.fit(data_dictionary["train_features"], y,
                 sample_weight=data_dictionary["train_weights"])
        test_x = data_dictionary.get("test_features")
        if test_x is not None and len(test_x):
            from sklearn.metrics import r2_score

            test_y = data_dictionary["test_labels"]
            pred = np.asarray(head.predict(test_x)).reshape(len(test_x), -1)
            r2 = {c: round(float(r2_score(test_y[c], pred[:, i])), 4)
                  for i, c in enumerate(y.columns)
                  if c != self.tsa.anomaly_label and test_y[c].nunique() > 1}
            logger.info("%s: ridge head alpha %s, test R2 (scaled targets) %s", dk.pair,
                        head.alpha_, r2)
        self.calibrate(head, data_dictionary, dk)
        return head

    # -- prediction -----------------------------------------------------------------------------
    def predict(self, unfiltered_df: pd.DataFrame, dk: FreqaiDataKitchen,
                **kwargs: Any) -> tuple[pd.DataFrame, np.ndarray]:
        model: TSAMAEPredictor = self.model
        candles = ohlcv_frame(unfiltered_df)
        offset = 0
        if len(model.tail) and len(candles) and (
                candles["date"].iloc[0] - model.tail["date"].iloc[-1] == model.step):
            # Right after the training window (backtesting): its last candles complete the
            # first windows. They are past candles, so causality holds.
            candles = pd.concat([model.tail, candles], ignore_index=True)
            offset = len(model.tail)
        rows = np.arange(offset, len(candles))
        emb, scores = embedding_frame(model.encoder, candles, rows, self.tsa.include_scale,
                                      self.device)
        valid = np.isfinite(scores)
        if not valid.all():
            logger.info("%s: %d of %d rows have no full valid %d-candle window: do_predict=0%s",
                        dk.pair, int((~valid).sum()), len(valid), model.encoder.config.window,
                        "" if len(valid) > model.encoder.config.window else
                        " (in dry/live set freqai.conv_width >= window + 1)")
        strategy_features = list(dk.training_features_list)
        try:
            pred_df, do_predict = super().predict(emb, dk, **kwargs)
        finally:
            dk.training_features_list = strategy_features
        pred_df = pred_df.reset_index(drop=True)
        pred_df.loc[~valid, :] = 0.0  # neutral values where we abstain
        pred_df[self.tsa.anomaly_label] = np.where(valid, scores, 0.0)
        do_predict = np.where(valid, np.asarray(do_predict, dtype=int), 0)
        dk.do_predict = do_predict
        return self.add_conformal_columns(pred_df, dk), do_predict
