"""Pre-training loop and checkpoints of the TSA-MAE encoder.

``train_encoder`` runs MAE pre-training on a :class:`~learning.encoder.windows.WindowSet`: AdamW
(or ``torch.optim.Muon`` for the 2-D weights of the transformer layers, AdamW for the rest),
linear warm-up then cosine decay, gradient clipping, optional augmentations, early stopping on
the validation loss (restoring the best weights), mixed precision on CUDA, a rich progress bar
and TensorBoard scalars. Everything random comes from one seed (:func:`seed_everything`).

Checkpoint format (one ``torch.save`` dict, plain types and tensors only, so it loads with
``torch.load(..., weights_only=True)``)::

    {"schema": "advl-tsamae", "schema_version": 1, "arch": "tsamae-patch-v1",
     "config": {EncoderConfig fields}, "state_dict": {name: tensor},
     "meta": {"pairs", "timeframe", "first_candle", "last_candle", "train_losses",
              "val_losses", "best_epoch", "train_config", "torch_version",
              "package_version", "created", ...}}

It is written atomically (temp file in the same folder, fsync, rename). Loading refuses another
schema, schema version or architecture with a :class:`~learning.core.errors.StateError` naming it.

Several processes (``ftlearn train-encoder --nproc N`` or ``torchrun``): torch.distributed with
DistributedDataParallel (gloo on CPU, nccl on GPUs). Every rank draws the same shuffled global
batch, augmentation and masks from the same seed and trains on its own slice of it; each rank's
loss is scaled so that DDP's gradient average is the gradient of the global batch's loss. The
run is therefore the single-process run with the same global batch (up to floating-point
summation order), only faster; rank 0 writes the progress bar, TensorBoard and the checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from learning import __version__
from learning.core.config import _f, parse_section
from learning.core.errors import ConfigError, DataError, StateError
from learning.encoder.model import (
    ARCH,
    TSAMAE,
    EncoderConfig,
    amp_context,
    amp_dtype,
    resolve_device,
)
from learning.encoder.windows import AUGMENTATIONS, WindowSet, augment, split_by_time

logger = logging.getLogger(__name__)

SCHEMA = "advl-tsamae"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Pre-training hyperparameters (stored in the checkpoint's meta for the record)."""

    epochs: int = _f(10, "Passes over the training windows (upper bound with early stopping).",
                     (1, 10000))
    batch_size: int = _f(192, "Windows per optimizer step.", (1, 65536))
    lr: float = _f(1e-3, "Peak learning rate (AdamW and Muon, Muon with match_rms_adamw).",
                   (1e-6, 1.0))
    min_lr_ratio: float = _f(0.05, "Final learning rate as a fraction of lr (cosine floor).",
                             (0.0, 1.0))
    warmup_frac: float = _f(0.05, "Fraction of all steps spent in linear warm-up.", (0.0, 0.5))
    weight_decay: float = _f(0.05, "Decoupled weight decay on 2-D weights.", (0.0, 1.0))
    optimizer: str = _f("adamw", "adamw, or muon (torch.optim.Muon for the transformer's 2-D "
                        "weights, AdamW for the rest).", choices=("adamw", "muon"))
    augment: tuple[str, ...] = _f((), "Augmentations: jitter, scale, timewarp, mixup.")
    val_frac: float = _f(0.15, "Last fraction of the time range used for validation (0: none).",
                         (0.0, 0.9))
    patience: int = _f(3, "Epochs without validation improvement before stopping.", (1, 1000))
    min_delta: float = _f(1e-3, "Relative loss improvement that counts for early stopping.",
                          (0.0, 1.0))
    stride: int = _f(1, "Use every stride-th window end (1: all).", (1, 10000))
    max_steps_per_epoch: int = _f(0, "Cap on optimizer steps per epoch (0: a full pass).",
                                  (0, 10**9))
    grad_clip: float = _f(1.0, "Gradient norm clip (0: off).", (0.0, 1000.0))
    seed: int = _f(0, "Seed of numpy, random and torch for the run.", (0, 2**31 - 1))
    device: str = _f("auto", "auto, cpu or cuda.", choices=("auto", "cpu", "cuda"))

    def __post_init__(self) -> None:
        bad = sorted(set(self.augment) - set(AUGMENTATIONS))
        if bad:
            raise ConfigError(f"augment: unknown {', '.join(bad)}; known: "
                              f"{', '.join(AUGMENTATIONS)}")


