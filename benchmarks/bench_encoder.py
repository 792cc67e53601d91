"""TSA-MAE benchmarks: pre-training speed vs a one-token-per-candle transformer, and quality.

Usage::

    ADVL_DATA_DIR=/work/shared/data/binance .venv/bin/python benchmarks/bench_encoder.py
    .venv/bin/python benchmarks/bench_encoder.py --only speed --device cuda   # on a GPU box

Speed: training steps (forward, backward, AdamW) of the patch MAE (30 tokens, encoder sees the
~11 visible ones) against a plain masked-reconstruction transformer with one token per candle
(240 tokens, all seen by the encoder, BERT-style mask token), same width/depth/heads, same
240-candle windows and batch. Each model runs in its own spawned process so the peak-RSS delta
(``resource.getrusage().ru_maxrss``) is its own; on CUDA the figure is
``torch.cuda.max_memory_allocated`` at batch 192 with mixed precision.

Quality (real candles): pre-train on an earlier range, then on a LATER range the encoder never
saw compare (a) masked-patch reconstruction MSE with naive fills (window mean of the visible
candles, linear interpolation across the masked span), and (b) linear probes fitted on windows of
the training range and scored on the later range: ridge R² for log realized volatility of the
next 24 candles, logistic AUC for the sign of the next-24-candle return, from the embedding vs
from raw window features (the same normalized features flattened, and per-channel summary
stats), plus a randomly initialized encoder as a control. Every feature set also gets the
window's log return scale (the normalized features are scale-free by design).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learning.encoder.model import TSAMAE, EncoderConfig, amp_context, encode_windows  # noqa: E402
from learning.encoder.pretrain import (  # noqa: E402
    TrainConfig,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    train_encoder,
)
from learning.encoder.windows import candle_arrays, gather_windows, split_by_time  # noqa: E402


class CandleTokenMAE(nn.Module):
    """Reference: one token per candle, masked candles replaced by a mask token (BERT-style)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Linear(cfg.n_features, d)
        self.pos = nn.Parameter(torch.zeros(1, cfg.window, d))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        layer = nn.TransformerEncoderLayer(d, cfg.n_heads, cfg.d_ff, cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.n_features)

    def forward(self, x: torch.Tensor, valid=None, generator=None) -> torch.Tensor:
        b, w, _ = x.shape
        n_mask = int(round(self.cfg.mask_ratio * w))
        order = torch.rand(b, w, generator=generator, device=x.device).argsort(dim=1)
        mask = torch.zeros(b, w, dtype=torch.bool, device=x.device)
        mask.scatter_(1, order[:, :n_mask], True)
        tok = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), self.embed(x))
        pred = self.head(self.norm(self.encoder(tok + self.pos))).float()
        err = (pred - x.float()).pow(2).mean(-1)  # (B, W)
        return (err * mask).sum() / mask.sum()


# ----------------------------------------------------------------------------------------------
# Speed


