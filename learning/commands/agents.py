"""``ftlearn train-agents``: train the Tier 3 trade-parameter agents offline on simulated trades
over history and save them where the strategy loads them (``sizing.agent = "ppo"``).

The checkpoints record the last candle they were trained on (``data_end``); a backtest refuses
agents trained on data after its start, so evaluate on a later range than ``--timerange``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from learning.core.errors import DataError
from learning.core.ftconfig import load_ft_config, runmode_of, store_for
from learning.data.candles import default_data_dir
from learning.strategy.config import load_learning_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train-agents",
                              help="train the trade-parameter PPO agents offline (Tier 3)")
    p.add_argument("-c", "--config", action="append", default=None,
                   help="freqtrade config file(s) (default: config.json)")
    p.add_argument("--runmode", choices=("dry_run", "live", "backtest"), default=None,
                   help="which run's state folder receives the agents (default: from dry_run)")
    p.add_argument("--datadir", type=Path, default=None, help="candles (default $ADVL_DATA_DIR)")
    p.add_argument("--timerange", required=True,
                   help="training range YYYYMMDD-YYYYMMDD (the agents see nothing after it)")
    p.add_argument("--steps", type=int, default=None, help="PPO timesteps per agent")
    p.add_argument("--out", type=Path, default=None,
                   help="write the agents into this folder instead of the run's state folder "
                   "(a version to A/B test: ftlearn policy register NAME --type ppo --path DIR)")
    p.add_argument("--tensorboard", type=Path, default=None,
                   help="TensorBoard log folder (PPO losses and rewards per learner)")
    p.add_argument("--no-regimes", action="store_true",
                   help="skip the regime detector (the state's regime inputs become uniform)")
    p.set_defaults(func=cmd_train_agents)


def cmd_train_agents(args: argparse.Namespace) -> int:
    from learning.agents.offline import train_agents_offline

    ft = load_ft_config(args.config or ["config.json"])
    cfg = load_learning_config(ft)
    if args.out is not None:
        from learning.core.store import StateStore

        store = StateStore(args.out)
    else:
        store = store_for(ft, runmode_of(ft, args.runmode), cfg)
    datadir = args.datadir or default_data_dir()
    if datadir is None:
        raise DataError("no data: pass --datadir or set ADVL_DATA_DIR")
    train_agents_offline(ft, cfg, store, datadir, args.timerange, args.steps,
                         regimes=not args.no_regimes, tensorboard=args.tensorboard)
    if args.out is not None:
        print(f"to A/B test this version: ftlearn policy register NAME --type ppo --path "
              f"{args.out}")
    return 0
