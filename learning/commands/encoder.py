"""``ftlearn train-encoder``: pre-train the TSA-MAE encoder on freqtrade candle files.

``--nproc N`` starts N processes on this machine (torch.multiprocessing, a free local port) that
train together with DistributedDataParallel; the same command launched by ``torchrun`` (several
machines) joins the process group torchrun describes. See :mod:`learning.encoder.pretrain`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from pathlib import Path

import pandas as pd

from learning.core.errors import ConfigError, DataError
from learning.data.candles import DATA_DIR_ENV, load_candles
from learning.encoder.model import EncoderConfig, resolve_device
from learning.encoder.pretrain import (
    TrainConfig,
    init_distributed,
    load_checkpoint,
    pretrain,
    save_checkpoint,
)

DEFAULT_OUT = "user_data/learning/encoder/tsamae.pt"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-encoder", help="pre-train the TSA-MAE encoder on candle files",
        description="Self-supervised masked-autoencoder pre-training on windows of candles. "
        "The validation split is the last --val-frac of the time range (one window gap).")
    p.add_argument("--datadir", default=os.environ.get(DATA_DIR_ENV),
                   help=f"folder of <PAIR>-<tf>.feather files (default ${DATA_DIR_ENV})")
    p.add_argument("--pairs", nargs="+", required=True, help="e.g. BTC/USDT ETH/USDT")
    p.add_argument("--timeframe", default="5m")
    p.add_argument("--timerange", default=None, help="YYYYMMDD-YYYYMMDD (end exclusive)")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--optimizer", default="adamw", choices=("adamw", "muon"))
    p.add_argument("--augment", default="", help="comma list of jitter,scale,timewarp,mixup")
    p.add_argument("--val-frac", type=float, default=TrainConfig.val_frac)
    p.add_argument("--patience", type=int, default=TrainConfig.patience)
    p.add_argument("--stride", type=int, default=TrainConfig.stride,
                   help="use every N-th window end")
    p.add_argument("--max-steps", type=int, default=0, help="cap optimizer steps per epoch")
    p.add_argument("--window", type=int, default=EncoderConfig.window)
    p.add_argument("--patch-len", type=int, default=EncoderConfig.patch_len)
    p.add_argument("--init", default=None, help="fine-tune from this checkpoint")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"checkpoint path (default {DEFAULT_OUT})")
    p.add_argument("--tensorboard", default=None, help="TensorBoard log folder")
    p.add_argument("--nproc", type=int, default=1,
                   help="train with N processes on this machine (DistributedDataParallel: gloo "
                   "on CPU, nccl on GPUs); --batch-size is the global batch (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def _slice(df: pd.DataFrame, timerange: str | None) -> pd.DataFrame:
    if not timerange:
        return df
    from freqtrade.configuration import TimeRange

    try:
        tr = TimeRange.parse_timerange(timerange)
    except Exception as err:  # freqtrade raises OperationalException with its own text
        raise ConfigError(f"--timerange {timerange!r}: {err}") from err
    keep = pd.Series(True, index=df.index)
    if tr.startts:
        keep &= df["date"] >= pd.Timestamp(tr.startts, unit="s", tz="UTC")
    if tr.stopts:
        keep &= df["date"] < pd.Timestamp(tr.stopts, unit="s", tz="UTC")
    return df[keep].reset_index(drop=True)


def _num(x: float) -> float | None:
    return None if x != x else round(float(x), 6)  # NaN (no validation) -> null in JSON


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, args: argparse.Namespace, world: int, port: int) -> None:
    """One process of ``--nproc``: the environment torchrun would give it, then the command."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    run(argparse.Namespace(**{**vars(args), "nproc": 1}))


def _launch(args: argparse.Namespace) -> int:
    import torch.multiprocessing as tmp

    if args.nproc > (os.cpu_count() or 1) and resolve_device(args.device).type == "cpu":
        print(f"note: {args.nproc} processes on {os.cpu_count()} cores share them")
    try:
        tmp.spawn(_rank_main, args=(args, args.nproc, _free_port()), nprocs=args.nproc)
    except tmp.ProcessRaisedException as err:
        raise ConfigError(f"train-encoder --nproc {args.nproc}: a process failed: "
                          f"{str(err).strip().splitlines()[-1]}") from None
    return 0


def run(args: argparse.Namespace) -> int:
    if not args.datadir:
        raise ConfigError(f"--datadir is required (or set ${DATA_DIR_ENV})")
    resolve_device(args.device)  # fail before loading data when cuda is asked for but absent
    if args.nproc < 1:
        raise ConfigError(f"--nproc {args.nproc}: at least 1")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch(args)
    dist = init_distributed(args.device)
    if dist.world > 1 and args.batch_size < dist.world:
        raise ConfigError(f"--batch-size {args.batch_size} is the global batch: at least one "
                          f"window per process ({dist.world})")
    try:
        return _train(args, dist)
    finally:
        if dist.world > 1:
            import torch.distributed as tdist

            tdist.destroy_process_group()


def _train(args: argparse.Namespace, dist) -> int:  # noqa: ANN001 - pretrain.Dist
    augment = tuple(a.strip() for a in args.augment.split(",") if a.strip())
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      optimizer=args.optimizer, augment=augment, val_frac=args.val_frac,
                      patience=args.patience, stride=args.stride,
                      max_steps_per_epoch=args.max_steps, seed=args.seed, device=args.device)
    init_state, init_meta = None, None
    if args.init:
        init_model, init_meta = load_checkpoint(args.init)
        enc_cfg = init_model.config
        if (args.window, args.patch_len) != (enc_cfg.window, enc_cfg.patch_len):
            raise ConfigError(f"--init checkpoint has window {enc_cfg.window} / patch_len "
                              f"{enc_cfg.patch_len}; drop --window/--patch-len or match them")
        init_state = init_model.state_dict()
    else:
        enc_cfg = EncoderConfig(window=args.window, patch_len=args.patch_len)
    frames = {}
    for pair in args.pairs:
        df = _slice(load_candles(args.datadir, pair, args.timeframe), args.timerange)
        if len(df) <= enc_cfg.window:
            raise DataError(f"{pair} {args.timeframe}: {len(df)} candles in the time range, "
                            f"need more than one {enc_cfg.window}-candle window")
        frames[pair] = df
    result, meta = pretrain(frames, enc_cfg, cfg, args.timeframe, init_state=init_state,
                            prior_meta=init_meta, tb_dir=args.tensorboard,
                            progress=not args.no_progress, dist=dist)
    if not dist.main:
        return 0  # rank 0 writes the checkpoint and the summary
    out = save_checkpoint(Path(args.out), result.model, meta)
    summary = {"checkpoint": str(out), "pairs": meta["pairs"], "timeframe": args.timeframe,
               "first_candle": meta["first_candle"], "last_candle": meta["last_candle"],
               "train_windows": result.n_train, "val_windows": result.n_val,
               "epochs_run": len(result.train_losses), "best_epoch": result.best_epoch,
               "train_loss": _num(result.train_losses[-1]),
               "val_loss": _num(result.val_losses[-1]), "processes": dist.world,
               "samples_per_s": round(result.samples / max(result.train_seconds, 1e-9), 1)}
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>14}: {value}")
    return 0
