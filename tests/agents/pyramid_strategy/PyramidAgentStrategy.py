"""Test-only strategy: AdvancedLearning trading on PPOPyramiding's grid columns alone.

Entries when the agent would increase from flat (or leans to more than usual); ``adjust_trade_position`` reads the column of
the real trade (tranches held, open profit) with :func:`learning.agents.pyramid_freqai.grid_action` on the
last closed candle, and adds (clamped by the risk guard), trims one tranche or closes. The lead
wires the same logic into ``AdvancedLearning``; this file only proves the columns are usable in
a real backtest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from freqtrade.persistence import Trade

from learning.agents.pyramid_env import Action
from learning.agents.pyramid_freqai import FLAT_INCREASE, grid_action, tranches_held
from learning.agents.pyramid_policy import grid_column
from learning.strategy.strategy import AdvancedLearningStrategy

TRANCHES = 4


class PyramidAgentStrategy(AdvancedLearningStrategy):
    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.position_adjustment_enable = True
        self.max_entry_position_adjustment = -1

    def initial_stake_share(self) -> float:
        return 1.0 / TRANCHES  # one tranche of the cap

    def populate_entry_trend(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        # The greedy flat action, or (so that a barely trained test agent trades at all) a
        # P(increase | flat) above its training-window mean.
        flat = dataframe[grid_column(0, 0.0)] == Action.INCREASE
        lean = dataframe[FLAT_INCREASE] > dataframe[f"{FLAT_INCREASE}_mean"]
        cond = (dataframe["do_predict"] == 1) & (flat | lean)
        dataframe.loc[cond, ["enter_long", "enter_tag"]] = (1, "ppo")
        return dataframe

    def populate_exit_trend(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        dataframe["exit_long"] = 0  # exits come from the agent (close) and the risk limits
        return dataframe

    def adjust_trade_position(self, trade: Trade, current_time: datetime, current_rate: float,
                              current_profit: float, min_stake: float | None, max_stake: float,
                              current_entry_rate: float, current_exit_rate: float,
                              current_entry_profit: float, current_exit_profit: float,
                              **kwargs: Any) -> float | tuple[float, str] | None:
        if trade.has_open_orders:
            return None
        df, _ = self.dp.get_analyzed_dataframe(trade.pair, self.timeframe)
        equity = self._current_equity(current_time)
        if df.empty or equity is None:
            return None
        cap = self.learning.risk.max_position_pct
        held = max(1, tranches_held(trade.stake_amount, equity, cap, TRANCHES))
        action = grid_action(df.iloc[-1], held, current_profit)  # the last closed candle
        if action == Action.INCREASE:
            verdict = self.guard.check_stake(current_time, equity, equity * cap / TRANCHES,
                                             held=trade.stake_amount, min_stake=min_stake,
                                             crisis=self.crisis(current_time))
            return (min(verdict.amount, max_stake), "ppo_add") if verdict else None
        if action == Action.DECREASE and held > 1:
            return -trade.stake_amount / held, "ppo_trim"
        if action in (Action.DECREASE, Action.CLOSE):
            return -trade.stake_amount, "ppo_close"
        return None
