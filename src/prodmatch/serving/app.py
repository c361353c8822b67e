"""The HTTP API: a FastAPI app over :class:`~prodmatch.serving.service.MatchService`.

``create_app(settings)`` builds the app; the model, catalogue and index are loaded once, in the
lifespan. Routes are thin: they parse, call the service, and shape the answer. Every error answers
``{"error": {"code", "message", ...}}``; a failure inside the server answers 500 with no detail (the
log has the traceback).
"""

import asyncio
import gc
import json
import logging
import re
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from prodmatch.errors import ModelError, ProdmatchError, UnknownIdsError
from prodmatch.models.base import CONFIG_FILE
from prodmatch.serving.schemas import (
    ErrorResponse,
    ExplainResponse,
    HealthResponse,
    ModelInfo,
    ScoreResponse,
    SimilarItemOut,
    SimilarResponse,
    embeddings_dict,
    explain_request,
    request_models,
)
from prodmatch.serving.service import MatchService
from prodmatch.serving.settings import ServeSettings
from prodmatch.version import __version__

__all__ = ["API_KEY_HEADER", "create_app"]

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
INLINE_MAX_PAIRS = 32  # requests with at most this many pairs (or k) are computed on the event loop
_ERRORS = {
    400: {"model": ErrorResponse, "description": "A body that cannot be decoded (not UTF-8)."},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key."},
    404: {"model": ErrorResponse, "description": "Unknown variant ids, all listed."},
    413: {"model": ErrorResponse, "description": "Request body over the size limit."},
    422: {"model": ErrorResponse, "description": "Invalid request: shape, dimensions, NaN or inf, batch size."},
    500: {"model": ErrorResponse, "description": "Internal error (details in the server log only)."},
}


