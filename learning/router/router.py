"""Policy registry and Thompson-sampling traffic router for champion/challenger A/B tests.

Model versions (rule sets, supervised models, PPO agents, meta-learners) are registered as
*policies* in one SQLite file, ``user_data/learning/policy_bandit.db`` (see
:mod:`learning.router.registry` for the storage and concurrency rules). At each entry the strategy
asks
:meth:`Router.select` which policy decides the trade, tags the trade with that name, and reports
the result with :meth:`Router.record_outcome` when the trade closes.

The rules
---------
1. **Posterior.** Each policy's closed trades give a posterior over its quality:
   ``beta`` (default): the win probability, ``Beta(prior_wins + wins, prior_losses + losses)``,
   a win being ``profit_ratio > 0`` (freqtrade's ratio is net of fees);
   ``normal``: the mean trade return (``profit_ratio``) under a Normal likelihood with unknown
   variance and a conjugate Normal-Inverse-Gamma prior (``normal_prior_*``), whose marginal for
   the mean is a Student t.
2. **Champion.** Exactly one active policy is the champion: the first one registered, later the
   winner of a promotion (rule 6). Retiring the champion by hand hands the title to the active
   policy with the best posterior mean, preferring those past their warm-up.
3. **Warm-up floor.** A challenger with fewer than ``floor_trades`` outcomes is in warm-up and
   gets exactly ``new_policy_floor`` of the entries (10 %), whatever its early results, so a new
   model neither starves nor takes over on a lucky streak. Several warm-up policies get the
   floor each, scaled down together so that they never exceed ``max_warmup_share``.
4. **Thompson sampling.** The rest of the traffic goes to the champion and the graduated
   challengers in proportion to each one's posterior probability of being the best of them,
   estimated from ``mc_draws`` Monte Carlo draws (probability matching: the same distribution as
   drawing every posterior once per entry and taking the best, but fixed between rebalances so
   the recorded allocation is exactly what the traffic got).
5. **Rebalancing.** The allocation is recomputed and stored as a snapshot (share, P(best), trades
   and posterior mean per policy) once ``rebalance_every_trades`` outcomes have arrived since the
   last snapshot, and whenever the set of active policies or the champion has changed. ``select``
   does it on the next entry, under the write lock, so two processes never rebalance twice. A
   warm-up floor therefore lifts at the first rebalance after the policy's ``floor_trades``-th
   outcome.
6. **Promotion.** At each rebalance every challenger with at least ``min_trades_for_retirement``
   outcomes, against a champion with as many, is compared with the champion; if the best of them
   has P(challenger better than champion) >= ``retire_probability`` (Monte Carlo), the champion
   is retired (reason stored) and the challenger becomes champion. The test is repeated at every
   rebalance, so the real false-promotion rate exceeds ``1 - retire_probability`` (simulated
   with the defaults: two identical policies, 2000 trades, one is promoted in about 18 % of
   runs; a 0.60 win-rate champion is wrongly replaced by a 0.55 one in about 1 %).
7. **Outcomes** are idempotent per (policy, trade_id): a replayed callback is ignored. A retired
   policy's late outcomes are still stored. An outcome that cannot be written (database locked)
   is kept in memory and retried with the next one.
8. **Never on the trading path.** ``select`` and ``record_outcome`` do not raise: on a database
   error they log once and ``select`` returns the last champion seen (or ``fallback`` when none
   was ever seen), so the bot keeps trading. Registration, retirement and the CLI fail fast with
   a :class:`~learning.core.errors.LearningError`.

Randomness comes only from the ``numpy.random.Generator`` passed in, and time only from ``now``.

Strategy use (a sketch)::

    router = Router(default_db_path(config["user_data_dir"]), RouterConfig(), fallback="rule")
    name = router.select(self._rng, current_time)          # at entry; tag the trade with it
    router.record_outcome(name, trade.id, trade.close_profit, trade.close_profit_abs,
                          current_time)                     # when it closes; replays are ignored
    router.register(f"freqai-{stamp}", "supervised", model_path, now, exist_ok=True)  # retrain
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import numpy as np

from learning.core.errors import LearningError
from learning.router.maths import (  # noqa: F401  (re-exported: the public API)
    DB_RELPATH,
    Allocation,
    Promotion,
    RebalancePlan,
    RouterConfig,
    _draw,
    _nig,
    _posterior_mean,
    _successor,
    allocate,
    default_db_path,
    find_promotion,
    plan_rebalance,
    posterior_draws,
    posterior_summary,
)
from learning.router.registry import (
    AllocationRow,
    OutcomeTotals,
    PolicyDB,
    PolicyInfo,
    PolicyStoreError,
    PolicyStoreLockedError,
    Snapshot,
    fetch_policies,
    fetch_snapshots,
    fetch_totals,
    insert_outcome,
    insert_policy,
    insert_snapshot,
    outcome_seq,
    retire_policy,
    set_champion,
)

logger = logging.getLogger(__name__)

POLICY_TYPES = ("rule", "supervised", "ppo", "meta")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,127}$")
_MAX_PENDING = 10_000

__all__ = [
    "POLICY_TYPES", "Allocation", "CheckpointError", "PolicyExistsError", "PolicyInfo",
    "PolicyReport", "PolicyStoreError", "PolicyStoreLockedError", "Promotion", "RebalancePlan",
    "Recorded", "Router", "RouterConfig", "UnknownPolicyError", "allocate", "default_db_path",
    "find_promotion", "plan_rebalance", "posterior_draws", "posterior_summary"]


class UnknownPolicyError(LearningError):
    """A policy name that is not in the registry (the message lists the known ones)."""


class PolicyExistsError(LearningError):
    """A policy with this name is already registered (names are permanent, even when retired)."""


class CheckpointError(LearningError):
    """A policy's checkpoint path is missing or does not exist."""


