"""PPOPyramiding against freqtrade's built-in ``ReinforcementLearner``.

Usage::

    ADVL_DATA_DIR=/work/shared/data/binance .venv/bin/python benchmarks/bench_pyramid.py
    .venv/bin/python benchmarks/bench_pyramid.py --part a --cycles 2 --reps 2
    .venv/bin/python benchmarks/bench_pyramid.py --part b --days 90 --cycles 1

(a) Training throughput, one process, same data: both models are trained through their FreqAI
    ``train()`` on the same 30-day window of 5m candles (BTC/USDT, real candles when
    ``ADVL_DATA_DIR`` is set, else a synthetic walk), with the same PPO hyperparameters
    (``model_training_parameters`` and ``net_arch`` of configs/freqai-ppo.json) and the same
    ``train_cycles``. Reported: environment steps per second of ``model.learn`` (PPO rollouts +
    updates) with the evaluation callback switched off (pure throughput) and as configured (the
    built-in evaluates 5 identical deterministic episodes per evaluation, ours 1), and the whole
    ``train()`` time, which for ours also holds the encoder's masked pre-training and the one
    embedding pass. What differs by design: the observation (ours: 64-d TSA-MAE embedding +
    scale + 3 position features through the extractor's standardization; the built-in: the
    strategy's features through FreqAI's scaler, conv_width 1), the environment (4-action
    pyramiding vs the 5-action example env and reward).
(b) Full walk-forward backtest through the freqtrade CLI against the local exchange: 3 pairs x
    ``--days`` of 5m, 30-day training windows retrained every 7 days, the same minimal RL
    strategy (benchmarks/assets/RLBenchStrategy.py) and the same config for both models
    (configs/freqai-ppo.json with ``conv_width`` 1 and ``train_cycles`` ``--cycles``); only
    ``--freqaimodel`` differs. Reported: wall time of each run and the ratio.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "assets"))

from freqtrade.freqai.data_kitchen import FreqaiDataKitchen  # noqa: E402
from freqtrade.freqai.prediction_models.ReinforcementLearner import (  # noqa: E402
    ReinforcementLearner,
)

from learning.agents.pyramid_freqai import PPOPyramidingBase  # noqa: E402

PAIR = "BTC/USDT"
PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
CANDLES_PER_DAY = 288


def _features(df: pd.DataFrame) -> pd.DataFrame:
    """The benchmark strategy's features on a candle frame (its hooks do not use ``self``)."""
    from RLBenchStrategy import RLBenchStrategy

    out = df.copy()
    for period in (12, 48):
        part = RLBenchStrategy.feature_engineering_expand_all(None, df.copy(), period, {})
        for col in [c for c in part.columns if c.startswith("%-")]:
            out[f"{col}_{period}"] = part[col]
    out = RLBenchStrategy.feature_engineering_expand_basic(None, out, {})
    out = RLBenchStrategy.feature_engineering_standard(None, out, {})
    out["&-action"] = 0
    return out.iloc[100:].reset_index(drop=True)  # indicator warm-up


def _candles(days: int) -> tuple[pd.DataFrame, str]:
    n = days * CANDLES_PER_DAY + 100
    datadir = os.environ.get("ADVL_DATA_DIR")
    if datadir and (Path(datadir) / "BTC_USDT-5m.feather").exists():
        df = pd.read_feather(Path(datadir) / "BTC_USDT-5m.feather")
        df["date"] = pd.to_datetime(df["date"], utc=True)
        end = pd.Timestamp("2025-09-01", tz="UTC")
        df = df[df["date"] < end].tail(n).reset_index(drop=True)
        return df, f"BTC/USDT 5m, {days} days to {end.date()} (real)"
    from tests.conftest import make_ohlcv

    return make_ohlcv(n, seed=1, vol=0.002), f"synthetic walk, {days} days"


def _config(tmp: Path, identifier: str, cycles: int) -> dict:
    cfg = json.loads((ROOT / "configs" / "freqai-ppo.json").read_text())
    base = json.loads((ROOT / "config.json").read_text())
    (tmp / "config.json").write_text("{}")
    freqai = cfg["freqai"]
    freqai.update(identifier=identifier, conv_width=1, activate_tensorboard=False,
                  train_period_days=30, backtest_period_days=7)
    freqai["rl_config"]["train_cycles"] = cycles
    # what freqtrade's config validation injects as defaults when run through the CLI
    freqai["rl_config"]["model_reward_parameters"].update(rr=1, profit_aim=0.025)
    freqai["rl_config"].setdefault("drop_ohlc_from_features", False)
    freqai["feature_parameters"]["shuffle_after_split"] = False
    return {"timeframe": "5m", "user_data_dir": tmp, "timerange": "20250801-20250901",
            "config_files": [str(tmp / "config.json")], "stake_currency": "USDT",
            "stake_amount": "unlimited", "advanced_learning": base["advanced_learning"],
            "exchange": {"name": "binance", "pair_whitelist": [PAIR]}, "freqai": freqai}


def _timed(cls: type, no_eval: bool) -> type:
    class Timed(cls):
        def fit(self, data_dictionary, dk, **kwargs):
            if no_eval:
                self.eval_callback.eval_freq = 10**12
            start = time.perf_counter()
            model = super().fit(data_dictionary, dk, **kwargs)
            self.fit_s = time.perf_counter() - start
            self.steps = int(self.rl_config["train_cycles"] * len(
                data_dictionary["train_features"]))
            return model

    Timed.__name__ = cls.__name__
    return Timed


