"""Sizing mode ``allocator``: every pair moves toward a target weight of the whole book.

With ``advanced_learning.sizing.agent = "allocator"`` the allocator decides what the account
holds (the brain's entry decisions are not asked; its tiers keep learning from the shadow
trades and the allocator's closed trades). ``advanced_learning.allocator.policy`` says who
sets the targets:

* ``ppo``: the portfolio allocation agent (:mod:`learning.agents.alloc_policy`), from the
  checkpoints ``ftlearn train-allocator`` wrote (walk-forward: at every candle the newest one
  whose trading start has passed; one that saw candles after its own start is refused, and
  one trained on another whitelist stops start-up naming the pairs);
* ``equal``: the budget ``gross`` spread equally over the listed pairs;
* ``inverse_vol``: ``gross`` in proportion to 1 / each pair's volatility.

Every ``rebalance_every`` (candle closes aligned on it) the targets are computed once for all
pairs, from the last closed candle and the real book (the agent sees its current weights, cash
and drawdown), and executed with the same rule the agent was trained under
(:func:`learning.agents.alloc_env.rebalance`): a pair trades only when its target differs from
its weight by ``min_rebalance`` of equity (so fees do not eat small corrections), a target
below ``min_weight`` closes the position, and a position above the cap is trimmed. Entries
(``custom_stake_amount``) and adds (``adjust_trade_position``) go through the risk guard
(20 % per trade, daily loss, drawdown, CRISIS = cash), which has the last word; trims are
negative adjustments and closes ``custom_exit`` (``alloc_exit``). A candle whose observation
is not finite for a listed pair holds the book as it is (logged once).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from freqtrade.exceptions import OperationalException
from freqtrade.persistence import Trade
from freqtrade.strategy import IStrategy

from learning.core.regimes import PROB_COLUMNS

logger = logging.getLogger(__name__)


class AllocationHooks(IStrategy):
    """Expects the strategy's ``learning``, ``store``, ``guard``, ``_series``, equity helpers."""

    # ------------------------------------------------------------------ set-up
    @property
    def allocating(self) -> bool:
        return self.learning.sizing.agent == "allocator"

    def _init_allocation(self, backtest_start: datetime | None) -> None:
        self._allocators: list[tuple[pd.Timestamp, Any]] = []
        self._alloc_panel: Any = None
        self._alloc_key: tuple | None = None
        self._alloc_targets: tuple[datetime, dict[str, float]] | None = None
        if not self.allocating:
            return
        cfg = self.learning.allocator
        if cfg.policy != "ppo":
            return
        from learning.agents.alloc_env import check_pairs
        from learning.agents.alloc_policy import NetConfig, load_allocator
        from learning.agents.alloc_train import ALLOC_SCHEMA, PREFIX
        from learning.core.errors import StateError
        from learning.core.store import StateStore

        folder = Path(cfg.folder) if cfg.folder else self.store.root
        store = StateStore(folder, read_only=True)
        whitelist = list(self.config["exchange"].get("pair_whitelist", []))
        for path in sorted(folder.glob(f"{PREFIX}*.pt")):
            found = store.load_torch(path.stem, schema=ALLOC_SCHEMA)
            if found is None:
                continue
            state, meta = found
            try:
                alloc = load_allocator(state.get("payload", state), str(path),
                                       net=dataclasses.replace(NetConfig(),
                                                               policy=cfg.network))
            except StateError as err:
                raise OperationalException(f"AdvancedLearning allocator: {err}") from err
            problem = check_pairs(alloc.pairs, whitelist)
            if problem:
                raise OperationalException(f"AdvancedLearning: {path}: {problem}")
            if alloc.timeframe != self.timeframe:
                raise OperationalException(
                    f"AdvancedLearning: {path} was trained on {alloc.timeframe} candles, the "
                    f"strategy runs on {self.timeframe}: retrain it for this timeframe")
            start, end = (pd.Timestamp(meta.get(k) or alloc.meta.get(k))
                          for k in ("trade_start", "data_end"))
            if end >= start:
                logger.error("AdvancedLearning: %s saw candles up to %s, not before its "
                             "trading start %s: refused (lookahead)", path, end, start)
                continue
            self._allocators.append((start, alloc))
        self._allocators.sort(key=lambda x: x[0])
        if not self._allocators:
            logger.error("AdvancedLearning: sizing.agent is 'allocator' with policy 'ppo' but "
                         "%s holds no usable allocator (run `ftlearn train-allocator`); the "
                         "book stays in cash", folder)
        else:
            first = self._allocators[0][0]
            logger.info("AdvancedLearning: %d allocator(s) from %s, the first trading from %s",
                        len(self._allocators), folder, first)
            if backtest_start is not None and pd.Timestamp(backtest_start) < first:
                logger.warning("AdvancedLearning: no allocator was trained before %s; the "
                               "book stays in cash until %s", backtest_start, first)

    # ------------------------------------------------------------------ targets
    def _step_ns(self) -> int:
        from learning.core.durations import parse_duration

        return pd.Timedelta(parse_duration(self.learning.allocator.rebalance_every)).value

    def _rebalance_time(self, now: datetime) -> bool:
        """Whether ``now`` (a candle open) is a decision time: the candle before it closed on a
        multiple of ``rebalance_every`` (counted from the Unix epoch)."""
        return pd.Timestamp(now).floor(self.timeframe_to_td()).value % self._step_ns() == 0

    def decision_candles(self, dates: pd.Series) -> np.ndarray:
        """Candles (by open time) whose close is a decision time (the entry candidates)."""
        close = (pd.to_datetime(dates, utc=True) + self.timeframe_to_td()).dt.as_unit("ns")
        return (close.astype("int64") % self._step_ns() == 0).to_numpy()

    def _panel(self) -> Any:
        """The market panel of the whitelist: built once in a backtest (freqtrade hands the
        strategy the whole range; every value is causal), rebuilt live when a candle closes."""
        from learning.agents.alloc_env import FeatureConfig, MarketPanel

        if self._alloc_panel is not None and not self._live:
            return self._alloc_panel
        pairs = list(self.config["exchange"].get("pair_whitelist", []))
        frames = {p: f for p in pairs if (f := self._frame(p, self.timeframe)) is not None}
        if not frames:
            return None
        key = tuple((p, len(f), f["date"].iloc[-1]) for p, f in frames.items())
        if key == self._alloc_key:
            return self._alloc_panel
        features = self._allocators[-1][1].features if self._allocators else FeatureConfig(
            long=self.learning.allocator.vol_window)
        ctx = self.market_context()
        regime = ctx if ctx is not None and PROB_COLUMNS[0] in ctx else None
        self._alloc_panel = MarketPanel.from_candles(
            {p: frames.get(p, pd.DataFrame(columns=["date", "open", "high", "low", "close"]))
             for p in pairs}, self.timeframe, features, regime,
            self.learning.regime.detector.timeframe)
        self._alloc_key = key
        return self._alloc_panel

    def _book_weights(self, now: datetime, equity: float, pairs: tuple[str, ...]) -> np.ndarray:
        held = np.zeros(len(pairs))
        for trade in Trade.get_open_trades():
            if trade.pair in pairs and trade.amount:
                mark = self._mark(trade.pair, now) or trade.open_rate
                held[pairs.index(trade.pair)] += float(trade.amount) * float(mark) / equity
        return held

    def allocation_targets(self, now: datetime) -> dict[str, float] | None:
        """Target weight per pair at this candle (computed once per candle), or None when the
        book should be held as it is (no decision time, no data, a NaN observation)."""
        if self._alloc_targets is not None and self._alloc_targets[0] == now:
            return self._alloc_targets[1]
        targets = self._compute_targets(now)
        self._alloc_targets = (now, targets)
        return targets

    def _compute_targets(self, now: datetime) -> dict[str, float] | None:
        from learning.agents.alloc_env import (
            ObsLayout,
            equal_weights,
            inverse_vol_weights,
            observe,
        )

        cfg, cap = self.learning.allocator, self.learning.risk.max_position_pct
        panel = self._panel()
        equity = self._current_equity(now)
        if panel is None or equity is None:
            return None
        close_ns = (panel.dates.astype("int64") + int(self.timeframe_to_td().total_seconds()
                                                       * 1e9))
        ts = pd.Timestamp(now)
        t = int(np.searchsorted(close_ns, ts.tz_convert(None).value if ts.tzinfo else
                                ts.value, side="right")) - 1
        if t < 0:
            return None
        listed = panel.listed[:, t]
        if cfg.policy == "equal":
            w = equal_weights(listed, cap, cfg.gross)
        elif cfg.policy == "inverse_vol":
            w = inverse_vol_weights(panel.vol[:, t], listed, cap, cfg.gross)
        else:
            active = [a for start, a in self._allocators if start <= ts]
            if not active:
                return {p: 0.0 for p in panel.pairs}
            alloc = active[-1]
            held = self._book_weights(now, equity, panel.pairs)
            s = self.guard.state
            dd = 1.0 - s.last_equity / s.peak_equity if s.last_equity and s.peak_equity else 0.0
            layout = ObsLayout(len(panel.pairs), alloc.layout.window)
            obs, ok = observe(panel, layout, t, held, max(dd, 0.0))
            if not ok:
                self._log_once(f"alloc-nan-{t}" if self._live else "alloc-nan",
                               "AdvancedLearning allocator: NaN in the market features of a "
                               "listed pair at %s; the book is held as it is", now)
                return None
            w = alloc.target(obs, listed)[:-1]
        w = np.where(w < cfg.min_weight, 0.0, w)
        return {p: float(x) for p, x in zip(panel.pairs, w)}

    # ------------------------------------------------------------------ execution
    def allocation_stake(self, pair: str, now: datetime, equity: float, min_stake: float | None,
                         max_stake: float) -> float:
        """The stake of a new position: its target weight of equity, through the guard."""
        cfg = self.learning.allocator
        targets = self.allocation_targets(now) if self._rebalance_time(now) else None
        target = (targets or {}).get(pair, 0.0)
        if target < max(cfg.min_weight, cfg.min_rebalance):
            return 0.0
        verdict = self.guard.check_stake(now, equity, target * equity, min_stake=min_stake,
                                         crisis=self.crisis(now))
        if not verdict:
            return 0.0
        self._pending[pair] = {"take": True, "mode": "allocator", "learner": None,
                               "regime": None, "scores": {}, "policy": "",
                               "target_weight": round(target, 6),
                               "allocator": cfg.policy}
        return min(verdict.amount, max_stake)

    def allocation_adjust(self, trade: Any, now: datetime, rate: float, equity: float | None,
                          min_stake: float | None, max_stake: float) -> Any:
        """Move an open position toward its target (module docstring); None: nothing to do."""
        from learning.agents.alloc_env import OVER_CAP

        if equity is None or not self._rebalance_time(now):
            return None
        targets = self.allocation_targets(now)
        if targets is None or trade.pair not in targets:
            return None
        cfg = self.learning.allocator
        target = targets[trade.pair]
        if target <= 0:
            return None  # custom_exit closes it
        value = float(trade.amount) * float(rate)
        cap = self.learning.risk.max_position_pct
        delta = target * equity - value
        if abs(delta) < cfg.min_rebalance * equity and value <= cap * (1 + OVER_CAP) * equity:
            return None
        if delta > 0:
            verdict = self.guard.check_stake(now, equity, delta,
                                             held=self.held_value(trade, rate),
                                             min_stake=min_stake, crisis=self.crisis(now))
            return (min(verdict.amount, max_stake), "alloc_add") if verdict else None
        sell = min(-delta, float(trade.stake_amount))
        if trade.stake_amount - sell < (min_stake or 0.0) or \
                not self._exit_possible(trade, sell, rate):
            return None
        return -sell, "alloc_trim"

    def allocation_exit(self, trade: Any, now: datetime) -> str | None:
        if not self._rebalance_time(now):
            return None
        targets = self.allocation_targets(now)
        if targets is not None and targets.get(trade.pair, 0.0) <= 0:
            return "alloc_exit"
        return None
