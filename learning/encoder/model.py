"""TSA-MAE: a transformer masked autoencoder over windows of candles.

Tokens are patches of ``patch_len`` candles (PatchTST-style: a 240-candle window with patches of
8 gives 30 tokens), each the flattened ``patch_len x n_features`` block of the window features
of :mod:`learning.encoder.windows`. Pre-training follows MAE (He et al. 2021): a random
``mask_ratio`` of the patches is dropped, the encoder sees **only the visible patches**, and a
light, narrower decoder gets the encoded visible tokens plus a learned mask token at each
dropped position and reconstructs the dropped patches (MSE, in normalized feature units).

At inference:

* :meth:`TSAMAE.embed` encodes **all** patches (nothing masked) and returns a ``d_model``
  window embedding: by default (``pool="last"``) the output token of the most recent patch,
  which attends to the whole window; ``pool="mean"`` averages all patch outputs. "last" was
  chosen on a selection range (June 2025) where it gave clearly better volatility probes than
  the mean (see benchmarks/bench_encoder.py for the figures on later, untouched ranges).
* :meth:`TSAMAE.anomaly_score` is the reconstruction MSE of the masked patches averaged over
  ``score_masks`` fixed masks. The masks are drawn once from ``score_seed`` when the module is
  built (a non-persistent buffer, rebuilt identically from the config), so a score depends only
  on the window and the weights: no randomness at inference, identical across calls and
  processes. Each mask hides ``round(mask_ratio * n_patches)`` patches, as in training.

The architecture is described entirely by the frozen :class:`EncoderConfig`, which travels in
every checkpoint (see :mod:`learning.encoder.pretrain`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from learning.core.config import _f
from learning.core.errors import ConfigError
from learning.encoder.windows import N_FEATURES

ARCH = "tsamae-patch-v1"  # names the module layout; a checkpoint of another arch is refused


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture and input definition of the encoder (carried inside the checkpoint)."""

    window: int = _f(240, "Candles per window.", (16, 4096))
    patch_len: int = _f(8, "Candles per patch token; must divide window.", (1, 256))
    n_features: int = _f(N_FEATURES, "Channels per candle (learning.encoder.windows.FEATURES).",
                         (1, 64))
    d_model: int = _f(64, "Encoder width (and embedding size).", (8, 1024))
    n_heads: int = _f(8, "Encoder attention heads; must divide d_model.", (1, 64))
    n_layers: int = _f(4, "Encoder layers.", (1, 24))
    d_ff: int = _f(256, "Encoder feed-forward width.", (8, 8192))
    dec_d_model: int = _f(32, "Decoder width (light decoder).", (8, 1024))
    dec_heads: int = _f(4, "Decoder attention heads; must divide dec_d_model.", (1, 64))
    dec_layers: int = _f(1, "Decoder layers.", (1, 8))
    dropout: float = _f(0.0, "Dropout in the transformer layers.", (0.0, 0.9))
    mask_ratio: float = _f(0.65, "Fraction of patches masked in pre-training and scoring.",
                           (0.05, 0.95))
    score_masks: int = _f(4, "Fixed masks averaged by the anomaly score.", (1, 64))
    score_seed: int = _f(20250101, "Seed of the fixed scoring masks.", (0, 2**31 - 1))
    clip: float = _f(20.0, "Normalized features are clipped to ±clip.", (1.0, 1000.0))
    pool: str = _f("last", "Window embedding: the encoder output of the last (most recent) "
                   "patch, which attends to all patches, or the mean over all patches.",
                   choices=("last", "mean"))

    def __post_init__(self) -> None:
        if self.window % self.patch_len:
            raise ConfigError(f"encoder: window {self.window} is not a multiple of patch_len "
                              f"{self.patch_len}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"encoder: d_model {self.d_model} is not divisible by n_heads "
                              f"{self.n_heads}")
        if self.dec_d_model % self.dec_heads:
            raise ConfigError(f"encoder: dec_d_model {self.dec_d_model} is not divisible by "
                              f"dec_heads {self.dec_heads}")
        if self.pool not in ("last", "mean"):
            raise ConfigError(f"encoder: pool {self.pool!r} is not one of last, mean")
        if not 1 <= self.n_keep < self.n_patches:
            raise ConfigError(f"encoder: mask_ratio {self.mask_ratio} leaves {self.n_keep} of "
                              f"{self.n_patches} patches visible; need at least one of each")

    @property
    def n_patches(self) -> int:
        return self.window // self.patch_len

    @property
    def n_keep(self) -> int:
        """Visible patches per window (the rest are masked)."""
        return self.n_patches - int(round(self.mask_ratio * self.n_patches))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _layer(d: int, heads: int, d_ff: int, dropout: float) -> nn.TransformerEncoderLayer:
    # Pre-norm layers train stably without a warm-up-sensitive post-norm.
    return nn.TransformerEncoderLayer(d, heads, d_ff, dropout, activation="gelu",
                                      batch_first=True, norm_first=True)