@dataclass(frozen=True)
class Dist:
    """This process's place in a torch.distributed run (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> Dist:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``PORT`` in the environment); a plain process is rank 0 of 1. Backend: nccl
    on CUDA, gloo on CPU. Each rank gets its share of the CPU threads (or its own GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as tdist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = resolve_device(device_name).type == "cuda"
    if cuda:
        torch.cuda.set_device(local)
    else:  # no oversubscription: N processes share the cores
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if cuda else "gloo")
    return Dist(tdist.get_rank(), tdist.get_world_size(), local)


class _ShardLoss(torch.nn.Module):
    """The loss of this rank's slice of a global batch, for DDP to differentiate (DDP only
    synchronises gradients of what runs through its own forward)."""

    def __init__(self, model: TSAMAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, keep: torch.Tensor, w: torch.Tensor,
                scale: float) -> torch.Tensor:
        return (self.model.masked_errors(x, keep) * w).sum() * scale


@dataclass
class TrainResult:
    """What a pre-training run produced (the model holds the best weights, on CPU)."""

    model: TSAMAE
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    n_train: int = 0
    n_val: int = 0
    train_seconds: float = 0.0  # optimizer steps only (no evaluation)
    samples: int = 0  # windows through the optimizer, all ranks together


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch (CPU and CUDA) for a run; return the run's numpy rng."""
    random.seed(seed)
    np.random.seed(seed)  # legacy global rng: only for third-party code that reads it
    torch.manual_seed(seed)  # also seeds every CUDA device
    return np.random.default_rng(seed)


def lr_lambda(total_steps: int, warmup_frac: float, min_ratio: float) -> Callable[[int], float]:
    """Linear warm-up to 1 then cosine decay to ``min_ratio`` over ``total_steps``."""
    warm = max(1, int(round(warmup_frac * total_steps)))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
    return f


def build_optimizers(model: TSAMAE, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """AdamW for everything, or Muon for the transformer layers' 2-D weights + AdamW for rest."""
    muon_params, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        in_blocks = name.startswith(("encoder.layers.", "decoder.layers."))
        if cfg.optimizer == "muon" and in_blocks and p.ndim == 2:
            muon_params.append(p)
        elif p.ndim == 2:
            decay.append(p)
        else:  # biases, norms, positional embeddings and the mask token are not decayed
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    opts: list[torch.optim.Optimizer] = [torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))]
    if muon_params:
        if not hasattr(torch.optim, "Muon"):  # pragma: no cover - torch < 2.9
            raise ConfigError(f"optimizer muon needs torch.optim.Muon (torch {torch.__version__})")
        # match_rms_adamw scales Muon's update to AdamW's RMS, so one lr serves both.
        opts.append(torch.optim.Muon(muon_params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     adjust_lr_fn="match_rms_adamw"))
    return opts


