"""One exception hierarchy for everything prodmatch reports to its users.

Every message says what was found (file, column, id, value) and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "EngineError",
    "ModelError",
    "ProdmatchError",
    "UnknownIdsError",
]


class ProdmatchError(Exception):
    """Base class of every error prodmatch raises on purpose."""


class DataError(ProdmatchError):
    """Input data is missing, malformed or inconsistent."""


class UnknownIdsError(DataError):
    """Pairs name ids that the catalogue has no data for.

    Attributes:
        ids: the unknown ids (all of them, not only the ones in the message).
    """

    def __init__(self, message: str, ids: list) -> None:
        super().__init__(message)
        self.ids = ids


class ConfigError(ProdmatchError):
    """A flag, option or config value is invalid or conflicts with another."""


class ModelError(ProdmatchError):
    """A model is unfitted, unknown, or its saved run directory is incomplete."""


class EngineError(ProdmatchError):
    """A stage of a distributed run failed on an executor (the executor's own error is chained)."""
