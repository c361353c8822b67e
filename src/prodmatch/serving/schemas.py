"""Request and response bodies of the HTTP API.

The embedding body is built per served model (:func:`request_models`): one optional field per modality,
with its exact length, so the OpenAPI schema tells a client what the model takes and a wrong dimension
is refused with 422 before any work is done.
"""

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    FiniteFloat,
    StrictInt,
    StrictStr,
    Tag,
    create_model,
    model_validator,
)

__all__ = [
    "ErrorResponse",
    "ExplainResponse",
    "HealthResponse",
    "ModelInfo",
    "ScoreResponse",
    "SimilarItemOut",
    "SimilarResponse",
    "VariantId",
    "explain_request",
    "request_models",
]

# Strict: JSON true is not the id 1, and 1.0 is not an id at all; a string id stays a string.
VariantId = (
    Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)] | Annotated[StrictStr, Field(min_length=1, max_length=256)]
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IdPair(_Strict):
    """A pair of catalogue items, by variant id."""

    variantid1: VariantId
    variantid2: VariantId


def request_models(modalities: list[tuple[str, int]], max_batch: int, max_k: int) -> tuple[type, type]:
    """(ScoreRequest, SimilarRequest) for a model with these (modality, dim)."""
    fields: dict[str, Any] = {
        f"m{i}": (
            Annotated[list[FiniteFloat], Field(min_length=dim, max_length=dim)] | None,
            Field(None, alias=name, description=f"{dim} numbers; normalised by the server"),
        )
        for i, (name, dim) in enumerate(modalities)
    }
    names = [n for n, _ in modalities]

    def at_least_one(self):
        if all(getattr(self, f"m{i}") is None for i in range(len(names))):
            raise ValueError(f"give at least one of {names}")
        return self

    Embeddings = create_model(
        "Embeddings",
        __config__=ConfigDict(extra="forbid", populate_by_name=False),
        __validators__={"at_least_one": model_validator(mode="after")(at_least_one)},
        __doc__="An item by its raw embeddings, one vector per modality; a modality left out counts as missing.",
        **fields,
    )

    class EmbeddingPair(_Strict):
        """A pair of items by raw embeddings."""

        left: Embeddings
        right: Embeddings

    def pair_kind(value: Any) -> str:
        if isinstance(value, dict):
            return "embeddings" if ("left" in value or "right" in value) else "ids"
        return "embeddings" if isinstance(value, EmbeddingPair) else "ids"

    Pair = Annotated[
        Annotated[IdPair, Tag("ids")] | Annotated[EmbeddingPair, Tag("embeddings")], Discriminator(pair_kind)
    ]

    class ScoreRequest(_Strict):
        """Pairs to score, in any mix of the two forms; answers come back in the same order."""

        pairs: list[Pair] = Field(min_length=1, max_length=max_batch)

    class SimilarRequest(_Strict):
        """A query item, by variant id or by raw embeddings (exactly one), and how many neighbours to return."""

        variantid: VariantId | None = None
        embeddings: Embeddings | None = None
        k: int = Field(20, ge=1, le=max_k)

        @model_validator(mode="after")
        def exactly_one(self):
            if (self.variantid is None) == (self.embeddings is None):
                raise ValueError("give exactly one of variantid and embeddings")
            return self

    return ScoreRequest, SimilarRequest


def explain_request(max_batch: int) -> type:
    """The body of POST /v1/explain: the id form of /v1/score's body."""

    class ExplainRequest(_Strict):
        """Pairs of catalogue items to explain, by variant id; answers come back in the same order."""

        pairs: list[IdPair] = Field(min_length=1, max_length=max_batch)

    return ExplainRequest


def embeddings_dict(item: BaseModel, modalities: list[tuple[str, int]]) -> dict[str, list[float]]:
    """The modality -> vector mapping of a parsed Embeddings body."""
    return {name: v for i, (name, _) in enumerate(modalities) if (v := getattr(item, f"m{i}")) is not None}


class ScoreResponse(BaseModel):
    scores: list[float] = Field(
        description="Calibrated probability that each pair is the same product, in request order."
    )
    labels: list[int] | None = Field(
        description="1 where the score reaches the threshold; null when the run saved none."
    )
    evidence: list[str] = Field(
        description='What each pair had to compare: the embeddings both items have and "pictures", "name", '
        '"attributes" they share, joined by "+"; "none" where nothing (such a pair scores at most the prior, '
        "below the threshold, and is never labelled a match)."
    )
    threshold: float | None
    model: str


class ContributionOut(BaseModel):
    group: str = Field(description="A group of evidence: an embedding, picture, categories, attributes, name text...")
    contribution: float = Field(description="Its share of the raw score, in log-odds (+1 multiplies the odds by e).")
    why: str = Field(description='The evidence in words, e.g. "brand: both \'Samsung\'" or "no picture on one side".')


class FeatureOut(BaseModel):
    feature: str
    group: str
    value: float | None = Field(description="The feature's value for this pair; null where it is missing.")
    contribution: float


class PairExplanationOut(BaseModel):
    variantid1: VariantId
    variantid2: VariantId
    score: float = Field(description="The calibrated probability, as /v1/score answers it.")
    label: int
    threshold: float
    raw_score: float = Field(description="The model's raw score (log-odds): base_value plus every contribution.")
    base_value: float
    threshold_raw_score: float | None = Field(description="The raw score at which the score reaches the threshold.")
    model: str
    job: str = Field(description="Whose model scored: pairs (as /v1/score) or catalogue (as /v1/similar).")
    evidence: str = Field(description="What the two items had to compare (as in /v1/score).")
    method: str = Field(description="treeshap (gbdt) or modality-shapley (networks).")
    contributions: list[ContributionOut] = Field(description="Largest first.")
    features: list[FeatureOut]


class ExplainResponse(BaseModel):
    explanations: list[PairExplanationOut] = Field(description="One per pair, in request order.")


class SimilarItemOut(BaseModel):
    variantid: VariantId
    score: float = Field(description="Calibrated probability that this item is the query's product.")
    similarity: float = Field(description="Cosine of the item vectors, which the search ranked by.")
    label: int | None
    cluster_id: int | None = Field(description="The item's product cluster; null without --clusters.")
    evidence: str = Field(description="What the query and this item had to compare (as in /v1/score).")


class SimilarResponse(BaseModel):
    query: VariantId | None = Field(description="The query's variant id; null for an embeddings query.")
    k: int
    results: list[SimilarItemOut] = Field(description="Best score first; an id query never returns itself.")


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model: str
    runtime: str
    items: int
    uptime_seconds: float


class ModelInfo(BaseModel):
    name: str
    params: dict[str, Any]
    symmetric: bool
    modalities: list[dict[str, Any]]
    threshold: float | None
    threshold_rule: dict[str, Any] | None
    calibration: str
    runtime: str
    accepts_embeddings: bool
    catalogue: dict[str, Any]
    metrics: dict[str, dict[str, float | int | None]]
    train_seconds: float | None


class ErrorDetail(BaseModel):
    loc: str
    msg: str
    type: str


class ErrorBody(BaseModel):
    code: str = Field(description="invalid_request, invalid_input, unknown_ids, unauthorized, too_large, ...")
    message: str
    ids: list[VariantId] | None = Field(None, description="unknown_ids: every id the catalogue lacks.")
    details: list[ErrorDetail] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