@torch.no_grad()
def evaluate(model: TSAMAE, data: WindowSet, batch_size: int, seed: int,
             device: torch.device, dist: Dist = Dist()) -> float:
    """Mean masked-patch MSE over the valid windows, with masks from a fixed seed. Distributed:
    every rank draws every batch's masks (same sequence) and scores every ``world``-th batch;
    the sums are added across ranks."""
    if len(data) == 0:
        return float("nan")
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    total, count = 0.0, 0
    for j, lo in enumerate(range(0, len(data), batch_size)):
        wb = data.batch(np.arange(lo, min(lo + batch_size, len(data))))
        if not wb.valid.any():
            continue
        x = torch.from_numpy(wb.x[wb.valid]).to(device)
        with amp_context(device):
            keep = model.random_keep(x.shape[0], gen, device)
            if j % dist.world != dist.rank:
                continue
            err = model.masked_errors(x, keep)
        total += float(err.float().sum())
        count += x.shape[0]
    if dist.world > 1:
        import torch.distributed as tdist

        sums = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
        tdist.all_reduce(sums)
        total, count = float(sums[0]), int(sums[1])
    model.train()
    return total / count if count else float("nan")


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=False)


def train_encoder(train: WindowSet, val: WindowSet | None, enc_cfg: EncoderConfig,
                  cfg: TrainConfig, *, init_state: Mapping[str, torch.Tensor] | None = None,
                  tb_dir: str | Path | None = None, progress: bool = True,
                  dist: Dist = Dist()) -> TrainResult:
    """Pre-train (or fine-tune from ``init_state``) a :class:`TSAMAE`; see the module docstring.

    Raises :class:`DataError` when ``train`` holds no window.
    """
    if len(train) == 0:
        raise DataError(f"not enough valid candles for one {enc_cfg.window}-candle window "
                        "(need window+1 consecutive clean candles in the training range)")
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist.world > 1:
        device = torch.device("cuda", dist.local_rank)
    progress = progress and dist.main
    tb_dir = tb_dir if dist.main else None
    rng = seed_everything(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    model = TSAMAE(enc_cfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(device).train()
    shard_loss = None
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        shard_loss = DistributedDataParallel(
            _ShardLoss(model), device_ids=[device.index] if device.type == "cuda" else None)
    opts = build_optimizers(model, cfg)
    steps = math.ceil(len(train) / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    sched_f = lr_lambda(cfg.epochs * steps, cfg.warmup_frac, cfg.min_lr_ratio)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, sched_f) for o in opts]
    use_scaler = device.type == "cuda" and amp_dtype(device) == torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    writer = None
    if tb_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tb_dir))
    have_val = val is not None and len(val) > 0
    if not have_val:
        logger.warning("no validation windows: early stopping watches the training loss")
    result = TrainResult(model=model, n_train=len(train), n_val=len(val) if val else 0)
    best, best_state, bad_epochs, global_step = math.inf, None, 0, 0
    try:
        with _progress(progress) as bar:
            task = bar.add_task("pre-train", total=cfg.epochs * steps, info="")
            for epoch in range(cfg.epochs):
                perm = rng.permutation(len(train))
                losses = []
                for i in range(steps):
                    t_step = time.perf_counter()
                    wb = train.batch(perm[i * cfg.batch_size:(i + 1) * cfg.batch_size])
                    xb = augment(wb.x, wb.valid, cfg.augment, rng) if cfg.augment else wb.x
                    if shard_loss is None:
                        x = torch.from_numpy(xb).to(device, non_blocking=True)
                        valid = torch.from_numpy(wb.valid).to(device)
                        with amp_context(device):
                            loss = model(x, valid, gen)
                        scaler.scale(loss).backward()
                        shown = loss.detach()
                    else:
                        shown = _shard_step(shard_loss, model, xb, wb.valid, gen, device,
                                            dist, scaler)
                    result.samples += len(wb.valid)
                    if cfg.grad_clip:
                        for o in opts:
                            scaler.unscale_(o)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    for o in opts:
                        scaler.step(o)
                    scaler.update()
                    for o in opts:
                        o.zero_grad(set_to_none=True)
                    for s in scheds:
                        s.step()
                    result.train_seconds += time.perf_counter() - t_step
                    losses.append(float(shown))
                    if writer is not None:
                        writer.add_scalar("loss/train_step", losses[-1], global_step)
                        writer.add_scalar("lr", scheds[0].get_last_lr()[0], global_step)
                    global_step += 1
                    bar.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.epochs} "
                               f"loss {np.mean(losses[-50:]):.4f}")
                train_loss = float(np.mean(losses))
                val_loss = (evaluate(model, val, cfg.batch_size, cfg.seed + 1, device, dist)
                            if have_val else float("nan"))
                result.train_losses.append(train_loss)
                result.val_losses.append(val_loss)
                if writer is not None:
                    writer.add_scalar("loss/train_epoch", train_loss, epoch)
                    if have_val:
                        writer.add_scalar("loss/val", val_loss, epoch)
                watched = val_loss if have_val else train_loss
                logger.info("epoch %d: train %.5f val %.5f", epoch + 1, train_loss, val_loss)
                if watched < best * (1.0 - cfg.min_delta):
                    best, bad_epochs, result.best_epoch = watched, 0, epoch + 1
                    best_state = copy.deepcopy({k: v.detach().cpu()
                                                for k, v in model.state_dict().items()})
                else:
                    bad_epochs += 1
                    if bad_epochs >= cfg.patience:
                        result.stopped_early = True
                        logger.info("early stop after epoch %d (best %d)", epoch + 1,
                                    result.best_epoch)
                        break
    finally:
        if writer is not None:
            writer.close()
    model.cpu()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result