class TSAMAE(nn.Module):
    """Patch-token masked autoencoder; see the module docstring."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        p, d, dd = c.n_patches, c.d_model, c.dec_d_model
        self.patch_embed = nn.Linear(c.patch_len * c.n_features, d)
        self.pos = nn.Parameter(torch.zeros(1, p, d))
        self.encoder = nn.TransformerEncoder(_layer(d, c.n_heads, c.d_ff, c.dropout), c.n_layers,
                                             enable_nested_tensor=False)
        self.enc_norm = nn.LayerNorm(d)
        self.dec_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.dec_pos = nn.Parameter(torch.zeros(1, p, dd))
        self.decoder = nn.TransformerEncoder(_layer(dd, c.dec_heads, 4 * dd, c.dropout),
                                             c.dec_layers, enable_nested_tensor=False)
        self.dec_norm = nn.LayerNorm(dd)
        self.head = nn.Linear(dd, c.patch_len * c.n_features)
        for param in (self.pos, self.mask_token, self.dec_pos):
            nn.init.trunc_normal_(param, std=0.02)
        gen = torch.Generator().manual_seed(c.score_seed)
        keep = torch.stack([torch.randperm(p, generator=gen)[:c.n_keep].sort().values
                            for _ in range(c.score_masks)])
        self.register_buffer("score_keep", keep, persistent=False)  # (K, n_keep)

    # -- shapes -----------------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, W, C) -> (B, P, patch_len*C)."""
        b = x.shape[0]
        return x.reshape(b, self.config.n_patches, self.config.patch_len * x.shape[2])

    def random_keep(self, b: int, generator: torch.Generator | None = None,
                    device: torch.device | None = None) -> torch.Tensor:
        """Indices of the visible patches per sample, (B, n_keep), sorted; MAE random masking."""
        device = device or self.pos.device
        noise = torch.rand(b, self.config.n_patches, generator=generator, device=device)
        return noise.argsort(dim=1)[:, :self.config.n_keep].sort(dim=1).values

    def mask_from_keep(self, keep: torch.Tensor) -> torch.Tensor:
        """(B, n_keep) visible indices -> (B, P) bool, True where masked."""
        mask = torch.ones(keep.shape[0], self.config.n_patches, dtype=torch.bool,
                          device=keep.device)
        return mask.scatter(1, keep, False)

    # -- encoder / decoder ------------------------------------------------------------------
    def encode(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encode the visible patches only: (B, W, C) -> (B, n_keep or P, d_model).

        The masked patches are dropped *before* the transformer (gathered out of the token
        sequence), so the encoder cannot see them.
        """
        tokens = self.patch_embed(self.patchify(x)) + self.pos  # (B, P, d)
        if keep is not None:
            idx = keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
            tokens = tokens.gather(1, idx)  # (B, n_keep, d)
        return self.enc_norm(self.encoder(tokens))

    def decode(self, latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(B, n_keep, d) encoded visible tokens -> (B, P, patch_len*C) reconstruction."""
        b = latent.shape[0]
        vis = self.dec_embed(latent)  # (B, n_keep, dd)
        full = self.mask_token.to(vis.dtype).expand(b, self.config.n_patches, -1).clone()
        full = full.scatter(1, keep.unsqueeze(-1).expand(-1, -1, vis.shape[-1]), vis)
        h = self.decoder(full + self.dec_pos)
        return self.head(self.dec_norm(h))

    def masked_errors(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Per-sample MSE over the masked patches, (B,)."""
        pred = self.decode(self.encode(x, keep), keep).float()
        target = self.patchify(x).float()
        mask = self.mask_from_keep(keep).float()  # (B, P)
        per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, P)
        return (per_patch * mask).sum(dim=1) / mask.sum(dim=1)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Pre-training loss: masked-patch MSE over the valid windows (0 if none is valid)."""
        keep = self.random_keep(x.shape[0], generator, x.device)
        err = self.masked_errors(x, keep)
        if valid is None:
            return err.mean()
        w = valid.float()
        return (err * w).sum() / w.sum().clamp(min=1.0)

    # -- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, x: torch.Tensor, pool: str | None = None) -> torch.Tensor:
        """Window embeddings (B, d_model) from the encoder run on all patches (none masked).

        ``pool`` (default ``config.pool``): ``"last"`` takes the output token of the most recent
        patch (it attends to every patch, and recency is what forecasts use), ``"mean"``
        averages all patch outputs.
        """
        tokens = self.encode(x).float()  # (B, P, d)
        if (pool or self.config.pool) == "mean":
            return tokens.mean(dim=1)
        return tokens[:, -1]

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) masked-patch reconstruction MSE averaged over the fixed scoring masks."""
        k = self.score_keep.shape[0]
        b = x.shape[0]
        keep = self.score_keep.repeat_interleave(b, dim=0)  # (K*B, n_keep), mask-major
        err = self.masked_errors(x.repeat(k, 1, 1), keep)  # (K*B,)
        return err.reshape(k, b).mean(dim=0)


def amp_context(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16 where supported, else fp16); a no-op on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=amp_dtype(device))


def amp_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not one of auto, cpu, cuda")
    return torch.device(name)


@torch.no_grad()
def encode_windows(model: TSAMAE, x, device: torch.device | None = None,
                   batch_size: int = 512, score: bool = True, pool: str | None = None) -> tuple:
    """Embeddings (N, d) and anomaly scores (N,) as numpy float32 for windows ``x`` (N, W, C).

    Runs in eval mode, in batches, with mixed precision on CUDA. ``score=False`` skips the
    scores (returns None for them).
    """
    import numpy as np

    device = device or next(model.parameters()).device
    model.to(device)
    was_training = model.training
    model.eval()
    embs, scores = [], []
    try:
        for lo in range(0, len(x), batch_size):
            xb = torch.as_tensor(np.asarray(x[lo:lo + batch_size]), dtype=torch.float32,
                                 device=device)
            with amp_context(device):
                embs.append(model.embed(xb, pool).float().cpu().numpy())
                if score:
                    scores.append(model.anomaly_score(xb).float().cpu().numpy())
    finally:
        model.train(was_training)
    d = model.config.d_model
    emb = np.concatenate(embs) if embs else np.zeros((0, d), dtype=np.float32)
    sc = (np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)) if score else None
    return emb, sc


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

