"""Performance metrics of one backtest, as pure functions (no I/O, no freqtrade imports).

Conventions (``ftlearn bench`` states them in its report):

* **Equity** is freqtrade's own per-candle wallet (:func:`book_from_wallet`): every
  currency's balance, positions included, valued at each candle, so an open position's price
  moves count on the day they happen, not only closed-trade PnL. A test checks it against a
  ledger rebuilt from the filled orders and the candles.
* **Daily equity** is the last mark of each UTC day (:func:`daily_equity`), preceded by the
  starting wallet at the start of the range; **daily returns** are its simple returns.
* **Sharpe** = mean / sample std (ddof 1) of daily returns × √365; **Sortino** = mean / downside
  deviation × √365, the downside deviation being √(mean(min(r, 0)²)) over all days (target 0).
  Crypto trades every day, hence 365; no risk-free rate (0).
* **CAGR** = (final / start)^(365.25 / days) − 1 with ``days`` the calendar span of the curve;
  **max drawdown** = max over t of 1 − equity_t / max_{s≤t} equity_s on the candle curve;
  **Calmar** = CAGR / max drawdown.
* **Profit factor** = gross profit / gross loss of closed trades (net of fees; inf without a
  losing trade, NaN without trades); **win rate** = share of trades with a positive net profit;
  **exposure** = share of candles during which any position was held.
* **Sharpe interval**: circular block bootstrap over days (``arch.bootstrap``; blocks of
  ⌈n^(1/3)⌉ days keep the short-range autocorrelation of daily returns that an i.i.d. bootstrap
  would destroy), percentile interval, seeded. The same bootstrap, paired over days, gives the
  intervals of the differences between two variants (:func:`paired_difference`).
* **Deflated Sharpe ratio** (Bailey & López de Prado 2014), see :func:`deflated_sharpe`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

PERIODS_PER_YEAR = 365
EULER_GAMMA = 0.5772156649015329


# ----------------------------------------------------------------------------------------------
# Equity from freqtrade's wallet export


@dataclass(frozen=True)
class Book:
    """An account curve: equity and whether any position was held, per mark."""

    equity: pd.Series  # index: start time, then every candle close time
    in_market: pd.Series  # bool, same index (False at the start point)
    fees: float


def book_from_wallet(wallet: pd.DataFrame, stake_currency: str, start: pd.Timestamp,
                     end: pd.Timestamp, start_balance: float, final_balance: float,
                     fees: float) -> Book:
    """The account curve from freqtrade's per-candle wallet export (``*_wallet.feather`` in
    the backtest result zip, columns ``date, currency, rate, balance``).

    freqtrade records, at the open ``t`` of every candle and before that candle's orders, each
    currency's total balance (positions and cash) with the candle's open as its rate; rows with a
    zero balance are left out. The value at open ``t`` is therefore the equity after every fill
    of the candles before ``t``, which is this module's mark at the close of candle ``t - step``
    (= ``t``). The first point, at ``start``, is the starting wallet (freqtrade's first record
    is one candle later); the last, at ``end``, is freqtrade's ``final_balance`` (after its force
    exit at the last close). Marks are valued at the next candle's open, not the previous close: the
    two differ by the gap between candles, which a test bounds against a ledger rebuilt from
    the fills.
    """
    df = wallet.copy()
    df["date"] = pd.to_datetime(df["date"], utc=True)
    df = df[(df["date"] >= start) & (df["date"] < end)]
    value = (df["rate"] * df["balance"]).groupby(df["date"]).sum()
    held = df[(df["currency"] != stake_currency) & (df["balance"] > 0)]
    in_market = pd.Series(True, index=pd.DatetimeIndex(held["date"].unique()))
    value = value[value.index > start]
    equity = pd.concat([pd.Series([float(start_balance)], index=[start]), value,
                        pd.Series([float(final_balance)], index=[end])])
    flags = in_market.reindex(equity.index, fill_value=False).astype(bool)
    flags.iloc[0] = False  # the start point is before any candle
    return Book(equity.astype("float64"), flags, float(fees))


def trade_fees(trades: pd.DataFrame, default_fee: float = 0.0) -> np.ndarray:
    """Fees of each of freqtrade's exported trades, on every filled order (entries at the
    trade's ``fee_open``, exits at ``fee_close``), in the stake currency."""
    out = np.zeros(len(trades))
    for i, (_, row) in enumerate(trades.iterrows()):
        fee_open = float(row.get("fee_open", default_fee) or 0.0)
        fee_close = float(row.get("fee_close", default_fee) or 0.0)
        for order in row["orders"]:
            if order.get("amount"):
                rate = fee_open if order["ft_is_entry"] else fee_close
                out[i] += float(order["amount"]) * float(order["safe_price"]) * rate
    return out


