"""Binance-shaped market data: symbol filters, kline rows and a synthetic order book.

Filters follow Binance's conventions from the price level: the tick keeps about five significant
digits (at most 0.01, at least 1e-8: BTC 0.01, XRP 0.0001) and the lot step is worth 0.1..1 quote
units (at most 1, at least 1e-8: BTC 0.00001, ETH 0.0001, XRP 0.1). Numbers are strings with eight
decimals, as Binance sends them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Binance's spot minimum order value by quote asset (quote units); others get 5.
_MIN_NOTIONAL = {"BTC": 0.0001, "ETH": 0.001, "BNB": 0.01}
_ROW = '[%d,"%.8f","%.8f","%.8f","%.8f","%.8f",%d,"%.8f",0,"%.8f","%.8f","0"]'


def fmt(value: float) -> str:
    """A number as Binance writes it: '97000.01000000'."""
    return f"{value:.8f}"


@dataclass(frozen=True)
class MarketRules:
    """Trading rules of one symbol, derived from its price level."""

    tick: float
    step: float
    min_notional: float

    @classmethod
    def from_price(cls, price: float, quote: str) -> MarketRules:
        level = math.log10(price) if price > 0 and math.isfinite(price) else 0.0
        tick_exp = min(-2, max(-8, math.floor(level) - 4))
        step_exp = min(0, max(-8, -math.ceil(level)))
        return cls(10.0 ** tick_exp, 10.0 ** step_exp, _MIN_NOTIONAL.get(quote, 5.0))

    @property
    def max_price(self) -> float:
        return min(1_000_000.0, self.tick * 1e8)

    @property
    def max_qty(self) -> float:
        return self.step * 9e8


def symbol_info(symbol: str, base: str, quote: str, rules: MarketRules, status: str) -> dict:
    """One entry of exchangeInfo's ``symbols``, as Binance's spot API returns it."""
    zero = fmt(0.0)
    return {
        "symbol": symbol, "status": status, "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT",
                       "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
        "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": fmt(rules.tick),
             "maxPrice": fmt(rules.max_price), "tickSize": fmt(rules.tick)},
            {"filterType": "LOT_SIZE", "minQty": fmt(rules.step), "maxQty": fmt(rules.max_qty),
             "stepSize": fmt(rules.step)},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {"filterType": "MARKET_LOT_SIZE", "minQty": zero,
             "maxQty": fmt(rules.max_qty / 100), "stepSize": zero},
            {"filterType": "NOTIONAL", "minNotional": fmt(rules.min_notional),
             "applyMinToMarket": True, "maxNotional": fmt(9_000_000.0),
             "applyMaxToMarket": False, "avgPriceMins": 5},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def kline_rows(t: np.ndarray, close_t: np.ndarray, values: np.ndarray) -> list[str]:
    """Binance kline rows as JSON text: [openTime, "o", "h", "l", "c", "v", closeTime, "qv",
    trades, "takerBuyBase", "takerBuyQuote", "0"]. Trade counts are unknown (0) and taker buys
    are taken as half the volume."""
    rows = values.tolist()
    return [_ROW % (a, r[0], r[1], r[2], r[3], r[4], b, r[5], r[4] / 2, r[5] / 2)
            for a, b, r in zip(t.tolist(), close_t.tolist(), rows)]


@dataclass(frozen=True)
class Book:
    """A synthetic order book, best price first: (price, qty) arrays per side."""

    bid_prices: np.ndarray
    bid_qty: np.ndarray
    ask_prices: np.ndarray
    ask_qty: np.ndarray

    def as_binance(self, last_update_id: int) -> dict:
        return {"lastUpdateId": last_update_id,
                "bids": [[fmt(p), fmt(q)] for p, q in zip(self.bid_prices.tolist(),
                                                          self.bid_qty.tolist())],
                "asks": [[fmt(p), fmt(q)] for p, q in zip(self.ask_prices.tolist(),
                                                          self.ask_qty.tolist())]}


def synthetic_book(price: float, rules: MarketRules, volume_per_minute: float, levels: int,
                   seed: list[int]) -> Book:
    """Levels one tick apart around ``price`` (one-tick spread, the bid at or below price).

    Level sizes are about a third of a minute's traded volume with log-normal noise, growing
    slowly away from the top, rounded down to the lot step and worth at least 2x min notional
    so a dry-run order can always fill against the top level. Each side draws from its own
    generator seeded by ``seed``, so the top levels do not depend on ``levels``.
    """
    bid_ticks = math.floor(price / rules.tick + 1e-9)
    offsets = np.arange(levels)
    bids = (bid_ticks - offsets) * rules.tick
    bids = bids[bids > 0]
    asks = (bid_ticks + 1 + offsets) * rules.tick
    floor_qty = math.ceil(2 * rules.min_notional / max(price, rules.tick) / rules.step) * rules.step
    noise = np.stack([np.random.default_rng([*seed, side]).lognormal(0.0, 0.5, levels)
                      for side in (0, 1)])
    size = volume_per_minute / 3 * noise * (1 + 0.02 * offsets)
    size = np.maximum(np.floor(size / rules.step + 1e-9) * rules.step, floor_qty)
    return Book(bids, size[0, :len(bids)], asks, size[1])
