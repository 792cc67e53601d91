"""Learned sizing inside the strategy.

Tier 3: the trade-parameter agents set size, stop, take profit and the longest hold of each
entry (``advanced_learning.sizing.agent = "ppo"``). With the ``PPOPyramiding`` FreqAI model, its
grid of actions (hold / increase / decrease / close by tranche) drives position adjustment: the
column of the real trade's state is read at the last closed candle
(``learning.agents.pyramid_freqai``).

One agent per learner personality (``learning.agents.trade_agent.AgentSet``), trained offline by
``ftlearn train-agents`` and updated online every 10 closed trades. Its outputs are always
clamped by the risk guard (stake) and by the strategy's hard stoploss (stop). Without a usable
checkpoint a learner uses the rule-based parameters, and says so once.

Policy router: a registered policy of type ``ppo`` whose checkpoint is a folder of agents
(``ftlearn train-agents --out DIR``) sizes the entries routed to it with those agents, so two
agent versions can be A/B tested. Such challenger agents trade as trained (no online updates:
their folder is the user's, not the run's); the run's own agents learn online as usual.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from freqtrade.persistence import Trade
from freqtrade.strategy import IStrategy, stoploss_from_open

logger = logging.getLogger(__name__)

NOT_RL = object()  # rl_adjustment: no RL pyramiding model, the rules decide


class SizingHooks(IStrategy):
    """Expects the strategy's ``learning``, ``store``, ``guard``, ``brain``, ``_series``."""

    def _init_sizing(self, backtest_start: datetime | None) -> None:
        self.agents = None
        self._trade_params: dict[int, dict[str, Any]] = {}
        self._policy_agents: dict[str, Any] = {}
        self._sizing_start = backtest_start
        if self.learning.sizing.agent != "ppo":
            return
        self.agents = self._load_agent_set(self.store, backtest_start, online=True)

    def _load_agent_set(self, store: Any, backtest_start: datetime | None, *,
                        online: bool, label: str = "") -> Any:
        """One agent per learner from ``store``: the online state when ``online`` (dry/live, or
        a backtest with warm_start), else or failing that the offline training. A backtest
        refuses an agent trained on data after its start (lookahead)."""
        from learning.agents.trade_agent import AGENT_SCHEMA, AgentSet, agent_state_name

        payloads = {}
        for learner in self.brain.meta.learner_names:
            # Dry/live continue the agent as trading left it; a backtest starts from the offline
            # training (its own online updates from an earlier run would be from a later period).
            found = None
            if online and (self._live or self.learning.brain.warm_start):
                found = store.load_torch(agent_state_name(learner), schema=AGENT_SCHEMA)
            if found is None:
                found = store.load_torch(agent_state_name(learner, offline=True),
                                         schema=AGENT_SCHEMA)
            if found is None:
                continue
            state_dict, meta = found
            end = meta.get("data_end")
            if backtest_start is not None and not self._live and (
                    end is None or pd.Timestamp(end) > pd.Timestamp(backtest_start)):
                logger.error("AdvancedLearning: the %s agent%s was trained on data up to %s, "
                             "after this backtest starts (%s): refused (lookahead); rule-based "
                             "parameters", learner, label, end, backtest_start)
                continue
            payloads[learner] = state_dict.get("payload", state_dict)
        from learning.agents.offline import agent_config

        agents = AgentSet.from_checkpoints(payloads, self.brain.meta.config.learners,
                                           agent_config(self.learning.sizing))
        missing = [n for n, a in agents.agents.items() if a is None]
        if missing:
            logger.warning("AdvancedLearning: no trained trade-parameter agent for %s in %s "
                           "(run `ftlearn train-agents`); rule-based parameters for them",
                           ", ".join(missing), store.root)
        return agents

    def agents_for(self, policy: str) -> Any:
        """The agent set that sizes an entry the router gave to ``policy``: the policy's own
        folder for a ``ppo`` policy with a checkpoint, else the run's agents."""
        if self.agents is None or not policy:
            return self.agents
        checkpoint = self._policy_checkpoints.get(policy)
        if self._policy_types.get(policy) != "ppo" or not checkpoint or \
                Path(checkpoint).resolve() == Path(self.store.root).resolve():
            return self.agents
        if policy not in self._policy_agents:
            from learning.core.store import StateStore

            folder = Path(checkpoint)
            if not folder.is_dir():
                logger.error("AdvancedLearning: policy %s: agent folder %s not found; its "
                             "entries use this run's agents", policy, folder)
                self._policy_agents[policy] = self.agents
            else:
                # Read-only: the folder is the user's (a bad file is reported, never moved).
                self._policy_agents[policy] = self._load_agent_set(
                    StateStore(folder, read_only=True), self._sizing_start, online=False,
                    label=f" of policy {policy}")
                logger.info("AdvancedLearning: policy %s sizes with the agents in %s", policy,
                            folder)
        return self._policy_agents[policy]

    def _save_agents(self, data_end: datetime | None) -> None:
        if self.agents is None or not self._persist:
            return
        from learning.agents.trade_agent import AGENT_SCHEMA, agent_state_name

        meta = {"data_end": data_end, "runmode": self._namespace}
        for learner, payload in self.agents.checkpoints(meta).items():
            try:
                self.store.save_torch(agent_state_name(learner), {"payload": payload},
                                      schema=AGENT_SCHEMA, meta=meta)
            except Exception as err:
                logger.error("AdvancedLearning: could not save the %s agent: %s", learner, err)

    # ------------------------------------------------------------------ entry
    def _agent_state(self, pair: str, now: datetime, equity: float,
                     scores: dict[str, Any]) -> np.ndarray:
        from learning.agents.trade_agent import build_state, performance_stats

        s = self.guard.state
        open_trades = Trade.get_open_trades()
        exposure = sum(float(t.stake_amount or 0.0) for t in open_trades)
        open_pnl = equity - self.starting_balance() - self._closed_profit() - sum(
            float(t.realized_profit or 0.0) for t in open_trades)
        portfolio = {
            "cash_frac": max(0.0, 1.0 - exposure / equity), "open_positions": len(open_trades),
            "exposure": exposure / equity, "pnl": equity / self.starting_balance() - 1.0,
            "open_pnl": open_pnl / equity,
            "drawdown": 1.0 - equity / s.peak_equity if s.peak_equity else 0.0,
            "day_pnl": equity / s.day_open_equity - 1.0 if s.day_open_equity else 0.0,
        }
        trends = []
        market: dict[str, float] = {}
        for p, series in self._series.items():
            i = series.last_closed(now)
            if i < 0:
                continue
            trends.append(series.trend[i])
            if p == pair:
                market.update(pair_trend=series.trend[i], pair_vol=series.vol[i],
                              pair_drawdown=series.drawdown[i])
        btc_trend, btc_vol = self.btc_features(now)
        market.update(btc_trend=btc_trend, btc_vol=btc_vol)
        finite = [t for t in trends if np.isfinite(t)]
        market["breadth"] = float(np.mean([t > 0 for t in finite])) if finite else np.nan
        series = self._series[pair]
        i = series.last_closed(now)
        probs = {name.removeprefix("regime_prob_"): float(series.regime_probs[i, k])
                 for k, name in enumerate(self._prob_columns)} if i >= 0 else None
        outcomes = [o for o in self.brain.recent_outcomes()]
        week = now - timedelta(days=7)
        recent = sum(1 for o in outcomes if pd.Timestamp(o["time"]) >= pd.Timestamp(week))
        perf = performance_stats([o["profit_ratio"] for o in outcomes], recent)
        return build_state(portfolio, market, regime_probs=probs, scores=scores,
                           performance=perf)

    def size_with_agent(self, pair: str, now: datetime, equity: float, allowance: float,
                        learner: str, scores: dict[str, Any],
                        policy: str = "") -> dict[str, Any] | None:
        """The agent's parameters for this entry (stake in quote currency), or None to let the
        rule-based sizing decide. ``policy``: the router's choice (see :meth:`agents_for`)."""
        agents = self.agents_for(policy)
        if agents is None:
            return None
        from learning.agents.trade_agent import TradeLimits

        state = self._agent_state(pair, now, equity, scores)
        limits = TradeLimits(allowance=max(allowance, 0.0), max_stop_loss=-self.stoploss)
        decision = agents.decide(learner, state, limits, timeframe=self.timeframe,
                                 rng=self.brain.rng_for(pair, self._candle_of(now), "sizing"))
        p = decision.params
        return {"stake": float(p.stake), "size_frac": float(p.size_frac),
                "hold_candles": int(p.hold_candles), "stop_loss": float(p.stop_loss),
                "take_profit": float(p.take_profit), "source": p.source,
                "record": decision.to_record(), "learner": learner, "policy": policy,
                "stake_frac": float(p.stake) / equity if equity else 0.0}

    # ------------------------------------------------------------------ open trade
    def params_of(self, trade: Any) -> dict[str, Any] | None:
        if self.agents is None:
            return None
        if trade.id not in self._trade_params:
            self._trade_params[trade.id] = trade.get_custom_data("sizing")
        return self._trade_params[trade.id]

    def agent_stoploss(self, trade: Any, current_profit: float) -> float | None:
        params = self.params_of(trade)
        if not params:
            return None
        return stoploss_from_open(-params["stop_loss"], current_profit)

    def agent_exit(self, trade: Any, now: datetime, current_profit: float) -> str | None:
        params = self.params_of(trade)
        if not params:
            return None
        if current_profit >= params["take_profit"]:
            return "agent_take_profit"
        held = (now - trade.open_date_utc) / self.timeframe_to_td()
        if held >= params["hold_candles"]:
            return "agent_hold_limit"
        return None

    def agent_learn(self, trade: Any, profit: float, now: datetime) -> None:
        params = self.params_of(trade)
        self._trade_params.pop(trade.id, None)
        if not params or self.agents is None or not params.get("record"):
            return
        if self.agents_for(params.get("policy", "")) is not self.agents:
            return  # a challenger policy's agents trade as trained (module docstring)
        agent = self.agents.agents.get(params["learner"])
        if agent is None:
            return
        s = self.guard.state
        dd = 1.0 - s.last_equity / s.peak_equity if s.last_equity and s.peak_equity else 0.0
        days = (now - trade.open_date_utc).total_seconds() / 86400.0
        fee = float(trade.fee_close if trade.fee_close is not None else 0.001)
        reward = agent.reward_for(params["record"], profit, params["stake_frac"], dd, days, fee)
        self.agents.record_outcome(params["learner"], params["record"], reward)

    # ------------------------------------------------------------------ RL pyramiding
    def _rl_action(self, trade: Any, now: datetime, current_profit: float) -> Any:
        """The PPOPyramiding agent's action for this trade, read from its grid columns at the
        last closed candle (None without that model)."""
        series = self._series.get(trade.pair)
        if series is None or series.pyr is None:
            return None
        from learning.agents.pyramid_freqai import grid_action, tranches_held

        i = series.last_closed(now)
        if i < 0:
            return None
        equity = self._current_equity(now)
        if equity is None:
            return None
        row = {c: a[i] for c, a in series.pyr.items()}
        held = tranches_held(float(trade.stake_amount), equity,
                             self.learning.risk.max_position_pct, self._rl_tranches())
        grid, young = self._rl_grid()
        age = (now - trade.open_date_utc) / self.timeframe_to_td()
        return grid_action(row, max(held, 1), current_profit, grid, age, young)

    def _rl_pyramid_section(self) -> dict[str, Any]:
        return self.config.get("freqai", {}).get("rl_config", {}).get("pyramid") or {}

    def _rl_tranches(self) -> int:
        return int((self._rl_pyramid_section().get("env") or {}).get("tranches", 4))

    def _rl_grid(self) -> tuple[Any, int]:
        """The model's grid settings (parsed once; the model refused bad ones at start-up)."""
        if getattr(self, "_rl_grid_cache", None) is None:
            from learning.agents.pyramid_policy import GridConfig, young_candles
            from learning.core.config import parse_section
            from learning.core.errors import ConfigError

            try:
                grid = parse_section(GridConfig, self._rl_pyramid_section().get("grid"),
                                     "freqai.rl_config.pyramid.grid")
                self._rl_grid_cache = (grid, young_candles(grid, self.timeframe))
            except ConfigError:
                self._rl_grid_cache = (GridConfig(), 0)
        return self._rl_grid_cache

    def rl_adjustment(self, trade: Any, now: datetime, current_profit: float,
                      min_stake: float | None, max_stake: float,
                      held: float | None = None) -> Any:
        """Increase / decrease by one tranche as the agent says, through the guard (``held``:
        what the trade counts for against the cap, default its stake)."""
        action = self._rl_action(trade, now, current_profit)
        if action is None:
            return NOT_RL
        from learning.agents.pyramid_env import Action

        equity = self._current_equity(now)
        tranche = self.guard.max_stake(equity or 0.0) / self._rl_tranches()
        if action == Action.INCREASE:
            verdict = self.guard.check_stake(now, equity or 0.0, tranche,
                                             held=trade.stake_amount if held is None else held,
                                             min_stake=min_stake, **self.alarms(now))
            return (min(verdict.amount, max_stake), "pyr_increase") if verdict else None
        if action == Action.DECREASE and trade.stake_amount - tranche >= (min_stake or 0.0):
            return -tranche, "pyr_decrease"
        return None  # HOLD; CLOSE goes through custom_exit

    def rl_exit(self, trade: Any, now: datetime, current_profit: float) -> str | None:
        from learning.agents.pyramid_env import Action

        return "pyr_close" if self._rl_action(trade, now, current_profit) == Action.CLOSE \
            else None
