"""freqtrade's ``FreqaiExampleStrategy`` template, long-only so it runs in spot markets."""

from freqtrade.templates.FreqaiExampleStrategy import FreqaiExampleStrategy


class FreqaiExampleSpot(FreqaiExampleStrategy):
    """The template unchanged except ``can_short`` (freqtrade rejects shorts in spot mode;
    its short signals are ignored there anyway)."""

    can_short = False