def _shard_step(shard_loss: torch.nn.Module, model: TSAMAE, xb: np.ndarray, valid: np.ndarray,
                gen: torch.Generator, device: torch.device, dist: Dist,
                scaler: torch.amp.GradScaler) -> torch.Tensor:
    """Forward and backward of this rank's slice of the global batch ``xb``; returns the global
    batch's loss (for the log). Every rank draws the masks of the WHOLE batch (same generator
    state everywhere, as a single process would) and keeps its slice; the loss is scaled by
    world / (valid windows in the global batch), so DDP's average of the ranks' gradients is
    the gradient of the single-process loss."""
    import torch.distributed as tdist

    keep = model.random_keep(len(xb), gen, device)
    part = np.array_split(np.arange(len(xb)), dist.world)[dist.rank]
    x = torch.from_numpy(xb[part]).to(device, non_blocking=True)
    w = torch.from_numpy(valid[part]).to(device).float()
    n_valid = max(1.0, float(valid.sum()))
    with amp_context(device):
        loss = shard_loss(x, keep[torch.from_numpy(part).to(device)], w, dist.world / n_valid)
    scaler.scale(loss).backward()
    shown = loss.detach().float() / dist.world
    tdist.all_reduce(shown)
    return shown


def _iso(ts: Any) -> str | None:
    """A naive-UTC or aware time as an ISO string with +00:00 (None stays None)."""
    if ts is None or pd.isna(ts):
        return None
    ts = pd.Timestamp(ts)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).isoformat()


