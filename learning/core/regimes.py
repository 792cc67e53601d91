"""The market regimes' names: a vocabulary shared by the detector (:mod:`learning.brain.regime`),
the synthetic market's true labels (:mod:`learning.data.synth`), the agents and the charts."""

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


#: The five named regimes, in the order of the probability columns.
REGIMES: tuple[Regime, ...] = (Regime.BULL_MOMENTUM, Regime.BEAR_DEFENSIVE, Regime.CHOPPY,
                               Regime.CRISIS, Regime.THEME_DRIVEN)
#: Small integer per regime for charts (UNKNOWN is 0).
REGIME_IDS: dict[Regime, int] = {Regime.UNKNOWN: 0, **{r: i + 1 for i, r in enumerate(REGIMES)}}
PROB_COLUMNS: tuple[str, ...] = tuple(f"regime_prob_{r.value}" for r in REGIMES)
