"""``ftlearn train-allocator``: train the portfolio allocation agent walk-forward over the
whitelist (one allocator per window, each on the candles before the window it trades) and save
the checkpoints where the strategy's ``allocator`` sizing mode loads them.

A command rather than a FreqAI model: FreqAI trains and serves one model per pair, the
allocator is one model over all pairs (see :mod:`learning.agents.alloc_train`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from learning.core.errors import DataError
from learning.core.ftconfig import load_ft_config, runmode_of, store_for
from learning.data.candles import default_data_dir
from learning.strategy.config import load_learning_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train-allocator",
                              help="train the portfolio allocation agent walk-forward")
    p.add_argument("-c", "--config", action="append", default=None,
                   help="freqtrade config file(s) (default: config.json)")
    p.add_argument("--runmode", choices=("dry_run", "live", "backtest"), default=None,
                   help="which run's state folder receives the allocators (default: dry_run)")
    p.add_argument("--datadir", type=Path, default=None, help="candles (default $ADVL_DATA_DIR)")
    p.add_argument("--timerange", required=True,
                   help="the range the allocators will trade, YYYYMMDD-YYYYMMDD; each window "
                   "is trained on the --train before it")
    p.add_argument("--train", default="90d", help="training span before each window "
                   "(a duration, default 90d)")
    p.add_argument("--retrain", default="30d", help="window length: a new allocator every "
                   "(default 30d)")
    p.add_argument("--steps", type=int, default=None, help="PPO timesteps per window")
    p.add_argument("--policy", choices=("mlp", "moe"), default=None,
                   help="head network: mlp, or moe (experts gated by the regime); default: "
                   "advanced_learning.allocator.network")
    p.add_argument("--seed", type=int, default=0, help="seed of the networks and episodes")
    p.add_argument("--out", type=Path, default=None,
                   help="write the allocators into this folder (advanced_learning.allocator."
                   "folder) instead of the run's state folder")
    p.add_argument("--tensorboard", type=Path, default=None,
                   help="TensorBoard log folder (rewards, losses, reconstruction loss)")
    p.add_argument("--no-regimes", action="store_true",
                   help="skip the regime detector (the regime inputs become uniform)")
    g = p.add_argument_group("training (learning.agents.training)")
    g.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="cosine: cosine decays with warm restarts")
    g.add_argument("--eval-share", type=float, default=0.0,
                   help="share of each training range held out for evaluation (best weights "
                   "kept; needed by --plateau-patience and --early-stop)")
    g.add_argument("--plateau-patience", type=int, default=0,
                   help="evaluations without improvement that halve the learning rate")
    g.add_argument("--ensemble", type=int, default=1,
                   help="seeds per window; the allocator acts on their mean action")
    g.add_argument("--early-stop", action="store_true",
                   help="stop a seed whose evaluation curve is unlikely to beat the best")
    g.add_argument("--curriculum", action="store_true",
                   help="train through stages: trending, + ranging, + panic episodes, then all")
    g.add_argument("--crash-share", type=float, default=0.0,
                   help="share of training episodes drawn from augmented crash windows "
                   "(block bootstrap of real and synthetic crashes; the design's 0.2)")
    p.set_defaults(func=cmd_train_allocator)


def cmd_train_allocator(args: argparse.Namespace) -> int:
    from learning.agents.alloc_train import train_allocator
    from learning.core.durations import parse_duration
    from learning.core.store import StateStore

    for name in ("train", "retrain"):
        parse_duration(getattr(args, name))  # a ConfigError naming the value
    ft = load_ft_config(args.config or ["config.json"])
    cfg = load_learning_config(ft)
    store = StateStore(args.out) if args.out is not None else \
        store_for(ft, runmode_of(ft, args.runmode), cfg)
    datadir = args.datadir or default_data_dir()
    if datadir is None:
        raise DataError("no data: pass --datadir or set ADVL_DATA_DIR")
    training = {"lr_schedule": args.lr_schedule, "eval_share": args.eval_share,
                "plateau_patience": args.plateau_patience, "ensemble": args.ensemble,
                "early_stop": args.early_stop, "curriculum": args.curriculum,
                "crash_share": args.crash_share}
    from learning.agents.alloc_policy import NetConfig
    from learning.core.config import parse_section

    parse_section(NetConfig, training, "train-allocator")  # a ConfigError naming a bad value
    paths = train_allocator(ft, cfg, store, datadir, args.timerange, args.train, args.retrain,
                            args.steps, args.policy or cfg.allocator.network, args.tensorboard,
                            regimes=not args.no_regimes, seed=args.seed, training=training)
    if not paths:
        raise DataError("no allocator trained: every window had too little history")
    print(f"{len(paths)} allocator(s) in {paths[0].parent}; trade with "
          "advanced_learning.sizing.agent = \"allocator\"")
    return 0
