"""SQLite layer of the policy registry; the rules that use it live in :mod:`learning.router.router`.

One file (``user_data/learning/policy_bandit.db``) is shared by the running bot and the CLI,
possibly several processes at once, so:

* the journal is WAL: readers never wait for the writer, and the writer never waits for readers;
* every connection is short-lived (opened per operation, closed afterwards), so no ``sqlite3``
  object ever crosses a thread or a ``fork``;
* every read-modify-write runs in ``BEGIN IMMEDIATE``: the write lock is taken before the first
  read, so two writers serialise instead of one failing its upgrade mid-transaction (in WAL a
  deferred transaction that tries to upgrade after another commit gets ``SQLITE_BUSY`` at once,
  without waiting for ``busy_timeout``);
* the schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` lists one function per
  version, applied in order inside a single write transaction. Old migrations are never edited:
  a change is a new function appended to the list.

Every ``sqlite3`` error is turned into :class:`PolicyStoreError` (or :class:`PolicyStoreLockedError`
when the lock could not be had within the busy timeout) naming the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from learning.core.errors import StateError


class PolicyStoreError(StateError):
    """The policy database cannot be used (corrupt, not a policy database, newer schema, I/O)."""


class PolicyStoreLockedError(PolicyStoreError):
    """Another process held the policy database's write lock for longer than the busy timeout."""


# ----------------------------------------------------------------------------------------------
# Schema and migrations


def _m1_registry(conn: sqlite3.Connection) -> None:
    """Version 1: the registry proper, policies and per-trade outcomes."""
    conn.execute("""
        CREATE TABLE policies (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            checkpoint TEXT,
            created TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active', 'retired')),
            champion INTEGER NOT NULL DEFAULT 0 CHECK (champion IN (0, 1)),
            retired_at TEXT
        )""")
    # At most one champion, enforced by the database rather than by every writer.
    conn.execute("CREATE UNIQUE INDEX one_champion ON policies (champion) WHERE champion = 1")
    conn.execute("""
        CREATE TABLE outcomes (
            id INTEGER PRIMARY KEY,
            policy_id INTEGER NOT NULL REFERENCES policies (id),
            trade_id TEXT NOT NULL,
            profit_ratio REAL NOT NULL,
            profit_abs REAL NOT NULL,
            closed_at TEXT NOT NULL,
            UNIQUE (policy_id, trade_id)
        )""")


def _m2_allocations(conn: sqlite3.Connection) -> None:
    """Version 2: allocation snapshots over time and the reason a policy was retired."""
    conn.execute("ALTER TABLE policies ADD COLUMN retired_reason TEXT")
    conn.execute("""
        CREATE TABLE snapshots (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            outcome_seq INTEGER NOT NULL,
            reason TEXT NOT NULL,
            champion_id INTEGER REFERENCES policies (id)
        )""")
    conn.execute("""
        CREATE TABLE allocations (
            snapshot_id INTEGER NOT NULL REFERENCES snapshots (id),
            policy_id INTEGER NOT NULL REFERENCES policies (id),
            share REAL NOT NULL,
            p_best REAL NOT NULL,
            trades INTEGER NOT NULL,
            posterior_mean REAL NOT NULL,
            PRIMARY KEY (snapshot_id, policy_id)
        )""")


def _m3_outcome_weights(conn: sqlite3.Connection) -> None:
    """Version 3: what an outcome counts as (1: a real trade; a shadow outcome a fraction)."""
    conn.execute("ALTER TABLE outcomes ADD COLUMN weight REAL NOT NULL DEFAULT 1.0")


#: Migration ``i`` brings the schema from version ``i`` to ``i + 1``.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _m1_registry, _m2_allocations, _m3_outcome_weights)
SCHEMA_VERSION = len(MIGRATIONS)


# ----------------------------------------------------------------------------------------------
# Rows


@dataclass(frozen=True)
class PolicyInfo:
    """One registered policy."""

    id: int
    name: str
    type: str
    checkpoint: str | None
    created: datetime
    status: str  # "active" | "retired"
    champion: bool
    retired_at: datetime | None
    retired_reason: str | None


@dataclass(frozen=True)
class OutcomeTotals:
    """Sufficient statistics of one policy's closed trades (a win is ``profit_ratio > 0``),
    each outcome weighted by what it counts as (real trades 1, shadow outcomes a fraction)."""

    trades: float = 0.0
    wins: float = 0.0
    sum_ratio: float = 0.0
    sum_ratio_sq: float = 0.0
    sum_abs: float = 0.0


