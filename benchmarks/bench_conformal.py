"""Empirical coverage of the conformal intervals on FreqAI's walk-forward, overall and per regime.

Reads the predictions a FreqAI backtest saved (``<models>/backtesting_predictions/*.feather``,
e.g. from the bench variant ``lgbm_conformal``: ``<bench>/jobs/<job>/run/user_data/models/<id>``),
rebuilds each row's interval as the strategy does (adaptive conformal inference over the
window-calibrated half-widths, :func:`learning.encoder.conformal.aci_intervals`; and plain split
conformal, gamma 0), and checks it against the realised log return over the label horizon. The
regime of a row is the detector's, run causally on BTC/USDT at 1h with the strategy's defaults.

    python benchmarks/bench_conformal.py MODELS_DIR [--datadir DIR] [--horizon 24] [--coverage 0.9]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from learning.brain.config import RegimeSettings
from learning.brain.regime import RegimeDetector, regime_features
from learning.data.candles import default_data_dir, load_candles
from learning.encoder.conformal import COLUMNS, aci_intervals


def predictions(models: Path) -> dict[str, pd.DataFrame]:
    """pair coin -> the concatenated predictions of every backtest window, by date."""
    out: dict[str, list[pd.DataFrame]] = {}
    for path in sorted((models / "backtesting_predictions").glob("*_prediction.feather")):
        m = re.match(r"cb_([a-z0-9]+)_\d+_prediction\.feather$", path.name)
        if m:
            out.setdefault(m.group(1).upper(), []).append(pd.read_feather(path))
    return {c: pd.concat(v).drop_duplicates("date", keep="last").sort_values("date")
            .reset_index(drop=True) for c, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", type=Path)
    ap.add_argument("--datadir", type=Path, default=None)
    ap.add_argument("--timeframe", default="1h")
    ap.add_argument("--horizon", type=int, default=24, help="label_period_candles")
    ap.add_argument("--coverage", type=float, default=0.9)
    ap.add_argument("--gamma", type=float, default=0.005)
    args = ap.parse_args()
    datadir = args.datadir or default_data_dir()
    preds = predictions(args.models)
    if not preds or datadir is None:
        print("no predictions or no candle folder")
        return 1
    reg = RegimeSettings().detector
    btc = load_candles(datadir, "BTC/USDT", reg.timeframe)
    first = min(p["date"].iloc[0] for p in preds.values()) - pd.Timedelta(days=60)
    btc = btc[btc["date"] >= first].reset_index(drop=True)
    regimes = RegimeDetector(reg).detect(regime_features(btc, None, reg))[["date", "regime"]]
    rows = []
    for coin, p in preds.items():
        candles = load_candles(datadir, f"{coin}/USDT", args.timeframe)
        df = p.merge(candles[["date", "close"]], on="date", how="left")
        if not all(c in df for c in COLUMNS):
            print(f"{coin}: no conformal columns in the predictions")
            continue
        pred = np.where(df["do_predict"] == 1, df["&-s_return"], np.nan)
        grid = df[list(COLUMNS)].to_numpy(dtype="float64")
        close = df["close"].to_numpy(dtype="float64")
        h = args.horizon
        y = np.r_[np.log(close[h:] / close[:-h]), np.full(h, np.nan)]
        for name, gamma in (("split", 0.0), (f"ACI g={args.gamma}", args.gamma)):
            lo, hi = aci_intervals(pred, grid, close, h, args.coverage, gamma)
            ok = ~np.isnan(lo) & np.isfinite(y)  # an unbounded interval counts (it covers)
            rows.append(pd.DataFrame({"method": name, "pair": coin, "date": df["date"][ok],
                                      "covered": (lo[ok] <= y[ok]) & (y[ok] <= hi[ok]),
                                      "width": (hi - lo)[ok],
                                      "zero": (lo[ok] <= 0) & (hi[ok] >= 0),
                                      "unbounded": np.isinf(lo[ok])}))
    if not rows:
        return 1
    res = pd.concat(rows).merge(regimes, on="date", how="left").fillna({"regime": "UNKNOWN"})
    print(f"{args.models}: {res['date'].min():%Y-%m-%d} .. {res['date'].max():%Y-%m-%d}, "
          f"target coverage {args.coverage:.0%}, horizon {args.horizon} candles")
    for method, part in res.groupby("method"):
        print(f"\n{method}: overall coverage {part['covered'].mean():.1%} on {len(part)} rows, "
              f"median width {part['width'].median():.2%}, interval contains zero on "
              f"{part['zero'].mean():.0%}, unbounded on {part['unbounded'].mean():.1%}")
        table = part.groupby("regime").agg(rows=("covered", "size"),
                                           coverage=("covered", "mean"),
                                           zero=("zero", "mean"))
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
        print(part.groupby("pair")["covered"].mean().to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
