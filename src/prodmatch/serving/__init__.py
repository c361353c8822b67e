"""Serving on CPU: :class:`MatchService` (plain Python) and the HTTP app over it (:func:`create_app`).

Needs the ``serve`` extra: ``pip install 'prodmatch[serve]'``.
"""

from prodmatch.serving.service import MatchService, SimilarItem

__all__ = ["MatchService", "ServeSettings", "SimilarItem", "create_app"]


def __getattr__(name: str):
    # The web stack is imported on first use, so MatchService works without fastapi installed.
    if name == "create_app":
        from prodmatch.serving.app import create_app

        return create_app
    if name == "ServeSettings":
        from prodmatch.serving.settings import ServeSettings

        return ServeSettings
    raise AttributeError(name)