def create_app(settings: ServeSettings | None = None, service: MatchService | None = None) -> FastAPI:
    """The prodmatch HTTP app.

    Args:
        settings: server settings; read from ``PRODMATCH_*`` environment variables when None.
        service: an already loaded service (tests, embedding in another process); loaded from
            ``settings`` in the lifespan when None.
    """
    settings = settings or ServeSettings()
    modalities = (
        service.modalities if service is not None else _modalities_of(settings.run_dir)
    )  # the request schema names them
    ScoreRequest, SimilarRequest = request_models(modalities, settings.max_batch, settings.max_k)
    ExplainRequest = explain_request(settings.max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if app.state.service is None:
            app.state.service = MatchService.load(
                settings.run_dir,
                settings.data_dir,
                index_dir=settings.index_dir,
                clusters=settings.clusters,
                runtime=settings.runtime,
                threads=settings.threads,
                max_k=settings.max_k,
            )
        # Everything loaded so far lives as long as the server: keep it out of the garbage collector's
        # scans, so a full collection never walks the catalogue's objects (for gbdt, hundreds of
        # thousands of names and attribute strings) in the middle of a request.
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()

    # Swagger UI and ReDoc from assets shipped in the fastapi-offline wheel, not from a CDN, so /docs
    # works on a server with no internet access.
    from fastapi_offline import FastAPIOffline

    app = FastAPIOffline(
        title="prodmatch",
        version=__version__,
        description="Product matching: score pairs of listings and find a listing's matches in the catalogue.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    _add_error_handlers(app)

    async def get_service(request: Request) -> MatchService:  # async: no thread hop per request
        current = request.app.state.service
        if current is None:  # only outside a lifespan, e.g. a client that skipped start-up
            raise HTTPException(503, "the model is not loaded yet")
        return current

    dependencies = []
    if settings.api_key is not None:
        expected = settings.api_key.get_secret_value().encode()
        header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="The server's API key.")

        async def require_key(key: str | None = Security(header)) -> None:
            if key is None or not secrets.compare_digest(key.encode("utf-8", "surrogateescape"), expected):
                raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header", {"WWW-Authenticate": "ApiKey"})

        dependencies.append(Depends(require_key))

    v1 = APIRouter(prefix="/v1", dependencies=dependencies, responses={401: _ERRORS[401], 500: _ERRORS[500]})

    @v1.post("/score", response_model=ScoreResponse, responses={k: _ERRORS[k] for k in (400, 404, 413, 422)})
    async def score(body: ScoreRequest, svc: MatchService = Depends(get_service)) -> JSONResponse:
        """Probability that each pair is the same product, in request order.

        A pair is ``{"variantid1", "variantid2"}`` (catalogue items) or ``{"left", "right"}`` (raw
        embeddings by modality); one request may mix both.
        """
        left, right, ids_only = [], [], True
        for pair in body.pairs:
            if hasattr(pair, "variantid1"):
                left.append(pair.variantid1)
                right.append(pair.variantid2)
            else:
                left.append(embeddings_dict(pair.left, modalities))
                right.append(embeddings_dict(pair.right, modalities))
                ids_only = False
        small = len(left) <= INLINE_MAX_PAIRS
        if small and ids_only and svc.batch_invariant:
            rows = svc.catalogue_rows(left, right)  # unknown ids answer this request alone
            scored = await _coalescer(svc)(*rows)
        else:
            scored = await _compute(svc.scored, left, right, inline=small)
        labels = svc.labels(scored.probabilities)
        return JSONResponse(  # already the documented ScoreResponse: skip re-validating it per request
            {
                "scores": scored.probabilities.tolist(),
                "labels": None if labels is None else labels.tolist(),
                "evidence": svc.evidence_words(scored.evidence),
                "threshold": svc.model.threshold if labels is not None else None,
                "model": svc.model.name,
            }
        )

    @v1.post("/explain", response_model=ExplainResponse, responses={k: _ERRORS[k] for k in (400, 404, 413, 422)})
    async def explain(body: ExplainRequest, svc: MatchService = Depends(get_service)) -> JSONResponse:
        """Why each pair scored what it did: the calibrated score, the threshold, and contributions by group of
        evidence (each with its reason in words) that add up to the model's raw score. The same body as
        /v1/score in its id form; the same answers as ``prodmatch explain``.
        """
        left = [pair.variantid1 for pair in body.pairs]
        right = [pair.variantid2 for pair in body.pairs]
        found = await _compute(svc.explain, left, right, inline=False)
        return JSONResponse({"explanations": found})

    @v1.post("/similar", response_model=SimilarResponse, responses={k: _ERRORS[k] for k in (400, 404, 413, 422)})
    async def similar(body: SimilarRequest, svc: MatchService = Depends(get_service)) -> SimilarResponse:
        """The top-k catalogue items for a listing, by variant id or raw embeddings, best score first."""
        query = body.variantid if body.variantid is not None else embeddings_dict(body.embeddings, modalities)
        found = await _compute(svc.similar, query, body.k, inline=body.k <= INLINE_MAX_PAIRS)
        return SimilarResponse(
            query=body.variantid,
            k=body.k,
            results=[SimilarItemOut(**item.__dict__) for item in found],
        )

    @v1.get("/model", response_model=ModelInfo)
    async def model_info(svc: MatchService = Depends(get_service)) -> ModelInfo:
        """The served model: name, parameters, modalities, threshold, calibration and evaluation metrics."""
        return ModelInfo(**svc.info())

    @app.get("/health", response_model=HealthResponse, responses={500: _ERRORS[500]})
    async def health(svc: MatchService = Depends(get_service)) -> HealthResponse:
        """Liveness and readiness: answers once the model is loaded."""
        import time

        return HealthResponse(
            status="ok",
            model=svc.model.name,
            runtime=svc.runtime,
            items=len(svc.catalogue),
            uptime_seconds=round(time.time() - svc.started, 3),
        )

    app.include_router(v1)
    return app


async def _compute(fn, *args, inline: bool):
    """Small requests run on the event loop: a thread hop would cost more than their compute. Larger ones
    go to the thread pool, so that the loop keeps accepting requests and ONNX Runtime and numpy, which
    release the GIL, can use the other cores."""
    return fn(*args) if inline else await run_in_threadpool(fn, *args)


def _coalescer(svc: MatchService) -> "Coalescer":
    found = getattr(svc, "_coalescer", None)
    if found is None:
        found = svc._coalescer = Coalescer(svc.scored_rows)
    return found


class Coalescer:
    """Scores the pairs of concurrent small requests in one call.

    A request of one pair costs nearly as much fixed work (a few hundred numpy calls, the networks' weights
    read from memory, the booster) as a request of eight. So the pairs of requests that arrive while a batch
    is being scored are scored together next, in one call. Nothing waits on a timer: a lone request is
    scored at once. The call runs on the event loop, as small requests always have: on a worker thread it
    fought the loop for the GIL (measured: 494 single-pair requests/s against 674 inline, 8 in flight).
    Only for a batch-invariant model (the item-feature store's guarantee), so that no answer depends on
    which requests came together.
    """

    def __init__(self, score_rows) -> None:
        self.score_rows = score_rows
        self.waiting: list[tuple[np.ndarray, np.ndarray, asyncio.Future]] = []
        self.running = False
        self.batches = 0
        self.pairs = 0

    async def __call__(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((left, right, future))
        if not self.running:
            self.running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.waiting:
                await asyncio.sleep(0)  # requests already read join this batch
                batch, self.waiting = self.waiting, []
                left = np.concatenate([b[0] for b in batch])
                right = np.concatenate([b[1] for b in batch])
                try:
                    scores = self.score_rows(left, right)
                except Exception as e:  # every request of the batch answers the error (a bug: 500)
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                self.batches += 1
                self.pairs += len(left)
                start = 0
                for a, _, future in batch:
                    if not future.done():  # a client that hung up has its future cancelled
                        future.set_result(scores[start : start + len(a)])
                    start += len(a)
        finally:
            self.running = False


def _modalities_of(run_dir: Path) -> list[tuple[str, int]]:
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise ModelError(f"{path} not found: {run_dir} is not a trained run directory")
    return [(m["name"], int(m["dim"])) for m in json.loads(path.read_text())["modalities"]]


# ----------------------------------------------------------------------------------------- errors


_UNION_LABEL = re.compile(r"^(ids|embeddings|int|str|float|bool|constrained-\w+|\w+\[.*\])$")


def _json_path(loc: tuple | list, body: Any) -> str:
    """A validation error's place in the client's own JSON, e.g. ``pairs[0].left.name_bert_64``.

    Pydantic's location also holds the request part (``body``) and the labels of union members
    (``ids``, ``embeddings``, ``constrained-int``), which are not in the client's JSON: those are dropped
    wherever the body does not hold them as a key.
    """
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    out, node = "", body
    for p in parts:
        if isinstance(p, int) and isinstance(node, list) and 0 <= p < len(node):
            out, node = f"{out}[{p}]", node[p]
        elif isinstance(p, int):
            out, node = f"{out}[{p}]", None
        elif isinstance(node, dict) and p in node:
            out, node = f"{out}.{p}" if out else str(p), node[p]
        elif _UNION_LABEL.match(str(p)):
            continue
        else:
            out, node = f"{out}.{p}" if out else str(p), None
    return out or "body"


def _error(status: int, code: str, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    body = {"code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "loc": _json_path(e.get("loc", ()), exc.body),
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        first = details[0] if details else {"loc": "body", "msg": "invalid request"}
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        return _error(422, "invalid_request", f"{first['loc']}: {first['msg']}{more}", details=details[:10])

    @app.exception_handler(UnknownIdsError)
    async def unknown_ids(request: Request, exc: UnknownIdsError) -> JSONResponse:
        return _error(404, "unknown_ids", str(exc), ids=list(exc.ids))

    @app.exception_handler(ProdmatchError)
    async def invalid_input(request: Request, exc: ProdmatchError) -> JSONResponse:
        return _error(422, "invalid_input", str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        codes = {
            400: "bad_request",
            401: "unauthorized",
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
            503: "not_ready",
        }
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal server error; the server log has the details")


class BodyLimit:
    """ASGI middleware: refuse a body over ``max_bytes`` with a JSON 413, by its Content-Length before
    reading it, or as soon as a streamed body passes the limit.

    (FastAPI's own ``max_body_size`` answers in plain text, not in this API's error format.)
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            response = _error(413, "too_large", f"request body over {self.max_bytes} bytes; send smaller batches")
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # FastAPI passes an HTTPException from the body read through
                    raise HTTPException(413, f"request body over {self.max_bytes} bytes; send smaller batches")
            return message

        await self.app(scope, limited, send)
