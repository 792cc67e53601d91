"""Exception hierarchy. Start-up and CLI code raise these; the trading path never does."""


class LearningError(Exception):
    """Base class for every error this package raises on purpose."""


class ConfigError(LearningError):
    """The plugin's configuration is invalid (unknown key, wrong type, value out of range)."""


class DataError(LearningError):
    """Candle data is missing, corrupt or unusable."""


class StateError(LearningError):
    """Persisted learning state cannot be used."""
