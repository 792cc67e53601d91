"""The router's section of the ``advanced_learning`` config (its maths' parameters,
``RouterConfig``, live in :mod:`learning.router.maths`)."""

from __future__ import annotations

from dataclasses import dataclass

from learning.core.config import _f
from learning.router.maths import RouterConfig


@dataclass(frozen=True)
class RouterSettings:
    """Champion/challenger A/B tests between policies (:mod:`learning.router.router`)."""

    enabled: bool = _f(True, "Ask the router which registered policy decides each entry (on by "
                       "default: it improved the validation bench); false: the learned brain "
                       "decides every entry.")
    db: str = _f("", "SQLite file; empty: user_data/learning/policy_bandit.db (dry/live) or "
                 "the run's state folder (backtests, which never write the live database).")
    params: RouterConfig = _f(RouterConfig(), "Router parameters.")