@dataclass(frozen=True)
class AllocationRow:
    policy_id: int
    share: float
    p_best: float
    trades: int
    posterior_mean: float


@dataclass(frozen=True)
class Snapshot:
    """An allocation snapshot: what share of entries each active policy gets from ``at`` on."""

    id: int
    at: datetime
    outcome_seq: int  # the outcome count when it was taken (the rebalance schedule counts from it)
    reason: str
    champion_id: int | None
    rows: tuple[AllocationRow, ...]


def to_text(now: datetime) -> str:
    """A timestamp as stored: ISO 8601 in UTC (a naive ``now`` is taken to be UTC already)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(UTC).isoformat()


def _from_text(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# ----------------------------------------------------------------------------------------------
# The store


class PolicyDB:
    """Connections, transactions and queries on one policy database file."""

    def __init__(self, path: Path | str, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s

    def _error(self, err: sqlite3.Error) -> PolicyStoreError:
        text = str(err)
        if isinstance(err, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return PolicyStoreLockedError(
                f"policy database {self.path} is locked by another process "
                f"(waited {self.busy_timeout_s:g} s): {text}")
        return PolicyStoreError(
            f"policy database {self.path} cannot be used: {text}. If the file is corrupt, move "
            "it aside (the bot then starts a new registry) or restore a backup.")

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; every transaction is explicit below.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        # In WAL, NORMAL loses no committed transaction on a process crash, only on power loss.
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads; the queries inside see one consistent snapshot."""
        conn = None
        try:
            conn = self._connect()
            conn.execute("BEGIN")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise self._error(err) from err
        finally:
            if conn is not None:
                conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction, committed on success and rolled back on any error."""
        conn = None
        try:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite itself rolls back after some errors
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise self._error(err) from err
        finally:
            if conn is not None:
                conn.close()

    def init(self, create: bool = True) -> int:
        """Check the file, switch it to WAL and bring its schema up to date; returns the version.

        With ``create=False`` a missing file is an error instead of a new empty registry.
        """
        if not self.path.exists():
            if not create:
                raise PolicyStoreError(
                    f"no policy database at {self.path}; register a policy first "
                    "(ftlearn policy register NAME --type TYPE --path CHECKPOINT)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._connect()
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
            finally:
                conn.close()
        except sqlite3.Error as err:
            raise self._error(err) from err
        if version > SCHEMA_VERSION:
            raise PolicyStoreError(
                f"policy database {self.path} has schema version {version}, newer than this "
                f"version of the plugin understands ({SCHEMA_VERSION}); upgrade the plugin")
        if version < SCHEMA_VERSION:
            with self.write() as conn:
                # Re-read under the write lock: another process may have migrated meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                for migration in MIGRATIONS[version:]:
                    migration(conn)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            version = SCHEMA_VERSION
        return version


def read_policies(path: Path | str) -> list[PolicyInfo]:
    """The policies of the database at ``path``, read without writing anything: no migration,
    no journal-mode switch, no lock or WAL files created (backtests read the live registry).

    The file is copied into memory through SQLite's backup API and migrated there. With no
    ``-wal`` file beside it every committed page is in the file itself, which is then opened
    ``immutable`` (no locks, no side files); with one (a writer is active), read-only through
    the existing WAL so that committed transactions still in it are seen.
    """
    path = Path(path)
    if not path.is_file():
        raise PolicyStoreError(f"no policy database at {path}")
    mode = "mode=ro" if Path(f"{path}-wal").exists() else "immutable=1"
    try:
        src = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True)
        mem = sqlite3.connect(":memory:")
        try:
            src.backup(mem)
        finally:
            src.close()
        version = mem.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise PolicyStoreError(
                f"policy database {path} has schema version {version}, newer than this version "
                f"of the plugin understands ({SCHEMA_VERSION}); upgrade the plugin")
        for migration in MIGRATIONS[version:]:
            migration(mem)
        policies = fetch_policies(mem)
        mem.close()
        return policies
    except sqlite3.Error as err:
        raise PolicyDB(path)._error(err) from err


# ----------------------------------------------------------------------------------------------
# Queries (each takes an open connection, so callers group them into one transaction)

_POLICY_COLUMNS = ("id, name, type, checkpoint, created, status, champion, retired_at, "
                   "retired_reason")


def fetch_policies(conn: sqlite3.Connection) -> list[PolicyInfo]:
    """All policies, oldest first."""
    rows = conn.execute(f"SELECT {_POLICY_COLUMNS} FROM policies ORDER BY id").fetchall()
    return [PolicyInfo(id=r[0], name=r[1], type=r[2], checkpoint=r[3],
                       created=_from_text(r[4]), status=r[5], champion=bool(r[6]),
                       retired_at=_from_text(r[7]), retired_reason=r[8]) for r in rows]


def fetch_totals(conn: sqlite3.Connection) -> dict[int, OutcomeTotals]:
    """Outcome totals per policy id (policies without outcomes are absent)."""
    rows = conn.execute("""
        SELECT policy_id, SUM(weight), SUM(weight * (profit_ratio > 0)),
               SUM(weight * profit_ratio), SUM(weight * profit_ratio * profit_ratio),
               SUM(profit_abs)
        FROM outcomes GROUP BY policy_id""").fetchall()
    return {r[0]: OutcomeTotals(float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]))
            for r in rows}


def outcome_seq(conn: sqlite3.Connection) -> int:
    """The number of outcomes ever stored (rows are never deleted, so the largest rowid is it)."""
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM outcomes").fetchone()[0])


def insert_policy(conn: sqlite3.Connection, name: str, type_: str, checkpoint: str | None,
                  now: datetime, champion: bool) -> None:
    conn.execute(
        "INSERT INTO policies (name, type, checkpoint, created, status, champion) "
        "VALUES (?, ?, ?, ?, 'active', ?)", (name, type_, checkpoint, to_text(now), int(champion)))


def retire_policy(conn: sqlite3.Connection, policy_id: int, now: datetime, reason: str) -> None:
    conn.execute("UPDATE policies SET status = 'retired', champion = 0, retired_at = ?, "
                 "retired_reason = ? WHERE id = ?", (to_text(now), reason, policy_id))


def set_champion(conn: sqlite3.Connection, policy_id: int | None) -> None:
    # Clear first: the partial unique index would reject two champions even for an instant.
    conn.execute("UPDATE policies SET champion = 0 WHERE champion = 1")
    if policy_id is not None:
        conn.execute("UPDATE policies SET champion = 1 WHERE id = ?", (policy_id,))


def insert_outcome(conn: sqlite3.Connection, policy_id: int, trade_id: str, profit_ratio: float,
                   profit_abs: float, now: datetime, weight: float = 1.0) -> bool:
    """Store one outcome; False when (policy, trade_id) was already stored (a replay)."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO outcomes (policy_id, trade_id, profit_ratio, profit_abs, closed_at, "
        "weight) VALUES (?, ?, ?, ?, ?, ?)",
        (policy_id, trade_id, profit_ratio, profit_abs, to_text(now), weight))
    return cur.rowcount == 1


