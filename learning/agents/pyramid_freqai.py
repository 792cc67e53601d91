"""FreqAI model ``PPOPyramiding``: a PPO agent that sizes a long position in tranches.

Per FreqAI training window and pair (:meth:`PPOPyramidingBase.train`):

1. the TSA-MAE encoder is pre-trained with its masked objective on **that window's candles**
   (or fine-tuned from / taken frozen as ``rl_config.pyramid.tsa.checkpoint``; a checkpoint that
   has seen candles after the window is refused, as in :mod:`learning.encoder.freqai`);
2. every candle gets its market features (``freeze=true``: the window embedding, computed once
   here; ``freeze=false``: the raw normalized window, embedded by the policy), so the
   observation width depends only on the encoder config, never on the strategy's features;
3. :class:`~learning.agents.pyramid_env.PyramidEnv` runs on the train split, a copy on the test
   split drives FreqAI's evaluation callback (best model kept), and stable-baselines3 PPO learns
   with
   the encoder as its features extractor (:class:`~learning.agents.pyramid_policy.TSAMAEExtractor`).

``predict`` (backtest-faithful use, see freqai-notes §3.6) emits, per candle, the policy's greedy
action (masked to the valid actions) for a grid of position states, ``&-pyr_a_t{t}_p{pnl}``
(``t`` tranches held, open profit bucket ``pnl`` in percent, e.g. ``&-pyr_a_t2_p-2``; the flat
state is ``&-pyr_a_t0_p+0``), ``&-pyr_flat_increase`` = P(increase | flat), and the strategy's
``&-action`` label (the greedy action when flat). The strategy's ``adjust_trade_position``
picks the column of its real trade with :func:`grid_action`. Every value at candle ``t`` depends
on candles ``<= t`` only, so predicting the whole backtest frame and predicting the trailing
``conv_width`` rows live give the same columns (``conv_width`` must exceed the encoder window).

Configuration: ``model_training_parameters`` are PPO's keyword arguments (``seed`` included;
``policy_kwargs`` is built here and refused there); this model's own settings are
``rl_config.pyramid`` (:class:`PyramidModelConfig`) and the reward
``rl_config.model_reward_parameters`` (:class:`~learning.agents.pyramid_env.RewardConfig`). The cap
comes from ``advanced_learning.risk.max_position_pct``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from freqtrade.exceptions import OperationalException
from freqtrade.freqai.data_kitchen import FreqaiDataKitchen
from freqtrade.freqai.RL.BaseReinforcementLearningModel import BaseReinforcementLearningModel
from freqtrade.freqai.tensorboard.TensorboardCallback import TensorboardCallback
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.utils import is_masking_supported
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import set_random_seed

from learning.agents.pyramid_env import Action, PyramidEnv, PyramidEnvConfig, RewardConfig
from learning.agents.pyramid_policy import (
    SCHEMA,
    SCHEMA_VERSION,
    GridConfig,
    ObsConfig,
    TSAMAEExtractor,
    feature_stats,
    grid_column,
    grid_predictions,
    grid_states,
    market_features,
    young_candles,
)
from learning.core.config import _f, parse_section
from learning.core.errors import ConfigError, DataError, LearningError, StateError
from learning.core.risk import risk_config
from learning.data.candles import timeframe_to_minutes
from learning.encoder.freqai import OHLCV, EncoderWindowMixin, ohlcv_frame
from learning.encoder.model import EncoderConfig, resolve_device
from learning.encoder.pretrain import TrainConfig, load_checkpoint
from learning.encoder.windows import N_FEATURES

logger = logging.getLogger(__name__)

FLAT_INCREASE = "&-pyr_flat_increase"  # read by learning.strategy.freqai_hooks.ai_score
ACTION_LABEL = "&-action"


@dataclass(frozen=True)
class TSASection:
    """``rl_config.pyramid.tsa``: the encoder (same keys as TSAMAERegressor's parameters)."""

    encoder: EncoderConfig = _f(EncoderConfig(), "Architecture when pre-training from scratch "
                                "(a checkpoint's own config wins; giving both must agree).")
    train: TrainConfig = _f(
        TrainConfig(epochs=2, batch_size=128, stride=4, max_steps_per_epoch=40, patience=1),
        "Masked pre-training in every FreqAI training window (kept small: it runs per pair "
        "and window).")
    checkpoint: str = _f("", "Encoder checkpoint (ftlearn train-encoder); empty: pre-train "
                         "from scratch in every window.")
    fine_tune: bool = _f(True, "With a checkpoint: pre-train it further on the window (true) or "
                         "take it as is (false: no pre-training at all, the cheapest).")
    freeze: bool = _f(True, "Freeze the encoder during PPO and precompute its embeddings once "
                      "per window (fast); false: PPO also trains the encoder (slow).")


@dataclass(frozen=True)
class PyramidModelConfig:
    """``freqai.rl_config.pyramid`` of PPOPyramiding (unknown keys are refused)."""

    env: PyramidEnvConfig = _f(PyramidEnvConfig(), "Tranches, observation scaling, episodes "
                               "(the cap itself is advanced_learning.risk.max_position_pct).")
    grid: GridConfig = _f(GridConfig(), "Position states queried per candle by predict.")
    tsa: TSASection = _f(TSASection(), "The TSA-MAE encoder used as features extractor.")
    n_eval_episodes: int = _f(1, "Episodes per evaluation on the test split; the evaluation "
                              "is deterministic, so more only repeat the same one.", (1, 100))


def parse_model_config(freqai: Mapping[str, Any], risk_cap: float) -> PyramidModelConfig:
    """Parse ``rl_config.pyramid``; the position cap always comes from the risk limits."""
    raw = dict(freqai.get("rl_config", {}).get("pyramid") or {})
    if "max_position_pct" in (raw.get("env") or {}):
        raise ConfigError("freqai.rl_config.pyramid.env.max_position_pct: set "
                          "advanced_learning.risk.max_position_pct instead (one cap for all)")
    cfg = parse_section(PyramidModelConfig, raw, "freqai.rl_config.pyramid")
    return replace(cfg, env=replace(cfg.env, max_position_pct=risk_cap))


def grid_action(row: Mapping[str, Any], tranches_held: int, unrealized_pnl: float,
                grid: GridConfig | None = None, age: float | None = None,
                young: int = 0) -> Action:
    """The agent's action for a real trade, read from one prediction row (pure, never raises).

    ``row`` is the strategy dataframe row of the last *closed* candle (the action is for the
    next open); ``tranches_held`` is clipped to the grid, ``unrealized_pnl`` (freqtrade's
    ``current_profit``) is mapped to the nearest bucket; ``age`` (candles since the trade's
    entry) picks the young columns (``young`` candles, see :func:`young_candles`) when it is
    closer to them than to ``time_in_trade`` and the row has them. A missing or non-finite
    column, or a row with ``do_predict != 1``, gives HOLD.
    """
    grid = grid or GridConfig()
    try:
        if "do_predict" in row and row["do_predict"] != 1:
            return Action.HOLD
        t = max(0, int(tranches_held))
        while t > 1 and grid_column(t, grid.pnl[0]) not in row:
            t -= 1  # more tranches than the model's grid: use its largest (never the flat one)
        pnl = float(unrealized_pnl) if math.isfinite(float(unrealized_pnl)) else 0.0
        bucket = min(grid.pnl, key=lambda b: abs(b - pnl))
        is_young = (young > 0 and age is not None and math.isfinite(float(age))
                    and float(age) < (young + grid.time_in_trade) / 2
                    and grid_column(t, bucket, True) in row)
        value = float(row[grid_column(t, bucket, is_young)])
        return Action(int(value)) if math.isfinite(value) and 0 <= value < len(Action) \
            else Action.HOLD
    except (KeyError, TypeError, ValueError):
        return Action.HOLD


def tranches_held(stake: float, equity: float, max_position_pct: float, tranches: int) -> int:
    """Tranches a trade holds: its stake over one tranche of the cap, rounded, in [0, tranches]."""
    unit = equity * max_position_pct / tranches
    if not (unit > 0 and math.isfinite(stake)):
        return 0
    return int(min(tranches, max(0, round(stake / unit))))


class PPOPyramidingBase(EncoderWindowMixin, BaseReinforcementLearningModel):
    """PPO pyramiding agent for FreqAI; see the module docstring."""

    MyRLEnv = PyramidEnv

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        try:
            self._configure()
        except LearningError as err:  # start-up stops with a message naming the problem
            raise OperationalException(f"PPOPyramiding: {err}") from err

    def _configure(self) -> None:
        risk = risk_config(self.config)
        self.pyr = parse_model_config(self.freqai_info, risk.max_position_pct)
        self.tsa = self.pyr.tsa
        # Parsed again by every environment; here so that a typo stops start-up.
        self.reward_cfg = parse_section(RewardConfig, self.reward_params,
                                        "freqai.rl_config.model_reward_parameters")
        mtp = self.freqai_info.setdefault("model_training_parameters", {})
        if "policy_kwargs" in mtp:
            raise ConfigError("freqai.model_training_parameters.policy_kwargs: not allowed, "
                              "PPOPyramiding builds them (net_arch comes from rl_config)")
        if "seed" not in mtp:
            logger.info("PPOPyramiding: no model_training_parameters.seed; using 0")
        self.seed = int(mtp.get("seed", 0))
        if self.continual_learning:
            raise ConfigError("freqai.continual_learning is not supported: the encoder is "
                              "re-trained in every window, so the old policy's inputs change")
        split = self.freqai_info.get("data_split_parameters", {})
        if not split.get("test_size", 0.1) > 0:
            raise ConfigError("freqai.data_split_parameters.test_size must be > 0: the test "
                              "split drives the evaluation that picks the best model")
        if self.ft_params.get("reverse_train_test_order") or \
                self.ft_params.get("shuffle_after_split"):
            raise ConfigError("freqai.feature_parameters: reverse_train_test_order and "
                              "shuffle_after_split break the environment's time order")
        if self.rl_config.get("add_state_info"):
            logger.warning("PPOPyramiding: rl_config.add_state_info is ignored; the position "
                           "state is always part of the observation")
        if self.rl_config.get("randomize_starting_position"):
            logger.warning("PPOPyramiding: rl_config.randomize_starting_position is ignored; "
                           "see rl_config.pyramid.env.random_start")
        self.device = resolve_device(self.tsa.train.device)
        self.step = pd.Timedelta(minutes=timeframe_to_minutes(self.config["timeframe"]))
        self.init_model, self.init_meta = None, {}
        if self.tsa.checkpoint:  # fail at start-up, not in the first training window
            self.init_model, self.init_meta = load_checkpoint(Path(self.tsa.checkpoint))
            self._check_checkpoint_matches()
        enc = self.init_model.config if self.init_model is not None else self.tsa.encoder
        if enc.n_features != N_FEATURES:
            raise ConfigError(f"encoder n_features {enc.n_features}: the candle features "
                              f"give {N_FEATURES} channels")
        self.obs_cfg = ObsConfig.from_env(self.pyr.env)
        self.young = young_candles(self.pyr.grid, self.config["timeframe"])
        runmode = getattr(self.config.get("runmode"), "value", self.config.get("runmode"))
        if enc.window >= self.CONV_WIDTH:
            msg = (f"freqai.conv_width is {self.CONV_WIDTH}; live predictions need "
                   f"conv_width >= {enc.window + 1} (encoder window + 1)")
            if runmode in ("dry_run", "live"):
                raise ConfigError(msg)
            logger.warning("PPOPyramiding: %s", msg)

    def _check_checkpoint_matches(self) -> None:
        ck = self.init_model.config
        raw = (self.freqai_info.get("rl_config", {}).get("pyramid") or {}).get("tsa", {})
        given = raw.get("encoder") or {}
        diff = {k: (v, getattr(ck, k)) for k, v in given.items()
                if k in EncoderConfig.__dataclass_fields__ and getattr(ck, k) != v}
        if diff:
            raise StateError(f"encoder checkpoint {self.tsa.checkpoint} does not match "
                             "rl_config.pyramid.tsa.encoder: "
                             + ", ".join(f"{k} {a!r} (config) vs {b!r} (checkpoint)"
                                         for k, (a, b) in diff.items()))
        tf = self.init_meta.get("timeframe")
        if tf and tf != self.config["timeframe"]:
            raise StateError(f"encoder checkpoint {self.tsa.checkpoint} was trained on {tf} "
                             f"candles, the strategy runs on {self.config['timeframe']}")

    # -- training -------------------------------------------------------------------------------
    def pack_env_dict(self, pair: str) -> dict[str, Any]:
        env_info = super().pack_env_dict(pair)
        env_info.update(window_size=1, seed=self.seed, pyramid=self.pyr.env)
        return env_info

    def set_train_and_eval_environments(self, data_dictionary: dict[str, Any],
                                        prices_train: pd.DataFrame, prices_test: pd.DataFrame,
                                        dk: FreqaiDataKitchen) -> None:
        """As the base, with a full-length evaluation episode run once (it is deterministic)."""
        train_df = data_dictionary["train_features"]
        env_info = self.pack_env_dict(dk.pair)
        self.train_env = self.MyRLEnv(df=train_df, prices=prices_train, training=True,
                                      **env_info)
        self.eval_env = Monitor(self.MyRLEnv(df=data_dictionary["test_features"],
                                             prices=prices_test, training=False, **env_info))
        self.eval_callback = MaskableEvalCallback(
            self.eval_env, n_eval_episodes=self.pyr.n_eval_episodes, deterministic=True,
            render=False, eval_freq=len(train_df), best_model_save_path=str(dk.data_path),
            use_masking=(self.model_type == "MaskablePPO" and is_masking_supported(self.eval_env)))
        self.tensorboard_callback = TensorboardCallback(verbose=1, actions=Action)

    def train(self, unfiltered_df: pd.DataFrame, pair: str, dk: FreqaiDataKitchen,
              **kwargs: Any) -> Any:
        logger.info("-------------------- PPOPyramiding: training %s --------------------", pair)
        candles = ohlcv_frame(unfiltered_df)
        self._check_lookahead(candles["date"].iloc[-1])
        encoder, meta = self._encoder_for_window(candles, pair, dk)
        market = market_features(encoder, candles, np.arange(len(candles)), self.tsa.freeze,
                                 self.device)
        valid = np.isfinite(market).all(axis=1)
        if not valid.any():
            raise DataError(f"{pair}: no valid {encoder.config.window}-candle window in the "
                            "training data")
        first = int(np.argmax(valid))  # rows before the first full window carry nothing
        frame = pd.DataFrame(market[first:], columns=[f"m{i}" for i in range(market.shape[1])])
        prices = candles.iloc[first:][["open", "high", "low", "close"]].reset_index(drop=True)
        labels = unfiltered_df[dk.label_list].iloc[first:].reset_index(drop=True).fillna(0)
        dk.train_dates = candles["date"].iloc[first:].reset_index(drop=True)
        dd = dk.make_train_test_datasets(frame, labels)
        n_train = len(dd["train_features"])
        if n_train < 3 or len(dd["test_features"]) < 3:
            raise DataError(f"{pair}: {n_train} train / {len(dd['test_features'])} test rows "
                            "after the encoder warm-up; widen train_period_days")
        self.df_raw = dd["train_features"]
        mean, std = feature_stats(encoder, dd["train_features"].to_numpy(), self.tsa.freeze)
        logger.info("%s: PPO on %d train / %d test candles (%d without a valid window), market "
                    "width %d", pair, n_train, len(dd["test_features"]), int((~valid[first:])
                                                                            .sum()),
                    market.shape[1])
        self.set_train_and_eval_environments(dd, prices.iloc[:n_train].reset_index(drop=True),
                                             prices.iloc[n_train:].reset_index(drop=True), dk)
        model = self.fit(dd, dk, encoder=encoder, norm=(mean, std))
        self._record_window(dk, model, candles, market[first:first + n_train], meta)
        logger.info("-------------------- PPOPyramiding: done %s --------------------", pair)
        return model

    def policy_kwargs(self, encoder_config: EncoderConfig) -> dict[str, Any]:
        return {
            "activation_fn": torch.nn.ReLU, "net_arch": self.net_arch,
            "features_extractor_class": TSAMAEExtractor,
            "features_extractor_kwargs": {
                "encoder_config": encoder_config.to_dict(), "freeze": self.tsa.freeze,
                "obs_config": vars(self.obs_cfg).copy(), "schema_version": SCHEMA_VERSION},
        }

    def fit(self, data_dictionary: dict[str, Any], dk: FreqaiDataKitchen, **kwargs: Any) -> Any:
        """PPO with the window's encoder as features extractor (``kwargs``: encoder, norm)."""
        encoder, (mean, std) = kwargs["encoder"], kwargs["norm"]
        total_timesteps = int(self.rl_config["train_cycles"] * len(data_dictionary[
            "train_features"]))
        tb_path = (Path(dk.full_path) / "tensorboard" / dk.pair.split("/")[0]
                   if self.activate_tensorboard else None)
        params = {**self.model_training_parameters, "seed": self.seed}
        set_random_seed(self.seed)  # python, numpy, torch: PPO re-seeds with the same value
        model = self.MODELCLASS(self.policy_type, self.train_env,
                                policy_kwargs=self.policy_kwargs(encoder.config),
                                tensorboard_log=tb_path, **params)
        extractor: TSAMAEExtractor = model.policy.features_extractor
        extractor.load_encoder(encoder.state_dict())
        extractor.set_normalization(mean, std)
        callbacks: list[Any] = [self.eval_callback, self.tensorboard_callback]
        if self.rl_config.get("progress_bar", False):
            from stable_baselines3.common.callbacks import ProgressBarCallback

            callbacks.insert(0, ProgressBarCallback())
        model.learn(total_timesteps=total_timesteps, callback=callbacks)
        best = Path(dk.data_path) / "best_model.zip"
        if best.is_file():
            logger.info("%s: evaluation callback kept a best model", dk.pair)
            return self.MODELCLASS.load(best.with_suffix(""), device=model.device)
        return model

    def _record_window(self, dk: FreqaiDataKitchen, model: Any, candles: pd.DataFrame,
                       train_market: np.ndarray, meta: dict) -> None:
        """Metadata for predict and FreqAI's live appends (all JSON, in ``dk.data``)."""
        window = model.policy.features_extractor.config.window
        tail = candles.iloc[-window:]
        dk.data["pyramid"] = {
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "encoder_meta": {k: meta.get(k) for k in ("first_candle", "last_candle", "pairs",
                                                      "train_losses", "val_losses")},
            "tail_dates_ms": tail["date"].dt.as_unit("ms").astype("int64").tolist(),
            "tail_ohlcv": tail[list(OHLCV)].to_numpy().tolist(),
        }
        preds = grid_predictions(model.policy, train_market, self.obs_cfg, self.pyr.grid,
                                 FLAT_INCREASE, self.young)
        means, stds = dk.data.setdefault("labels_mean", {}), dk.data.setdefault("labels_std", {})
        for col in [*dk.label_list, *self.prediction_columns()]:
            means[col], stds[col] = 0.0, 0.0
        means[FLAT_INCREASE] = float(preds[FLAT_INCREASE].mean())
        stds[FLAT_INCREASE] = float(preds[FLAT_INCREASE].std())

    def prediction_columns(self) -> list[str]:
        return [FLAT_INCREASE] + [grid_column(t, p, y) for t, p, _, y in
                                  grid_states(self.obs_cfg, self.pyr.grid, self.young)]

    # -- prediction -----------------------------------------------------------------------------
    def _tail(self, dk: FreqaiDataKitchen) -> pd.DataFrame | None:
        info = dk.data.get("pyramid") or {}
        if not info.get("tail_dates_ms"):
            return None
        tail = pd.DataFrame(info["tail_ohlcv"], columns=list(OHLCV))
        tail.insert(0, "date", pd.to_datetime(info["tail_dates_ms"], unit="ms", utc=True))
        return tail

    def predict(self, unfiltered_df: pd.DataFrame, dk: FreqaiDataKitchen,
                **kwargs: Any) -> tuple[pd.DataFrame, np.ndarray]:
        extractor = check_model(self.model)
        obs_cfg = extractor.obs_config
        candles = ohlcv_frame(unfiltered_df)
        offset = 0
        tail = self._tail(dk)
        if tail is not None and len(candles) and (
                candles["date"].iloc[0] - tail["date"].iloc[-1] == self.step):
            # Right after the training window (backtesting): its last candles complete the
            # first windows. They are past candles, so causality holds.
            candles = pd.concat([tail, candles], ignore_index=True)
            offset = len(tail)
        rows = np.arange(offset, len(candles))
        encoder = extractor.encoder
        market = market_features(encoder, candles, rows, extractor.freeze)
        valid = np.isfinite(market).all(axis=1)
        if not valid.all():
            logger.info("%s: %d of %d candles have no valid %d-candle window (NaN or missing "
                        "candles): the agent holds there (do_predict=0)", dk.pair,
                        int((~valid).sum()), len(valid), extractor.config.window)
        pred = grid_predictions(self.model.policy, market, obs_cfg, self.pyr.grid,
                                FLAT_INCREASE, self.young)
        flat = pred[grid_column(0, 0.0)]
        for label in dk.label_list:
            pred[label] = flat.to_numpy() if label == ACTION_LABEL else 0.0
        pred = pred[[*dk.label_list, *[c for c in pred.columns if c not in dk.label_list]]]
        do_predict = valid.astype(int)
        dk.do_predict = do_predict
        return pred, do_predict


def check_model(model: Any) -> TSAMAEExtractor:
    """The model's extractor, or StateError when the model is not a PPOPyramiding agent."""
    extractor = getattr(getattr(model, "policy", None), "features_extractor", None)
    if not isinstance(extractor, TSAMAEExtractor):
        raise StateError(
            f"the loaded model ({type(model).__name__} with "
            f"{type(extractor).__name__} features) is not a PPOPyramiding agent: another "
            "model wrote this freqai.identifier's folder; use a new identifier")
    return extractor
