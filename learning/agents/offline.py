"""Offline training of the Tier 3 agents over history, one per learner personality, saved where
the strategy loads them. Driven by ``ftlearn train-agents`` and by ``ftlearn bench``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from learning.core.errors import DataError
from learning.core.store import StateStore
from learning.data.candles import load_candles


def agent_config(sizing: Any) -> Any:
    """The Tier 3 agents' :class:`~learning.agents.trade_agent.PPOConfig` from the strategy's
    ``sizing`` section (network kind, churn penalty); the rest are the documented defaults."""
    import dataclasses

    from learning.agents.trade_agent import PPOConfig

    base = PPOConfig()
    return dataclasses.replace(base, policy=sizing.ppo_policy, reward=dataclasses.replace(
        base.reward, short_hold_penalty=sizing.ppo_short_hold_penalty))


def train_agents_offline(ft_config: dict[str, Any], cfg: Any, store: StateStore, datadir: Path,
                         timerange: str, steps: int | None = None, regimes: bool = True,
                         say: Callable[[str], None] = print,
                         tensorboard: Path | None = None) -> list[Path]:
    """Train every learner's agent on ``timerange`` (``YYYYMMDD-YYYYMMDD``) of the whitelist and
    save it in ``store``; ``cfg`` is the parsed ``advanced_learning`` section. Returns the
    checkpoint paths. The agents see no candle at or after the range's end."""
    import torch

    from learning.agents.trade_agent import AGENT_SCHEMA, AgentSet, agent_state_name
    from learning.agents.trade_sim import MarketData, SimConfig, TradeParamEnv, train_offline
    from learning.brain.regime import RegimeDetector, regime_features

    start_s, _, end_s = timerange.partition("-")
    start, end = pd.Timestamp(start_s, tz="UTC"), pd.Timestamp(end_s, tz="UTC")
    pairs: Sequence[str] = list(ft_config["exchange"]["pair_whitelist"])
    tf = ft_config.get("timeframe", "5m")
    frames = {}
    for p in pairs:
        df = load_candles(datadir, p, tf)
        frames[p] = df[(df["date"] >= start) & (df["date"] < end)].reset_index(drop=True)
    empty = [p for p, f in frames.items() if f.empty]
    if len(empty) == len(pairs):
        raise DataError(f"none of {', '.join(pairs)} has {tf} candles in {timerange}")
    if empty:  # e.g. a pair whose market opened later: the agents learn from the others
        say(f"no {tf} candles of {', '.join(empty)} in {timerange}: trained without them")
        pairs = [p for p in pairs if p not in empty]
        frames = {p: frames[p] for p in pairs}
    labels = None
    det = cfg.regime.detector
    if regimes and cfg.regime.btc_pair in pairs:
        hourly = {}
        for p in pairs:
            df = load_candles(datadir, p, det.timeframe)
            lo = start - pd.Timedelta(hours=det.fit_window + det.warmup_candles)
            hourly[p] = df[(df["date"] >= lo) & (df["date"] < end)].reset_index(drop=True)
        btc = hourly.pop(cfg.regime.btc_pair)
        labels = RegimeDetector(det).detect(regime_features(btc, hourly, det))
    torch.set_num_threads(1)
    sim = SimConfig(btc_pair=cfg.regime.btc_pair)
    market = MarketData.from_candles(frames, tf, config=sim, regimes=labels,
                                     regime_timeframe=det.timeframe if labels is not None
                                     else None)
    agents = AgentSet.create(cfg.meta.learners, agent_config(cfg.sizing))
    data_end = frames[pairs[0]]["date"].iloc[-1].to_pydatetime()
    meta = {"data_end": data_end.isoformat(), "data_start": start.isoformat(),
            "pairs": list(pairs), "timeframe": tf, "runmode": "offline"}
    paths = []
    for name, agent in agents.agents.items():
        env = TradeParamEnv(market, agent.profile, sim)
        figures = train_offline(agent, env, steps,
                                tensorboard=str(tensorboard) if tensorboard else None)
        path = store.save_torch(agent_state_name(name, offline=True),
                                {"payload": agent.checkpoint(meta)},
                                schema=AGENT_SCHEMA, meta=meta)
        paths.append(path)
        say(f"{name}: {int(figures['timesteps'])} steps in {figures['seconds']:.0f} s "
            f"({len(env.opp_t)} simulated entry opportunities) -> {path}")
    say(f"trained on {', '.join(pairs)} {tf} {start.date()} .. {data_end.date()} "
        f"({agents.config.policy} policy)")
    return paths
