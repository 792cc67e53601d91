"""``ftlearn train-agents``: train the Tier 3 trade-parameter agents offline on simulated trades
over history and save them where the strategy loads them (``sizing.agent = "ppo"``).

The checkpoints record the last candle they were trained on (``data_end``); a backtest refuses
agents trained on data after its start, so evaluate on a later range than ``--timerange``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from learning.config import load_learning_config
from learning.data import default_data_dir, load_candles
from learning.errors import DataError
from learning.ftconfig import load_ft_config, runmode_of, store_for


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
    p.add_argument("--no-regimes", action="store_true",
                   help="skip the regime detector (the state's regime inputs become uniform)")
    p.set_defaults(func=cmd_train_agents)


def cmd_train_agents(args: argparse.Namespace) -> int:
    import torch

    from learning.ppo import AgentSet
    from learning.ppo_sim import MarketData, SimConfig, TradeParamEnv, train_offline
    from learning.regime import RegimeDetector, regime_features
    from learning.strategy_sizing import AGENT_SCHEMA, agent_state_name

    ft = load_ft_config(args.config or ["config.json"])
    cfg = load_learning_config(ft)
    if args.out is not None:
        from learning.store import StateStore

        store = StateStore(args.out)
    else:
        store = store_for(ft, runmode_of(ft, args.runmode), cfg)
    datadir = args.datadir or default_data_dir()
    if datadir is None:
        raise DataError("no data: pass --datadir or set ADVL_DATA_DIR")
    start_s, _, end_s = args.timerange.partition("-")
    start, end = pd.Timestamp(start_s, tz="UTC"), pd.Timestamp(end_s, tz="UTC")
    pairs = list(ft["exchange"]["pair_whitelist"])
    tf = ft.get("timeframe", "5m")
    frames = {}
    for p in pairs:
        df = load_candles(datadir, p, tf)
        frames[p] = df[(df["date"] >= start) & (df["date"] < end)].reset_index(drop=True)
        if frames[p].empty:
            raise DataError(f"{p} has no {tf} candles in {args.timerange}")
    regimes = None
    det = cfg.regime.detector
    if not args.no_regimes and cfg.regime.btc_pair in pairs:
        hourly = {}
        for p in pairs:
            df = load_candles(datadir, p, det.timeframe)
            lo = start - pd.Timedelta(hours=det.fit_window + det.warmup_candles)
            hourly[p] = df[(df["date"] >= lo) & (df["date"] < end)].reset_index(drop=True)
        btc = hourly.pop(cfg.regime.btc_pair)
        regimes = RegimeDetector(det).detect(regime_features(btc, hourly, det))
    torch.set_num_threads(1)
    sim = SimConfig(btc_pair=cfg.regime.btc_pair)
    market = MarketData.from_candles(frames, tf, config=sim, regimes=regimes,
                                     regime_timeframe=det.timeframe if regimes is not None
                                     else None)
    agents = AgentSet.create(cfg.meta.learners)
    data_end = frames[pairs[0]]["date"].iloc[-1].to_pydatetime()
    meta = {"data_end": data_end.isoformat(), "data_start": start.isoformat(),
            "pairs": pairs, "timeframe": tf, "runmode": "offline"}
    for name, agent in agents.agents.items():
        env = TradeParamEnv(market, agent.profile, sim)
        figures = train_offline(agent, env, args.steps)
        path = store.save_torch(agent_state_name(name, offline=True),
                                {"payload": agent.checkpoint(meta)},
                                schema=AGENT_SCHEMA, meta=meta)
        print(f"{name}: {int(figures['timesteps'])} steps in {figures['seconds']:.0f} s "
              f"({len(env.opp_t)} simulated entry opportunities) -> {path}")
    print(f"trained on {', '.join(pairs)} {tf} {start.date()} .. {data_end.date()}")
    if args.out is not None:
        print(f"to A/B test this version: ftlearn policy register NAME --type ppo --path "
              f"{args.out}")
    return 0
