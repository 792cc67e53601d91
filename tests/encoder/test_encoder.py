"""TSA-MAE encoder: shapes, MAE masking, determinism, checkpoints, bad input, causality.

Tiny configs (32-candle windows, 16-wide encoder) keep the whole file to a few seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from learning.commands import encoder as encoder_cmd
from learning.core.errors import DataError, StateError
from learning.encoder.model import TSAMAE, EncoderConfig, encode_windows
from learning.encoder.pretrain import (
    SCHEMA_VERSION,
    TrainConfig,
    build_optimizers,
    checkpoint_payload,
    load_checkpoint,
    lr_lambda,
    pretrain,
    save_checkpoint,
    train_encoder,
)
from learning.encoder.windows import (
    augment,
    candle_arrays,
    gather_windows,
    split_by_time,
    window_features,
)
from tests.conftest import ROOT, make_ohlcv

TINY = EncoderConfig(window=32, patch_len=4, d_model=16, n_heads=2, n_layers=1, d_ff=32,
                     dec_d_model=8, dec_heads=2, dec_layers=1, score_masks=3)
FAST = TrainConfig(epochs=2, batch_size=32, max_steps_per_epoch=4, val_frac=0.2, device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core box; also makes CPU kernels run the same way
    yield
    torch.set_num_threads(before)


def _trained(seed: int = 0, cfg: TrainConfig = FAST, n: int = 600):
    train, val, _ = split_by_time([make_ohlcv(n, seed=3)], TINY.window, cfg.val_frac)
    return train_encoder(train, val, TINY, TrainConfig(**{**cfg.__dict__, "seed": seed}),
                         progress=False)


# -- model ------------------------------------------------------------------------------------

def test_model_shapes_with_default_config_match_design():
    cfg = EncoderConfig()
    model = TSAMAE(cfg).eval()
    x = torch.randn(3, cfg.window, cfg.n_features)
    keep = model.random_keep(3)
    assert cfg.n_patches == 30
    assert keep.shape == (3, cfg.n_keep)
    assert model.embed(x).shape == (3, 64)
    assert model.anomaly_score(x).shape == (3,)
    assert model.decode(model.encode(x, keep), keep).shape == (3, 30, cfg.patch_len * 6)


def test_random_keep_masks_the_configured_ratio_per_sample():
    model = TSAMAE(EncoderConfig())
    keep = model.random_keep(64, torch.Generator().manual_seed(0))
    mask = model.mask_from_keep(keep)
    masked = mask.sum(dim=1)
    assert torch.all(masked == round(0.65 * 30))
    assert all(len(set(row.tolist())) == keep.shape[1] for row in keep)  # no repeats
    assert not torch.equal(keep[0], keep[1])  # a different pattern per sample


def test_encode_with_mask_sees_only_visible_patches():
    model = TSAMAE(TINY).eval()
    x = torch.randn(2, TINY.window, TINY.n_features)
    keep = model.random_keep(2, torch.Generator().manual_seed(1))
    seen = {}

    def hook(module, inputs, output) -> None:
        seen["shape"] = tuple(inputs[0].shape)
    model.encoder.layers[0].register_forward_hook(hook)
    base = model.encode(x, keep)
    assert seen["shape"] == (2, TINY.n_keep, TINY.d_model)
    masked = model.mask_from_keep(keep)
    x2 = model.patchify(x).clone()
    x2[masked] = 1e3  # rewrite every masked patch
    assert torch.equal(model.encode(x2.reshape_as(x), keep), base)
    x3 = model.patchify(x).clone()
    x3[~masked] += 1.0  # a change to a visible patch must reach the encoder
    assert not torch.allclose(model.encode(x3.reshape_as(x), keep), base)


def test_anomaly_score_repeated_calls_identical():
    model = TSAMAE(TINY).eval()
    x = torch.randn(5, TINY.window, TINY.n_features)
    assert torch.equal(model.anomaly_score(x), model.anomaly_score(x))
    assert torch.equal(TSAMAE(TINY).score_keep, model.score_keep)  # masks come from the config


# -- training ---------------------------------------------------------------------------------

def test_train_encoder_same_seed_identical_weights_and_losses():
    a, b = _trained(seed=5), _trained(seed=5)
    assert a.train_losses == b.train_losses and a.val_losses == b.val_losses
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    c = _trained(seed=6)
    assert c.train_losses != a.train_losses


def test_train_encoder_writes_losses_and_learning_rate_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, val, _ = split_by_time([make_ohlcv(600, seed=3)], TINY.window, FAST.val_frac)
    res = train_encoder(train, val, TINY, FAST, progress=False, tb_dir=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train_step", "lr"} <= tags
    assert any(t.startswith("loss/val") for t in tags), tags
    steps = events.Scalars("loss/train_step")
    assert len(steps) >= len(res.train_losses) and all(math.isfinite(e.value) for e in steps)


def test_train_encoder_loss_decreases_on_synthetic_data():
    res = _trained(cfg=TrainConfig(epochs=4, batch_size=32, max_steps_per_epoch=8, lr=3e-3,
                                   val_frac=0.2, patience=10, device="cpu"))
    assert all(math.isfinite(v) for v in res.train_losses + res.val_losses)
    assert res.train_losses[-1] < res.train_losses[0]


def test_train_encoder_with_muon_and_augmentations_runs():
    model = TSAMAE(TINY)
    opts = build_optimizers(model, TrainConfig(optimizer="muon"))
    assert {type(o).__name__ for o in opts} == {"AdamW", "Muon"}
    res = _trained(cfg=TrainConfig(epochs=1, batch_size=16, max_steps_per_epoch=3,
                                   optimizer="muon", augment=("jitter", "scale", "timewarp",
                                                              "mixup"), device="cpu"))
    assert math.isfinite(res.train_losses[0])


def test_lr_lambda_warms_up_then_decays_to_floor():
    f = lr_lambda(100, 0.1, 0.05)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(50) < 1.0 and f(99) == pytest.approx(0.05, abs=1e-3)


def test_early_stopping_with_flat_validation_stops_before_epochs():
    res = _trained(cfg=TrainConfig(epochs=30, batch_size=32, max_steps_per_epoch=1, lr=1e-6,
                                   patience=1, val_frac=0.2, device="cpu"))
    assert res.stopped_early and len(res.train_losses) < 30


def test_pretrain_with_too_little_data_raises_clear_data_error():
    with pytest.raises(DataError, match="one 32-candle window"):
        pretrain({"X/USDT": make_ohlcv(30)}, TINY, FAST, "5m", progress=False)


# -- checkpoints ------------------------------------------------------------------------------

def test_checkpoint_round_trip_gives_identical_embeddings(tmp_path):
    res = _trained()
    path = save_checkpoint(tmp_path / "enc.pt", res.model, {"pairs": ["X/USDT"],
                                                             "last_candle": "2025-01-03"})
    model, meta = load_checkpoint(path)
    x = window_features(make_ohlcv(200, seed=9), TINY.window).x[-20:]
    e1, s1 = encode_windows(res.model, x)
    e2, s2 = encode_windows(model, x)
    assert np.array_equal(e1, e2) and np.array_equal(s1, s2)
    assert model.config == TINY
    assert meta["pairs"] == ["X/USDT"] and meta["torch_version"] == str(torch.__version__)
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed away


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(arch="tsamae-candle-v0"), "architecture"),
    (lambda p: p.update(schema_version=SCHEMA_VERSION + 1), "schema version"),
    (lambda p: p.update(schema="something-else"), "schema"),
    (lambda p: p["config"].update(n_experts=4), "n_experts"),
    (lambda p: p["state_dict"].pop("head.weight"), "head.weight"),
    (lambda p: p["state_dict"].update({"head.weight": torch.zeros(3, 3)}), "shape"),
])
def test_load_checkpoint_mismatched_raises_state_error_naming_it(tmp_path, change, message):
    payload = checkpoint_payload(TSAMAE(TINY), {})
    change(payload)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(StateError, match=message):
        load_checkpoint(tmp_path / "bad.pt")


def test_load_checkpoint_with_pickled_object_refused_by_weights_only(tmp_path):
    torch.save({"schema": argparse.Namespace(a=1)}, tmp_path / "obj.pt")
    with pytest.raises(StateError, match="not a loadable"):
        load_checkpoint(tmp_path / "obj.pt")


# -- bad input and causality ------------------------------------------------------------------

def test_window_features_with_nan_inf_and_flat_windows_marks_them_invalid():
    df = make_ohlcv(300, seed=4)
    df.loc[100, "close"] = np.nan
    df.loc[160, "volume"] = np.inf
    df.loc[220:260, ["open", "high", "low", "close"]] = 50.0  # 41 flat candles: zero variance
    wb = window_features(df, TINY.window)
    w = TINY.window
    for bad_at in (100, 160):
        affected = np.arange(bad_at, bad_at + w)  # every window containing the bad candle...
        assert not wb.valid[affected].any()
        assert not wb.valid[bad_at + w]  # ...and the one using its close as previous close
    assert not wb.valid[255]  # window 224..255 is entirely flat
    assert wb.valid[99] and wb.valid[299]
    assert np.all(wb.x[~wb.valid] == 0) and np.isfinite(wb.x).all()
    assert not wb.valid[: w].any()  # no previous close for the first candle


def test_train_encoder_on_series_with_bad_windows_finite_loss():
    df = make_ohlcv(600, seed=4)
    df.loc[::37, "close"] = np.nan
    train, val, _ = split_by_time([df], TINY.window, 0.2)
    res = train_encoder(train, val, TINY, FAST, progress=False)
    assert all(math.isfinite(v) for v in res.train_losses)


def test_gather_windows_batch_of_only_invalid_windows_returns_zeros():
    ca = candle_arrays(make_ohlcv(50))
    wb = gather_windows(ca, np.array([0, 5, 10, 999]), TINY.window)
    assert not wb.valid.any() and not wb.x.any()


def test_window_features_prefix_identical_when_future_appended():
    df = make_ohlcv(400, seed=11)
    full = window_features(df, TINY.window)
    for t in (TINY.window, 100, 257, 399):
        part = window_features(df.iloc[: t + 1], TINY.window)
        assert np.array_equal(part.x[-1], full.x[t])
        assert part.valid[-1] == full.valid[t]
        assert np.array_equal(part.log_scale[-1], full.log_scale[t])


def test_window_features_are_scale_free_across_price_levels():
    a = make_ohlcv(200, seed=2, price=100.0)
    b = a.copy()
    b[["open", "high", "low", "close"]] *= 1000.0
    wa, wb = window_features(a, TINY.window), window_features(b, TINY.window)
    assert np.allclose(wa.x, wb.x, atol=1e-5)


def test_split_by_time_windows_do_not_straddle_the_cut():
    df = make_ohlcv(800, seed=1)
    train, val, split = split_by_time([df], TINY.window, 0.25)
    dates = df["date"].dt.tz_localize(None).to_numpy()
    train_last = dates[train.index[:, 1]].max()
    val_first_used = dates[val.index[:, 1] - TINY.window].min()
    assert train_last < split.split_time <= val_first_used
    assert val.index[:, 1].min() - train.index[:, 1].max() >= TINY.window


def test_augment_keeps_shape_and_leaves_invalid_rows_zero(rng):
    wb = window_features(make_ohlcv(120), TINY.window, ends=np.arange(20, 120))
    out = augment(wb.x, wb.valid, ("jitter", "scale", "timewarp", "mixup"), rng)
    assert out.shape == wb.x.shape and out.dtype == np.float32
    assert not out[~wb.valid].any() and not np.array_equal(out[wb.valid], wb.x[wb.valid])


# -- CLI --------------------------------------------------------------------------------------

def test_train_encoder_cli_writes_checkpoint_with_meta(tmp_path, capsys):
    for pair, seed in (("AAA_USDT", 1), ("BBB_USDT", 2)):
        make_ohlcv(700, seed=seed).to_feather(tmp_path / f"{pair}-5m.feather")
    parser = argparse.ArgumentParser()
    encoder_cmd.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "enc.pt"
    args = parser.parse_args([
        "train-encoder", "--datadir", str(tmp_path), "--pairs", "AAA/USDT", "BBB/USDT",
        "--timerange", "20250101-20250103", "--epochs", "1", "--max-steps", "2",
        "--batch-size", "16", "--window", "32", "--patch-len", "4", "--device", "cpu",
        "--out", str(out), "--no-progress", "--json"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, meta = load_checkpoint(out)
    assert summary["checkpoint"] == str(out) and model.config.window == 32
    assert meta["pairs"] == ["AAA/USDT", "BBB/USDT"] and meta["timeframe"] == "5m"
    assert meta["last_candle"] < "2025-01-03"  # the --timerange end is exclusive


@pytest.mark.slow
def test_train_encoder_with_two_processes_equals_one_process_with_the_same_global_batch(
        tmp_path, capsys):
    for pair, seed in (("AAA_USDT", 1), ("BBB_USDT", 2)):
        make_ohlcv(900, seed=seed).to_feather(tmp_path / f"{pair}-5m.feather")
    common = ["train-encoder", "--datadir", str(tmp_path), "--pairs", "AAA/USDT", "BBB/USDT",
              "--epochs", "2", "--max-steps", "3", "--batch-size", "24", "--window", "32",
              "--patch-len", "4", "--device", "cpu", "--augment", "jitter,scale",
              "--no-progress", "--json"]
    parser = argparse.ArgumentParser()
    encoder_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([*common, "--out", str(tmp_path / "one.pt")])
    assert args.func(args) == 0
    one_summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    two = subprocess.run([sys.executable, "-m", "learning.cli", *common, "--nproc", "2",
                          "--out", str(tmp_path / "two.pt")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    two_summary = json.loads(two.stdout.strip().splitlines()[-1])
    assert (one_summary["processes"], two_summary["processes"]) == (1, 2)
    one_model, one_meta = load_checkpoint(tmp_path / "one.pt")
    two_model, two_meta = load_checkpoint(tmp_path / "two.pt")
    assert one_meta["train_losses"] == pytest.approx(two_meta["train_losses"], rel=1e-4)
    assert one_meta["val_losses"] == pytest.approx(two_meta["val_losses"], rel=1e-4)
    a, b = one_model.state_dict(), two_model.state_dict()
    assert a.keys() == b.keys()
    diffs = {k: float((a[k] - b[k]).abs().max()) for k in a}
    moved = max(float((a[k] - TSAMAE(one_model.config).state_dict()[k]).abs().max()) for k in a
                if k.endswith("weight"))
    assert moved > 1e-3, "training must have moved the weights for the comparison to mean much"
    # Same weights up to floating-point summation order. The attention key biases have no true
    # gradient (softmax ignores a shift), so Adam scales float noise there up to ~lr-sized
    # steps: they get a looser bound, still far below what one wrong gradient step would do.
    for k, d in diffs.items():
        assert d < (2e-4 if k.endswith("in_proj_bias") else 1e-5), (k, d)