def insert_snapshot(conn: sqlite3.Connection, now: datetime, seq: int, reason: str,
                    champion_id: int | None, rows: list[AllocationRow]) -> int:
    cur = conn.execute(
        "INSERT INTO snapshots (at, outcome_seq, reason, champion_id) VALUES (?, ?, ?, ?)",
        (to_text(now), seq, reason, champion_id))
    snap_id = int(cur.lastrowid)
    conn.executemany(
        "INSERT INTO allocations (snapshot_id, policy_id, share, p_best, trades, posterior_mean) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(snap_id, r.policy_id, r.share, r.p_best, r.trades, r.posterior_mean) for r in rows])
    return snap_id


def fetch_snapshots(conn: sqlite3.Connection, limit: int = 1) -> list[Snapshot]:
    """The latest ``limit`` snapshots, newest first."""
    heads = conn.execute(
        "SELECT id, at, outcome_seq, reason, champion_id FROM snapshots ORDER BY id DESC LIMIT ?",
        (limit,)).fetchall()
    out = []
    for sid, at, seq, reason, champ in heads:
        rows = conn.execute(
            "SELECT policy_id, share, p_best, trades, posterior_mean FROM allocations "
            "WHERE snapshot_id = ? ORDER BY policy_id", (sid,)).fetchall()
        out.append(Snapshot(sid, _from_text(at), seq, reason, champ,
                            tuple(AllocationRow(*r) for r in rows)))
    return out