def fees_paid(trades: pd.DataFrame, default_fee: float = 0.0) -> float:
    """Fees on every filled order of freqtrade's exported trades, in the stake currency."""
    return float(trade_fees(trades, default_fee).sum())


def fee_share_of_gross(profit_abs: Sequence[float] | np.ndarray,
                       fees: Sequence[float] | np.ndarray) -> float:
    """Fees / gross profit: the trades' fees over what the trades that gained before fees
    gained (``profit_abs + fees`` per trade, net profit plus its fees). 0.5: fees took half of
    the gross gains; above 1: more than all of them. NaN when no trade gained before fees."""
    net = np.asarray(profit_abs, dtype="float64")
    paid = np.asarray(fees, dtype="float64")
    gross = net + paid
    gains = gross[gross > 0].sum()
    return float(paid.sum() / gains) if gains > 0 else float("nan")


def buy_and_hold(opens: Mapping[str, float], closes: pd.DataFrame, start_equity: float,
                 fee: float, start: pd.Timestamp) -> tuple[Book, dict[str, float]]:
    """Equal-weight buy-and-hold: the wallet split equally across pairs, bought at each pair's
    first open (``opens``) paying ``fee``, marked at every close, sold at the last close paying
    ``fee`` (the last mark is after that exit fee). A pair with no close yet (NaN: its market
    opened later) counts its share as cash. Returns the book and each pair's net PnL."""
    closes = closes.sort_index().ffill()
    share = start_equity / len(opens)
    amounts = {p: share / (1 + fee) / price for p, price in opens.items()}
    # A pair whose candles begin after the start holds its share in cash until its first close.
    value = sum(np.where(np.isnan(c := closes[p].to_numpy(dtype="float64")), share,
                         amounts[p] * c) for p in opens)
    value = np.asarray(value, dtype="float64")
    final = {p: amounts[p] * float(closes[p].iloc[-1]) for p in opens}
    exit_fees = sum(v * fee for v in final.values())
    value[-1] -= exit_fees
    entry_fees = sum(amounts[p] * opens[p] * fee for p in opens)
    full_index = pd.DatetimeIndex([start]).append(closes.index)
    equity = pd.Series(np.concatenate([[start_equity], value]), index=full_index)
    in_market = pd.Series(np.concatenate([[False], np.ones(len(closes), dtype=bool)]),
                          index=full_index)
    pnl = {p: final[p] * (1 - fee) - share for p in opens}
    return Book(equity, in_market, entry_fees + exit_fees), pnl


# ----------------------------------------------------------------------------------------------
# Curve metrics


def daily_equity(equity: pd.Series) -> pd.Series:
    """The last mark of each UTC day, indexed by the day's end (next midnight); the first value
    is the curve's first point (the starting wallet), so the first return covers day one."""
    marks = equity.iloc[1:]
    # A mark at exactly midnight closes the day before it.
    ends = (marks.index - pd.Timedelta(1, "ns")).floor("D") + pd.Timedelta(days=1)
    return pd.concat([equity.iloc[:1], marks.groupby(ends).last()])


def daily_returns(equity: pd.Series) -> pd.Series:
    return daily_equity(equity).pct_change().dropna()


def total_return(equity: pd.Series) -> float:
    return float(equity.iloc[-1] / equity.iloc[0] - 1.0)


