"""Curriculum and crash augmentation of the allocator: drawdown on held-out crash episodes.

Walk-forward over one period (validation by default: that is where the defaults are chosen;
``--period test`` reports, never tunes): every ``--retrain`` a new allocator is trained on the
``--train`` before its window (``learning.agents.alloc_train.train_window``, ``--steps`` PPO
steps), then it trades its window in the allocation environment (same execution, fees and daily
loss rule as training; deterministic actions). Variants: ``plain`` (today's training),
``curriculum`` (stages), ``crash`` (20 % augmented crash windows), ``both``, and the
other training options of issue 16, ``moe`` (the regime-gated mixture-of-experts head) and
``qol`` (the bench's ``alloc_ppo_qol`` settings: 3-seed ensemble, cosine learning rate, 20 %
held out for evaluation, plateau and early stopping); each over ``--seeds``. Equal weight
and inverse volatility run in the same environment as references.

Crash episodes are found by the augmentation's own rule (the equal-weight proxy of the listed
pairs 10 % below its 48 h high, the episode = the high + 96 h) on the traded windows, which no
allocator saw in training (walk-forward). Per episode: the drawdown of the agent's equity inside
the episode (peak to trough). Printed per variant: return, Sharpe (annualised from the 4 h
steps), max drawdown, mean invested share, fees, and the mean / worst crash drawdown with a
bootstrap interval of the difference to ``plain`` paired by (seed, episode).

    python benchmarks/bench_curriculum.py [--datadir DIR] [--period validation|test]
        [--seeds 0 1 2] [--variants plain,curriculum,crash,both] [--jobs 2] [--json OUT]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT")
PERIODS = {"validation": ("2023-01-01", "2025-01-01"), "test": ("2025-01-01", "2026-02-19")}
VARIANTS = {"plain": {}, "curriculum": {"curriculum": True}, "crash": {"crash_share": 0.2},
            "both": {"curriculum": True, "crash_share": 0.2}, "moe": {"policy": "moe"},
            "qol": {"ensemble": 3, "lr_schedule": "cosine", "eval_share": 0.2,
                    "plateau_patience": 3, "early_stop": True}}
STEPS_PER_YEAR = 6 * 365  # 4 h steps


def _panel(datadir: Path, start: pd.Timestamp, end: pd.Timestamp, train: str):
    from learning.agents.alloc_env import FeatureConfig
    from learning.agents.alloc_train import load_panel
    from learning.brain.config import RegimeSettings
    from learning.core.durations import parse_duration

    features = FeatureConfig()
    lo = start - pd.Timedelta(parse_duration(train)) - pd.Timedelta(days=30)
    return load_panel(datadir, PAIRS, "1h", lo, end, features, RegimeSettings().detector)


def _run(env, act) -> dict:
    """One deterministic pass; per step the time, value and invested share."""
    obs, _ = env.reset(options={"start": 0})
    times, values, invested = [env.t], [env.value], [0.0]
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(act(obs, env))
        times.append(env.t)
        values.append(info["value"])
        invested.append(float(info["weights"].sum()))
        done = terminated or truncated
    return {"t": times, "value": values, "invested": invested, "fees": env.fees}


def _baseline(kind: str):
    from learning.agents.alloc_env import equal_weights, inverse_vol_weights

    def act(obs, env):
        p, t = env.panel, env.t - 1
        listed = p.listed[:, env.t]
        w = equal_weights(listed, env.cfg.cap, 1.0) if kind == "equal" else \
            inverse_vol_weights(p.vol[:, t], listed, env.cfg.cap, 1.0)
        cash = max(1.0 - w.sum(), 1e-6)
        return np.clip(np.log(np.maximum(np.append(w, cash), 1e-9)), -5.0, 5.0)
    return act


def job(args: tuple) -> dict:
    """Train and trade every window of one (variant, seed); baselines when variant is one."""
    import torch

    from learning.agents.alloc_env import AllocEnv, AllocEnvConfig, FeatureConfig
    from learning.agents.alloc_policy import NetConfig
    from learning.agents.alloc_train import train_window, windows

    variant, seed, datadir, period, train, retrain, steps = args
    torch.set_num_threads(1)
    start, end = (pd.Timestamp(x, tz="UTC") for x in PERIODS[period])
    panel = _panel(Path(datadir), start, end, train)
    features, env_cfg = FeatureConfig(), AllocEnvConfig()
    runs, t0 = [], time.perf_counter()
    for w in windows(start, end, train, retrain):
        env = AllocEnv(panel, features, env_cfg, fee=0.001, start=w.trade_start,
                       end=w.trade_end, training=False)
        if variant in ("equal", "inverse_vol"):
            runs.append(_run(env, _baseline(variant)))
            continue
        net = NetConfig(seed=seed, **VARIANTS[variant])
        alloc, _ = train_window(panel, w, net, env_cfg, features, 0.001, None, steps)
        runs.append(_run(env, lambda obs, _e, a=alloc: a.logits(obs)[0]))
    return {"variant": variant, "seed": seed, "runs": runs,
            "seconds": time.perf_counter() - t0}


def _chain(result: dict, dates: np.ndarray) -> pd.DataFrame:
    """One equity curve over the windows (each window starts at the previous one's value)."""
    rows, base = [], 1.0
    for run in result["runs"]:
        for t, v, inv in zip(run["t"], run["value"], run["invested"], strict=True):
            rows.append((dates[t], base * v, inv))
        base *= run["value"][-1]
    df = pd.DataFrame(rows, columns=["date", "value", "invested"])
    return df.drop_duplicates("date", keep="last").reset_index(drop=True)


def _metrics(eq: pd.DataFrame, fees: float) -> dict:
    r = np.diff(np.log(eq["value"].to_numpy()))
    sharpe = float(r.mean() / r.std() * math.sqrt(STEPS_PER_YEAR)) if r.std() > 0 else 0.0
    v = eq["value"].to_numpy()
    return {"return_pct": 100 * (v[-1] - 1), "sharpe": sharpe,
            "max_dd_pct": 100 * float((1 - v / np.maximum.accumulate(v)).max()),
            "invested_pct": 100 * float(eq["invested"].mean()), "fees_pct": 100 * fees}


def _crash_dd(eq: pd.DataFrame, episodes: list[tuple[np.datetime64, np.datetime64]]
              ) -> list[float]:
    out = []
    for a, b in episodes:
        v = eq.loc[(eq["date"] >= a) & (eq["date"] <= b), "value"].to_numpy()
        out.append(100 * float((1 - v / np.maximum.accumulate(v)).max()) if len(v) > 1
                   else float("nan"))
    return out


def _boot(diff: np.ndarray, seed: int = 0, n: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [rng.choice(diff, len(diff)).mean() for _ in range(n)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main(argv: list[str] | None = None) -> int:
    from learning.agents import curriculum as C
    from learning.core.durations import candles
    from learning.data.candles import default_data_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datadir", type=Path, default=None)
    ap.add_argument("--period", choices=tuple(PERIODS), default="validation")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--train", default="90d")
    ap.add_argument("--retrain", default="90d")
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    datadir = args.datadir or default_data_dir()
    if datadir is None:
        sys.exit("no data: pass --datadir or set ADVL_DATA_DIR")
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        sys.exit(f"unknown variant(s) {sorted(unknown)}; choose from {list(VARIANTS)}")
    tasks = [(v, s, str(datadir), args.period, args.train, args.retrain, args.steps)
             for v in variants for s in args.seeds]
    tasks += [(b, 0, str(datadir), args.period, args.train, args.retrain, args.steps)
              for b in ("equal", "inverse_vol")]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(job, tasks))
    wall = time.perf_counter() - t0
    start, end = (pd.Timestamp(x, tz="UTC") for x in PERIODS[args.period])
    panel = _panel(Path(datadir), start, end, args.train)
    dates = panel.dates
    cfg = C.CurriculumConfig()
    within = candles(cfg.within, "1h")
    length = within + candles(cfg.aftermath, "1h")
    lo = panel.index_of(start)
    onsets = C.crash_onsets(C.market_proxy(panel), within, cfg.drop, length, lo, len(dates))
    episodes = [(dates[o], dates[o + length - 1]) for o in onsets]
    print(f"{args.period} {PERIODS[args.period][0]}..{PERIODS[args.period][1]}, "
          f"{', '.join(PAIRS)} 1h, fee 0.1%/side, train {args.train} before each window, "
          f"retrain every {args.retrain}, {args.steps} PPO steps; {len(episodes)} crash "
          f"episodes in the traded windows: "
          + ", ".join(str(pd.Timestamp(a))[:10] for a, _ in episodes))
    rows, crash = [], {}
    for res in results:
        eq = _chain(res, dates)
        m = _metrics(eq, sum(r["fees"] for r in res["runs"]))
        dd = _crash_dd(eq, episodes)
        crash[(res["variant"], res["seed"])] = np.asarray(dd)
        rows.append({"variant": res["variant"], "seed": res["seed"], **m,
                     "crash_dd_mean": float(np.nanmean(dd)) if dd else float("nan"),
                     "crash_dd_worst": float(np.nanmax(dd)) if dd else float("nan"),
                     "train_s": res["seconds"]})
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(table.round(2).to_string(index=False))
    summary = table.groupby("variant", sort=False)[
        ["return_pct", "sharpe", "max_dd_pct", "invested_pct", "crash_dd_mean",
         "crash_dd_worst"]].mean()
    print("\nmean over seeds:\n" + summary.round(2).to_string())
    print("\ncrash drawdown minus plain (percentage points, paired by seed and episode; "
          "95% bootstrap):")
    out = {"period": args.period, "rows": rows, "episodes": [str(pd.Timestamp(a)) for a, _ in
                                                              episodes], "wall_s": wall}
    for v in variants:
        if v == "plain" or "plain" not in variants:
            continue
        diff = np.concatenate([crash[(v, s)] - crash[("plain", s)] for s in args.seeds])
        diff = diff[np.isfinite(diff)]
        by = table.set_index(["variant", "seed"])["sharpe"]
        sharpe = np.array([by[(v, s)] - by[("plain", s)] for s in args.seeds])
        if len(diff):
            lo_, hi_ = _boot(diff)
            print(f"  {v:11s} {diff.mean():+6.2f} [{lo_:+.2f}, {hi_:+.2f}]  (Sharpe minus "
                  f"plain per seed: {', '.join(f'{x:+.2f}' for x in sharpe)})")
            out[f"{v}_minus_plain"] = {"crash_dd": [float(diff.mean()), lo_, hi_],
                                       "sharpe": sharpe.tolist()}
    print(f"\nwall {wall / 60:.1f} min with {args.jobs} process(es)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
