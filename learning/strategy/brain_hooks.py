"""The learning tiers inside the strategy: market context (regime, sentiment), cross-sectional
theme scores, entry decisions and learning from closed trades.

Mixed into :class:`learning.strategy.strategy.AdvancedLearningStrategy`; all maths lives in
``learning.brain.components``, ``learning.brain.regime`` and ``learning.brain.decision``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from freqtrade.strategy import IStrategy, merge_informative_pair

from learning.brain.components import sentiment_score, theme_score
from learning.brain.decision import SCHEMA_VERSION as BRAIN_SCHEMA
from learning.brain.decision import Brain, Decision
from learning.brain.regime import PROB_COLUMNS, REGIME_IDS, Regime, RegimeDetector, regime_features

logger = logging.getLogger(__name__)

BRAIN_STATE_NAME = "brain"
CHAMPION_STATE_NAME = "router_champion"  # the router's champion, for a start without its db
CHAMPION_SCHEMA = 1
REGIME_BY_ID = {v: k for k, v in REGIME_IDS.items()}
CONTEXT_COLUMNS = ("score_sentiment", "regime_id", "regime_confidence", *PROB_COLUMNS)
CRISIS_ID = REGIME_IDS[Regime.CRISIS]


class BrainHooks(IStrategy):
    """Expects ``self.learning`` (LearningConfig), ``self.dp``, ``self.config``, ``self.store``."""

    # ------------------------------------------------------------------ set-up
    def _init_brain(self) -> None:
        self.brain = Brain(self.learning)
        self.detector = RegimeDetector(self.learning.regime.detector)
        self._context_key: tuple | None = None
        self._context: pd.DataFrame | None = None
        self._pending: dict[str, dict[str, Any]] = {}
        self._pending_sizing: dict[str, dict[str, Any]] = {}
        self._trade_learner: dict[int, str] = {}
        self._brain_dirty = False
        self.router = None
        self._policy_types: dict[str, str] = {}
        self._policy_checkpoints: dict[str, str | None] = {}
        self._static_policy = ""  # the router is unavailable: every entry goes to this one
        self._saved_champion: str | None = None
        self._preselected: dict[str, tuple[pd.Timestamp, str]] = {}
        self._init_peers()

    def _init_router(self, now: datetime) -> None:
        """Open the policy router (``router.enabled``). Dry/live share the registry the CLI
        manages; a backtest works on a fresh copy of its active policies in the run's state
        folder, so it never reads live outcomes nor writes into the live database."""
        settings = self.learning.router
        if not settings.enabled:
            return
        from learning.router.registry import read_policies
        from learning.router.router import Router, default_db_path

        main = Path(settings.db) if settings.db else default_db_path(
            self.config.get("user_data_dir", "user_data"))
        try:
            if self._live:
                self.router = Router(main, settings.params, fallback="rule")
            else:
                db = self._run_db()
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                self.router = Router(db, settings.params, fallback="rule")
                # Read-only: a backtest neither migrates nor re-journals the live database.
                source = read_policies(main) if main.exists() else []
                for p in sorted((p for p in source if p.status == "active"),
                                key=lambda p: (not p.champion, p.created)):
                    self.router.register(p.name, p.type, p.checkpoint, now)
            if not [p for p in self.router.policies() if p.status == "active"]:
                self.store.root.mkdir(parents=True, exist_ok=True)
                self.router.register("rule", "rule", None, now)
                self.router.register("brain", "meta", self.store.root, now)
            self._refresh_policies()
            logger.info("AdvancedLearning: policy router on %s (%s)", self.router.db.path,
                        ", ".join(f"{n}:{t}" for n, t in self._policy_types.items()))
        except Exception as err:  # start-up: say what is wrong, trade on the last champion
            self.router = None
            last = self.store.load_json(CHAMPION_STATE_NAME, schema=CHAMPION_SCHEMA) or {}
            name, kind = last.get("name") or "rule", last.get("type") or "rule"
            self._static_policy, self._policy_types = name, {name: kind}
            logger.error("AdvancedLearning: policy router unavailable (%s); every entry goes to "
                         "the last champion %s (%s)%s", err, name, kind,
                         "" if last else ", none recorded: the rule-based policy")
            return
        self._save_champion()

    def _run_db(self) -> Path:
        """A backtest's copy of the policy database: in its state folder, or where the run
        persists nothing (hyperopt, whose epochs run in parallel processes; chart views; the
        bias tools) a temporary folder of this process that each run rewrites."""
        if self._persist:
            return self.store.root / "policy_bandit.db"
        import os
        import tempfile

        return Path(tempfile.gettempdir()) / f"advl-run-{os.getpid()}" / "policy_bandit.db"

    def _save_champion(self) -> None:
        """Remember the router's champion in the state folder: what trades when the database
        cannot be opened at the next start."""
        name = self.router.last_champion if self.router is not None else None
        if name is None or name == self._saved_champion or not self._persist:
            return
        try:
            self.store.save_json(CHAMPION_STATE_NAME, {"name": name,
                                                       "type": self._policy_types.get(name)},
                                 schema=CHAMPION_SCHEMA)
            self._saved_champion = name
        except Exception as err:  # never stop trading over this note
            logger.error("AdvancedLearning: could not record the champion %s: %s", name, err)

    def select_policy(self, pair: str, now: datetime) -> str:
        if self.router is None:
            return self._static_policy
        pre = self._preselected.pop(pair, None)
        if pre is not None and pre[0] == pd.Timestamp(now).floor(self.timeframe_to_td()):
            return pre[1]
        name = self.router.select(self.brain.rng_for(pair, self._candle_of(now), "router"), now)
        if name not in self._policy_types:
            self._refresh_policies()
        self._save_champion()
        return name

    def _refresh_policies(self) -> None:
        policies = self.router.policies()
        self._policy_types = {p.name: p.type for p in policies}
        self._policy_checkpoints = {p.name: p.checkpoint for p in policies}

    def tag_live_candidate(self, dataframe: pd.DataFrame, pair: str) -> None:
        """Live: choose the policy for the newest candidate now, so the entry tag shows it."""
        if self.router is None or not self._live or dataframe.empty:
            return
        last = dataframe.index[-1]
        if dataframe.at[last, "enter_long"] == 1:
            date = pd.Timestamp(dataframe.at[last, "date"]) + self.timeframe_to_td()
            name = self.router.select(self.brain.rng_for(pair, date.to_pydatetime(), "router"),
                                      date.to_pydatetime())
            self._preselected[pair] = (date, name)
            dataframe.at[last, "enter_tag"] = f"policy:{name}"

    def _load_brain(self, backtest_start: datetime | None) -> None:
        """Restore learned state: dry/live from their own folder; a backtest only with
        ``brain.warm_start`` and only state whose data ended before the backtest starts."""
        accept = None
        if not self._live:
            if not self.learning.brain.warm_start:
                return
            start = pd.Timestamp(backtest_start) if backtest_start else None

            def accept(meta: dict[str, Any]) -> bool:
                return (start is not None and meta.get("data_end") is not None
                        and pd.Timestamp(meta["data_end"]) <= start)
        data = self.store.load_json(BRAIN_STATE_NAME, schema=BRAIN_SCHEMA, accept=accept)
        if data:
            try:
                self.brain = Brain(self.learning, data)
                logger.info("AdvancedLearning: learned state restored from %s (%d closed "
                            "trades)", self.store.root, self.brain.state.closed_trades)
            except Exception as err:  # a state the tiers refuse: start fresh, say so
                logger.error("AdvancedLearning: learned state in %s unusable (%s); starting "
                             "fresh", self.store.root, err)

    def _save_brain(self, data_end: datetime | None) -> None:
        if not self._persist:
            return
        try:
            self.store.save_json(BRAIN_STATE_NAME, self.brain.to_state(), schema=BRAIN_SCHEMA,
                                 meta={"runmode": self._namespace, "data_end": data_end})
            self._brain_dirty = False
        except Exception as err:
            logger.error("AdvancedLearning: could not save learned state: %s", err)

    # ------------------------------------------------------------------ data
    def _init_peers(self) -> None:
        """The fixed peer set of the cross-pair features (``brain.peers``, default the whitelist
        at start-up). Following the run's whitelist instead let a dynamic pairlist, or
        freqtrade's lookahead-analysis (which loads only the traded pair), change the theme
        score and the regime."""
        self.peers: tuple[str, ...] = self.learning.brain.peers or tuple(
            self.config["exchange"].get("pair_whitelist", []))

    def informative_pairs(self) -> list[tuple[str, str]]:
        tf = self.learning.regime.detector.timeframe
        btc = self.learning.regime.btc_pair
        pairs = list(dict.fromkeys([*self.peers, btc]))
        out = [(p, tf) for p in pairs]
        if tf != self.timeframe:  # the theme score and sentiment read the main timeframe too
            out += [(p, self.timeframe) for p in pairs]
        return out

    def _peer_frames(self, timeframe: str, skip: str) -> dict[str, pd.DataFrame]:
        frames = {p: f for p in self.peers
                  if p != skip and (f := self._frame(p, timeframe)) is not None}
        missing = [p for p in self.peers if p != skip and p not in frames]
        if missing:
            self._log_once(f"peers-{timeframe}-{missing}", "AdvancedLearning: no %s candles of "
                           "peer(s) %s; the theme score and dispersion compare fewer pairs",
                           timeframe, ", ".join(missing))
        return frames

    def _frame(self, pair: str, timeframe: str) -> pd.DataFrame | None:
        try:
            df = self.dp.get_pair_dataframe(pair, timeframe)
        except Exception:
            return None
        return df if df is not None and len(df) else None

    def market_context(self) -> pd.DataFrame | None:
        """Regime and sentiment per informative candle, shared by all pairs (cached until the
        BTC informative frame changes)."""
        tf = self.learning.regime.detector.timeframe
        btc = self._frame(self.learning.regime.btc_pair, tf)
        if btc is None:
            self._log_once("no-btc", "AdvancedLearning: no %s %s candles; regime UNKNOWN and no "
                           "sentiment", self.learning.regime.btc_pair, tf)
            return None
        key = (len(btc), btc["date"].iloc[-1])
        if key == self._context_key:
            return self._context
        ctx = pd.DataFrame({"date": btc["date"]})
        ctx["score_sentiment"] = sentiment_score(btc, day=24 * 60 // _minutes(tf)).to_numpy()
        if self.learning.regime.enabled:
            others = self._peer_frames(tf, skip=self.learning.regime.btc_pair)
            try:
                feats = regime_features(btc, others, self.learning.regime.detector)
                reg = self.detector.detect(feats)
                ctx["regime_id"] = reg["regime_id"].to_numpy()
                ctx["regime_confidence"] = reg["regime_confidence"].to_numpy()
                for col in PROB_COLUMNS:
                    ctx[col] = reg[col].to_numpy()
            except Exception as err:  # keep trading on the rules; say why once
                self._log_once(f"regime-{type(err).__name__}", "AdvancedLearning: regime "
                               "detection failed (%s); regime UNKNOWN", err)
        for col in CONTEXT_COLUMNS:
            if col not in ctx:
                ctx[col] = 0.0
        self._context_key, self._context = key, ctx
        return ctx

    def add_brain_columns(self, dataframe: pd.DataFrame, pair: str) -> pd.DataFrame:
        """Theme, sentiment and regime columns on the pair's frame (all causal)."""
        others = self._peer_frames(self.timeframe, skip=pair)
        btc_pair = self.learning.regime.btc_pair
        btc = None if pair == btc_pair else self._frame(btc_pair, self.timeframe)
        others.pop(btc_pair, None)
        dataframe["score_theme"] = theme_score(dataframe, others, btc,
                                               self.learning.brain.theme_window).to_numpy()
        ctx = self.market_context()
        tf = self.learning.regime.detector.timeframe
        if ctx is not None:
            merged = merge_informative_pair(dataframe[["date"]].copy(), ctx, self.timeframe, tf,
                                            ffill=True)
            for col in CONTEXT_COLUMNS:
                dataframe[col] = merged[f"{col}_{tf}"].to_numpy()
        else:
            for col in CONTEXT_COLUMNS:
                dataframe[col] = np.nan
        dataframe["regime_id"] = dataframe["regime_id"].fillna(0).astype(int)
        dataframe["regime"] = dataframe["regime_id"].map(
            lambda i: REGIME_BY_ID.get(int(i), Regime.UNKNOWN).value)
        likely = self._most_probable(dataframe)
        dataframe["regime_held"] = ((likely != dataframe["regime"]) & likely.notna()).astype(int)
        return dataframe

    # ------------------------------------------------------------------ decisions
    def scores_at(self, pair: str, now: datetime) -> tuple[dict[str, float], str, float] | None:
        series = self._series.get(pair)
        i = series.last_closed(now) if series else -1
        if i < 0:
            return None
        scores = {"technical": series.score[i], "ai": series.ai[i], "theme": series.theme[i],
                  "sentiment": series.sentiment[i]}
        regime = REGIME_BY_ID.get(int(series.regime_id[i]), Regime.UNKNOWN).value
        return scores, regime, float(series.regime_conf[i])

    def _candle_of(self, now: datetime) -> datetime:
        """``now`` rounded down to the candle: a decision's draws are keyed by its candle, so a
        live decision at 12:03:27 draws what a backtest's at 12:00 does."""
        return pd.Timestamp(now).floor(self.timeframe_to_td()).to_pydatetime()

    def regime_now(self, now: datetime) -> int:
        for series in self._series.values():
            i = series.last_closed(now)
            if i >= 0:
                return int(series.regime_id[i])
        return 0

    def decide_entry(self, pair: str, now: datetime, entry_tag: str | None) -> Decision | None:
        found = self.scores_at(pair, now)
        if found is None:
            return None
        scores, regime, conf = found
        s = self.guard.state
        dd = 1 - s.last_equity / s.peak_equity if s.last_equity and s.peak_equity else None
        policy = self.select_policy(pair, now)
        rule = self._policy_types.get(policy) == "rule" if policy else False
        decision = self.brain.decide(now, pair, scores, regime, conf, dd,
                                     self.entry_threshold.value, policy=policy,
                                     force_fallback=rule, candle=self._candle_of(now))
        self._brain_dirty = True
        if entry_tag == "force_entry":
            # A user's forced entry is the user's decision; the guard still sizes it.
            decision = Decision(**{**decision.to_dict(), "mode": "manual", "take": True})
        self._pending[pair] = decision.to_dict()
        self._chart_decision(pair, self._pending[pair])
        return decision

    def record_entry_fill(self, trade: Any, now: datetime) -> None:
        decision = self._pending.pop(trade.pair, None)
        sizing = self._pending_sizing.pop(trade.pair, None)
        if sizing is not None:
            trade.set_custom_data("sizing", sizing)
            self._trade_params[trade.id] = sizing
        if decision is None:
            return
        trade.set_custom_data("decision", decision)
        self._trade_learner[trade.id] = decision["learner"]

    def record_exit_fill(self, trade: Any, order: Any, now: datetime) -> None:
        full = (not trade.is_open) or order.safe_amount >= trade.amount * (1 - 1e-9)
        if not full:
            return
        if trade.is_open:  # backtesting: called just before the trade is closed
            profit = float(trade.calc_profit_ratio(order.safe_price))
            profit_abs = float(trade.realized_profit or 0.0) + float(
                trade.calc_profit(order.safe_price))
        else:
            profit = float(trade.close_profit or 0.0)
            profit_abs = float(trade.close_profit_abs or 0.0)
        decision = trade.get_custom_data("decision")
        regime_now = REGIME_BY_ID.get(self.regime_now(now), Regime.UNKNOWN).value
        result = self.brain.record_close(now, trade.pair, decision, profit, regime_now)
        trade.set_custom_data("outcome", {"profit_ratio": round(profit, 6),
                                          "learning_paused": result.get("learning_paused")})
        self._trade_learner.pop(trade.id, None)
        self._trim_to.pop(trade.id, None)  # per-trade bookkeeping ends with the trade
        self.agent_learn(trade, profit, now)
        if self.router is not None and decision and decision.get("policy"):
            self.router.record_outcome(decision["policy"], trade.id, profit, profit_abs, now)
        self._brain_dirty = True
        if self._live:
            self._save_brain(now)
            self._save_agents(now)

    def learner_of(self, trade: Any) -> str | None:
        if trade.id not in self._trade_learner:
            decision = trade.get_custom_data("decision") or {}
            self._trade_learner[trade.id] = decision.get("learner")
        return self._trade_learner[trade.id]


def _minutes(tf: str) -> int:
    from learning.data.candles import timeframe_to_minutes

    return timeframe_to_minutes(tf)
