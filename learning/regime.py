"""Tier 2: market regime detection (see issue 3). The enum is shared with the synthetic market."""

from __future__ import annotations

from enum import Enum


class Regime(str, Enum):
    """Named market regimes. UNKNOWN while there is too little history to say."""

    BULL_MOMENTUM = "BULL_MOMENTUM"
    BEAR_DEFENSIVE = "BEAR_DEFENSIVE"
    CHOPPY = "CHOPPY"
    CRISIS = "CRISIS"
    THEME_DRIVEN = "THEME_DRIVEN"
    UNKNOWN = "UNKNOWN"