# ----------------------------------------------------------------------------------------------
# The router


class Recorded(StrEnum):
    """What :meth:`Router.record_outcome` did with an outcome."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # (policy, trade_id) was stored before: a replayed callback
    PENDING = "pending"  # the database was unavailable; kept in memory and retried later
    REJECTED = "rejected"  # unknown policy or a non-finite profit; logged and dropped


@dataclass(frozen=True)
class PolicyReport:
    """One policy's figures for ``ftlearn policy stats``."""

    name: str
    type: str
    status: str
    champion: bool
    warmup: bool
    checkpoint: str | None
    created: datetime
    retired_reason: str | None
    trades: int
    wins: int
    mean_ratio: float
    profit_abs: float
    posterior: str
    posterior_mean: float
    posterior_low: float  # 95 % equal-tailed interval
    posterior_high: float
    p_best: float | None  # among active policies, now (None when retired)
    share: float | None  # the traffic share the rules give it now

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["created"] = self.created.isoformat()
        return out


@dataclass(frozen=True)
class RebalanceResult:
    allocation: Allocation | None  # None when no policy is active
    promotion: Promotion | None
    taken: bool  # False when it was not due (another process had just done it)


class Router:
    """Registry and traffic router on one policy database (the rules: module docstring).

    Holds no ``sqlite3`` object: each call opens and closes its own connection, so one Router may
    be used from several threads, and several processes may share the file. Opening checks and
    migrates the file and raises :class:`PolicyStoreError` when it is unusable.
    """

    def __init__(self, db_path: Path | str, config: RouterConfig | None = None, *,
                 fallback: str = "rule", create: bool = True) -> None:
        self.config = config or RouterConfig()
        self.fallback = fallback  # what select() returns when no champion was ever seen
        self.db = PolicyDB(db_path, self.config.busy_timeout_s)
        self.db.init(create=create)
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], tuple[float, float, datetime]] = {}
        self._warned: set[str] = set()
        self._last_champion: str | None = None
        self.policies()

    def __getstate__(self) -> dict:
        # Picklable (e.g. a strategy sent to hyperopt workers): no lock, no queued outcomes.
        state = self.__dict__.copy()
        del state["_lock"]
        state["_pending"], state["_warned"] = {}, set()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- registry ------------------------------------------------------------------------------

    @property
    def last_champion(self) -> str | None:
        """The champion at the last successful read: what select() falls back to."""
        return self._last_champion

    @property
    def pending(self) -> int:
        """Outcomes waiting in memory for the database to accept them."""
        return len(self._pending)

    def policies(self) -> list[PolicyInfo]:
        with self.db.read() as conn:
            policies = fetch_policies(conn)
        self._remember(policies)
        return policies

    def champion(self) -> str | None:
        return next((p.name for p in self.policies() if p.champion), None)

    def get(self, name: str) -> PolicyInfo:
        return _find(self.policies(), name)

    def register(self, name: str, type: str, checkpoint: Path | str | None,  # noqa: A002
                 now: datetime, *, exist_ok: bool = False) -> PolicyInfo:
        """Add an active policy; the first active one becomes champion, later ones challengers.

        ``exist_ok`` returns the existing entry when one with the same name, type and checkpoint
        is registered (a FreqAI retrain re-registering its version); it stays retired if it was.
        """
        if not _NAME_RE.match(name):
            raise LearningError(f"bad policy name {name!r}: use 1-128 letters, digits and "
                                "_ . : @ + = - (starting with a letter or digit)")
        if type not in POLICY_TYPES:
            raise LearningError(f"bad policy type {type!r}; one of {', '.join(POLICY_TYPES)}")
        path = None
        if checkpoint not in (None, ""):
            resolved = Path(checkpoint).expanduser().resolve()
            if not resolved.exists():
                raise CheckpointError(f"checkpoint {resolved} does not exist; policy {name!r} "
                                      "not registered")
            path = str(resolved)
        elif type != "rule":
            raise CheckpointError(f"policy {name!r} of type {type!r} needs a checkpoint path "
                                  "(only type 'rule' may have none)")
        with self.db.write() as conn:
            policies = fetch_policies(conn)
            old = next((p for p in policies if p.name == name), None)
            if old is not None:
                if exist_ok and (old.type, old.checkpoint) == (type, path):
                    return old
                raise PolicyExistsError(
                    f"a policy named {name!r} is already registered ({old.status}, type "
                    f"{old.type}, checkpoint {old.checkpoint}); choose another name")
            has_champion = any(p.champion for p in policies)
            insert_policy(conn, name, type, path, now, champion=not has_champion)
            policies = fetch_policies(conn)
        self._remember(policies)
        info = _find(policies, name)
        logger.info("registered policy %s (%s) as %s", name, type,
                    "champion" if info.champion else "challenger")
        return info

    def retire(self, name: str, now: datetime, reason: str = "manual") -> PolicyInfo:
        """Retire a policy by hand; retiring the champion promotes a successor (rule 2)."""
        with self.db.write() as conn:
            policies = fetch_policies(conn)
            info = _find(policies, name)
            if info.status == "retired":
                raise LearningError(f"policy {name!r} is already retired (since "
                                    f"{info.retired_at:%Y-%m-%d %H:%M} UTC)")
            retire_policy(conn, info.id, now, reason)
            if info.champion:
                rest = [p for p in policies if p.status == "active" and p.id != info.id]
                heir = _successor(rest, fetch_totals(conn), self.config)
                set_champion(conn, heir.id if heir else None)
                logger.info("retired champion %s; new champion %s", name,
                            heir.name if heir else None)
            policies = fetch_policies(conn)
        self._remember(policies)
        return _find(policies, name)

    def history(self, limit: int = 20) -> list[Snapshot]:
        """The latest allocation snapshots, newest first."""
        with self.db.read() as conn:
            return fetch_snapshots(conn, limit)

    # -- trading path --------------------------------------------------------------------------

    def select(self, rng: np.random.Generator, now: datetime, *, rebalance: bool = True) -> str:
        """The policy that decides the next entry (rules 3-5). Never raises (rule 8).

        ``rebalance=False`` draws without storing a snapshot or promoting (the CLI's dry run).
        """
        try:
            with self.db.read() as conn:
                policies = fetch_policies(conn)
                seq = outcome_seq(conn)
                snaps = fetch_snapshots(conn, 1)
            self._remember(policies)
            active = [p for p in policies if p.status == "active"]
            if not active:
                self._warn_once("empty", "the policy registry has no active policy; entries "
                                f"use {self._last_champion or self.fallback!r}")
                return self._last_champion or self.fallback
            snap = snaps[0] if snaps else None
            alloc = None
            if not self._due(snap, active, seq):
                alloc = _from_snapshot(snap, policies)
            elif rebalance:
                try:
                    alloc = self.rebalance(rng, now, reason="schedule", force=False).allocation
                except PolicyStoreLockedError as err:
                    logger.debug("rebalance postponed: %s", err)
            if alloc is None:  # not stored (dry run or locked): the same rules, in memory
                alloc = self._live_allocation(rng)[0]
            choice = _draw(alloc.names, alloc.share, rng)
            self._recovered()
            return choice
        except Exception as err:  # noqa: BLE001 - rule 8: the bot keeps trading on any failure
            return self._fail("select", err)

    def record_outcome(self, policy: str, trade_id: str | int, profit_ratio: float,
                       profit_abs: float, now: datetime, weight: float = 1.0,
                       flush: bool = True) -> Recorded:
        """Store a closed trade's result (rule 7). Never raises. ``weight``: what it counts as
        (a shadow outcome a fraction of a trade); ``flush=False`` leaves it queued for the next
        :meth:`flush` (many shadow outcomes per candle, one write)."""
        try:
            ratio, pabs = float(profit_ratio), float(profit_abs)
            if not (math.isfinite(ratio) and math.isfinite(pabs)):
                logger.warning("outcome of trade %s (%s) dropped: profit %r / %r is not finite",
                               trade_id, policy, profit_ratio, profit_abs)
                return Recorded.REJECTED
            key = (str(policy), str(trade_id))
            with self._lock:
                if len(self._pending) >= _MAX_PENDING and key not in self._pending:
                    dropped = next(iter(self._pending))
                    del self._pending[dropped]
                    logger.error("policy outcome queue full; dropped trade %s", dropped)
                self._pending[key] = (ratio, pabs, now, float(weight))
            if not flush:
                return Recorded.PENDING
            return self.flush().get(key, Recorded.PENDING)
        except Exception as err:  # noqa: BLE001 - rule 8
            self._fail("record_outcome", err)
            return Recorded.PENDING

    def flush(self) -> dict[tuple[str, str], Recorded]:
        """Write the outcomes waiting in memory; returns what happened to each written one."""
        with self._lock:
            batch = dict(self._pending)
        if not batch:
            return {}
        try:
            results: dict[tuple[str, str], Recorded] = {}
            with self.db.write() as conn:
                policies = fetch_policies(conn)
                ids = {p.name: p.id for p in policies}
                for (name, tid), (ratio, pabs, at, weight) in batch.items():
                    if name not in ids:
                        logger.warning("outcome of trade %s dropped: unknown policy %r (known: "
                                       "%s)", tid, name, ", ".join(ids) or "none")
                        results[(name, tid)] = Recorded.REJECTED
                        continue
                    stored = insert_outcome(conn, ids[name], tid, ratio, pabs, at, weight)
                    results[(name, tid)] = Recorded.STORED if stored else Recorded.DUPLICATE
        except PolicyStoreError as err:
            self._fail("record_outcome", err)
            return {}
        with self._lock:
            for key in results:
                if self._pending.get(key) == batch[key]:
                    del self._pending[key]
        self._remember(policies)
        self._recovered()
        return results

    # -- allocation ----------------------------------------------------------------------------

    def rebalance(self, rng: np.random.Generator, now: datetime, *, reason: str = "manual",
                  force: bool = True) -> RebalanceResult:
        """Promote if a challenger has won (rule 6), then store a new allocation (rule 5)."""
        cfg = self.config
        with self.db.write() as conn:
            policies = fetch_policies(conn)
            active = [p for p in policies if p.status == "active"]
            seq = outcome_seq(conn)
            snaps = fetch_snapshots(conn, 1)
            if not active:
                return RebalanceResult(None, None, False)
            if not force and not self._due(snaps[0] if snaps else None, active, seq):
                return RebalanceResult(_from_snapshot(snaps[0], policies), None, False)
            totals = fetch_totals(conn)
            champ = next((p for p in active if p.champion), None)
            if champ is None:  # e.g. a file edited by hand: appoint one (rule 2)
                champ = _successor(active, totals, cfg)
                set_champion(conn, champ.id)
            tots = [totals.get(p.id, OutcomeTotals()) for p in active]
            plan = plan_rebalance([p.name for p in active], tots, champ.name, cfg, rng)
            promotion, alloc = plan.promotion, plan.allocation
            if promotion is not None:
                retire_policy(conn, champ.id, now, promotion.reason())
                i = active.index(champ)
                del active[i], tots[i]
                champ = next(p for p in active if p.name == promotion.champion)
                set_champion(conn, champ.id)
            rows = [AllocationRow(p.id, s, pb, t.trades, _posterior_mean(t, cfg))
                    for p, s, pb, t in zip(active, alloc.share, alloc.p_best, tots, strict=True)]
            insert_snapshot(conn, now, seq, reason, champ.id, rows)
        self._last_champion = champ.name
        if promotion is not None:
            logger.warning("policy %s promoted to champion; %s retired (%s)",
                           promotion.champion, promotion.retired, promotion.reason())
        return RebalanceResult(alloc, promotion, True)

    def report(self, rng: np.random.Generator) -> list[PolicyReport]:
        """Every policy's trades, profit, posterior and current share (rng: for P(best))."""
        alloc, policies, totals = self._live_allocation(rng)
        shares = dict(zip(alloc.names, zip(alloc.share, alloc.p_best, strict=True), strict=True)
                      ) if alloc else {}
        out = []
        for p in policies:
            t = totals.get(p.id, OutcomeTotals())
            mean, lo, hi = posterior_summary(t, self.config)
            share, p_best = shares.get(p.name, (None, None))
            out.append(PolicyReport(
                p.name, p.type, p.status, p.champion,
                p.status == "active" and not p.champion and t.trades < self.config.floor_trades,
                p.checkpoint, p.created, p.retired_reason, t.trades, t.wins,
                t.sum_ratio / t.trades if t.trades else 0.0, t.sum_abs, self.config.posterior,
                mean, lo, hi, p_best, share))
        return out

    # -- internals -----------------------------------------------------------------------------

    def _live_allocation(self, rng: np.random.Generator
                         ) -> tuple[Allocation | None, list[PolicyInfo], dict]:
        with self.db.read() as conn:
            policies = fetch_policies(conn)
            totals = fetch_totals(conn)
        active = [p for p in policies if p.status == "active"]
        if not active:
            return None, policies, totals
        champ = next((p for p in active if p.champion), None) or _successor(
            active, totals, self.config)
        tots = [totals.get(p.id, OutcomeTotals()) for p in active]
        draws = posterior_draws(tots, self.config, rng, self.config.mc_draws)
        return (allocate([p.name for p in active], tots, champ.name, self.config, draws),
                policies, totals)

    def _due(self, snap: Snapshot | None, active: list[PolicyInfo], seq: int) -> bool:
        if snap is None:
            return True
        champ = next((p.id for p in active if p.champion), None)
        return ({r.policy_id for r in snap.rows} != {p.id for p in active}
                or snap.champion_id != champ
                or seq - snap.outcome_seq >= self.config.rebalance_every_trades)

    def _remember(self, policies: list[PolicyInfo]) -> None:
        champ = next((p.name for p in policies if p.champion), None)
        if champ is not None:
            self._last_champion = champ

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    def _fail(self, where: str, err: Exception) -> str:
        fallback = self._last_champion or self.fallback
        if "db" in self._warned:
            logger.debug("policy router: %s failed again: %s", where, err)
        else:
            self._warned.add("db")
            logger.warning("policy router: %s failed (%s: %s); entries go to %r and outcomes wait "
                           "in memory until the database works again (logged once)",
                           where, type(err).__name__, err, fallback)
        return fallback

    def _recovered(self) -> None:
        if self._warned:
            if "db" in self._warned:
                logger.info("policy router: the database works again")
            self._warned.clear()


def _find(policies: Sequence[PolicyInfo], name: str) -> PolicyInfo:
    for p in policies:
        if p.name == name:
            return p
    known = ", ".join(p.name for p in policies) or "none registered"
    raise UnknownPolicyError(f"unknown policy {name!r}; known policies: {known}")


def _from_snapshot(snap: Snapshot, policies: Sequence[PolicyInfo]) -> Allocation:
    names = {p.id: p.name for p in policies}
    return Allocation(tuple(names[r.policy_id] for r in snap.rows),
                      tuple(r.share for r in snap.rows), tuple(r.p_best for r in snap.rows))