def cagr(equity: pd.Series) -> float:
    days = (equity.index[-1] - equity.index[0]) / pd.Timedelta(days=1)
    if days <= 0 or equity.iloc[-1] <= 0:
        return float("nan") if days <= 0 else -1.0
    return float((equity.iloc[-1] / equity.iloc[0]) ** (365.25 / days) - 1.0)


def sharpe(returns: Sequence[float] | np.ndarray, periods: int = PERIODS_PER_YEAR) -> float:
    """Annualized Sharpe ratio (risk-free 0); NaN with fewer than 2 returns or zero variance."""
    r = np.asarray(returns, dtype="float64")
    if len(r) < 2:
        return float("nan")
    sd = r.std(ddof=1)
    return float(r.mean() / sd * math.sqrt(periods)) if sd > 0 else float("nan")


def sortino(returns: Sequence[float] | np.ndarray, periods: int = PERIODS_PER_YEAR) -> float:
    """Annualized Sortino ratio (target 0); inf without a losing period, NaN if empty."""
    r = np.asarray(returns, dtype="float64")
    if len(r) == 0:
        return float("nan")
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if downside == 0:
        return float("inf") if r.mean() > 0 else float("nan")
    return float(r.mean() / downside * math.sqrt(periods))


def drawdown(equity: pd.Series) -> pd.Series:
    """Fractional drawdown from the running peak (0 at a new high)."""
    return 1.0 - equity / equity.cummax()


def max_drawdown(equity: pd.Series) -> float:
    return float(drawdown(equity).max())


def calmar(cagr_value: float, max_dd: float) -> float:
    if not max_dd > 0:
        return float("inf") if cagr_value > 0 else float("nan")
    return float(cagr_value / max_dd)


def profit_factor(pnl: Sequence[float] | np.ndarray) -> float:
    p = np.asarray(pnl, dtype="float64")
    if len(p) == 0:
        return float("nan")
    gain, loss = p[p > 0].sum(), -p[p < 0].sum()
    if loss == 0:
        return float("inf") if gain > 0 else float("nan")
    return float(gain / loss)


def win_rate(pnl: Sequence[float] | np.ndarray) -> float:
    p = np.asarray(pnl, dtype="float64")
    return float((p > 0).mean()) if len(p) else float("nan")


def exit_breakdown(trades: pd.DataFrame, fees: Sequence[float] | None = None
                   ) -> dict[str, Any]:
    """Median hold, the fee share of gross profit (:func:`fee_share_of_gross`, with ``fees``
    per trade) and, per exit reason, the trade count and mean profit ratio.

    ``trades`` is freqtrade's backtest trade table (``exit_reason``, ``profit_ratio``,
    ``profit_abs``, ``trade_duration`` in minutes). Reasons are ordered by count, most frequent
    first.
    """
    if trades is None or len(trades) == 0:
        return {"median_hold_minutes": float("nan"), "fee_share_of_gross": float("nan"),
                "by_exit_reason": {}}
    groups = trades.groupby("exit_reason", sort=False)["profit_ratio"].agg(["count", "mean"])
    groups = groups.sort_values("count", ascending=False, kind="stable")
    share = (fee_share_of_gross(trades["profit_abs"].to_numpy(dtype="float64"), fees)
             if fees is not None and "profit_abs" in trades else float("nan"))
    return {"median_hold_minutes": float(np.median(trades["trade_duration"].astype("float64"))),
            "fee_share_of_gross": share,
            "by_exit_reason": {str(k): {"trades": int(row["count"]),
                                        "mean_profit_ratio": float(row["mean"])}
                               for k, row in groups.iterrows()}}


def exposure(in_market: pd.Series) -> float:
    """Share of candles with a position; the curve's first point (the start) is not a candle."""
    held = np.asarray(in_market, dtype=bool)[1:]
    return float(held.mean()) if len(held) else float("nan")


# ----------------------------------------------------------------------------------------------
# Uncertainty and multiple testing


def _block(n: int, block: int | None) -> int:
    return block or max(1, math.ceil(n ** (1 / 3)))


def _finite_interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))