def _speed_worker(kind: str, device_name: str, batch: int, seconds: float, threads: int) -> dict:
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    seed_everything(0)
    cfg = EncoderConfig()
    model = (TSAMAE(cfg) if kind == "patch" else CandleTokenMAE(cfg)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, cfg.window, cfg.n_features, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    scaler = torch.amp.GradScaler("cuda", enabled=False)  # bf16 on H100/H200: no scaler

    def step() -> None:
        with amp_context(device):
            loss = model(x, None, gen)
        scaler.scale(loss).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up (allocator, kernels)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
        if device.type == "cuda" and n % 10 == 0:
            torch.cuda.synchronize()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    out = {"kind": kind, "windows_per_s": n * batch / dt, "steps": n,
           "params": sum(p.numel() for p in model.parameters()),
           "rss_delta_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024}
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def bench_speed(device: str, batch: int, seconds: float, threads: int) -> None:
    print(f"\n== speed: device={device} batch={batch} threads={threads} "
          f"{seconds:.0f}s per model, windows of 240 candles, d=64 h=8 L=4 ==")
    ctx = mp.get_context("spawn")
    res = {}
    for kind in ("patch", "candle"):
        with cf.ProcessPoolExecutor(1, mp_context=ctx) as ex:
            res[kind] = ex.submit(_speed_worker, kind, device, batch, seconds, threads).result()
        r = res[kind]
        mem = f"  gpu peak {r['gpu_peak_mb']:.0f} MiB" if "gpu_peak_mb" in r else ""
        print(f"{kind:>7}: {r['windows_per_s']:9.1f} windows/s ({r['steps']} steps, "
              f"{r['params']:,} params)  peak RSS +{r['rss_delta_mb']:.0f} MiB{mem}")
    print(f"speed-up patch MAE / candle-token transformer: "
          f"{res['patch']['windows_per_s'] / res['candle']['windows_per_s']:.1f}x")
    t = time.perf_counter()
    df = _synthetic(50_000)
    ca = candle_arrays(df)
    ends = np.random.default_rng(0).integers(241, len(ca), 50 * 192)
    for lo in range(0, len(ends), 192):
        gather_windows(ca, ends[lo:lo + 192], 240)
    print(f"window gathering (numpy, features + normalization): "
          f"{len(ends) / (time.perf_counter() - t):,.0f} windows/s")


def _synthetic(n: int):
    from tests.conftest import make_ohlcv

    return make_ohlcv(n)


# ----------------------------------------------------------------------------------------------
# Quality


def _frames(datadir: str, pairs: list[str], timeframe: str, start: str, stop: str) -> dict:
    import pandas as pd

    from learning.data.candles import load_candles

    out = {}
    for p in pairs:
        df = load_candles(datadir, p, timeframe)
        keep = (df["date"] >= pd.Timestamp(start, tz="UTC")) & (df["date"] < pd.Timestamp(
            stop, tz="UTC"))
        out[p] = df[keep].reset_index(drop=True)
    return out


def _probe_set(frames: dict, cfg: EncoderConfig, stride: int, horizon: int = 24):
    """Windows every ``stride`` candles with the next-``horizon`` targets (labels only)."""
    xs, scales, vol, sign = [], [], [], []
    for df in frames.values():
        ca = candle_arrays(df)
        close = df["close"].to_numpy(dtype=float)
        ends = np.arange(cfg.window, len(df) - horizon, stride)
        wb = gather_windows(ca, ends, cfg.window, cfg.clip)
        r = np.diff(np.log(close))  # r[i] = log(c[i+1]/c[i])
        fut = np.stack([r[e:e + horizon] for e in ends])  # candles e+1..e+horizon
        ok = wb.valid & np.isfinite(fut).all(axis=1)
        xs.append(wb.x[ok])
        scales.append(wb.log_scale[ok])
        vol.append(np.log(np.sqrt((fut[ok] ** 2).sum(axis=1)) + 1e-12))
        sign.append((fut[ok].sum(axis=1) > 0).astype(int))
    return (np.concatenate(xs), np.concatenate(scales), np.concatenate(vol),
            np.concatenate(sign))


def _summary_stats(x: np.ndarray) -> np.ndarray:
    """Per-channel mean/std/min/max/last + cumulative return over the last 12/48/240 candles."""
    r = x[:, :, 0]
    parts = [x.mean(1), x.std(1), x.min(1), x.max(1), x[:, -1, :],
             r[:, -12:].sum(1, keepdims=True), r[:, -48:].sum(1, keepdims=True),
             r.sum(1, keepdims=True)]
    return np.concatenate(parts, axis=1)


def _recent_stats(x: np.ndarray) -> np.ndarray:
    """Summary stats plus per-channel means over the last 8 and 24 candles (recency)."""
    return np.concatenate([_summary_stats(x), x[:, -8:].mean(1), x[:, -24:].mean(1)], axis=1)


def _masked_recon(model: TSAMAE, x: np.ndarray, seed: int = 7) -> dict:
    """Masked-patch MSE (normalized units) of the model and of naive fills, same masks."""
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    errs = {"tsamae": [], "window_mean": [], "linear_interp": []}
    for lo in range(0, len(x), 256):
        xb = torch.from_numpy(x[lo:lo + 256])
        keep = model.random_keep(len(xb), gen, torch.device("cpu"))
        with torch.no_grad():
            errs["tsamae"].append(model.masked_errors(xb, keep).numpy())
        mask_p = model.mask_from_keep(keep).numpy()  # (B, P) True = masked
        mask_c = np.repeat(mask_p, cfg.patch_len, axis=1)  # (B, W)
        xn = xb.numpy()
        t = np.arange(cfg.window)
        for i in range(len(xn)):
            vis = ~mask_c[i]
            mean_fill = np.where(mask_c[i][:, None], xn[i][vis].mean(0), xn[i])
            interp = xn[i].copy()
            for c in range(xn.shape[2]):
                interp[mask_c[i], c] = np.interp(t[mask_c[i]], t[vis], xn[i][vis, c])
            for name, fill in (("window_mean", mean_fill), ("linear_interp", interp)):
                errs[name].append([((fill - xn[i]) ** 2)[mask_c[i]].mean()])
    return {k: float(np.mean(np.concatenate([np.ravel(a) for a in v]))) for k, v in errs.items()}


def _probe_scores(tr_feats, te_feats, tr_vol, te_vol, tr_sign, te_sign) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.metrics import r2_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 5, 15)))
    ridge.fit(tr_feats, tr_vol)
    r2 = r2_score(te_vol, ridge.predict(te_feats))
    # Strong L2 (C=0.01): the sign is close to noise and an unregularized fit overfits it.
    logit = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
    logit.fit(tr_feats, tr_sign)
    auc = roc_auc_score(te_sign, logit.predict_proba(te_feats)[:, 1])
    return float(r2), float(auc)