def _plain(value: Any) -> Any:
    """Tuples -> lists, numpy scalars -> python (weights_only loading wants plain types)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        return str(value)  # e.g. torch's TorchVersion, a str subclass weights_only refuses
    return value


def pretrain(frames: Mapping[str, pd.DataFrame], enc_cfg: EncoderConfig, cfg: TrainConfig,
             timeframe: str, *, init_state: Mapping[str, torch.Tensor] | None = None,
             prior_meta: Mapping[str, Any] | None = None, tb_dir: str | Path | None = None,
             progress: bool = True, now: datetime | None = None,
             dist: Dist = Dist()) -> tuple[TrainResult, dict]:
    """Split ``frames`` (pair -> candles) by time, pre-train, and build the checkpoint meta.

    When fine-tuning (``init_state``), pass the initial checkpoint's meta as ``prior_meta``:
    ``first_candle``/``last_candle`` then span everything the weights have ever seen, which is
    what the lookahead guard of the FreqAI model checks.
    """
    names = list(frames)
    train, val, split = split_by_time([frames[p] for p in names], enc_cfg.window, cfg.val_frac,
                                      cfg.stride, enc_cfg.clip)
    if len(train) == 0:
        rows = {p: len(df) for p, df in frames.items()}
        raise DataError(f"not enough candles for one {enc_cfg.window}-candle window in the "
                        f"training part ({rows}); widen the time range or lower val_frac")
    logger.info("pre-training on %d windows, validating on %d (split at %s)", len(train),
                len(val), split.split_time)
    result = train_encoder(train, val, enc_cfg, cfg, init_state=init_state, tb_dir=tb_dir,
                           progress=progress, dist=dist)
    meta = {
        "pairs": names, "timeframe": timeframe,
        "first_candle": _iso(split.first), "last_candle": _iso(split.last),
        "split_time": _iso(split.split_time),
        "n_train_windows": result.n_train, "n_val_windows": result.n_val,
        "train_losses": result.train_losses, "val_losses": result.val_losses,
        "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
        "train_config": dataclasses.asdict(cfg), "processes": dist.world,
        "created": (now or datetime.now(UTC)).isoformat(),
    }
    if prior_meta:
        for key, pick in (("first_candle", min), ("last_candle", max)):
            seen = [v for v in (meta[key], prior_meta.get(key)) if v]
            meta[key] = pick(seen, key=pd.Timestamp) if seen else None
        meta["fine_tuned_from"] = {k: prior_meta.get(k) for k in
                                   ("pairs", "timeframe", "first_candle", "last_candle")}
    return result, meta


# ----------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_payload(model: TSAMAE, meta: Mapping[str, Any]) -> dict:
    """The self-describing dict written by :func:`save_checkpoint` (plain types + tensors)."""
    meta = dict(meta)
    meta.setdefault("torch_version", torch.__version__)
    meta.setdefault("package_version", __version__)
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "arch": ARCH,
            "config": model.config.to_dict(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "meta": _plain(meta)}


def model_from_payload(payload: Any, source: str = "checkpoint") -> tuple[TSAMAE, dict]:
    """Rebuild the model from a payload; refuse other schemas/architectures with StateError."""
    if not isinstance(payload, Mapping) or "schema" not in payload:
        raise StateError(f"{source} is not a TSA-MAE checkpoint (no 'schema' entry)")
    if payload["schema"] != SCHEMA:
        raise StateError(f"{source}: schema {payload['schema']!r} is not {SCHEMA!r}")
    if payload.get("schema_version") != SCHEMA_VERSION:
        raise StateError(f"{source}: schema version {payload.get('schema_version')!r} is not "
                         f"the supported version {SCHEMA_VERSION}")
    if payload.get("arch") != ARCH:
        raise StateError(f"{source}: architecture {payload.get('arch')!r} does not match this "
                         f"code's {ARCH!r}")
    try:
        cfg = parse_section(EncoderConfig, payload.get("config"), f"{source}.config")
    except ConfigError as err:
        raise StateError(f"{source}: config does not match EncoderConfig ({err})") from err
    model = TSAMAE(cfg)
    state = payload.get("state_dict") or {}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise StateError(
            f"{source}: weights do not match architecture {ARCH!r} with its config: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape {shapes[:5]}")
    model.load_state_dict(state)
    model.eval()
    return model, dict(payload.get("meta") or {})


def save_checkpoint(path: str | Path, model: TSAMAE, meta: Mapping[str, Any]) -> Path:
    """Write the checkpoint atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(checkpoint_payload(model, meta), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a folder
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[TSAMAE, dict]:
    """Load a checkpoint with ``weights_only=True``; StateError names any mismatch."""
    path = Path(path)
    if not path.is_file():
        raise StateError(f"encoder checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # UnpicklingError, zip errors, ... all mean "not ours / corrupt"
        raise StateError(f"{path} is not a loadable TSA-MAE checkpoint ({err})") from err
    return model_from_payload(payload, str(path))

