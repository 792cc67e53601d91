"""TSA-MAE pre-training samples/s with 1 and 2 processes (``ftlearn train-encoder --nproc``).

Both runs use the same global batch and steps on real candles; each is a fresh ``ftlearn``
process, and the summary's ``samples_per_s`` counts optimizer steps only (no data loading, no
evaluation). One process uses all cores for its intra-op threads (and, as a second reference,
one thread); two processes get half the cores each and split every batch
(DistributedDataParallel, gloo).

    ADVL_DATA_DIR=../shared/data/binance python benchmarks/bench_encoder_ddp.py [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from learning.data.candles import default_data_dir
from learning.exchange.localrun import REPO_ROOT


def run(nproc: int, args: argparse.Namespace, out: Path, threads: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "learning.cli", "train-encoder", "--datadir", str(args.datadir),
           "--pairs", "BTC/USDT", "ETH/USDT", "--timeframe", "5m", "--timerange", args.timerange,
           "--epochs", "1", "--max-steps", str(args.steps), "--batch-size", str(args.batch),
           "--device", "cpu", "--val-frac", "0", "--no-progress", "--json", "--nproc", str(nproc),
           "--out", str(out / f"enc{nproc}.pt")]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                          env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datadir", type=Path, default=default_data_dir())
    ap.add_argument("--timerange", default="20250601-20250701")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=192)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = run(1, args, Path(tmp))
        single = run(1, args, Path(tmp), threads=1)
        two = run(2, args, Path(tmp))
    print(f"global batch {args.batch}, {args.steps} steps, BTC/ETH 5m {args.timerange}")
    print(f"1 process, {os.cpu_count()} threads: {one['samples_per_s']:8.1f} windows/s (loss "
          f"{one['train_loss']})")
    print(f"1 process, 1 thread:  {single['samples_per_s']:8.1f} windows/s")
    print(f"2 processes, 1 thread each: {two['samples_per_s']:8.1f} windows/s (loss "
          f"{two['train_loss']})")
    print(f"ratio 2 processes / 1 process: {two['samples_per_s'] / one['samples_per_s']:.2f}x; "
          f"/ 1 process with 1 thread: {two['samples_per_s'] / single['samples_per_s']:.2f}x")


if __name__ == "__main__":
    main()