def bench_quality(args) -> None:
    import pandas as pd

    datadir = args.datadir or os.environ.get("ADVL_DATA_DIR")
    if not datadir:
        print("\n== quality: skipped (no --datadir / ADVL_DATA_DIR) ==")
        return
    torch.set_num_threads(args.threads)
    enc_cfg = EncoderConfig()
    tcfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, stride=args.stride,
                       max_steps_per_epoch=args.steps, val_frac=0.1, patience=3, seed=0,
                       device=args.device, augment=tuple(args.augment))
    ranges = [tuple(r.split(":")) for r in args.eval_ranges]
    print(f"\n== quality: pairs={args.pairs} {args.timeframe}; encoder trained on "
          f"[{args.train_start}, {args.train_stop}), evaluated on later ranges "
          f"{', '.join(f'[{a}, {b})' for a, b in ranges)} ==")
    train_frames = _frames(datadir, args.pairs, args.timeframe, args.train_start,
                           args.train_stop)
    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint)
        enc_cfg = model.config
        last = pd.Timestamp(meta.get("last_candle") or "1970-01-01")
        last = last.tz_localize("UTC") if last.tzinfo is None else last
        print(f"encoder loaded from {args.checkpoint} (last candle seen {last})")
        if last >= min(pd.Timestamp(a, tz="UTC") for a, _ in ranges):
            raise SystemExit("the checkpoint has seen an evaluation range: refusing")
        print(f"encoder: {enc_cfg}")
    else:
        print(f"encoder: {enc_cfg}")
        print(f"training: {tcfg}")
        train, val, split = split_by_time(list(train_frames.values()), enc_cfg.window,
                                          tcfg.val_frac, tcfg.stride, enc_cfg.clip)
        t0 = time.perf_counter()
        res = train_encoder(train, val, enc_cfg, tcfg, progress=False)
        dt = time.perf_counter() - t0
        seen = sum(min(len(train), tcfg.batch_size * tcfg.max_steps_per_epoch) for _ in
                   res.train_losses)
        print(f"pre-training: {len(res.train_losses)} epochs in {dt:.0f}s (~{seen / dt:.0f} "
              f"windows/s incl. validation), train loss {res.train_losses[0]:.4f} -> "
              f"{res.train_losses[-1]:.4f}, val {res.val_losses[0]:.4f} -> "
              f"{min(res.val_losses):.4f} (best epoch {res.best_epoch})")
        model = res.model
        if args.save:
            save_checkpoint(args.save, model, {
                "pairs": args.pairs, "timeframe": args.timeframe,
                "first_candle": pd.Timestamp(split.first, tz="UTC").isoformat(),
                "last_candle": pd.Timestamp(split.last, tz="UTC").isoformat()})
    model = model.eval()
    seed_everything(1)  # the control encoder's init must not depend on what ran before
    rand_model = TSAMAE(enc_cfg).eval()

    def emb(m, pool):
        return lambda x, s: np.c_[encode_windows(m, x, score=False, pool=pool)[0], s]

    feats = {
        "tsamae emb (last patch)": emb(model, "last"),
        "tsamae emb (mean pool)": emb(model, "mean"),
        "tsamae last + anomaly": lambda x, s: np.c_[np.column_stack(
            encode_windows(model, x, pool="last")), s],
        "random-init enc (last)": emb(rand_model, "last"),
        "raw flattened (1440)": lambda x, s: np.c_[x.reshape(len(x), -1), s],
        "raw summary stats": lambda x, s: np.c_[_summary_stats(x), s],
        "raw summary + recent": lambda x, s: np.c_[_recent_stats(x), s],
        "log scale only": lambda x, s: s[:, None],
    }
    tr_x, tr_s, tr_vol, tr_sign = _probe_set(train_frames, enc_cfg, args.probe_stride)
    train_feats = {name: f(tr_x, tr_s) for name, f in feats.items()}
    for start, stop in ranges:
        te_x, te_s, te_vol, te_sign = _probe_set(
            _frames(datadir, args.pairs, args.timeframe, start, stop), enc_cfg,
            args.probe_stride)
        print(f"\n-- later range [{start}, {stop}): {len(te_x)} probe windows (every "
              f"{args.probe_stride} candles; probes fit on {len(tr_x)} train-range windows; "
              f"up share {te_sign.mean():.3f})")
        n_rec = min(len(te_x), args.recon_windows)
        rec = _masked_recon(model, te_x[:n_rec])
        print(f"masked-patch reconstruction MSE ({n_rec} windows, one random 65% mask each, "
              "normalized units): " + ", ".join(f"{k} {v:.4f}" for k, v in rec.items()))
        print("linear probes; every feature set includes the window's log return scale:")
        print(f"  {'features':>24} {'dims':>5} {'R2 log RV(24)':>14} {'AUC sign r(24)':>15}")
        for name, f in feats.items():
            a = train_feats[name]
            r2, auc = _probe_scores(a, f(te_x, te_s), tr_vol, te_vol, tr_sign, te_sign)
            print(f"  {name:>24} {a.shape[1]:>5} {r2:>14.4f} {auc:>15.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("speed", "quality"), default=None)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--batch", type=int, default=None, help="speed batch (cpu 64, cuda 192)")
    ap.add_argument("--seconds", type=float, default=20.0, help="timed seconds per model")
    ap.add_argument("--datadir", default=None)
    ap.add_argument("--pairs", nargs="+", default=["BTC/USDT", "ETH/USDT", "SOL/USDT"])
    ap.add_argument("--timeframe", default="5m")
    ap.add_argument("--train-start", default="2025-01-01")
    ap.add_argument("--train-stop", default="2025-06-01")
    ap.add_argument("--eval-ranges", nargs="+",
                    default=["2025-07-01:2025-10-01", "2025-10-01:2026-02-01"],
                    help="later START:STOP ranges the encoder never saw")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps per epoch")
    ap.add_argument("--stride", type=int, default=2, help="window-end stride for pre-training")
    ap.add_argument("--augment", nargs="*", default=[])
    ap.add_argument("--checkpoint", default=None, help="evaluate this encoder (no training)")
    ap.add_argument("--save", default=None, help="save the encoder trained here")
    ap.add_argument("--probe-stride", type=int, default=12)
    ap.add_argument("--recon-windows", type=int, default=2000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.only in (None, "speed"):
        batch = args.batch or (192 if args.device == "cuda" else 64)
        bench_speed(args.device, batch, args.seconds, args.threads)
    if args.only in (None, "quality"):
        bench_quality(args)


if __name__ == "__main__":
    main()