def _train_once(cls: type, frame: pd.DataFrame, cycles: int, no_eval: bool, tag: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model = _timed(cls, no_eval)(config=_config(Path(tmp), f"bench-{tag}", cycles))
        model.live = False
        dk = FreqaiDataKitchen(model.config, live=False, pair=PAIR)
        model.dd.get_pair_dict_info(PAIR)
        dk.set_paths(PAIR, 1756684800)
        dk.set_new_model_names(PAIR, 1756684800)
        dk.find_features(frame)
        dk.find_labels(frame)
        start = time.perf_counter()
        model.train(frame.copy(), PAIR, dk)
        train_s = time.perf_counter() - start
    return {"train_s": train_s, "fit_s": model.fit_s, "steps": model.steps,
            "steps_per_s": model.steps / model.fit_s}


def part_a(cycles: int, reps: int) -> dict:
    torch.set_num_threads(1)
    candles, source = _candles(30)
    frame = _features(candles)
    print(f"(a) data: {source}; {len(frame)} rows, {sum(c.startswith('%') for c in frame)} "
          f"strategy features; train_cycles {cycles}; torch threads 1")
    models = {"ReinforcementLearner": ReinforcementLearner, "PPOPyramiding": PPOPyramidingBase}
    for name, cls in models.items():  # warm-up: imports, torch/dynamo initialisation
        _train_once(cls, frame.iloc[:1500], 1, True, f"warm-{name}")
    out: dict = {"source": source, "cycles": cycles}
    for mode, no_eval, n in (("no_eval", True, reps), ("configured", False, 1)):
        runs: dict[str, list[dict]] = {k: [] for k in models}
        for rep in range(n):  # alternate the models so load changes hit both alike
            for name, cls in models.items():
                runs[name].append(_train_once(cls, frame, cycles, no_eval, f"{name}-{rep}"))
        res = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for name, rs in runs.items()}
        ratio = res["PPOPyramiding"]["steps_per_s"] / res["ReinforcementLearner"]["steps_per_s"]
        res["ratio_steps_per_s"] = ratio
        out[mode] = res
        print(f"(a) evaluation {'off' if no_eval else 'as configured'} (median of {n}):")
        for name in models:
            r = res[name]
            print(f"    {name:22s} {int(r['steps']):6d} steps  learn {r['fit_s']:7.1f} s  "
                  f"{r['steps_per_s']:7.0f} steps/s   train() {r['train_s']:7.1f} s")
        print(f"    ratio PPOPyramiding / ReinforcementLearner (steps/s): {ratio:.2f}x")
    return out


def part_b(days: int, cycles: int) -> dict:
    from learning.exchange.localrun import freqtrade_backtest, local_exchange

    datadir = os.environ.get("ADVL_DATA_DIR")
    if not datadir:
        raise SystemExit("(b) needs real candles: set ADVL_DATA_DIR")
    end = pd.Timestamp("2025-12-01")
    start = end - pd.Timedelta(days=days)
    timerange = f"{start:%Y%m%d}-{end:%Y%m%d}"
    out: dict = {"timerange": timerange, "pairs": PAIRS, "cycles": cycles}
    print(f"(b) {len(PAIRS)} pairs x {days} days ({timerange}), 30-day training windows every "
          f"7 days, train_cycles {cycles}, torch threads 1")
    with tempfile.TemporaryDirectory() as tmp, local_exchange(datadir, Path(tmp) / "ex") as ex:
        for model in ("ReinforcementLearner", "PPOPyramiding"):
            work = Path(tmp) / model
            (work / "user_data").mkdir(parents=True)
            overlay = work / "overlay.json"
            cfg = json.loads((ROOT / "configs" / "freqai-ppo.json").read_text())
            freqai = copy.deepcopy(cfg["freqai"])
            freqai.update(identifier=f"bench-b-{model}", conv_width=1,
                          activate_tensorboard=False, save_backtest_models=False)
            freqai["rl_config"]["train_cycles"] = cycles
            overlay.write_text(json.dumps({
                "user_data_dir": str(work / "user_data"), "freqaimodel": model,
                "strategy_path": str(ROOT / "benchmarks" / "assets"),
                "exchange": {"pair_whitelist": PAIRS}, "freqai": freqai}))
            t0 = time.perf_counter()
            run = freqtrade_backtest(configs=[ROOT / "config.json", overlay],
                                     overlay=ex.overlay, datadir=datadir, timerange=timerange,
                                     strategy="RLBenchStrategy", result_dir=work / "results",
                                     extra=["--freqaimodel", model], timeout=36_000)
            wall = time.perf_counter() - t0
            if run.returncode:
                print(run.output[-3000:])
                raise SystemExit(f"{model} backtest failed ({run.returncode})")
            stats = run.stats("RLBenchStrategy")
            out[model] = {"wall_s": wall, "trades": stats["total_trades"],
                          "profit_total": stats["profit_total"]}
            print(f"    {model:22s} wall {wall:8.1f} s   trades {stats['total_trades']:5d}   "
                  f"profit {100 * stats['profit_total']:+.2f} %")
    out["ratio_wall"] = out["PPOPyramiding"]["wall_s"] / out["ReinforcementLearner"]["wall_s"]
    print(f"    ratio PPOPyramiding / ReinforcementLearner (wall): {out['ratio_wall']:.2f}x")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("a", "b", "all"), default="all")
    parser.add_argument("--cycles", type=int, default=None,
                        help="train_cycles (default: 2 for a, 1 for b)")
    parser.add_argument("--reps", type=int, default=2, help="(a) repetitions, median reported")
    parser.add_argument("--days", type=int, default=90, help="(b) backtest days")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    np.seterr(all="ignore")
    result = {}
    if args.part in ("a", "all"):
        result["a"] = part_a(args.cycles or 2, args.reps)
    if args.part in ("b", "all"):
        result["b"] = part_b(args.days, args.cycles or 1)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
