"""TSAMAERegressor, driven directly (no freqtrade CLI): train, predict, save/reload, guards."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
import torch
from freqtrade.freqai.data_kitchen import FreqaiDataKitchen

from learning.core.errors import LearningError
from learning.encoder.freqai import TSAMAEPredictor, TSAMAERegressorBase
from learning.encoder.model import TSAMAE, EncoderConfig
from learning.encoder.pretrain import save_checkpoint
from tests.conftest import ROOT, make_ohlcv

TINY = {"window": 32, "patch_len": 4, "d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32,
        "dec_d_model": 8, "dec_heads": 2, "dec_layers": 1, "score_masks": 2}
PAIR = "BTC/USDT"
LABELS = ["&-s_return", "&-s_vol", "&-anomaly"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(tmp_path: Path, **mtp) -> dict:
    (tmp_path / "config.json").write_text("{}")  # FreqAI copies the config file next to models
    params = {"encoder": TINY, "train": {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 3,
                                         "device": "cpu"}, **mtp}
    return {
        "timeframe": "5m", "user_data_dir": tmp_path, "timerange": "20250103-20250106",
        "config_files": [str(tmp_path / "config.json")],
        "stake_currency": "USDT", "exchange": {"name": "binance", "pair_whitelist": [PAIR]},
        "freqai": {
            "enabled": True, "identifier": "tsamae-test", "train_period_days": 2,
            "backtest_period_days": 1, "conv_width": 1, "activate_tensorboard": False,
            "extra_returns_per_train": {"tsamae_val_loss": 0.0},
            "feature_parameters": {"include_timeframes": ["5m"], "include_corr_pairlist": [],
                                   "label_period_candles": 12, "shuffle_after_split": False},
            "data_split_parameters": {"test_size": 0.2, "shuffle": False},
            "model_training_parameters": params,
        },
    }


def _frame(n: int = 900, seed: int = 3) -> pd.DataFrame:
    """A strategy frame: OHLCV, one % feature, the targets (forward-looking, as labels are)."""
    df = make_ohlcv(n, seed=seed)
    df["%-rsi"] = df["close"].pct_change().rolling(14).mean()
    fwd = np.log(df["close"].shift(-12) / df["close"])
    df["&-s_return"] = fwd
    df["&-s_vol"] = np.log(df["close"]).diff().rolling(12).std().shift(-12)
    df["&-anomaly"] = 0.0
    return df


def _model_and_kitchen(tmp_path, **mtp):
    model = TSAMAERegressorBase(config=_config(tmp_path, **mtp))
    dk = FreqaiDataKitchen(model.config, live=False, pair=PAIR)
    model.dd.get_pair_dict_info(PAIR)  # as start_backtesting does before each window
    dk.set_paths(PAIR, 1736000000)
    dk.set_new_model_names(PAIR, 1736000000)
    return model, dk


def _train(model, dk, df):
    dk.find_features(df)
    dk.find_labels(df)
    model.model = model.train(df, PAIR, dk)
    return model.model


def test_train_then_predict_on_following_candles_predicts_every_row(tmp_path):
    model, dk = _model_and_kitchen(tmp_path)
    df = _frame()
    train_df, test_df = df.iloc[:700].copy(), df.iloc[700:].reset_index(drop=True)
    predictor = _train(model, dk, train_df)
    assert isinstance(predictor, TSAMAEPredictor)
    assert dk.training_features_list == ["%-rsi"]  # FreqAI keeps the strategy's feature list
    assert dk.data["labels_std"]["&-anomaly"] > 0
    assert np.isfinite(dk.data["extra_returns_per_train"]["tsamae_val_loss"])
    pred, do_predict = model.predict(test_df, dk)
    # the labels, then the window's conformal calibration widths (learning.encoder.conformal)
    assert list(pred.columns)[:len(LABELS)] == LABELS and len(pred) == len(test_df)
    assert all(c.startswith("&-cq_") for c in pred.columns[len(LABELS):])
    # The training tail completes the first windows: nothing to abstain on.
    assert do_predict.tolist() == [1] * len(test_df)
    assert (pred["&-anomaly"] > 0).all() and pred["&-s_vol"].std() > 0


def test_predict_without_history_abstains_on_rows_lacking_a_window(tmp_path):
    model, dk = _model_and_kitchen(tmp_path)
    df = _frame()
    _train(model, dk, df.iloc[:700].copy())
    later = df.iloc[750:].reset_index(drop=True)  # not contiguous: no tail prepended
    later.loc[100, "close"] = np.nan
    pred, do_predict = model.predict(later, dk)
    w = TINY["window"]
    assert not do_predict[:w].any() and do_predict[w:100].all()
    assert not do_predict[100:100 + w + 1].any()  # every window holding the NaN close
    assert (pred.loc[do_predict == 0, LABELS] == 0).all().all()


def test_predict_on_fewer_candles_than_one_window_abstains_everywhere_with_a_log_line(
        tmp_path, caplog):
    model, dk = _model_and_kitchen(tmp_path)
    df = _frame()
    _train(model, dk, df.iloc[:700].copy())
    short = df.iloc[750:750 + TINY["window"] - 1].reset_index(drop=True)  # no tail prepended
    with caplog.at_level(logging.INFO, logger="learning.encoder.freqai"):
        pred, do_predict = model.predict(short, dk)
    assert len(do_predict) == len(short) and not do_predict.any()
    line = next(r.getMessage() for r in caplog.records if "no full valid" in r.getMessage())
    assert f"{len(short)} of {len(short)} rows" in line and "conv_width" in line


def test_predictions_are_causal_under_appended_candles(tmp_path):
    model, dk = _model_and_kitchen(tmp_path)
    df = _frame()
    _train(model, dk, df.iloc[:700].copy())
    later = df.iloc[700:].reset_index(drop=True)
    full, _ = model.predict(later, dk)
    part, _ = model.predict(later.iloc[:120].copy(), dk)
    assert np.allclose(part.to_numpy(), full.iloc[:120].to_numpy(), atol=1e-6)


def test_checkpoint_after_training_window_refused_as_lookahead(tmp_path):
    ckpt = save_checkpoint(tmp_path / "enc.pt", TSAMAE(EncoderConfig(**TINY)),
                           {"last_candle": "2025-06-01T00:00:00+00:00"})
    model, dk = _model_and_kitchen(tmp_path, checkpoint=str(ckpt))
    with pytest.raises(LearningError, match="leak the future"):
        _train(model, dk, _frame().iloc[:700].copy())


def test_checkpoint_before_window_fine_tunes_and_records_lineage(tmp_path):
    ckpt = save_checkpoint(tmp_path / "enc.pt", TSAMAE(EncoderConfig(**TINY)),
                           {"last_candle": "2024-12-01T00:00:00+00:00"})
    model, dk = _model_and_kitchen(tmp_path, checkpoint=str(ckpt))
    predictor = _train(model, dk, _frame().iloc[:700].copy())
    assert predictor.meta["fine_tuned_from"]["last_candle"].startswith("2024-12-01")
    assert predictor.meta["last_candle"].startswith("2025-01-03")


def test_unknown_model_training_parameter_refused(tmp_path):
    with pytest.raises(LearningError, match="n_estimators"):
        TSAMAERegressorBase(config=_config(tmp_path, n_estimators=100))


def test_data_pipeline_has_no_variance_threshold(tmp_path):
    model, _ = _model_and_kitchen(tmp_path)
    assert "const" not in model.define_data_pipeline(threads=1)
    assert "scaler" in model.define_data_pipeline(threads=1)


def test_saved_model_reloads_in_fresh_process_with_same_predictions(tmp_path):
    model, dk = _model_and_kitchen(tmp_path)
    df = _frame()
    _train(model, dk, df.iloc[:700].copy())
    model.dd.save_data(model.model, PAIR, dk)  # FreqAI's own save (joblib -> cloudpickle)
    path = Path(dk.data_path) / f"{dk.model_filename}_model.joblib"
    assert path.is_file()
    x = np.random.default_rng(0).normal(size=(5, TINY["d_model"] + 1))
    windows = np.random.default_rng(1).normal(size=(3, TINY["window"], 6)).astype(np.float32)
    expect_head = model.model.predict(x)
    expect_emb = model.model.encoder.embed(torch.from_numpy(windows)).numpy()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", windows)
    code = (
        "import sys, numpy as np, cloudpickle, torch\n"
        f"m = cloudpickle.load(open({str(path)!r}, 'rb'))\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r}); w = np.load({str(tmp_path / 'w.npy')!r})\n"
        f"np.save({str(tmp_path / 'head.npy')!r}, m.predict(x))\n"
        f"np.save({str(tmp_path / 'emb.npy')!r}, m.encoder.embed(torch.from_numpy(w)).numpy())\n"
        "assert 'TSAMAERegressor' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=120)
    assert np.array_equal(np.load(tmp_path / "head.npy"), expect_head)
    assert np.array_equal(np.load(tmp_path / "emb.npy"), expect_emb)
    assert cloudpickle.loads(cloudpickle.dumps(model.model)).tail.equals(model.model.tail)


def test_plugin_file_defines_class_in_its_own_module():
    path = ROOT / "freqai_models" / "TSAMAERegressor.py"
    spec = importlib.util.spec_from_file_location("TSAMAERegressor", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.TSAMAERegressor.__module__ == "TSAMAERegressor"  # what the resolver requires
    assert issubclass(mod.TSAMAERegressor, TSAMAERegressorBase)
    assert "class TSAMAERegressor(" in path.read_text()
