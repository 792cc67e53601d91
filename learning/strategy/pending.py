"""Entry decisions whose order has not filled yet, kept in the state folder (dry/live).

The decision behind an entry (regime, learner, weights, scores; the Tier 3 agent's parameters)
reaches the trade only when its order fills (``order_filled``). Limit orders can wait, and a bot
that crashes meanwhile would close that trade "unattributed" and learn nothing from it. So each
decision the strategy confirms is written here before the order goes out, and a restarted bot
takes it back for the fill, if the trade was opened when the decision was taken.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from learning.core.store import StateStore

logger = logging.getLogger(__name__)

PENDING_NAME = "pending_entries"
PENDING_SCHEMA = 1
#: A decision older than this at start-up belongs to an order long gone (unfilled timeout).
MAX_AGE = timedelta(days=1)


class PendingEntries:
    """Confirmed entry decisions per pair, until their first order fills."""

    def __init__(self, store: StateStore, persist: bool) -> None:
        self._store, self._persist = store, persist
        self._items: dict[str, dict[str, Any]] = {}

    def load(self, now: datetime) -> int:
        """Take back what a previous run left; returns how many decisions are waiting."""
        data = self._store.load_json(PENDING_NAME, schema=PENDING_SCHEMA) or {}
        keep = {}
        for pair, item in (data.items() if isinstance(data, dict) else ()):
            try:
                when = pd.Timestamp(item["decision"]["time"])
            except (KeyError, TypeError, ValueError):
                continue
            if pd.Timestamp(now) - when <= MAX_AGE:
                keep[pair] = item
        self._items = keep
        if keep:
            logger.info("AdvancedLearning: %d entry decision(s) waiting for their fill restored "
                        "(%s)", len(keep), ", ".join(sorted(keep)))
        return len(keep)

    def confirm(self, pair: str, decision: dict[str, Any] | None,
                sizing: dict[str, Any] | None) -> None:
        """Remember the decision of an order about to be placed (written at once)."""
        if decision is None:
            return
        self._items[pair] = {"decision": decision, "sizing": sizing}
        self._save()

    def take(self, pair: str, opened: datetime, window: timedelta) -> dict[str, Any] | None:
        """The waiting decision of ``pair`` if it was taken within ``window`` of the trade's
        opening (else it belongs to another order and is dropped); removes it."""
        item = self._items.pop(pair, None)
        if item is None:
            return None
        self._save()
        when = pd.Timestamp(item["decision"]["time"])
        if abs(pd.Timestamp(opened) - when) > window:
            logger.info("AdvancedLearning: the waiting %s decision of %s does not match the trade "
                        "opened at %s; not used", pair, when, opened)
            return None
        return item

    def discard(self, pair: str) -> None:
        if self._items.pop(pair, None) is not None:
            self._save()

    def _save(self) -> None:
        if not self._persist:
            return
        try:
            self._store.save_json(PENDING_NAME, self._items, schema=PENDING_SCHEMA)
        except Exception as err:  # never break trading on a failed write; say so loudly
            logger.error("AdvancedLearning: could not save waiting entry decisions: %s", err)
