"""The bench's former equity derivation, kept only as a cross-check of freqtrade's wallet
export (:func:`learning.bench.metrics.book_from_wallet`): cash flows of every filled order (fees
at the trade's rate) and positions marked at every candle close."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from learning.bench.metrics import Book


@dataclass(frozen=True)
class Fill:
    """One filled order: at candle open ``time`` (UTC), ``amount`` of ``pair`` at ``price``."""

    pair: str
    time: pd.Timestamp
    is_entry: bool
    amount: float
    price: float
    fee_rate: float


def fills_from_trades(trades: pd.DataFrame, default_fee: float = 0.0) -> list[Fill]:
    """Fills of freqtrade's exported trades (``orders`` column of ``load_backtest_data``).

    Entries pay the trade's ``fee_open``, exits its ``fee_close`` (``default_fee`` where the
    columns are missing)."""
    out = []
    for _, row in trades.iterrows():
        fee_open = float(row.get("fee_open", default_fee) or 0.0)
        fee_close = float(row.get("fee_close", default_fee) or 0.0)
        for order in row["orders"]:
            if not order.get("amount"):
                continue
            entry = bool(order["ft_is_entry"])
            out.append(Fill(row["pair"],
                            pd.Timestamp(order["order_filled_timestamp"], unit="ms", tz="UTC"),
                            entry, float(order["amount"]), float(order["safe_price"]),
                            fee_open if entry else fee_close))
    return sorted(out, key=lambda f: (f.time, not f.is_entry))


def mark_to_market(fills: Sequence[Fill], closes: pd.DataFrame, start_equity: float,
                   start: pd.Timestamp, step: pd.Timedelta) -> Book:
    """Equity at ``start`` and at every close time in ``closes`` (index: candle close times,
    one column per pair, gaps forward-filled). A fill at open ``t`` enters the mark at
    ``t + step``; a fill stamped with the last close time (freqtrade's force exit at the end of
    a backtest, priced at that close) enters the last mark; later fills are ignored."""
    closes = closes.sort_index().ffill()
    index = closes.index
    n = len(index)
    cash = np.zeros(n)
    held = {p: np.zeros(n) for p in closes.columns}
    fees = 0.0
    for f in fills:
        k = int(index.searchsorted(f.time + step))
        if k >= n and f.time <= index[-1]:
            k = n - 1  # freqtrade's force exit at the end fills at the last close time
        if k >= n:
            continue
        value = f.amount * f.price
        fee = value * f.fee_rate
        fees += fee
        cash[k] += -value - fee if f.is_entry else value - fee
        held[f.pair][k] += f.amount if f.is_entry else -f.amount
    cash = np.cumsum(cash)
    value = np.zeros(n)
    in_market = np.zeros(n, dtype=bool)
    for pair, delta in held.items():
        amount = np.cumsum(delta)
        amount[np.abs(amount) < 1e-12] = 0.0
        value += amount * np.nan_to_num(closes[pair].to_numpy(dtype="float64"))
        in_market |= amount > 0
    full_index = pd.DatetimeIndex([start]).append(index)
    equity = pd.Series(np.concatenate([[start_equity], start_equity + cash + value]),
                       index=full_index)
    return Book(equity, pd.Series(np.concatenate([[False], in_market]), index=full_index), fees)
