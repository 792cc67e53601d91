"""Trade-parameter agent (Tier 3 PPO): training speed and out-of-sample trading figures.

Usage::

    ADVL_DATA_DIR=/work/shared/data/binance .venv/bin/python benchmarks/bench_ppo.py
    .venv/bin/python benchmarks/bench_ppo.py --steps 20000 --learners all --regimes

Data: the five Binance pairs at ``--timeframe`` (default 5m, the strategy's) from $ADVL_DATA_DIR,
or a synthetic market (learning.data.synth, with its true regimes) when the variable is unset. The
agent trains on simulated trades before ``--split`` and is scored on the trades after it, which it
never saw. Entry opportunities are the strategy's rule (technical score > 0.30, checked hourly);
with ``--regimes`` the regime detector runs walk-forward on 1h candles and feeds the state's regime
probabilities (otherwise they are "unknown", uniform).

Printed: simulator steps/s (random actions), offline PPO steps/s (rollouts + updates), and for
each range the simulated metrics of the trained agent (policy mean, no exploration), the untrained
agent and the fixed rule-based parameters (size 100 % of the allowance, hold 1 day, stop 8 %,
take profit 15 %): mean reward per decision, per-trade Sharpe of the equity contributions,
annualised daily Sharpe, max drawdown, win rate, total return and the mean chosen parameters.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learning.agents.trade_agent import PPOConfig, TradeLimits, TradeParamAgent, encode_params  # noqa: E402
from learning.agents.trade_sim import (  # noqa: E402
    MarketData,
    SimConfig,
    TradeParamEnv,
    run_policy,
    train_offline,
)
from learning.brain.meta import DEFAULT_LEARNERS  # noqa: E402
from learning.brain.regime import PROB_COLUMNS, REGIMES  # noqa: E402
from learning.data.candles import default_data_dir, load_candles  # noqa: E402

PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT")
RULE = {"size_frac": 1.0, "hold_days": 1.0, "stop_loss": 0.08, "take_profit": 0.15}


def load_market(args: argparse.Namespace, sim: SimConfig) -> tuple[MarketData, str]:
    datadir = default_data_dir()
    regimes = None
    if datadir is not None:
        frames = {p: load_candles(datadir, p, args.timeframe) for p in PAIRS}
        source = f"real Binance candles from {datadir}"
        if args.regimes:
            from learning.brain.regime import RegimeDetector, regime_features

            hourly = {p: load_candles(datadir, p, "1h") for p in PAIRS}
            start = max(df["date"].iloc[0] for df in hourly.values())
            hourly = {p: df[df["date"] >= start].reset_index(drop=True)
                      for p, df in hourly.items()}
            t0 = time.perf_counter()
            feats = regime_features(hourly["BTC/USDT"],
                                    {p: d for p, d in hourly.items() if p != "BTC/USDT"})
            regimes = RegimeDetector().detect(feats)
            print(f"regime detector (1h, walk-forward): {time.perf_counter() - t0:.0f} s")
    else:
        from learning.data.synth import SynthConfig, generate_market, resample_candles

        market = generate_market(SynthConfig(days=args.synth_days))
        frames = {p: (df if args.timeframe == "5m" else resample_candles(df, args.timeframe))
                  for p, df in market.candles.items()}
        regimes = pd.DataFrame({"date": market.regimes["date"]})
        for col, r in zip(PROB_COLUMNS, REGIMES):
            regimes[col] = (market.regimes["regime"] == r.value).astype(float)
        source = "SYNTHETIC market (learning.data.synth; true regimes); not real prices"
        if args.split is None:
            args.split = str(market.regimes["date"].iloc[int(len(market.regimes) * 0.7)])
    t0 = time.perf_counter()
    data = MarketData.from_candles(frames, args.timeframe, config=sim, regimes=regimes,
                                   regime_timeframe="1h" if datadir is not None else "5m")
    print(f"market data: {len(data.pairs)} pairs x {len(data.dates)} candles "
          f"({data.dates[0]} .. {data.dates[-1]}) built in {time.perf_counter() - t0:.1f} s")
    return data, source


def policy_mean(agent: TradeParamAgent) -> Callable[[np.ndarray], np.ndarray]:
    return lambda obs: agent.policy_output(obs)[0]


def constant(raw: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda obs: raw


def env_speed(env: TradeParamEnv, n: int = 3000) -> float:
    env.reset(seed=0)
    env.action_space.seed(0)
    t0 = time.perf_counter()
    for _ in range(n):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
    return n / (time.perf_counter() - t0)


def row(name: str, m: dict) -> str:
    p = m["mean_params"]
    return (f"  {name:<10} reward {m['mean_reward']:+7.3f}  trades {m['trades']:5d}  "
            f"trade Sharpe {m['trade_sharpe']:+6.3f}  daily Sharpe(ann) "
            f"{m['daily_sharpe_ann']:+6.2f}  maxDD {m['max_drawdown']:6.2%}  "
            f"win {m['win_rate']:6.1%}  return {m['total_return']:+7.2%}  | size "
            f"{p['size_frac']:.2f} hold {p['hold_days']:5.2f}d stop {p['stop_loss']:.3f} "
            f"TP {p['take_profit']:.3f}")


def run_online(env: TradeParamEnv, agent: TradeParamAgent, seed: int) -> dict:
    """The agent acting with exploration and learning online as it would live: a trade's reward
    reaches it only once the trade has closed before the current decision (batches of 10)."""
    rng = np.random.default_rng(seed)
    pending: list[tuple[int, dict, float]] = []
    last: dict = {}

    def act(obs: np.ndarray) -> np.ndarray:
        now = env.decision_index
        for item in [p for p in pending if p[0] <= now]:
            agent.record_outcome(item[1], item[2])
            pending.remove(item)
        last["d"] = agent.act(obs, TradeLimits(1.0), rng=rng)
        return np.asarray(last["d"].raw)

    def on_step(info: dict) -> None:
        if info["outcome"] is not None:  # a zero stake opens no trade, so teaches nothing live
            pending.append((info["outcome"].exit_index, last["d"].to_record(),
                            info["reward_terms"]["total"]))

    out = run_policy(env, act, on_step=on_step)
    out["updates"] = agent.state.updates
    return out


def summary(name: str, runs: list[dict]) -> str:
    keys = ("mean_reward", "trade_sharpe", "daily_sharpe_ann", "max_drawdown", "win_rate",
            "total_return")
    mean = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    return (f"  {name:<14} reward {mean['mean_reward']:+7.3f}  trade Sharpe "
            f"{mean['trade_sharpe']:+6.3f}  daily Sharpe(ann) {mean['daily_sharpe_ann']:+6.2f}  "
            f"maxDD {mean['max_drawdown']:6.2%}  win {mean['win_rate']:6.1%}  return "
            f"{mean['total_return']:+7.2%}  (mean of {len(runs)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--timeframe", default="5m")
    ap.add_argument("--split", default=None, help="first date of the out-of-sample range "
                    "(default 2025-10-01 on real data, 70 %% of a synthetic market)")
    ap.add_argument("--steps", type=int, default=PPOConfig().total_timesteps)
    ap.add_argument("--learners", default="Balanced", help="a learner name or 'all'")
    ap.add_argument("--seeds", type=int, default=1, help="train this many seeds per learner")
    ap.add_argument("--regimes", action="store_true", help="run the regime detector (slow)")
    ap.add_argument("--synth-days", type=int, default=240)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.split is None and default_data_dir() is not None:
        args.split = "2025-10-01"

    sim = SimConfig()
    market, source = load_market(args, sim)
    print(f"data: {source}; split at {args.split}; timeframe {args.timeframe}")
    evaluation = dataclasses.replace(sim, halt_on_drawdown=False, random_start=False,
                                     episode_trades=10**9)
    learners = [p for p in DEFAULT_LEARNERS if args.learners in ("all", p.name)]
    for profile in learners:
        train_env = TradeParamEnv(market, profile, sim, end=args.split)
        ranges = {"train": TradeParamEnv(market, profile, evaluation, end=args.split),
                  "test": TradeParamEnv(market, profile, evaluation, start=args.split)}
        print(f"\n== {profile.name} (risk_tolerance {profile.risk_tolerance}, patience "
              f"{profile.patience}): {len(train_env.opp_t)} train / "
              f"{len(ranges['test'].opp_t)} test opportunities")
        print(f"simulator: {env_speed(train_env.clone()):.0f} steps/s (random actions)")
        # The rule-based fallback's hold is 1 day × patience, as FallbackParams does.
        rule_raw = encode_params(RULE["size_frac"], RULE["hold_days"] * profile.patience,
                                 RULE["stop_loss"], RULE["take_profit"], profile)
        rule = {k: run_policy(e, constant(rule_raw)) for k, e in ranges.items()}
        oos: dict[str, list[dict]] = {"trained": [], "trained+online": [], "untrained": []}
        for seed in range(args.seeds):
            cfg = PPOConfig(seed=seed)
            agent = TradeParamAgent(profile, cfg)
            untrained = {k: run_policy(e, policy_mean(agent)) for k, e in ranges.items()}
            timing = train_offline(agent, train_env, args.steps)
            print(f"seed {seed}: offline PPO {timing['timesteps']:.0f} steps in "
                  f"{timing['seconds']:.1f} s = {timing['steps_per_s']:.0f} steps/s (n_envs "
                  f"{cfg.n_envs}, n_steps {cfg.n_steps}, {cfg.n_epochs} epochs, batch "
                  f"{cfg.batch_size})")
            for name, env in ranges.items():
                print(f" {name} range ({'in' if name == 'train' else 'out of'} sample):")
                trained = run_policy(env, policy_mean(agent))
                print(row("trained", trained))
                if name == "test":
                    online = run_online(env, TradeParamAgent.from_bytes(agent.to_bytes()), seed)
                    print(row("+online", online) + f"  [{online['updates']} updates]")
                    oos["trained"].append(trained)
                    oos["trained+online"].append(online)
                    oos["untrained"].append(untrained[name])
                print(row("untrained", untrained[name]))
                print(row("rule", rule[name]))
        print(f" out-of-sample summary, {profile.name}:")
        for name, runs in oos.items():
            print(summary(name, runs))
        print(summary("rule", [rule["test"]]))
    print("\nrewards: per decision, incl. zero-size ones; Sharpe of trades = mean/std of "
          "stake/equity × profit; returns compound the simulated account (max position 20 % "
          "× risk_tolerance per trade). +online: explores and learns from trades as they close.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
