"""AdvancedLearning strategy behaviour (``strategies/AdvancedLearning.py`` is a thin subclass).

Decision flow per candle (long-only spot):

1. ``populate_indicators``: causal component scores (``learning.brain.technical``) and a per-pair
   index of closed candles used for marking open trades to market.
2. ``bot_loop_start``: equity = starting balance + closed profit + realized and unrealized PnL of
   open trades, marked at the last *closed* candle; the :class:`~learning.core.risk.RiskGuard`
   rolls the UTC day, tracks the peak and trips its limits; manual commands (``ftlearn
   halt/resume``) are applied from the state folder's command log and acknowledged.
3. Entries: ``populate_entry_trend`` proposes, ``custom_stake_amount`` sizes within the guard's cap
   and ``confirm_trade_entry`` has the last veto.
4. Open trades: ``adjust_trade_position`` scales in / trims (every add clamped by the guard),
   ``custom_exit`` flattens on a risk limit, ``custom_stoploss`` trails an ATR stop.

Nothing on the trading path raises: bad input makes the strategy abstain and log once.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from freqtrade.exceptions import OperationalException
from freqtrade.persistence import LocalTrade, Order, Trade
from freqtrade.strategy import DecimalParameter, IStrategy, stoploss_from_absolute

from learning.brain.components import ewma_volatility, pair_features, trend_score
from learning.brain.decision import Brain
from learning.brain.profiles import ExitPlan
from learning.brain.regime import PROB_COLUMNS
from learning.brain.technical import WARMUP_CANDLES, add_technical
from learning.core.control import LOG_NAME, acknowledge, apply_commands, read_commands
from learning.core.durations import candles, minutes_of, parse_duration
from learning.core.errors import ConfigError, LearningError
from learning.core.ftconfig import credentials_message, shipped_api_credentials
from learning.core.risk import SCHEMA_VERSION as RISK_SCHEMA
from learning.core.risk import RiskGuard, RiskState
from learning.core.store import StateStore, runmode_namespace, state_root
from learning.strategy.allocation import AllocationHooks
from learning.strategy.brain_hooks import CRISIS_ID, BrainHooks
from learning.strategy.charts import ChartHooks
from learning.strategy.config import LearningConfig, load_learning_config
from learning.strategy.freqai_hooks import FreqAIHooks
from learning.strategy.pending import PendingEntries
from learning.strategy.sizing import NOT_RL, SizingHooks

logger = logging.getLogger(__name__)

RISK_STATE_NAME = "risk"
#: What the guard's events and blocking reasons mean, in the messages users get.
GUARD_EVENTS = {
    "daily_loss_limit": "entries and adds blocked for the rest of the UTC day, open positions "
                        "exited",
    "max_drawdown": "positions flattened, entries halted until `ftlearn resume "
                    "--reset-drawdown`",
    "manual_halt": "new entries and adds stopped until `ftlearn resume`",
    "manual_resume": "the manual halt is lifted",
    "drawdown_reset": "the drawdown halt is lifted, the equity peak restarts from equity now",
    "max_drawdown_halt": "entries halted since the drawdown limit; `ftlearn resume "
                         "--reset-drawdown` lifts it",
    "daily_loss_halt": "the daily loss limit was hit today",
    "crisis_cash_only": "CRISIS regime, cash only",
    "changepoint_alarm": "changepoint alarm on the market proxy: no entries or adds",
}


def describe(code: str) -> str:
    """A guard event or blocking reason with what it means (``manual_halt (new entries ...)``)."""
    return f"{code} ({GUARD_EVENTS[code]})" if code in GUARD_EVENTS else code


#: An add that leaves a trade more than this fraction above the cap was not sized by the guard
#: (the strategy's own adds are clamped to the cap at the same candle's equity).
OVER_CAP_TOLERANCE = 0.02
#: freqtrade fetches at most 5 calls of 1000 candles per pair at start-up (Binance's limit;
#: ``Exchange.validate_required_startup_candles``).
MAX_STARTUP_CANDLES = 4_999
SCORE_COLUMNS = ("score_technical", "score_ai", "score_theme", "score_sentiment", "score_trend")


def vol_target_scale(target: float, forecast: float) -> float:
    """target / forecast annualised volatility, at most 1 (the guard's allowance is the
    ceiling); 1 when targeting is off (target <= 0) or the forecast is unknown or not positive."""
    if not (math.isfinite(target) and target > 0 and math.isfinite(forecast) and forecast > 0):
        return 1.0
    return min(1.0, target / forecast)


@dataclass
class _PairSeries:
    """Closed-candle arrays of one pair for O(log n) lookups by time (no dataframe slicing)."""

    close_ns: np.ndarray  # candle close times (open + timeframe), int64 ns
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    score: np.ndarray  # technical
    atr_pct: np.ndarray
    ai: np.ndarray
    ai_lo: np.ndarray  # conformal interval of the predicted return (NaN: none)
    ai_hi: np.ndarray
    ai_abstain: np.ndarray  # 1 where that interval contains zero
    theme: np.ndarray
    sentiment: np.ndarray
    trend_score: np.ndarray  # the trend component (time-series momentum)
    trend_daily: np.ndarray  # the same from the last completed daily close (trend exits)
    vol_forecast: np.ndarray  # annualised EWMA volatility
    data_ok: np.ndarray
    regime_id: np.ndarray
    regime_conf: np.ndarray
    regime_probs: np.ndarray  # (N, 5) in PROB_COLUMNS order
    changepoint: np.ndarray  # P(changepoint within the window) of the market proxy (NaN: none)
    pyr: dict[str, np.ndarray] | None  # PPOPyramiding grid columns (+ do_predict), if any
    trend: np.ndarray  # trade-parameter agent inputs (learning.agents.trade_sim.pair_features)
    vol: np.ndarray
    drawdown: np.ndarray
    _last_now: datetime | None = None
    _last_i: int = -1

    def last_closed(self, now: datetime) -> int:
        """Index of the newest candle that had closed at ``now``, or -1."""
        if now is not self._last_now:  # callbacks of one candle share the same datetime object
            ns = int(now.timestamp()) * 1_000_000_000 + now.microsecond * 1000
            self._last_i = int(np.searchsorted(self.close_ns, ns, side="right")) - 1
            self._last_now = now
        return self._last_i


class AdvancedLearningStrategy(ChartHooks, SizingHooks, AllocationHooks, BrainHooks, FreqAIHooks,
                               IStrategy):
    """Rule-based core of AdvancedLearning; the learning tiers plug into it."""

    INTERFACE_VERSION = 3
    timeframe = "5m"
    can_short = False
    process_only_new_candles = True
    use_exit_signal = True
    exit_profit_only = False
    ignore_roi_if_entry_signal = False
    # ROI is effectively off: exits come from the score, the trailing ATR stop and risk limits.
    minimal_roi = {"0": 10.0}
    # Hard floor below every custom stop.
    stoploss = -0.10
    use_custom_stoploss = True
    position_adjustment_enable = True
    max_entry_position_adjustment = 2
    _prob_columns = PROB_COLUMNS

    entry_threshold = DecimalParameter(0.10, 0.60, default=0.30, decimals=2, space="buy",
                                       optimize=True)
    exit_threshold = DecimalParameter(-0.50, 0.10, default=-0.15, decimals=2, space="sell",
                                      optimize=True)
    stop_atr_mult = DecimalParameter(1.5, 8.0, default=4.0, decimals=1, space="sell",
                                     optimize=True)
    stop_min = DecimalParameter(0.01, 0.05, default=0.02, decimals=3, space="sell",
                                optimize=False)

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        try:
            self.learning: LearningConfig = load_learning_config(config)
        except ConfigError as err:
            # Start-up must stop with a message naming the problem.
            raise OperationalException(f"AdvancedLearning configuration: {err}") from err
        runmode = config.get("runmode")
        self._namespace = runmode_namespace(runmode.value if runmode else "other")
        if self._namespace in ("dry_run", "live") and (bad := shipped_api_credentials(config)):
            raise OperationalException(f"AdvancedLearning: {credentials_message(bad)}")
        # Hyperopt epochs, chart views (FreqUI's backtest view runs the strategy in the
        # webserver; plot-dataframe) and the utility commands (lookahead- and
        # recursive-analysis build dozens of instances) write no state.
        self._persist = getattr(runmode, "value", runmode) not in (
            "hyperopt", "webserver", "plot", "util_exchange", "util_no_exchange")
        self.store = StateStore(state_root(config.get("user_data_dir", "user_data"),
                                           self.learning.state_dir, self.learning.identifier,
                                           self._namespace))
        self.guard = RiskGuard(self.learning.risk)
        self.position_adjustment_enable = self.learning.pyramiding.enabled
        self.max_entry_position_adjustment = self.learning.pyramiding.max_adds
        if self.learning.sizing.agent == "allocator":  # rebalancing adds and trims, unlimited
            self.position_adjustment_enable, self.max_entry_position_adjustment = True, -1
        self._series: dict[str, _PairSeries] = {}
        self._equity: float | None = None
        self._start_balance: float | None = None
        self._closed_count, self._closed_sum = -1, 0.0
        self._equity_time: datetime | None = None
        self._control_key: tuple[int, int] | None = None
        self._last_save: datetime | None = None  # live: the last save of the learned state
        self._dirty = False
        self._logged: set[str] = set()
        # (candle open ns, equity, drawdown, day P&L, guard code); a backtest keeps its whole run
        self._guard_history: deque[tuple[int, float, float, float, int]] = deque(
            maxlen=20_000 if self._live else None)
        self._trim_to: dict[int, float | None] = {}  # trade id -> stake to trim back to
        self._plans: dict[int, ExitPlan | None] = {}  # trade id -> exit plan (profiles)
        self._cp_trimmed: set[int] = set()  # trades trimmed in the current changepoint alarm
        self._last_loop: datetime | None = None  # backtests: the last candle's bot loop
        self._run_pending = False  # rebuild the learning state before the next candle
        self._run_end: datetime | None = None  # backtests: the end of the timerange
        self._crisis_was: bool | None = None  # live: CRISIS at the last loop (None: unknown)
        self._init_brain()
        self._waiting = PendingEntries(self.store, persist=self._live)
        self._init_charts()
        # freqtrade applies the config's timeframe after __init__, so the start-up history is
        # computed when it is asked for (see the property); a value in the config still wins.
        self._startup_override: int | None = config.get("startup_candle_count")

    # ------------------------------------------------------------------ start-up history
    @property
    def startup_candle_count(self) -> int:  # type: ignore[override]
        """Candles of history before the first traded candle, from durations and the timeframe
        in force (freqtrade reads this after applying the config's ``timeframe``)."""
        if self._startup_override is not None:
            return int(self._startup_override)
        return min(self.required_startup_candles(self.timeframe), MAX_STARTUP_CANDLES)

    @startup_candle_count.setter
    def startup_candle_count(self, value: int) -> None:
        self._startup_override = int(value)

    def required_startup_candles(self, timeframe: str) -> int:
        """History every causal window needs at ``timeframe``: the TA-Lib indicators (in
        candles), twice the theme and volatility windows, the volatility forecast's window, and
        the regime detector's warm-up, first fit and first refit period (in its own timeframe's
        candles)."""
        tf = minutes_of(timeframe)
        brain = self.learning.brain
        need = [WARMUP_CANDLES, 2 * candles(brain.theme_window, timeframe),
                2 * candles(brain.volatility_baseline, timeframe),
                # the volatility forecast's window (four half-lives, ewma_volatility)
                4 * candles(self.learning.sizing.vol_halflife, timeframe) + 1]
        if self.learning.regime.enabled:
            det = self.learning.regime.detector
            minutes = (det.warmup_candles + det.min_fit_candles + det.refit_every) * minutes_of(
                det.timeframe)
            need.append(math.ceil(minutes / tf))
        return max(need)

    # ------------------------------------------------------------------ lifecycle
    @property
    def _live(self) -> bool:
        return self._namespace in ("dry_run", "live")

    def bot_start(self, **kwargs: Any) -> None:
        if self._persist:
            self.store.clean_temp()
        if self._live:
            self._restore_risk_state()
            self._waiting.load(datetime.now(UTC))
        runmode = getattr(self.config.get("runmode"), "value", self.config.get("runmode"))
        if runmode == "backtest" and self.learning.regime.enabled:
            self.check_informative_data()
        if not self.use_exit_signal:
            # freqtrade calls custom_exit only with use_exit_signal on: the guard's exits go.
            logger.warning("AdvancedLearning: use_exit_signal is false in the config, so "
                           "freqtrade never asks custom_exit: the daily-loss, drawdown and "
                           "crisis exits (and the exit profiles) will NOT close positions; "
                           "remove the setting to have them")
        # A backtest starts from a clean guard: it never loads state of a live run.
        self._start_learning()
        if self._persist:
            atexit.register(self._save_state, force=True)

    def _restore_risk_state(self) -> None:
        """Load the guard's state; when it cannot be trusted, start halted (fail closed).

        The guard's memory (equity peak, halts) is what keeps a drawdown halt in force across a
        restart: a ``.prev`` copy may predate the halt, and no state at all forgets the peak. So
        anything but the newest good file halts entries until the user has looked.
        """
        loaded = self.store.load_json_checked(RISK_STATE_NAME, schema=RISK_SCHEMA,
                                              check=RiskState.from_state)
        problems = list(loaded.problems)
        state = RiskState.from_state(loaded.data) if loaded.data is not None else None
        if state is not None:
            self.guard.state = state
        if not problems:
            if state is not None:
                logger.info("AdvancedLearning: risk state restored from %s (peak equity %s)",
                            loaded.source, state.peak_equity)
            return
        used = (f"restored from {loaded.source} (it may predate later halts or a higher peak)"
                if state is not None else "started without it (no equity peak, no halts)")
        now = datetime.now(UTC)
        # Commands already in the log were sent before this start: none of them may lift the
        # halt below (a later `ftlearn resume` does).
        self.guard.state.control_seen = len(read_commands(self.store.root))
        self.guard.apply_command(now, "halt", "risk state untrusted: " + "; ".join(problems))
        logger.error(
            "AdvancedLearning: the risk guard's state cannot be trusted: %s. The guard %s. "
            "ENTRIES AND ADDS ARE HALTED: inspect %s (`ftlearn status`), then lift the halt with "
            "`ftlearn resume` (add --reset-drawdown to also lift a drawdown halt)",
            "; ".join(problems), used, self.store.root)
        self._dirty = True
        self._save_risk(now)

    def _start_learning(self) -> None:
        """The learned state a run starts from (brain, router, trade-parameter agents)."""
        start = self._backtest_start()
        self._run_end = None if self._live else self._backtest_start(end=True)
        self._load_brain(start)
        self._init_router(start or datetime.now(UTC))
        self._init_sizing(start)
        self._init_allocation(start)

    def _new_run(self) -> None:
        """Start a backtest again from what ``bot_start`` gave the first one.

        Hyperopt runs every epoch on this instance (``-j 1``) or on copies unpickled in joblib
        workers, several epochs per copy: each epoch must start from the same learning state
        and guard, never from what an earlier epoch learned (nothing is written to disk in
        hyperopt, and the router's database is private to the run, see ``_init_router``)."""
        self.guard = RiskGuard(self.learning.risk)
        self.brain = Brain(self.learning)
        for book in (self._pending, self._pending_sizing, self._trade_learner, self._preselected,
                     self._trim_to, self._plans, self._shadow_last, self._cp_trimmed):
            book.clear()
        self._shadow_book = None
        self._waiting = PendingEntries(self.store, persist=self._live)
        self._equity = self._equity_time = None
        self._closed_count, self._closed_sum = -1, 0.0
        self._guard_history.clear()
        self._run_decisions.clear()
        self._start_learning()

    # Hyperopt sends the strategy to its joblib workers by pickling it. The store holds a lock,
    # the router a database and the agents torch modules: they are rebuilt there instead, by
    # _new_run before the first candle.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["store"] = self.store.root
        for key in ("router", "agents", "_policy_agents", "_waiting", "_allocators",
                    "_alloc_panel"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        root = state.pop("store")
        self.__dict__.update(state)
        self.store = StateStore(root)
        self._waiting = PendingEntries(self.store, persist=False)  # hyperopt persists nothing
        self.router, self.agents, self._policy_agents = None, None, {}
        self._allocators, self._alloc_panel = [], None
        self._run_pending = True

    def _backtest_start(self, end: bool = False) -> datetime | None:
        """The start (or ``end``) of the configured timerange, if it names one."""
        from freqtrade.configuration import TimeRange

        raw = self.config.get("timerange")
        if not raw:
            return None
        try:
            parsed = TimeRange.parse_timerange(raw)
            return parsed.stopdt if end else parsed.startdt
        except Exception:
            return None

    def _log_once(self, key: str, msg: str, *args: Any, level: int = logging.WARNING) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.log(level, msg, *args)

    def _save_state(self, force: bool = False, now: datetime | None = None) -> None:
        if force:
            self._save_charts()
        if self._persist and (self._brain_dirty or force):
            self._save_brain(now or self._equity_time)
            self._save_agents(now or self._equity_time)
        if self._dirty or force:
            self._save_risk(now)

    def _save_risk(self, now: datetime | None) -> None:
        if not self._persist:
            return
        self._save_risk(now)

    def _save_risk(self, now: datetime | None) -> None:
        if not self._persist:
            return
        try:
            self.store.save_json(RISK_STATE_NAME, self.guard.state.to_state(),
                                 schema=RISK_SCHEMA, meta={"runmode": self._namespace,
                                                           "data_end": now or self._equity_time})
            self._dirty = False
        except Exception as err:  # never break trading on a failed write; say so loudly
            logger.error("AdvancedLearning: could not save risk state: %s", err)

    # ------------------------------------------------------------------ indicators
    def populate_indicators(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        pair = metadata["pair"]
        dataframe["score_ai"] = np.nan  # excluded from the weights unless a model predicts
        dataframe["ai_lo"], dataframe["ai_hi"], dataframe["ai_abstain"] = np.nan, np.nan, 0
        if self.freqai_enabled:
            try:
                dataframe = self.freqai.start(dataframe, metadata, self)
            except LearningError as err:
                # e.g. a saved model from another version or architecture: trade on without it
                # (no ai component, rule-based pyramiding) rather than stop the bot.
                self._log_once(f"freqai-{pair}", "AdvancedLearning: FreqAI model refused for "
                               "%s: %s; trading without it (no ai component, rule-based "
                               "sizing)", pair, err, level=logging.ERROR)
            else:
                dataframe["score_ai"] = self.ai_score(dataframe)
            self.ai_interval(dataframe)
        add_technical(dataframe, candles(self.learning.brain.volatility_baseline,
                                         self.timeframe))
        self.add_brain_columns(dataframe, pair)
        trend_days = max(2, round(parse_duration(self.learning.brain.trend_window)
                                  / timedelta(days=1)))
        daily = self._frame(pair, "1d")
        dataframe["score_trend"] = trend_score(dataframe["date"], dataframe["close"],
                                               self.timeframe, daily, trend_days).to_numpy()
        dataframe["trend_daily"] = trend_score(dataframe["date"], dataframe["close"],
                                               self.timeframe, daily, trend_days,
                                               daily_close=True).to_numpy()
        dataframe["vol_forecast"] = self.volatility_forecast(dataframe)
        bad = int((~dataframe["data_ok"]).iloc[self.startup_candle_count:].sum())
        if bad:
            self._log_once(f"bad-rows-{pair}", "AdvancedLearning: %s has %d candles with NaN, "
                           "zero volume or inconsistent prices; no entries on them", pair, bad)
        step = pd.Timedelta(self.timeframe_to_td())
        dates = pd.to_datetime(dataframe["date"], utc=True)
        feats = pair_features(dataframe, self.timeframe)
        self._series[pair] = _PairSeries(
            # as_unit: pandas keeps the file's resolution (ms for feather); compare in ns.
            close_ns=(dates + step).dt.as_unit("ns").astype("int64").to_numpy(),
            open=dataframe["open"].to_numpy(dtype="float64"),
            high=dataframe["high"].to_numpy(dtype="float64"),
            low=dataframe["low"].to_numpy(dtype="float64"),
            close=dataframe["close"].to_numpy(dtype="float64"),
            score=dataframe["score_technical"].to_numpy(dtype="float64"),
            atr_pct=dataframe["atr_pct"].to_numpy(dtype="float64"),
            ai=dataframe["score_ai"].to_numpy(dtype="float64"),
            ai_lo=dataframe["ai_lo"].to_numpy(dtype="float64"),
            ai_hi=dataframe["ai_hi"].to_numpy(dtype="float64"),
            ai_abstain=dataframe["ai_abstain"].to_numpy(dtype="int64"),
            theme=dataframe["score_theme"].to_numpy(dtype="float64"),
            sentiment=dataframe["score_sentiment"].to_numpy(dtype="float64"),
            trend_score=dataframe["score_trend"].to_numpy(dtype="float64"),
            trend_daily=dataframe["trend_daily"].to_numpy(dtype="float64"),
            vol_forecast=dataframe["vol_forecast"].to_numpy(dtype="float64"),
            data_ok=dataframe["data_ok"].to_numpy(dtype=bool),
            regime_id=dataframe["regime_id"].to_numpy(dtype="int64"),
            regime_conf=dataframe["regime_confidence"].to_numpy(dtype="float64"),
            regime_probs=dataframe[list(self._prob_columns)].to_numpy(dtype="float64"),
            changepoint=dataframe["changepoint_prob"].to_numpy(dtype="float64"),
            pyr={c: dataframe[c].to_numpy(dtype="float64") for c in dataframe.columns
                 if c.startswith("&-pyr_a_") or c == "do_predict"}
            if "&-pyr_flat_increase" in dataframe else None,
            trend=feats["trend"].to_numpy(), vol=feats["vol"].to_numpy(),
            drawdown=feats["drawdown"].to_numpy(),
        )
        self._add_guard_columns(dataframe, dates)
        self._add_decision_columns(dataframe, dates, pair)
        return dataframe

    def volatility_forecast(self, dataframe: pd.DataFrame) -> np.ndarray:
        """Annualised volatility forecast per candle: the FreqAI model's volatility head
        (``&-s_vol``, the predicted standard deviation of returns per candle over its label
        horizon) where it predicts (``do_predict == 1``), else the causal EWMA estimate."""
        ewma = ewma_volatility(dataframe["close"], self.timeframe, pd.Timedelta(
            parse_duration(self.learning.sizing.vol_halflife))).to_numpy()
        if "&-s_vol" not in dataframe or "do_predict" not in dataframe:
            return ewma
        per_year = 365.0 * 1440.0 / minutes_of(self.timeframe)
        model = dataframe["&-s_vol"].to_numpy(dtype="float64") * math.sqrt(per_year)
        ok = (dataframe["do_predict"].to_numpy() == 1) & np.isfinite(model) & (model > 0)
        return np.where(ok, model, ewma)

    def timeframe_to_td(self) -> timedelta:
        from freqtrade.exchange import timeframe_to_minutes

        return timedelta(minutes=timeframe_to_minutes(self.timeframe))

    def populate_entry_trend(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        # A candidate only: a candle where some learner could pass its threshold, whatever it
        # has learned (Brain.could_take), and not in CRISIS when that means cash. The learned
        # decision is taken per entry, in custom_stake_amount, and charted as taken or refused
        # (decision_taken / decision_refused).
        learning = self.learning
        fallback_possible = (learning.brain.fallback_drawdown < learning.risk.max_drawdown_pct
                             or learning.router.enabled)
        could = self.brain.could_take(
            {c: dataframe[f"score_{c}"].to_numpy() for c in ("technical", "ai", "theme",
                                                             "sentiment", "trend")},
            (dataframe["regime_id"] == 0).to_numpy(), self.entry_threshold.value,
            fallback_possible)
        cash = (learning.risk.crisis_cash_only and learning.regime.enabled) & \
            (dataframe["regime_id"] == CRISIS_ID)
        cp = learning.changepoint
        alarm = (dataframe["changepoint_prob"].fillna(0.0) > cp.block_above) if cp.enabled \
            else False
        if self.allocating:  # every decision time is a candidate; the targets decide
            could = self.decision_candles(dataframe["date"])
        cond = dataframe["data_ok"] & could & ~cash & ~alarm
        dataframe.loc[cond, ["enter_long", "enter_tag"]] = (1, "candidate")
        self.tag_live_candidate(dataframe, metadata["pair"])
        return dataframe

    def populate_exit_trend(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        # No exit_long: freqtrade skips custom_exit on a candle whose exit signal is set, so a
        # signal there would hide the guard's risk exits (and the profiles' exits) behind an
        # exit that confirm_trade_exit then refuses for SWING and RUNNER trades. The score's exit
        # is taken in custom_exit, after the guard (``score_exit``); this column only shows
        # where it would fire (charts).
        dataframe["exit_long"] = 0
        dataframe["score_exit"] = (dataframe["data_ok"] & (
            dataframe["score_technical"] < self.exit_threshold.value)).astype("int8")
        return dataframe

    # ------------------------------------------------------------------ equity and guard
    def _mark(self, pair: str, now: datetime) -> float | None:
        series = self._series.get(pair)
        if series is None:
            return None
        i = series.last_closed(now)
        while i >= 0 and not math.isfinite(series.close[i]):
            i -= 1
        return float(series.close[i]) if i >= 0 else None

    def starting_balance(self) -> float:
        """The capital the equity curve starts from.

        freqtrade's ``Wallets.get_starting_balance()`` is derived from the free balance and
        scaled by ``tradable_balance_ratio``, so it moves with fees and open trades; the limits
        need a fixed base: ``available_capital`` when set, else the dry-run/backtest wallet, else
        (live) freqtrade's estimate taken once at start-up and unscaled.
        """
        if self._start_balance is None:
            cfg = self.config
            value = cfg.get("available_capital")
            if value is None and (cfg.get("dry_run", True) or not self._live):
                wallet = cfg.get("dry_run_wallet", 1000)
                value = wallet.get(cfg["stake_currency"], 0) if isinstance(wallet, dict) \
                    else wallet
            if value is None and self.wallets:
                value = self.wallets.get_starting_balance() / cfg.get(
                    "tradable_balance_ratio", 1.0)
            self._start_balance = float(value or 0.0)
        return self._start_balance

    def _closed_profit(self) -> float:
        """Total profit of closed trades. In backtests freqtrade keeps closed trades in a list
        that only grows, so the sum is recomputed only when it has grown (summing it on every
        candle was the largest cost of the strategy's own code)."""
        if Trade.use_db:
            return float(Trade.get_total_closed_profit())
        closed = LocalTrade.bt_trades
        if len(closed) != self._closed_count:
            self._closed_sum = float(sum(t.close_profit_abs or 0.0 for t in closed))
            self._closed_count = len(closed)
        return self._closed_sum

    def compute_equity(self, now: datetime) -> float | None:
        """Starting balance + closed profit + realized and unrealized PnL of open trades."""
        try:
            equity = self.starting_balance() + self._closed_profit()
            for trade in Trade.get_open_trades():
                mark = self._mark(trade.pair, now)
                if mark is None:
                    mark = trade.open_rate
                equity += float(trade.realized_profit or 0.0)
                if trade.amount:
                    equity += float(trade.calc_profit(mark))
            return equity if math.isfinite(equity) and equity > 0 else None
        except Exception as err:
            self._log_once("equity-error", "AdvancedLearning: equity unavailable (%s); "
                           "entries are refused until it is", err)
            return None

    def _current_equity(self, now: datetime) -> float | None:
        if self._equity is None or self._equity_time is None or now - self._equity_time > \
                self.timeframe_to_td():
            self._equity, self._equity_time = self.compute_equity(now), now
        return self._equity

    def crisis(self, now: datetime) -> bool:
        """Whether the market was in the CRISIS regime at the last closed candle."""
        return self.learning.regime.enabled and self.regime_now(now) == CRISIS_ID

    def alarms(self, now: datetime) -> dict[str, Any]:
        """The market-wide alarms the guard acts on: CRISIS and the changepoint level."""
        return {"crisis": self.crisis(now), "changepoint": self.changepoint_level(now)}

    def _poll_control(self, now: datetime) -> None:
        """Apply new ``ftlearn halt/resume`` commands, save the guard, then acknowledge them
        (the CLI waits for the acknowledgement). One ``stat`` per loop when nothing is new."""
        try:
            st = os.stat(self.store.root / LOG_NAME)
        except OSError:
            return
        key = (st.st_size, st.st_mtime_ns)
        if key == self._control_key:
            return
        self._control_key = key
        try:
            acks = apply_commands(self.store, self.guard, now, self._equity)
        except Exception as err:  # the trading path never raises; the CLI will time out
            logger.error("AdvancedLearning: control commands could not be read: %s", err)
            return
        self._dirty = True
        for ack in acks:
            logger.warning("AdvancedLearning: %s command %s applied: %s (%s)", ack["command"],
                           ack["id"][:8], ", ".join(ack["events"]) or "no change",
                           ack["reason"] or "by user")
            for event in ack["events"]:
                self._notify(f"AdvancedLearning: {describe(event)}; reason: "
                             f"{ack['reason'] or 'by user'}")
        self._save_risk(now)
        try:
            acknowledge(self.store, acks, now)
        except Exception as err:
            logger.error("AdvancedLearning: could not acknowledge control commands: %s", err)

    def _notify(self, message: str) -> None:
        """A guard event for the user: logged, and in dry/live sent as a strategy message
        (Telegram and other handlers with ``allow_custom_messages``; FreqUI shows the log)."""
        logger.warning(message)
        if self._live and getattr(self, "dp", None) is not None:
            try:
                self.dp.send_msg(message, always_send=True)
            except Exception as err:  # a message never stops trading
                self._log_once("send-msg", "AdvancedLearning: could not send a message: %s", err)

    def _refuse_forced(self, pair: str, entry_tag: str | None, why: str) -> None:
        """freqtrade answers a refused /forceenter with "Failed to enter position"; say why."""
        if entry_tag == "force_entry":
            self._notify(f"AdvancedLearning: forced entry on {pair} refused: {why}")

    def bot_loop_start(self, current_time: datetime, **kwargs: Any) -> None:
        if self._live:
            self._poll_control(current_time)
        else:
            # A backtest loops forward in time: a candle not after the last one seen means a
            # new run on this instance (the next hyperopt epoch).
            if self._run_pending or (self._last_loop is not None
                                     and current_time <= self._last_loop):
                self._new_run()
                self._run_pending = False
            self._last_loop = current_time
        equity = self.compute_equity(current_time)
        self._equity, self._equity_time = equity, current_time
        if equity is None:
            return
        before = (self.guard.state.day, self.guard.state.peak_equity)
        events = self.guard.observe(current_time, equity)
        for event in events:
            self._notify(f"AdvancedLearning risk limit hit: {describe(event)} at "
                         f"{current_time:%Y-%m-%d %H:%M} UTC, equity {equity:.2f}")
        if self._live:  # CRISIS on (also at start-up) and off
            crisis = self.crisis(current_time)
            if crisis != bool(self._crisis_was):
                cash = self.learning.risk.crisis_cash_only
                self._notify("AdvancedLearning: " + (
                    ("CRISIS regime: cash only, entries blocked, open positions exited" if cash
                     else "CRISIS regime (crisis_cash_only is off: trading on)") if crisis
                    else "CRISIS regime over: entries allowed again"))
            self._crisis_was = crisis
        self._record_guard(current_time, equity)
        self.shadow_step(current_time)
        if self._run_end is not None and current_time + self.timeframe_to_td() >= self._run_end:
            self._save_charts()  # the backtest's last candle (a webserver backtest never exits)
        if events or before[0] != self.guard.state.day or self._live:
            self._dirty = True  # live: the peak and last equity move every loop
        if self._live:
            # The guard's state every loop: `ftlearn status` reads it, and a halt or a limit
            # must show there within a loop (~5 s), not a minute later; it is a few KB. The
            # learned state (and agents) at most once a minute, and at once on a closed trade.
            if self._brain_dirty and (self._last_save is None or current_time -
                                      self._last_save >= timedelta(minutes=1)):
                self._save_brain(current_time)
                self._save_agents(current_time)
                self._last_save = current_time
            self._save_risk(current_time)
        elif self._dirty and events:
            # Backtests write on limit events and at exit only: a synced write per simulated
            # day cost seconds per backtest.
            self._save_state(now=current_time)

    # ------------------------------------------------------------------ entries
    def initial_stake_share(self) -> float:
        """Share of the position cap an initial entry takes, leaving room for the scale-ins."""
        p = self.learning.pyramiding
        return 1.0 / (1.0 + p.max_adds * p.add_fraction) if p.enabled else 1.0

    def custom_stake_amount(self, pair: str, current_time: datetime, current_rate: float,
                            proposed_stake: float, min_stake: float | None, max_stake: float,
                            leverage: float, entry_tag: str | None, side: str,
                            **kwargs: Any) -> float:
        equity = self._current_equity(current_time)
        if equity is None:
            self._refuse_forced(pair, entry_tag, "equity unknown")
            return 0.0
        if self.allocating:
            stake = self.allocation_stake(pair, current_time, equity, min_stake, max_stake)
            if not stake:
                self._refuse_forced(pair, entry_tag, "the allocator's target for the pair is "
                                    "below its minimum, or the guard refused it")
            return stake
        decision = self.decide_entry(pair, current_time, entry_tag)
        if decision is None or not decision.take:
            self._refuse_forced(pair, entry_tag, "no analysed candle for the pair yet")
            return 0.0
        learned = decision.mode in ("learned", "cautious")  # a learner sized it
        share = decision.stake_share if learned else 1.0
        room = self.guard.max_stake(equity) * self.initial_stake_share()
        allowance = room * share * self.vol_scale(pair, current_time)
        budget = self.risk_budget(pair, current_time)
        if budget is not None:
            if budget.factor <= 0:
                self._pending.pop(pair, None)
                self._refuse_forced(pair, entry_tag, f"risk budget: correlation "
                                    f"{budget.correlation:.2f} with {budget.with_pair}")
                return 0.0
            allowance *= budget.factor  # never above 1: a budget only lowers the stake
        desired = min(proposed_stake, allowance)
        if learned and self.agents is not None:
            params = self.size_with_agent(pair, current_time, equity, allowance,
                                          decision.learner, decision.scores, decision.policy)
            if params is not None:
                # counted, so a fallback on every entry shows (ftlearn stats, bench report)
                self.brain.count("sizing", "rule" if params["source"] == "rule" else "agent")
                desired = min(proposed_stake, params["stake"])
                self._pending_sizing[pair] = params
        verdict = self.guard.check_stake(current_time, equity, min(desired, room),
                                         min_stake=min_stake, **self.alarms(current_time))
        if not verdict:
            self._pending.pop(pair, None)
            self._refuse_forced(pair, entry_tag, ", ".join(map(describe, verdict.reasons)))
            self._log_once(f"refused-{current_time:%Y-%m-%d}-{verdict.reasons}",
                           "AdvancedLearning: entries refused on %s: %s", current_time.date(),
                           ", ".join(verdict.reasons), level=logging.INFO)
            return 0.0
        return min(verdict.amount, max_stake)

    def risk_budget(self, pair: str, now: datetime) -> Any:
        """The portfolio risk budget of an entry on ``pair`` (``budget.enabled``): its stake
        factor from the pairwise correlation cap with the open trades' pairs
        (:func:`learning.brain.budget.correlation_budget`); None when off."""
        cfg = self.learning.budget
        if not cfg.enabled:
            return None
        from learning.brain.budget import correlation_budget

        window = candles(cfg.window, self.timeframe, minimum=3)
        rows = candles(cfg.min_history, self.timeframe, minimum=3)

        def returns(p: str) -> pd.Series | None:
            series = self._series.get(p)
            i = series.last_closed(now) if series else -1
            if i < 1:
                return None
            lo = max(0, i - window)
            c = series.close[lo:i + 1]
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.diff(np.log(c))
            return pd.Series(r, index=series.close_ns[lo + 1:i + 1])

        mine = returns(pair)
        open_pairs = sorted({t.pair for t in Trade.get_open_trades()} - {pair})
        others = {p: r for p in open_pairs if (r := returns(p)) is not None}
        if mine is None:
            return None
        frame = pd.concat({pair: mine, **others}, axis=1, join="inner")
        budget = correlation_budget(frame[pair].to_numpy(),
                                    {p: frame[p].to_numpy() for p in others}, cfg, rows)
        if budget.reason in ("too_little_history", "singular_covariance"):
            self._log_once(f"budget-{budget.reason}", "AdvancedLearning: risk budget: %s for "
                           "%s at %s; falling back to inverse-volatility sizing", budget.reason
                           .replace("_", " "), pair, now, level=logging.INFO)
        elif budget.reason in ("correlation_cap", "refused"):
            self.brain.count("budget", budget.reason)
        return budget

    def vol_scale(self, pair: str, now: datetime) -> float:
        """Volatility targeting for ``pair`` now (:func:`vol_target_scale`); the forecast is
        the EWMA of squared returns (``sizing.vol_halflife``)."""
        series = self._series.get(pair)
        i = series.last_closed(now) if series else -1
        forecast = float(series.vol_forecast[i]) if i >= 0 else float("nan")
        return vol_target_scale(self.learning.sizing.vol_target, forecast)

    def confirm_trade_entry(self, pair: str, order_type: str, amount: float, rate: float,
                            time_in_force: str, current_time: datetime, entry_tag: str | None,
                            side: str, **kwargs: Any) -> bool:
        if side != "long":
            return False
        equity = self._current_equity(current_time)
        blocks = self.guard.blocks(current_time, **self.alarms(current_time))
        if equity is None or blocks:
            logger.info("AdvancedLearning: entry on %s vetoed: %s", pair,
                        ", ".join(blocks) or "equity unknown")
            self._refuse_forced(pair, entry_tag, ", ".join(map(describe, blocks))
                                or "equity unknown")
            self._pending.pop(pair, None)
            return False
        pending = self._pending.get(pair)
        if pending is None or not pending["take"]:
            return False
        # Defence in depth: whatever path sized this order, it must fit under the cap.
        if amount * rate > self.guard.max_stake(equity) * (1 + 1e-9):
            self._refuse_forced(pair, entry_tag, f"stake {amount * rate:.2f} above the cap")
            logger.warning("AdvancedLearning: entry on %s vetoed: stake %.2f above the %.0f%% "
                           "cap of equity %.2f", pair, amount * rate,
                           100 * self.learning.risk.max_position_pct, equity)
            return False
        if self._live:  # kept on disk until the fill, so a crash meanwhile loses nothing
            self._waiting.confirm(pair, pending, self._pending_sizing.get(pair))
        return True

    # ------------------------------------------------------------------ open trades
    def adjust_trade_position(self, trade: Trade, current_time: datetime, current_rate: float,
                              current_profit: float, min_stake: float | None, max_stake: float,
                              current_entry_rate: float, current_exit_rate: float,
                              current_entry_profit: float, current_exit_profit: float,
                              **kwargs: Any) -> float | tuple[float, str] | None:
        if trade.has_open_orders or not self.position_adjustment_enable:
            return None
        if trade.id not in self._trim_to:  # once per trade (and after a restart)
            self._trim_to[trade.id] = trade.get_custom_data("trim_to")
        trim_to = self._trim_to[trade.id]
        if trim_to is not None:
            excess = trade.stake_amount - trim_to
            if excess > trim_to * 1e-6 and self._exit_possible(trade, excess, current_rate):
                return -excess, "over_cap"
            # Trimmed, or within what one exit can still remove (less than one lot, or less
            # than the exchange's minimum order): later adds are the guard's again.
            self._trim_to[trade.id] = None
            trade.set_custom_data("trim_to", None)
        p = self.learning.pyramiding
        alarms = self.alarms(current_time)
        if self.guard.exit_reason(current_time, **alarms):
            return None  # custom_exit closes the whole trade
        cut = self.changepoint_cut(trade, alarms["changepoint"], current_rate)
        if cut is not None:
            return cut
        if self.allocating:
            return self.allocation_adjust(trade, current_time, current_rate,
                                          self._current_equity(current_time), min_stake,
                                          max_stake)
        rl = self.rl_adjustment(trade, current_time, current_profit, min_stake, max_stake,
                                held=self.held_value(trade, current_rate))
        if rl is not NOT_RL:
            return rl
        if trade.nr_of_successful_exits == 0 and current_profit >= p.trim_profit:
            return -trade.stake_amount * p.trim_fraction, "trim"
        if (trade.nr_of_successful_entries > p.max_adds or current_profit < p.add_min_profit
                or trade.nr_of_successful_exits > 0):
            return None
        if p.add_requires_signal:
            series = self._series.get(trade.pair)
            i = series.last_closed(current_time) if series else -1
            if i < 0 or not series.score[i] > self.entry_threshold.value:
                return None
        equity = self._current_equity(current_time)
        if equity is None:
            return None
        first_stake = trade.select_filled_orders(trade.entry_side)[0].stake_amount \
            if trade.nr_of_successful_entries else trade.stake_amount
        verdict = self.guard.check_stake(current_time, equity, first_stake * p.add_fraction,
                                         held=self.held_value(trade, current_rate),
                                         min_stake=min_stake, **self.alarms(current_time))
        if not verdict:
            return None
        return min(verdict.amount, max_stake), "add"

    def changepoint_cut(self, trade: Trade, level: int, rate: float) -> tuple[float, str] | None:
        """A changepoint alarm keeps ``changepoint.stake_factor`` of an open position: one trim
        per trade and alarm (a candle without an alarm ends it)."""
        if level < 1:
            self._cp_trimmed.discard(trade.id)
            return None
        keep = self.learning.changepoint.stake_factor
        if trade.id in self._cp_trimmed or keep >= 1.0:
            return None
        self._cp_trimmed.add(trade.id)
        excess = trade.stake_amount * (1.0 - keep)
        if excess <= 0 or not self._exit_possible(trade, excess, rate):
            return None
        return -excess, "changepoint_trim"

    @staticmethod
    def held_value(trade: Trade, rate: float) -> float:
        """What an open trade counts for against the cap when it grows: the larger of its cost
        (stake) and its market value at ``rate`` (a winning trade is worth more than it cost)."""
        return max(float(trade.stake_amount), float(trade.amount) * float(rate))

    def _exit_possible(self, trade: Trade, stake: float, rate: float) -> bool:
        """Whether freqtrade can sell ``stake`` of ``trade`` now: the amount, rounded down to the
        pair's lot as freqtrade rounds it, is not zero and its value is at least the exchange's
        minimum order (freqtrade refuses smaller exits, every loop, with a log line)."""
        from freqtrade.exchange import amount_to_contract_precision

        if not (trade.stake_amount and trade.amount and math.isfinite(rate) and rate > 0):
            return False
        amount = amount_to_contract_precision(stake * trade.amount / trade.stake_amount,
                                              trade.amount_precision, trade.precision_mode,
                                              trade.contract_size)
        if amount <= 0:
            return False
        try:
            min_cost = ((self.dp.market(trade.pair) or {}).get("limits") or {}).get(
                "cost", {}).get("min")
        except Exception:  # no market information here (e.g. a test double): lot check only
            min_cost = None
        return not (min_cost and amount * rate < min_cost)

    def custom_exit(self, pair: str, trade: Trade, current_time: datetime, current_rate: float,
                    current_profit: float, **kwargs: Any) -> str | None:
        if self.allocating:
            return self.guard.exit_reason(current_time, **self.alarms(current_time)) or \
                self.allocation_exit(trade, current_time)
        return self.guard.exit_reason(current_time, **self.alarms(current_time)) or \
            self.agent_exit(trade, current_time, current_profit) or \
            self.rl_exit(trade, current_time, current_profit) or \
            self.profile_exit(trade, current_time, current_profit) or \
            self.score_exit(trade, current_time)

    def score_exit(self, trade: Trade, now: datetime) -> str | None:
        """The score's exit: the technical score of the last closed candle below
        ``exit_threshold`` ends SCALP trades and trades without a profile (a short-term call;
        swings and trend runs exit by their profiles)."""
        series = self._series.get(trade.pair)
        i = series.last_closed(now) if series else -1
        if i < 0 or not series.data_ok[i] or not series.score[i] < self.exit_threshold.value:
            return None
        plan = self.plan_of(trade)
        return "score_exit" if plan is None or plan.profile == "SCALP" else None

    def plan_of(self, trade: Trade) -> ExitPlan | None:
        """The exit plan chosen at entry (exit profiles), None for trades without one."""
        if trade.id not in self._plans:
            raw = (trade.get_custom_data("decision") or {}).get("plan")
            try:
                self._plans[trade.id] = ExitPlan.from_dict(raw) if raw else None
            except (KeyError, TypeError, ValueError):
                self._plans[trade.id] = None
        return self._plans[trade.id]

    def profile_exit(self, trade: Trade, now: datetime, current_profit: float) -> str | None:
        """Take profit, longest hold and trend exit of the trade's exit profile (its stops are
        in ``custom_stoploss``). The agent's parameters, when it sized the trade, come first."""
        plan = self.plan_of(trade)
        if plan is None or self.params_of(trade):
            return None
        if current_profit >= plan.take_profit:
            return "profile_take_profit"
        if now - trade.open_date_utc >= plan.hold:
            return "profile_hold_limit"
        if plan.trend_exit:
            series = self._series.get(trade.pair)
            i = series.last_closed(now) if series else -1
            if i >= 0 and series.trend_daily[i] < 0:
                return "trend_exit"
        return None

    def custom_stoploss(self, pair: str, trade: Trade, current_time: datetime,
                        current_rate: float, current_profit: float, after_fill: bool,
                        **kwargs: Any) -> float | None:
        if self.allocating:
            return None  # the hard stoploss only: the allocator's targets decide the exits
        agent_stop = self.agent_stoploss(trade, current_profit)
        if agent_stop is not None:
            return agent_stop
        plan = self.plan_of(trade)
        if plan is not None:
            stop_price = trade.open_rate * (1.0 - plan.stop)
            if plan.trail > 0 and trade.max_rate:
                stop_price = max(stop_price, float(trade.max_rate) * (1.0 - plan.trail))
            return stoploss_from_absolute(stop_price, current_rate)
        series = self._series.get(pair)
        i = series.last_closed(current_time) if series else -1
        atr_pct = series.atr_pct[i] if i >= 0 else float("nan")
        if not math.isfinite(atr_pct):
            return None  # keep the current stop
        learner = self.learner_of(trade)
        patience = self.brain.meta.profile(learner).patience if learner in \
            self.brain.meta.learner_names else 1.0
        dist = min(max(self.stop_atr_mult.value * patience * atr_pct, self.stop_min.value),
                   -self.stoploss)
        return -dist

    def order_filled(self, pair: str, trade: Trade, order: Order, current_time: datetime,
                     **kwargs: Any) -> None:
        if order.ft_order_side == trade.entry_side:
            if trade.nr_of_successful_entries <= 1:
                waiting = self._waiting.take(trade.pair, trade.open_date_utc,
                                             self.timeframe_to_td() + timedelta(minutes=1))
                if waiting is not None and trade.pair not in self._pending:
                    # Decided before a restart: the order filled after it.
                    self._pending[trade.pair] = waiting["decision"]
                    if waiting.get("sizing") is not None:
                        self._pending_sizing[trade.pair] = waiting["sizing"]
                self.record_entry_fill(trade, current_time)
            else:
                self._check_add_fill(trade, current_time)
        else:
            self.record_exit_fill(trade, order, current_time)

    def _check_add_fill(self, trade: Trade, now: datetime) -> None:
        """Mark a trade that an add pushed above the cap, so the next adjustment trims it back.

        freqtrade calls ``confirm_trade_entry`` only for a trade's first order: an add forced
        from FreqUI or the REST API (``/forceenter`` on an open trade) never meets the guard
        before it fills. This is the guard's answer afterwards.
        """
        equity = self._current_equity(now)
        cap = self.guard.max_stake(equity) if equity is not None else 0.0
        if cap > 0 and trade.stake_amount > cap * (1 + OVER_CAP_TOLERANCE):
            logger.warning("AdvancedLearning: %s trade %s holds a stake of %.2f after an add, "
                           "above the %.0f%% cap (%.2f of equity %.2f); trimming it back",
                           trade.pair, trade.id, trade.stake_amount,
                           100 * self.learning.risk.max_position_pct, cap, equity)
            trade.set_custom_data("trim_to", round(cap, 8))
            self._trim_to[trade.id] = round(cap, 8)

    # ------------------------------------------------------------------ charts