def block_bootstrap_sharpe(returns: Sequence[float] | np.ndarray, seed: int, n_boot: int = 2000,
                           block: int | None = None, level: float = 0.95,
                           periods: int = PERIODS_PER_YEAR) -> tuple[float, float]:
    """Percentile interval of the annualized Sharpe ratio by a circular block bootstrap
    (``arch.bootstrap.CircularBlockBootstrap``: resamples glue blocks of ``block`` consecutive
    days, wrapping around the end). ``block`` defaults to ⌈n^(1/3)⌉, the usual rate for
    variance-type statistics; resamples with no spread (no Sharpe) are dropped. Deterministic
    for a given ``seed``."""
    from arch.bootstrap import CircularBlockBootstrap

    r = np.asarray(returns, dtype="float64")
    n = len(r)
    if n < 3 or r.std(ddof=1) == 0:
        return float("nan"), float("nan")
    bs = CircularBlockBootstrap(_block(n, block), r, seed=np.random.default_rng(seed))
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = bs.apply(lambda x: np.array([sharpe(x, periods)]), reps=n_boot)[:, 0]
    return _finite_interval(draws, level)


def paired_difference(cells: Sequence[tuple[np.ndarray, np.ndarray]], seed: int,
                      n_boot: int = 2000, level: float = 0.95,
                      periods: int = PERIODS_PER_YEAR) -> dict[str, float]:
    """Variant minus reference over one or more cells (seed x period x universe), each a pair of
    daily-return arrays on the same days.

    Statistics: the difference of annualized Sharpe ratios and of total (compounded) returns,
    averaged over cells. Interval: each cell is resampled by its own circular block bootstrap
    with the two series drawn on the SAME days (paired, so the market's common moves cancel),
    and the average over cells of each replicate gives the distribution (a stratified
    bootstrap: cells are independent runs, never mixed)."""
    from arch.bootstrap import CircularBlockBootstrap

    def stats_of(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.array([sharpe(a, periods) - sharpe(b, periods),
                         float(np.prod(1 + a) - np.prod(1 + b))])

    rng = np.random.default_rng(seed)
    point, draws = [], []
    for a, b in cells:
        a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
        if len(a) != len(b) or len(a) < 3:
            raise ValueError(f"paired cells need equal lengths >= 3, got {len(a)} and {len(b)}")
        with np.errstate(divide="ignore", invalid="ignore"):
            point.append(stats_of(a, b))
            bs = CircularBlockBootstrap(_block(len(a), None), a, b, seed=rng)
            draws.append(bs.apply(stats_of, reps=n_boot))
    if not point:
        nan = float("nan")
        return {"cells": 0, "d_sharpe": nan, "d_sharpe_low": nan, "d_sharpe_high": nan,
                "d_return": nan, "d_return_low": nan, "d_return_high": nan}
    mean = np.mean(draws, axis=0)  # (n_boot, 2): average over cells of each replicate
    est = np.mean(point, axis=0)
    s_lo, s_hi = _finite_interval(mean[:, 0], level)
    r_lo, r_hi = _finite_interval(mean[:, 1], level)
    return {"cells": len(point), "d_sharpe": float(est[0]), "d_sharpe_low": s_lo,
            "d_sharpe_high": s_hi, "d_return": float(est[1]), "d_return_low": r_lo,
            "d_return_high": r_hi}


def expected_max_sharpe(n_trials: int, var_trials: float) -> float:
    """E[max of ``n_trials`` Sharpe estimates] when every true Sharpe is 0 (the null):
    √V · ((1 − γ) Φ⁻¹(1 − 1/N) + γ Φ⁻¹(1 − 1/(N e))), γ the Euler–Mascheroni constant.
    0 for a single trial or no spread between trials (no selection to correct for)."""
    if n_trials < 2 or not var_trials > 0:
        return 0.0
    n = float(n_trials)
    return math.sqrt(var_trials) * ((1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n)
                                    + EULER_GAMMA * stats.norm.ppf(1 - 1 / (n * math.e)))


def probabilistic_sharpe(sr: float, sr_benchmark: float, n_obs: int, skew: float,
                         kurt: float) -> float:
    """P(true Sharpe > ``sr_benchmark``) (Bailey & López de Prado 2012), with per-period (not
    annualized) Sharpe ratios, ``kurt`` the Pearson kurtosis (3 for a normal):
    Φ((SR − SR*) √(T − 1) / √(1 − γ₃ SR + (γ₄ − 1)/4 SR²))."""
    if n_obs < 2 or not math.isfinite(sr):
        return float("nan")
    denom = 1 - skew * sr + (kurt - 1) / 4 * sr * sr
    if denom <= 0:
        return float("nan")
    return float(stats.norm.cdf((sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(denom)))


def deflated_sharpe(returns: Sequence[float] | np.ndarray, trial_sharpes: Sequence[float]
                    ) -> dict[str, float]:
    """Deflated Sharpe ratio (Bailey & López de Prado 2014) of one strategy's returns.

    ``trial_sharpes``: the per-period Sharpe ratios of all N variants compared (this one
    included). SR₀ = :func:`expected_max_sharpe` (N, variance of the trials' Sharpes) is the
    Sharpe the best of N skill-less variants would show by luck; the DSR is the
    :func:`probabilistic_sharpe` of this strategy against SR₀, using the skewness and the
    Pearson kurtosis of its returns and T = number of returns. DSR > 0.95: the Sharpe is
    unlikely to be a selection artefact.
    """
    r = np.asarray(returns, dtype="float64")
    trials = np.asarray([s for s in trial_sharpes if math.isfinite(s)], dtype="float64")
    var = float(trials.var(ddof=1)) if len(trials) > 1 else 0.0
    sr0 = expected_max_sharpe(len(trials), var)
    if len(r) < 3 or r.std(ddof=1) == 0:
        return {"dsr": float("nan"), "sr0": sr0, "n_trials": len(trials), "var_trials": var}
    sr = float(r.mean() / r.std(ddof=1))
    skew = float(stats.skew(r, bias=False))
    kurt = float(stats.kurtosis(r, fisher=False, bias=False))
    return {"dsr": probabilistic_sharpe(sr, sr0, len(r), skew, kurt), "sr0": sr0,
            "n_trials": len(trials), "var_trials": var, "skew": skew, "kurtosis": kurt}


def period_sharpe(returns: Sequence[float] | np.ndarray) -> float:
    """Per-period (not annualized) Sharpe ratio, the unit of the deflated Sharpe ratio."""
    return sharpe(returns, periods=1)


# ----------------------------------------------------------------------------------------------
# Everything for one run


def returns_by_regime(equity: pd.Series, labels: pd.Series, step: pd.Timedelta
                      ) -> dict[str, dict[str, float]]:
    """Compounded return and candle count per regime label. The return of the candle closing
    at t (from the mark at t − step) is attributed to the label of that candle (open t − step);
    ``labels`` is indexed by candle open time."""
    r = equity.pct_change().iloc[1:]
    lab = labels.reindex(r.index - step).to_numpy()
    out: dict[str, dict[str, float]] = {}
    for name in pd.unique(lab[pd.notna(lab)]):
        part = r.to_numpy()[lab == name]
        out[str(name)] = {"return": float(np.prod(1 + part) - 1), "candles": int(len(part))}
    return out


def summarize(book: Book, trade_pnl: Sequence[float], seed: int, n_trades: int | None = None
              ) -> dict[str, float]:
    """Every metric of one run (trial-dependent DSR is added by the caller)."""
    eq = book.equity
    rets = daily_returns(eq)
    growth, dd = cagr(eq), max_drawdown(eq)
    lo, hi = block_bootstrap_sharpe(rets.to_numpy(), seed=seed)
    return {
        "total_return": total_return(eq), "cagr": growth, "sharpe": sharpe(rets),
        "sharpe_ci_low": lo, "sharpe_ci_high": hi, "sortino": sortino(rets),
        "calmar": calmar(growth, dd), "max_drawdown": dd,
        "profit_factor": profit_factor(trade_pnl), "win_rate": win_rate(trade_pnl),
        "trades": int(len(trade_pnl) if n_trades is None else n_trades),
        "exposure": exposure(book.in_market), "fees": float(book.fees),
        "final_equity": float(eq.iloc[-1]), "days": int(len(rets)),
        "sharpe_per_day": period_sharpe(rets),
    }
