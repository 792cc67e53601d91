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
from freqtrade.strategy import IStrategy

from learning.brain.changepoint import OUTPUT_COLUMN as CP_COLUMN
from learning.brain.changepoint import ChangepointDetector
from learning.brain.changepoint import level as changepoint_level
from learning.brain.components import asof_merge, sentiment_score, theme_score
from learning.brain.decision import SCHEMA_VERSION as BRAIN_SCHEMA
from learning.brain.decision import Brain, Decision
from learning.brain.profiles import plan_for
from learning.brain.regime import PROB_COLUMNS, REGIME_IDS, Regime, RegimeDetector, regime_features
from learning.brain.shadow import PricePath, ShadowBook, ShadowTrade
from learning.core.durations import candles

logger = logging.getLogger(__name__)

BRAIN_STATE_NAME = "brain"
CHAMPION_STATE_NAME = "router_champion"  # the router's champion, for a start without its db
CHAMPION_SCHEMA = 1
REGIME_BY_ID = {v: k for k, v in REGIME_IDS.items()}
CONTEXT_COLUMNS = ("score_sentiment", "regime_id", "regime_confidence", *PROB_COLUMNS,
                   CP_COLUMN)
CRISIS_ID = REGIME_IDS[Regime.CRISIS]


class BrainHooks(IStrategy):
    """Expects ``self.learning`` (LearningConfig), ``self.dp``, ``self.config``, ``self.store``."""

    # ------------------------------------------------------------------ set-up
    def _init_brain(self) -> None:
        self.brain = Brain(self.learning)
        self.detector = RegimeDetector(self.learning.regime.detector)
        self.changepoints = ChangepointDetector(self.learning.changepoint,
                                                self.learning.regime.detector.timeframe)
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
        self._shadow_book: ShadowBook | None = None
        self._shadow_last: dict[str, int] = {}  # pair -> close ns of the last evaluated candle
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
        if self._shadow_book is not None:
            # outcomes not resolvable inside the data so far: never used (counted)
            self.brain.state.shadow_unresolved = self._shadow_book.unresolved()
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
        """The market proxy (BTC) at the detector's and the strategy's timeframe whether or not
        it is whitelisted, every pair at the detector's timeframe, and daily candles for the
        trend component."""
        tf = self.learning.regime.detector.timeframe
        btc = self.learning.regime.btc_pair
        whitelist = list(self.config["exchange"].get("pair_whitelist", []))
        pairs = list(dict.fromkeys([*self.peers, btc]))
        out = [(p, tf) for p in pairs]
        if tf != self.timeframe:  # the theme score and sentiment read the main timeframe too
            out += [(p, self.timeframe) for p in pairs]
        # daily candles of every traded pair and peer: the trend component
        out += [(p, "1d") for p in dict.fromkeys([*whitelist, *pairs]) if tf != "1d"]
        return list(dict.fromkeys(out))

    def check_informative_data(self) -> None:
        """Start-up: a backtest without the market proxy's candles cannot detect regimes nor
        read the market: stop with the file that is missing."""
        from freqtrade.exceptions import OperationalException

        from learning.data.candles import pair_to_filename

        btc = self.learning.regime.btc_pair
        for tf in dict.fromkeys([self.learning.regime.detector.timeframe, self.timeframe]):
            if self._frame(btc, tf) is None:
                datadir = self.config.get("datadir") or "the data folder"
                raise OperationalException(
                    f"AdvancedLearning: no {btc} {tf} candles: {datadir}/"
                    f"{pair_to_filename(btc, tf)} is missing (the market proxy is read whether "
                    f"or not it is whitelisted; download it with `freqtrade download-data "
                    f"--pairs {btc} --timeframes {tf}`)")

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
        cp = self._changepoints(btc)
        ctx[CP_COLUMN] = cp
        if self.learning.regime.enabled:
            others = self._peer_frames(tf, skip=self.learning.regime.btc_pair)
            try:
                feats = regime_features(btc, others, self.learning.regime.detector)
                settings = self.learning.changepoint
                if settings.enabled and settings.feed_regime:
                    # An alarm lets the detector switch at once and refits it a little later.
                    alarm = np.nan_to_num(cp, nan=0.0) > settings.block_above
                    reg = self.detector.detect(feats, alarm=alarm, refit_delay=candles(
                        settings.refit_after, tf))
                else:
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

    def _changepoints(self, btc: pd.DataFrame) -> np.ndarray:
        """P(changepoint within the window) per market-proxy candle; NaN when off or failing
        (no alarm: the trading path never raises)."""
        if not self.learning.changepoint.enabled:
            return np.full(len(btc), np.nan)
        try:
            return self.changepoints.probabilities(btc)
        except Exception as err:
            self._log_once(f"changepoint-{type(err).__name__}", "AdvancedLearning: changepoint "
                           "detection failed (%s); no alarms", err, level=logging.ERROR)
            return np.full(len(btc), np.nan)

    def changepoint_level(self, now: datetime) -> int:
        """The changepoint alarm at the last closed candle: 0 none, 1 entries and adds blocked,
        2 exit all positions (``changepoint.block_above`` / ``exit_above``)."""
        cfg = self.learning.changepoint
        if not cfg.enabled:
            return 0
        for series in self._series.values():
            i = series.last_closed(now)
            if i >= 0:
                return changepoint_level(float(series.changepoint[i]), cfg)
        return 0

    def add_brain_columns(self, dataframe: pd.DataFrame, pair: str) -> pd.DataFrame:
        """Theme, sentiment and regime columns on the pair's frame (all causal)."""
        others = self._peer_frames(self.timeframe, skip=pair)
        btc_pair = self.learning.regime.btc_pair
        btc = None if pair == btc_pair else self._frame(btc_pair, self.timeframe)
        others.pop(btc_pair, None)
        window = candles(self.learning.brain.theme_window, self.timeframe, minimum=2)
        dataframe["score_theme"] = theme_score(dataframe, others, btc, window).to_numpy()
        ctx = self.market_context()
        tf = self.learning.regime.detector.timeframe
        if ctx is not None:
            merged = asof_merge(dataframe["date"], self.timeframe, ctx, tf, CONTEXT_COLUMNS)
            for col in CONTEXT_COLUMNS:
                dataframe[col] = merged[col].to_numpy()
        else:
            for col in CONTEXT_COLUMNS:
                dataframe[col] = np.nan
        dataframe["regime_id"] = dataframe["regime_id"].fillna(0).astype(int)
        dataframe["regime"] = dataframe["regime_id"].map(
            lambda i: REGIME_BY_ID.get(int(i), Regime.UNKNOWN).value)
        likely = self._most_probable(dataframe)
        dataframe["regime_held"] = ((likely != dataframe["regime"]) & likely.notna()).astype(int)
        return dataframe

    def btc_features(self, now: datetime) -> tuple[float, float]:
        """The market proxy's trend and volatility (``pair_features``) at the last closed
        candle, from the whitelist's series or else the informative candles: the agents read the
        market whether or not BTC is traded."""
        from learning.brain.components import pair_features

        btc = self.learning.regime.btc_pair
        series = self._series.get(btc)
        if series is not None:
            i = series.last_closed(now)
            return (series.trend[i], series.vol[i]) if i >= 0 else (np.nan, np.nan)
        frame = self._frame(btc, self.timeframe)
        if frame is None:
            return np.nan, np.nan
        key = (len(frame), frame["date"].iloc[-1])
        if getattr(self, "_btc_key", None) != key:
            feats = pair_features(frame, self.timeframe)
            closes = (pd.to_datetime(frame["date"], utc=True) + self.timeframe_to_td())
            self._btc_key = key
            self._btc_feats = (closes.dt.as_unit("ns").astype("int64").to_numpy(),
                               feats["trend"].to_numpy(), feats["vol"].to_numpy())
        close_ns, trend, vol = self._btc_feats
        i = int(np.searchsorted(close_ns, pd.Timestamp(now).value, side="right")) - 1
        return (float(trend[i]), float(vol[i])) if i >= 0 else (np.nan, np.nan)

    # ------------------------------------------------------------------ decisions
    def scores_at(self, pair: str, now: datetime) -> tuple[dict[str, float], str, float] | None:
        series = self._series.get(pair)
        i = series.last_closed(now) if series else -1
        if i < 0:
            return None
        scores = {"technical": series.score[i], "ai": series.ai[i], "theme": series.theme[i],
                  "sentiment": series.sentiment[i], "trend": series.trend_score[i]}
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
                                     force_fallback=rule, candle=self._candle_of(now),
                                     context=self.decision_context(pair, now))
        self._brain_dirty = True
        if entry_tag == "force_entry":
            # A user's forced entry is the user's decision; the guard still sizes it.
            decision = Decision(**{**decision.to_dict(), "mode": "manual", "take": True})
        record = decision.to_dict()
        if decision.profile:
            plan = plan_for(self.learning.profiles.profile(decision.profile),
                            self.daily_vol(pair, now), self.learning.profiles)
            record["plan"] = plan.to_dict() if plan else None
        self._pending[pair] = record
        self._chart_decision(pair, record)
        return decision

    def decision_context(self, pair: str, now: datetime) -> dict[str, Any]:
        """What a decision's explanation shows besides the score: the changepoint probability
        and the ai component's conformal interval (and whether it abstained)."""
        series = self._series.get(pair)
        i = series.last_closed(now) if series else -1
        if i < 0:
            return {}
        lo, hi = float(series.ai_lo[i]), float(series.ai_hi[i])
        return {"changepoint": float(series.changepoint[i]),
                "ai_interval": (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else None,
                "ai_abstained": bool(series.ai_abstain[i]) and self.learning.conformal.abstain}

    def daily_vol(self, pair: str, now: datetime) -> float:
        """The pair's daily volatility (fraction) at the last closed candle, from the EWMA
        forecast; NaN while unknown."""
        series = self._series.get(pair)
        i = series.last_closed(now) if series else -1
        return float(series.vol_forecast[i]) / np.sqrt(365.0) if i >= 0 else float("nan")

    # ------------------------------------------------------------------ shadow feedback
    def _shadow_fee(self) -> float:
        fee = self.config.get("fee")
        return float(fee) if fee is not None else self.learning.shadow.fee

    def _price_path(self, pair: str) -> PricePath | None:
        series = self._series.get(pair)
        if series is None:
            return None
        return PricePath(series.close_ns, series.open, series.high, series.low, series.close,
                         series.trend_daily)

    def shadow_step(self, now: datetime) -> None:
        """Counterfactual feedback, once per closed candle and pair (called per bot loop):
        release the outcomes resolved by now to every tier, then let every learner (and every
        router policy) decide on the newest closed candle of each pair and open the shadow
        trades they would have entered. Never raises: learning must not stop trading."""
        if not self.learning.shadow.enabled or not self._series:
            return
        try:
            self._shadow_step(now)
        except Exception as err:  # say it once; trading goes on without shadow feedback
            self._log_once(f"shadow-{type(err).__name__}", "AdvancedLearning: shadow feedback "
                           "failed (%s); it is skipped", err, level=logging.ERROR)

    def _shadow_step(self, now: datetime) -> None:
        step_ns = int(self.timeframe_to_td().total_seconds() * 1e9)
        if self._shadow_book is None:
            self._shadow_book = ShadowBook(self._shadow_fee())
        book = self._shadow_book
        paths = {p: path for p in self._series if (path := self._price_path(p)) is not None}
        now_ns = int(pd.Timestamp(now).value)
        routed = False
        for outcome in book.release(now_ns, paths, step_ns):
            self.brain.learn_shadow(outcome)
            policy = outcome.trade.meta.get("policy")
            if policy and outcome.chosen and self.router is not None:
                done = self.router.record_outcome(
                    policy, f"shadow-{outcome.trade.pair}-{outcome.trade.entry_ns}",
                    outcome.resolution.ret, 0.0, now, weight=self.learning.shadow.weight,
                    flush=False)
                if done != "rejected":
                    self.brain.count("router", "shadow")
                    routed = True
            self._brain_dirty = True
        if routed:
            self.router.flush()
        threshold = self.entry_threshold.value
        profiles = self.learning.profiles
        for pair, series in self._series.items():
            i = series.last_closed(now)
            if i < 0 or not series.data_ok[i]:
                continue
            t_ns = int(series.close_ns[i])
            if self._shadow_last.get(pair, -1) >= t_ns:
                continue
            self._shadow_last[pair] = t_ns
            found = self.scores_at(pair, now)
            if found is None:
                continue
            scores, regime, _ = found
            vol = self.daily_vol(pair, now)
            plans = {}
            if profiles.enabled:
                plans = {p.name: plan for p in profiles.profiles
                         if (plan := plan_for(p, vol, profiles)) is not None}
            if not plans:
                continue
            rng = self.brain.rng_for(pair, pd.Timestamp(t_ns, tz="UTC").to_pydatetime(), "shadow")
            rule = profiles.rule_profile if profiles.rule_profile in plans else next(iter(plans))
            book.open(ShadowTrade("probe", pair, t_ns, regime, dict(scores), rule,
                                  {rule: plans[rule]}), paths[pair], step_ns)
            for learner in self.brain.meta.learner_names:
                track = f"learner:{learner}"
                take, _, profile = self.brain.shadow_decision(learner, scores, regime,
                                                              threshold, rng)
                if take:
                    book.open(ShadowTrade(track, pair, t_ns, regime, dict(scores),
                                          profile or profiles.rule_profile, plans),
                              paths[pair], step_ns)
            self._shadow_policies(book, pair, t_ns, scores, regime, plans, threshold, rng,
                                  paths[pair], step_ns)

    def _shadow_policies(self, book: ShadowBook, pair: str, t_ns: int, scores: dict,
                         regime: str, plans: dict, threshold: float, rng: np.random.Generator,
                         path: PricePath, step_ns: int) -> None:
        """Shadow trades of the router's policies: the rule path, and the meta-learner's
        choice for every learned policy type."""
        if self.router is None or not self.learning.shadow.router:
            return
        rule_profile = self.learning.profiles.rule_profile
        for policy, kind in self._policy_types.items():
            track = f"policy:{policy}"
            if kind == "rule":
                take, profile = self.brain.rule_decision(scores, threshold), rule_profile
            else:
                learner = self.brain.meta.sample(regime, rng)
                take, _, profile = self.brain.shadow_decision(learner, scores, regime,
                                                              threshold, rng)
            if take:
                book.open(ShadowTrade(track, pair, t_ns, regime, dict(scores),
                                      profile or rule_profile, plans, {"policy": policy}),
                          path, step_ns)

    def record_entry_fill(self, trade: Any, now: datetime) -> None:
        decision = self._pending.pop(trade.pair, None)
        sizing = self._pending_sizing.pop(trade.pair, None)
        if sizing is not None:
            trade.set_custom_data("sizing", sizing)
            self._trade_params[trade.id] = sizing
        if decision is None:
            return
        trade.set_custom_data("decision", decision)
        if decision.get("explanation"):
            # FreqUI's trade view: why it took this trade, in one line
            trade.set_custom_data("explanation", decision["explanation"])
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
                                          "risk_cut": result.get("risk_cut")})
        self._trade_learner.pop(trade.id, None)
        self._plans.pop(trade.id, None)
        self._trim_to.pop(trade.id, None)  # per-trade bookkeeping ends with the trade
        self.agent_learn(trade, profit, now)
        if self.router is not None and decision and decision.get("policy") and \
                self.router.record_outcome(decision["policy"], trade.id, profit, profit_abs,
                                           now) != "rejected":
            self.brain.count("router", "real")
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
