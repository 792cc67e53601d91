"""An independent ledger for checking freqtrade backtest results against the risk limits.

It rebuilds equity from the exported orders and the raw candles, without any code from the
strategy or the guard: cash flows of every filled order (fees included), positions marked at
each candle close.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from learning.data.candles import load_candles


@dataclass(frozen=True)
class Fill:
    trade: int
    pair: str
    time: pd.Timestamp  # candle open time at which the order filled
    is_entry: bool
    amount: float
    price: float


def fills_from_trades(trades: pd.DataFrame) -> list[Fill]:
    out = []
    for i, row in trades.reset_index(drop=True).iterrows():
        for o in row["orders"]:
            if not o.get("amount"):
                continue
            out.append(Fill(i, row["pair"], pd.Timestamp(o["order_filled_timestamp"], unit="ms",
                                                          tz="UTC"),
                            bool(o["ft_is_entry"]), float(o["amount"]), float(o["safe_price"])))
    return sorted(out, key=lambda f: (f.time, not f.is_entry))


def equity_curve(trades: pd.DataFrame, datadir, pairs, timeframe: str, start: float,
                 fee: float, first: pd.Timestamp, last: pd.Timestamp) -> pd.Series:
    """Equity at every candle close time in [first, last] (index = close time), open positions
    at their liquidation value.

    A fill at candle open time t happens before the mark at close time t + tf.
    """
    step = pd.Timedelta(timeframe.replace("m", "min"))
    closes = {}
    for pair in pairs:
        df = load_candles(datadir, pair, timeframe)
        s = pd.Series(df["close"].to_numpy(), index=df["date"] + step)
        closes[pair] = s[(s.index >= first) & (s.index <= last + step)]
    index = closes[pairs[0]].index
    cash = np.zeros(len(index))
    held = {p: np.zeros(len(index)) for p in pairs}
    for f in fills_from_trades(trades):
        k = index.searchsorted(f.time + step)  # first mark that includes this fill
        if k >= len(index):
            continue
        cost = f.amount * f.price
        if f.is_entry:
            cash[k:] -= cost * (1 + fee)
            held[f.pair][k:] += f.amount
        else:
            cash[k:] += cost * (1 - fee)
            held[f.pair][k:] -= f.amount
    # Open positions at what selling them would bring (close less the exit fee), as freqtrade's
    # calc_profit and so the risk guard count unrealized PnL: valued without the fee, a peak
    # holding a position sits ~0.1% of it higher than the guard's, enough to move a tight
    # drawdown limit's breach by a candle.
    value = sum(held[p] * closes[p].reindex(index).ffill().to_numpy() for p in pairs) * (1 - fee)
    return pd.Series(start + cash + value, index=index)


def equity_before(curve: pd.Series, t: pd.Timestamp) -> float:
    """Equity known at time t: marked at the last close at or before t."""
    i = curve.index.searchsorted(t, side="right") - 1
    return float(curve.iloc[max(i, 0)])


def stake_after_entries(trades: pd.DataFrame) -> list[tuple[Fill, float]]:
    """Each entry fill with the trade's stake right after it (held amount × average entry price,
    freqtrade's definition of a trade's stake)."""
    held: dict[int, float] = {}
    cost: dict[int, float] = {}
    out = []
    for f in fills_from_trades(trades):
        h, c = held.get(f.trade, 0.0), cost.get(f.trade, 0.0)
        if f.is_entry:
            h, c = h + f.amount, c + f.amount * f.price
            out.append((f, c))
        else:
            c = c * (h - f.amount) / h if h > 0 else 0.0
            h -= f.amount
        held[f.trade], cost[f.trade] = h, c
    return out


def wallet_export(result_dir, strategy: str) -> pd.DataFrame:
    """freqtrade's per-candle wallet export of a backtest (``--export trades``): one row per
    candle and currency with its balance and the rate (candle open) it was valued at."""
    from pathlib import Path

    from freqtrade.data.btanalysis import (
        get_backtest_wallet_change,
        get_latest_backtest_filename,
    )

    path = Path(result_dir) / get_latest_backtest_filename(result_dir)
    wallet = get_backtest_wallet_change(path, strategy)
    assert wallet is not None and len(wallet), f"no wallet export in {path}"
    return wallet


@dataclass(frozen=True)
class AddCheck:
    time: pd.Timestamp
    pair: str
    held_value: float  # market value of the position before the add (wallet balance × rate)
    add: float  # cost of the add
    equity: float  # wallet total at that candle (every currency at its rate)

    @property
    def share(self) -> float:
        return (self.held_value + self.add) / self.equity


def adds_against_wallet(trades: pd.DataFrame, wallet: pd.DataFrame) -> list[AddCheck]:
    """Every scale-in (an entry order after a trade's first) with the position's market value
    and the equity that freqtrade's wallet export shows at the candle it filled on (captured
    before that candle's orders, at the candle's open)."""
    w = wallet.assign(value=wallet["rate"] * wallet["balance"])
    equity = w.groupby("date")["value"].sum()
    held = w.set_index(["date", "currency"])["value"]
    out = []
    for _, row in trades.iterrows():
        entries = [o for o in row["orders"] if o["ft_is_entry"] and o.get("amount")]
        for o in entries[1:]:
            t = pd.Timestamp(o["order_filled_timestamp"], unit="ms", tz="UTC")
            base = row["pair"].split("/")[0]
            out.append(AddCheck(t, row["pair"], float(held.get((t, base), 0.0)),
                                float(o["amount"]) * float(o["safe_price"]), float(equity[t])))
    return out
