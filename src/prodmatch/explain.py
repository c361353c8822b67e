"""Why did two listings match? Per-pair explanations whose contributions add up to the model's raw score.

Every explanation starts at a *base value* and adds one contribution per group of evidence; the sum is the
model's raw score (the log-odds before calibration), and the calibrated probability and the threshold are
given beside it.

- ``gbdt``: LightGBM's own exact per-feature contributions (``pred_contrib``: TreeSHAP, Lundberg et al.
  2020), summed per feature group: each embedding modality, the picture (main and extra photos), categories,
  attributes, name text, the stacked network and the stacked text models. The base value is the booster's
  expected raw score over its training pairs.
- networks (``siamese``, ``concat-mlp``, ``item-mlp``): exact Shapley values over the modalities, where a
  modality left out of a coalition is *absent on both items* (zero vector, presence flag 0). Why this and
  not integrated gradients: the absent modality is an input the networks are trained on (modality dropout)
  and meet in production (listings without a photo), so every evaluated point is one the model knows,
  while the straight path from a zero vector to a normalised embedding crosses inputs it never saw; the
  attribution is per modality, which is the unit a person reasons in; and with k modalities it costs 2^k
  forward passes, exact, where integrated gradients sums to the logit only up to its quadrature error. The
  base value is the network's logit with every modality absent on both items.

Contributions and base value are in log-odds: +1 multiplies the odds of a match by e. The calibrated
probability is ``calibrator(raw score)``; it holds for pairs drawn like the labelled pairs the model was
calibrated on (see :mod:`prodmatch.calibration`), not for a catalogue's nearest neighbours.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodmatch.atomic import staged_output, write_json, write_parquet
from prodmatch.attributes import BRAND_KEYS, COLOUR_KEYS, parse_attributes
from prodmatch.catalogue import Catalogue
from prodmatch.errors import ConfigError, ModelError
from prodmatch.evidence import describe
from prodmatch.identifiers import describe_codes, describe_quantities
from prodmatch.models.base import FeatureScorer, PairModel, Scores
from prodmatch.pairs import PairSet, load_pairs, make_pairs
from prodmatch.plots import plot_waterfall
from prodmatch.runs import model_and_catalogue

__all__ = ["EXPLANATIONS_FILE", "FEATURES_FILE", "Explanations", "explain", "explain_pairs", "threshold_logit"]

log = logging.getLogger(__name__)

EXPLANATIONS_FILE = "explanations.parquet"  # one row per pair: scores, and each group's contribution and reason
FEATURES_FILE = "contributions.parquet"  # one row per (pair, feature): its value and contribution
JSON_FILE = "explanations.json"
PLOTS_DIR = "waterfalls"
JSON_FEATURES_MAX = 1000  # pairs up to which explanations.json also lists every feature (8 kB a pair for gbdt)
MAX_SHAPLEY_MODALITIES = 10  # 2^k forward passes per pair
DEFAULT_PLOTS = 20  # waterfall PNGs written by default (the first pairs): one takes about 0.2 s

# gbdt feature groups, in display order after the modalities
PICTURE, CATEGORIES, ATTRIBUTES, NAME_TEXT, CODES, STACKED, TEXT_MODELS = (
    "picture",
    "categories",
    "attributes",
    "name text",
    "codes and numbers",
    "stacked network",
    "text models",
)


@dataclass
class Explanations:
    """Explanations of M pairs.

    Attributes:
        model: the model's name.
        method: ``treeshap`` (gbdt) or ``modality-shapley`` (networks).
        threshold: the model's decision threshold on the calibrated probability.
        threshold_logit: the raw score at which the calibrated probability reaches the threshold.
        groups: the groups, in a fixed order.
        frame: one row per pair: variantid1, variantid2 (and target when the pairs have labels), score
            (calibrated), label, raw_score, base_value, then per group its contribution and ``<group>: why``
            (the evidence in words).
        features: one row per (pair, feature): pair (row of ``frame``), group, feature, value, contribution.
            For the networks the features are the modalities, their value the two items' cosine.
        job: the job whose model scored (``pairs``; ``catalogue`` for a catalogue's candidates).
    """

    model: str
    method: str
    threshold: float
    threshold_logit: float
    groups: list[str]
    frame: pd.DataFrame
    features: pd.DataFrame
    seconds: float = 0.0
    job: str = "pairs"

    def __len__(self) -> int:
        return len(self.frame)

    def pair(self, i: int) -> dict:
        """The explanation of pair ``i`` as plain JSON types: contributions largest first."""
        return self.to_dicts([i])[0]

    def to_dicts(self, rows: Sequence[int] | None = None) -> list[dict]:
        """The explanations of ``rows`` (all by default) as plain JSON types, in order (see :meth:`pair`)."""
        f = self.frame
        rows = range(len(f)) if rows is None else rows
        column = {
            c: f[c].astype(object).tolist()
            for c in ("variantid1", "variantid2", "score", "label", "evidence", "raw_score", "base_value")
        }
        contrib = {g: f[g].tolist() for g in self.groups}
        why = {g: f[f"{g}: why"].tolist() for g in self.groups}
        target = f["target"].tolist() if "target" in f else None
        pair_of = self.features["pair"].to_numpy()
        bounds = np.searchsorted(pair_of, np.arange(len(f) + 1))  # the features are sorted by pair
        feature = self.features["feature"].tolist()
        group = self.features["group"].tolist()
        value = [None if not math.isfinite(v) else v for v in self.features["value"].tolist()]
        share = self.features["contribution"].tolist()
        threshold_raw = self.threshold_logit if math.isfinite(self.threshold_logit) else None
        out = []
        for i in rows:
            contributions = sorted(
                ({"group": g, "contribution": contrib[g][i], "why": why[g][i]} for g in self.groups),
                key=lambda c: -abs(c["contribution"]),
            )
            e = {
                "variantid1": column["variantid1"][i],
                "variantid2": column["variantid2"][i],
                "score": column["score"][i],
                "label": int(column["label"][i]),
                "threshold": self.threshold,
                "raw_score": column["raw_score"][i],
                "base_value": column["base_value"][i],
                "threshold_raw_score": threshold_raw,
                "model": self.model,
                "job": self.job,
                "evidence": column["evidence"][i],
                "method": self.method,
                "contributions": contributions,
                "features": [
                    {"feature": feature[j], "group": group[j], "value": value[j], "contribution": share[j]}
                    for j in range(bounds[i], bounds[i + 1])
                ],
            }
            if target is not None:
                e["target"] = None if not math.isfinite(target[i]) else target[i]
            out.append(e)
        return out

    def save(self, out_dir: str | Path, *, plots: int = DEFAULT_PLOTS) -> Path:
        """Write ``explanations.parquet``, ``contributions.parquet``, ``explanations.json`` and a waterfall PNG
        for each of the first ``plots`` pairs (-1: all) under ``out_dir``, staged: the directory appears whole
        when all are written, replacing an earlier explanation there (a directory of other files is refused)."""
        with staged_output(out_dir, True, JSON_FILE) as out:
            self._write(out, plots)
        return Path(out_dir)

    def _write(self, out: Path, plots: int) -> None:
        write_parquet(self.frame, out / EXPLANATIONS_FILE)
        write_parquet(self.features, out / FEATURES_FILE)
        found = self.to_dicts()
        if len(found) > JSON_FEATURES_MAX:  # tens of megabytes: the per-feature numbers stay in the parquet
            for e in found:
                del e["features"]
            log.info(
                "%s: group contributions only (over %d pairs); every feature's is in %s",
                JSON_FILE,
                JSON_FEATURES_MAX,
                FEATURES_FILE,
            )
        write_json({"model": self.model, "method": self.method, "pairs": found}, out / JSON_FILE)
        n = len(self) if plots < 0 else min(plots, len(self))
        if n:
            (out / PLOTS_DIR).mkdir(exist_ok=True)
        for i in range(n):
            e = self.pair(i)
            plot_waterfall(e, out / PLOTS_DIR / f"{i:05d}_{_safe(e['variantid1'])}_{_safe(e['variantid2'])}.png")
        if n < len(self):
            log.info("waterfall plots for the first %d of %d pairs (--plots to change)", n, len(self))


def explain_pairs(model: PairModel, catalogue: Catalogue, pairs: PairSet, *, batch_size: int = 65536) -> Explanations:
    """Explain the model's score of every pair of ``pairs`` (see the module docstring for the method).

    Raises:
        ModelError: for a model this cannot explain (the text models: one input string per item).
    """
    t0 = time.perf_counter()
    if model.explanation == "treeshap":
        method, raw, base, groups, contrib, why, feats = _explain_gbdt(model, catalogue, pairs, batch_size)
    elif model.explanation == "shapley" and isinstance(model, FeatureScorer):
        method, raw, base, groups, contrib, why, feats = _explain_network(model, catalogue, pairs, batch_size)
    else:
        raise ModelError(
            f"{model.name} cannot be explained: it reads each item as one string, with no parts to attribute the "
            "score to; explain a gbdt model that stacks it (its 'text models' group) or a network"
        )
    # the raw score as predict_logits gives it (float32), so that the probability is exactly predict's (with the
    # rule that a pair with nothing to compare is never a match)
    raw = np.asarray(raw, dtype=np.float32).astype(np.float64)
    evidence = model.evidence(catalogue, pairs.left, pairs.right)
    prob = model.calibrated(Scores(raw.astype(np.float32), evidence))
    frame = pd.DataFrame({"variantid1": pairs.ids1, "variantid2": pairs.ids2})
    if pairs.target is not None:
        frame["target"] = pairs.target
    frame["score"] = prob
    frame["label"] = model.predict_labels(prob)
    frame["evidence"] = describe(evidence, model.evidence_names())
    frame["raw_score"] = raw
    frame["base_value"] = base
    for j, g in enumerate(groups):
        frame[g] = contrib[:, j]
        frame[f"{g}: why"] = why[j]
    seconds = time.perf_counter() - t0
    log.info("explained %d pairs with %s (%s) in %.2fs", len(pairs), model.name, method, seconds)
    return Explanations(
        model.name, method, float(model.threshold), threshold_logit(model), groups, frame, feats, seconds, model.job
    )


def explain(
    run_dir: str | Path,
    data_dir: str | Path,
    *,
    pairs: str | Path | None = None,
    pair: Sequence | None = None,
    out: str | Path | None = None,
    plots: int = DEFAULT_PLOTS,
    catalogue: Catalogue | None = None,
    job: str = "pairs",
) -> Explanations:
    """Explain a saved model's scores of a pairs file (``pairs``) or of one pair of ids (``pair``).

    Args:
        run_dir: a trained run directory.
        data_dir: the item data the pairs refer to.
        pairs: a parquet of variantid1, variantid2 (target optional).
        pair: (id1, id2) instead of ``pairs``.
        out: write the files of :meth:`Explanations.save` here.
        plots: waterfall PNGs for the first this many pairs (-1: all).
        catalogue: an already loaded catalogue of ``data_dir``.
        job: whose model explains: ``pairs`` (``predict``'s, the default) or ``catalogue`` (``match``'s).
    """
    if (pairs is None) == (pair is None):
        raise ConfigError("give either a pairs file or one pair of ids, not both and not neither")
    model, cat = model_and_catalogue(run_dir, data_dir, catalogue, job=job)
    if pairs is not None:
        found = load_pairs(pairs, cat, require_target=False, unknown="error")
    else:
        if len(pair) != 2:
            raise ConfigError(f"a pair is two ids, got {list(pair)}")
        ids = [_as_catalogue_id(cat, x) for x in pair]
        found = make_pairs(cat, pd.DataFrame({"variantid1": [ids[0]], "variantid2": [ids[1]]}), source="--pair")
    explained = explain_pairs(model, cat, found)
    if out is not None:
        explained.save(out, plots=plots)
    return explained


def threshold_logit(model: PairModel) -> float:
    """The raw score at which the calibrated probability reaches the model's threshold (bisection: every
    calibrator is non-decreasing)."""
    lo, hi = -60.0, 60.0
    cal = model.calibrator
    if cal(np.array([hi]))[0] < model.threshold:
        return math.inf
    if cal(np.array([lo]))[0] >= model.threshold:
        return -math.inf
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if cal(np.array([mid]))[0] >= model.threshold:
            hi = mid
        else:
            lo = mid
    return hi


# --------------------------------------------------------------------------------------------- gbdt


def _gbdt_group(feature: str, modalities: list[str], picture: str | None) -> str:
    for m in modalities:
        if feature.startswith(f"{m}."):
            return PICTURE if m == picture else m
    if feature.startswith("pics_"):
        return PICTURE
    if feature.startswith("category"):
        return CATEGORIES
    if feature.startswith("brand_seen"):  # read from the name where the attributes give no brand
        return NAME_TEXT
    if feature.startswith(("attr_", "brand_", "colour_", "price_", "numeric_")):
        return ATTRIBUTES
    if feature.startswith("name_") or feature == "stack_words":
        return NAME_TEXT
    if feature.startswith(("code_", "quantity_")):
        return CODES
    if feature in ("stack_bi_encoder", "stack_cross_encoder"):
        return TEXT_MODELS
    if feature.startswith("stack_"):
        return STACKED
    raise ModelError(f"gbdt feature {feature!r} belongs to no explanation group; this is a bug")


def _explain_gbdt(model, catalogue: Catalogue, pairs: PairSet, batch_size: int):
    names = list(model.feature_names_)
    modalities = [n for n, _ in model.modalities_]
    picture = model.featurizer_.picture_modality
    feature_group = [_gbdt_group(f, modalities, picture) for f in names]
    groups = [
        g
        for g in [
            *(m for m in modalities if m != picture),
            PICTURE,
            CATEGORIES,
            ATTRIBUTES,
            NAME_TEXT,
            CODES,
            STACKED,
            TEXT_MODELS,
        ]
        if g in feature_group
    ]
    m, f = len(pairs), len(names)
    x = np.empty((m, f), dtype=np.float32)
    phi = np.empty((m, f + 1), dtype=np.float64)
    raw = np.empty(m, dtype=np.float64)
    for sl, batch in model.feature_batches(catalogue, pairs, batch_size):
        x[sl] = batch
        phi[sl] = model.boost(batch, pred_contrib=True)
        raw[sl] = model.boost(batch, raw_score=True)  # the contributions sum to it up to float rounding
    base = phi[:, -1]
    member = np.zeros((f, len(groups)))
    member[np.arange(f), [groups.index(g) for g in feature_group]] = 1.0
    contrib = phi[:, :-1] @ member
    col = {n: x[:, j] for j, n in enumerate(names)}
    why = [_gbdt_why(g, col, catalogue, pairs, modalities, picture, model) for g in groups]
    feats = pd.DataFrame(
        {
            "pair": np.repeat(np.arange(m), f),
            "group": np.tile(np.asarray(feature_group, dtype=object), m),
            "feature": np.tile(np.asarray(names, dtype=object), m),
            "value": x.ravel().astype(np.float64),
            "contribution": phi[:, :-1].ravel(),
        }
    )
    return "treeshap", raw, base, groups, contrib, why, feats


def _fmt(template: str, values: np.ndarray, missing: str) -> list[str]:
    return [missing if not np.isfinite(v) else template.format(v) for v in values]


def _gbdt_why(group, col, catalogue, pairs, modalities, picture, model) -> list[str]:
    m = len(pairs)
    nan = np.full(m, np.nan, dtype=np.float32)
    if group in modalities:
        base = _fmt(f"{group} cosine {{:.2f}}", col[f"{group}.cos"], f"no {group} on one side")
        if f"{group}.dcos" in col:
            extra = _fmt(", discriminant cosine {:.2f}", col[f"{group}.dcos"], "")
            base = [a + b for a, b in zip(base, extra, strict=True)]
        return base
    if group == PICTURE:
        main = _fmt("picture cosine {:.2f}", col.get(f"{picture}.cos", nan), "no main picture on one side")
        best = _fmt("; best photo pair {:.2f}", col.get("pics_max", nan), "")
        return [
            "no picture on one side" if a.startswith("no") and not b else a + b for a, b in zip(main, best, strict=True)
        ]
    if group == CATEGORIES:
        levels = [col.get(f"category{k}_equal", nan) for k in range(1, 5)]
        return [_category_words([lv[i] for lv in levels]) for i in range(m)]
    if group == ATTRIBUTES:
        return _attribute_words(col, catalogue, pairs, nan)
    if group == NAME_TEXT:
        out = _fmt("name word cosine {:.2f}", col.get("name_word_tfidf_cos", col.get("name_tfidf_cos", nan)), "")
        conflicts = col.get("name_number_conflicts", nan)
        codes = col.get("name_shared_code_idf", nan)
        words = col.get("stack_words", nan)
        soft = col.get("name_soft_tfidf_min", nan)
        brand_low, brand_high = col.get("brand_seen_min", nan), col.get("brand_seen_max", nan)
        for i in range(m):
            parts = [out[i]] if out[i] else ["no name on one side"]
            if np.isfinite(soft[i]):
                parts.append(f"soft TF-IDF {soft[i]:.2f}")
            if np.isfinite(codes[i]) and codes[i] > 0:
                parts.append("a shared code")
            if np.isfinite(conflicts[i]) and conflicts[i] > 0:
                parts.append(f"{int(conflicts[i])} number{'s differ' if conflicts[i] > 1 else ' differs'}")
            if np.isfinite(brand_low[i]):
                parts.append(
                    "each brand in the other listing"
                    if brand_low[i] > 0
                    else "one brand missing from the other listing"
                    if brand_high[i] > 0
                    else "neither brand in the other listing"
                )
            if np.isfinite(words[i]):
                parts.append(f"word-pair model {words[i]:+.2f}")
            out[i] = "; ".join(parts)
        return out
    if group == CODES:
        return _code_words(col, catalogue, pairs)
    if group == STACKED:
        return _fmt(f"{model.params.stack} network logit {{:+.2f}}", col[f"stack_{model.params.stack}"], "")
    if group == TEXT_MODELS:
        texts = [n for n in col if n in ("stack_bi_encoder", "stack_cross_encoder")]
        cols = [_fmt(f"{n[6:].replace('_', '-')} logit {{:+.2f}}", col[n], "") for n in texts]
        return ["; ".join(p for p in parts if p) for parts in zip(*cols, strict=True)]
    raise ModelError(f"no words for the group {group!r}; this is a bug")


def _code_words(col, catalogue: Catalogue, pairs: PairSet) -> list[str]:
    """The codes and the numbers with units of the two names, compared in words, for the groups the model has."""
    names = catalogue.names
    if names is None:
        return ["no names" for _ in range(len(pairs))]
    texts = catalogue.texts
    out = []
    for a, b in zip(pairs.left, pairs.right, strict=True):
        parts = []
        if "code_shared" in col:
            ta, tb = (texts[a], texts[b]) if texts is not None else (None, None)
            parts.append(describe_codes(names[a], names[b], tb, ta))
        if "quantity_agree" in col:
            parts.append(describe_quantities(names[a], names[b]))
        out.append("; ".join(parts))
    return out


def _category_words(equal: list[float]) -> str:
    known = [(k + 1, e) for k, e in enumerate(equal) if np.isfinite(e)]
    if not known:
        return "no category on one side"
    first_diff = next((k for k, e in known if e < 0.5), None)
    if first_diff is None:
        first, last = known[0][0], known[-1][0]
        return f"same category at level {first}" if first == last else f"same category at levels {first}-{last}"
    if first_diff == known[0][0]:
        return f"different categories from level {first_diff}"
    return f"same category up to level {first_diff - 1}, different at level {first_diff}"


def _attribute_words(col, catalogue: Catalogue, pairs: PairSet, nan: np.ndarray) -> list[str]:
    m = len(pairs)
    brands = colours = None
    if catalogue.attributes is not None:
        rows = np.union1d(pairs.left, pairs.right)
        parsed = dict(zip(rows.tolist(), parse_attributes(catalogue, rows), strict=True))
        brands = {r: _values(a, BRAND_KEYS) for r, a in parsed.items()}
        colours = {r: _values(a, COLOUR_KEYS) for r, a in parsed.items()}
    conflicts = col.get("attr_conflicts", nan)
    kv = col.get("attr_kv_jaccard", nan)
    numbers = col.get("numeric_ratio_min", nan)
    out = []
    for i in range(m):
        parts = []
        if brands is not None:
            parts.append(_agreement("brand", brands[pairs.left[i]], brands[pairs.right[i]]))
            parts.append(_agreement("colour", colours[pairs.left[i]], colours[pairs.right[i]]))
        parts = [p for p in parts if p]
        if np.isfinite(kv[i]):
            parts.append(f"{100 * kv[i]:.0f}% of values shared")
        if np.isfinite(conflicts[i]) and conflicts[i] > 0:
            parts.append(f"{int(conflicts[i])} attribute{'s differ' if conflicts[i] > 1 else ' differs'}")
        if np.isfinite(numbers[i]):
            parts.append(f"closest numbers agree to {100 * numbers[i]:.0f}%")
        out.append("; ".join(parts) if parts else "no attributes on one side")
    return out


def _values(attributes: dict | None, keys: tuple[str, ...]) -> list[str]:
    if not attributes:
        return []
    found = []
    for k in keys:
        v = attributes.get(k)
        if v is not None:
            found += [str(x) for x in (v if isinstance(v, list) else [v])]
    return found


def _agreement(what: str, a: list[str], b: list[str]) -> str:
    if not a and not b:
        return ""
    if not a or not b:
        return f"{what} on one side only ({(a or b)[0]!r})"
    shared = {x.strip().lower() for x in a} & {x.strip().lower() for x in b}
    if shared:
        return f"{what}: both {a[0]!r}"
    return f"{what}: {a[0]!r} vs {b[0]!r}"


# ----------------------------------------------------------------------------------------- networks


def _explain_network(model, catalogue: Catalogue, pairs: PairSet, batch_size: int):
    model.check_ready(catalogue)
    names = [n for n, _ in model.modalities_]
    dims = [d for _, d in model.modalities_]
    k = len(names)
    if k > MAX_SHAPLEY_MODALITIES:
        raise ModelError(
            f"{model.name} uses {k} modalities: exact Shapley values need 2^{k} passes per pair; "
            f"explanations support up to {MAX_SHAPLEY_MODALITIES}"
        )
    features = catalogue.item_features(names)
    starts = np.concatenate([[0], np.cumsum(dims)])
    flag0 = int(starts[-1])
    masks = {}  # coalition (tuple of modality indices kept) -> (F,) float32 mask
    for size in range(k + 1):
        for coalition in combinations(range(k), size):
            mask = np.zeros(features.shape[1], dtype=np.float32)
            for j in coalition:
                mask[starts[j] : starts[j + 1]] = 1.0
                mask[flag0 + j] = 1.0
            masks[coalition] = mask
    m = len(pairs)
    values = {c: np.empty(m, dtype=np.float64) for c in masks}
    for s in range(0, m, batch_size):
        a, b = features[pairs.left[s : s + batch_size]], features[pairs.right[s : s + batch_size]]
        n = len(a)
        # every coalition of this batch in one call
        stacked_a = np.concatenate([a * mask for mask in masks.values()])
        stacked_b = np.concatenate([b * mask for mask in masks.values()])
        logits = model.logits_from_features(stacked_a, stacked_b).astype(np.float64)
        for i, c in enumerate(masks):
            values[c][s : s + n] = logits[i * n : (i + 1) * n]
    phi = np.zeros((m, k))
    for j in range(k):
        others = [i for i in range(k) if i != j]
        for size in range(k):
            weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
            for coalition in combinations(others, size):
                with_j = tuple(sorted((*coalition, j)))
                phi[:, j] += weight * (values[with_j] - values[coalition])
    raw = values[tuple(range(k))]
    base = values[()]
    why, cosines = [], []
    for name in names:
        mod = catalogue.modalities[name]
        cos = np.einsum("ij,ij->i", mod.matrix[pairs.left], mod.matrix[pairs.right]).astype(np.float64)
        cos[~(mod.present[pairs.left] & mod.present[pairs.right])] = np.nan
        cosines.append(cos)
        why.append(_fmt("cosine {:.2f}", cos, f"no {name} on one side"))
    feats = pd.DataFrame(
        {
            "pair": np.repeat(np.arange(m), k),
            "group": np.tile(np.asarray(names, dtype=object), m),
            "feature": np.tile(np.asarray(names, dtype=object), m),
            "value": np.column_stack(cosines).ravel(),
            "contribution": phi.ravel(),
        }
    )
    return "modality-shapley", raw, base, names, phi, why, feats


# ------------------------------------------------------------------------------------------ helpers


def _safe(x: Any) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(x))[:40]


def _as_catalogue_id(cat: Catalogue, x: Any) -> Any:
    """An id typed on the command line ("123") as the catalogue's kind of id."""
    if cat.id_kind == "str":
        return str(x)
    try:
        return int(x)
    except (TypeError, ValueError):
        raise ConfigError(f"{x!r} is not an id of this catalogue, whose ids are integers") from None
