"""The review page's web app: one HTML page (plain HTML, CSS and JavaScript shipped in the package: no build
step, no CDN) and a small JSON API over :class:`prodmatch.review.Review`."""

from __future__ import annotations

from importlib import resources
from typing import Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from prodmatch.errors import ProdmatchError
from prodmatch.review.session import Review

__all__ = ["create_review_app"]

VariantId = StrictInt | StrictStr


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabelBody(_Body):
    variantid1: VariantId
    variantid2: VariantId
    label: Literal["match", "no", "unsure", "skip"]
    queue: Literal["uncertain", "diverse", "audit"] = "uncertain"


class SplitBody(_Body):
    cluster: int
    variantid: VariantId


def create_review_app(review: Review) -> FastAPI:
    """The app serving ``review``: GET / (the page), GET /api/next, POST /api/label, POST /api/undo,
    GET /api/cluster/{id}, POST /api/split, GET /api/progress."""
    app = FastAPI(title="prodmatch review", docs_url=None, redoc_url=None)
    page = resources.files("prodmatch.review").joinpath("page.html").read_text(encoding="utf-8")

    def guarded(fn, *args):
        try:
            return fn(*args)
        except ProdmatchError as e:
            raise HTTPException(400, str(e)) from e

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/next")
    def next_pair(queue: Literal["uncertain", "diverse", "audit"] = "uncertain") -> dict:
        found = guarded(review.next_pair, queue)
        return {"done": True, "queue": queue, "progress": review.progress()} if found is None else found

    @app.post("/api/label")
    def label(body: LabelBody) -> dict:
        if body.label == "skip":
            review.skip(body.variantid1, body.variantid2)
            return review.progress()
        return guarded(review.label, body.variantid1, body.variantid2, body.label, body.queue)

    @app.post("/api/undo")
    def undo() -> dict:
        return {"undone": review.undo(), "progress": review.progress()}

    @app.get("/api/cluster/{cluster_id}")
    def cluster(cluster_id: int) -> dict:
        return guarded(review.cluster, cluster_id)

    @app.post("/api/split")
    def split(body: SplitBody) -> dict:
        return guarded(review.split, body.cluster, body.variantid)

    @app.get("/api/progress")
    def progress() -> dict:
        return review.progress()

    return app
