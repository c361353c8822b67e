"""Incremental matching: a saved index of the catalogue, and new listings matched against it, joining
existing clusters or forming new ones without re-cutting the old."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import numpy as np
import pandas as pd

from prodmatch.atomic import staged_output, write_json, write_parquet
from prodmatch.calibration import expected_f1_threshold
from prodmatch.candidates import build_index, candidate_pairs, item_vectors, search
from prodmatch.catalogue import Catalogue
from prodmatch.clustering import cluster_items
from prodmatch.config import MatchConfig, replace_index
from prodmatch.errors import ConfigError
from prodmatch.evidence import describe, gate
from prodmatch.io import CLUSTERS_FILE, MATCHES_FILE, SUMMARY_FILE, read_catalogue
from prodmatch.matching.output import matches_frame, split_report
from prodmatch.matching.scoring import apply_calibration, calibrate_candidates
from prodmatch.models.base import ItemStoring
from prodmatch.pairs import PairSet
from prodmatch.runs import model_and_catalogue
from prodmatch.store import STORE_DIR, fingerprint

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------ incremental

INDEX_FILE = "index.faiss"
VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.parquet"
INDEX_META_FILE = "index.json"


def build_catalogue_index(
    run_dir, data_dir, out_dir, config: MatchConfig | None = None, *, overwrite: bool = False
) -> dict:
    """Save the catalogue's item vectors and their nearest-neighbour index, for matching new items later."""
    import faiss

    config = config or MatchConfig()
    with staged_output(out_dir, overwrite, INDEX_META_FILE) as tmp:
        t0 = time.perf_counter()
        model, cat = model_and_catalogue(run_dir, data_dir, None, job="catalogue")
        vectors, vector_kind = item_vectors(model, cat)
        kind = config.index_kind(len(cat))
        index = build_index(vectors, kind, config)
        faiss.write_index(index, str(tmp / INDEX_FILE))
        with open(tmp / VECTORS_FILE, "wb") as f:
            np.save(f, vectors)
        write_parquet(pd.DataFrame({"variantid": cat.ids.to_numpy()}), tmp / IDS_FILE)
        store = None
        if isinstance(model, ItemStoring):  # what serving needs of every item, saved so a server loads it
            store = model.item_store(cat)
            store.save(tmp / STORE_DIR, fingerprint(model, cat))
        meta = {
            "run_dir": str(run_dir),
            "data": str(data_dir),
            "items": len(cat),
            "item_vectors": vector_kind,
            "index": kind,
            "parameters": config.to_dict(),
            "item_store": None if store is None else {"directory": STORE_DIR, "bytes": store.nbytes()},
            "seconds": round(time.perf_counter() - t0, 3),
        }
        write_json(meta, tmp / INDEX_META_FILE)
    return meta


def check_index_items(index_dir, catalogue: Catalogue, data_dir) -> None:
    """Raise ConfigError unless the saved index at ``index_dir`` holds exactly ``catalogue``'s items, in order."""
    from pathlib import Path

    saved = pd.read_parquet(Path(index_dir) / IDS_FILE)["variantid"].to_numpy()
    if len(saved) != len(catalogue) or not np.array_equal(saved, catalogue.ids.to_numpy()):
        raise ConfigError(f"{index_dir} indexes other items than {data_dir}; rebuild it with `prodmatch index`")


# A new item is scored against every member of the clusters its candidates belong to, up to clusters of this
# many items (larger ones are averaged over the members it was scored against, unscored ones counting 0).
MATES_MAX_CLUSTER = 100


def cluster_mates(
    old: np.ndarray, new: np.ndarray, old_cluster: np.ndarray, max_cluster: int = MATES_MAX_CLUSTER
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(old rows, new rows) pairing each new item with every member of its candidates' clusters, and facts.

    A new item joins the existing cluster it matches best on average over all that cluster's members. Its
    search finds its own top-k only; in a full match a pair is a candidate when either item has the other in
    its top-k, so a cluster mate whose top-k holds the original, but not the reverse, was scored there and
    would count 0 here. An exact copy of an item in a cluster of four then averaged 0.24 with it and left to a
    new cluster (7 of 100 copies on the test catalogue). Scoring the mates gives the rule its full average."""
    clusters = np.unique(old_cluster[old])
    size = np.bincount(old_cluster)
    small = clusters[size[clusters] <= max_cluster]
    wanted = pd.DataFrame({"new": new, "c": old_cluster[old]}).drop_duplicates()
    wanted = wanted[np.isin(wanted["c"].to_numpy(), small)]
    members = pd.DataFrame({"old": np.arange(len(old_cluster)), "c": old_cluster})
    members = members[np.isin(members["c"].to_numpy(), small)]
    pairs = wanted.merge(members, on="c")[["old", "new"]].to_numpy()
    facts = {
        "max_cluster": max_cluster,
        "pairs": len(pairs),
        "clusters_too_large": int((size[clusters] > max_cluster).sum()),
    }
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64), facts


def match_new_items(
    run_dir,
    data_dir,
    index_dir,
    new_dir,
    clusters_path,
    out_dir,
    config: MatchConfig | None = None,
    *,
    overwrite: bool = False,
) -> dict:
    """Match newly listed items against a saved index and assign them to existing clusters or new ones.

    Candidates of a new item: its top-k among the indexed catalogue (the saved index, not rebuilt) and its
    top-k among the other new items. Scored pairs at or above the threshold are clustered with the same
    guard as a full run, over the new items and the catalogue items they match. A resulting group that
    can join the existing cluster it matches best on average over all that cluster's members (pairs never
    scored count as 0), if that average reaches the threshold, the rule average linkage applies in a full
    run; otherwise it becomes a new cluster. Existing clusters are never merged or split: that is where
    the result can differ from a full rebuild, which may re-cut old clusters once new items link them.

    Writes ``matches.parquet`` (new pairs), ``clusters.parquet`` (variantid, cluster_id, is_new_cluster for
    the new items) and ``summary.json``.
    """
    import json as _json
    from pathlib import Path

    import faiss

    config = config or MatchConfig()
    if config.rescore:
        raise ConfigError("rescore applies to a full match; incremental matching scores with run_dir only")
    index_dir = Path(index_dir)
    meta = _json.loads((index_dir / INDEX_META_FILE).read_text())
    t0 = time.perf_counter()
    model, cat = model_and_catalogue(run_dir, data_dir, None, job="catalogue")
    check_index_items(index_dir, cat, data_dir)
    new_cat = read_catalogue(new_dir, model.data_config())
    combined = cat.concat(new_cat)
    n_old, n_new = len(cat), len(new_cat)
    index = faiss.read_index(str(index_dir / INDEX_FILE))
    if isinstance(index, faiss.IndexHNSWFlat):
        index.hnsw.efSearch = config.hnsw_ef_search
    new_vectors, _ = item_vectors(model, new_cat)
    k = min(config.k, n_old)
    nbrs = search(index, new_vectors, k)
    q = np.repeat(np.arange(n_new), k)
    r = nbrs.ravel()
    ok = r >= 0
    left = [r[ok]]  # old rows
    right = [n_old + q[ok]]
    if n_new > 1:
        wl, wr, _ = candidate_pairs(new_vectors, replace_index(config, "flat"))  # new among new: exact
        left.append(n_old + wl)
        right.append(n_old + wr)
    existing = pd.read_parquet(clusters_path).set_index("variantid")["cluster_id"]
    old_cluster = existing.reindex(cat.ids).to_numpy()
    if pd.isna(old_cluster).any():
        raise ConfigError(f"{clusters_path} lacks some catalogue items; use the clusters of a full `match` run")
    old_cluster = old_cluster.astype(np.int64)
    more_old, more_new, expansion = cluster_mates(left[0], right[0], old_cluster)
    left, right = np.concatenate([*left, more_old]), np.concatenate([*right, more_new])
    key = np.unique(left * (n_old + n_new) + right)
    left, right = key // (n_old + n_new), key % (n_old + n_new)
    ids = combined.ids.to_numpy()
    pairs = PairSet(left.astype(np.int32), right.astype(np.int32), None, np.arange(len(left)), ids[left], ids[right])
    scores = model.score(combined, pairs)
    evidence = scores.evidence
    score, threshold, calibration = _calibrated(model, model.calibrated(scores), clusters_path, config)
    score = gate(score, evidence, calibration.get("prior"), threshold)
    ev = evidence != 0  # a pair without evidence is no edge, whatever the threshold
    labels, report = cluster_items(n_old + n_new, left[ev], right[ev], score[ev], threshold, config.linkage_max)

    next_id = int(old_cluster.max()) + 1 if len(old_cluster) else 0
    assigned = np.full(n_new, -1, dtype=np.int64)
    is_new = np.zeros(n_new, dtype=bool)
    kept = (score >= threshold) & ev
    # A group of new items joins the existing cluster it matches best *on average over all its members*
    # (unscored pairs count as 0), the rule average linkage applies in a full run; else it is a new cluster.
    new_old = (left < n_old) & (right >= n_old) & ev
    frame = pd.DataFrame({"g": labels[right[new_old]], "c": old_cluster[left[new_old]], "s": score[new_old]})
    total = frame.groupby(["g", "c"])["s"].sum().reset_index()
    group_size = pd.Series(labels[n_old:]).value_counts()
    cluster_size = pd.Series(old_cluster).value_counts()
    total["avg"] = total["s"] / (
        group_size.reindex(total["g"]).to_numpy() * cluster_size.reindex(total["c"]).to_numpy()
    )
    best = (
        total[total["avg"] >= threshold]
        .sort_values(["g", "avg"], ascending=[True, False])
        .drop_duplicates("g")
        .set_index("g")["c"]
    )
    group_of_new = labels[n_old:]
    joins = best.reindex(group_of_new).to_numpy()
    has = ~pd.isna(joins)
    assigned[has] = joins[has].astype(np.int64)
    fresh_groups, fresh = np.unique(group_of_new[~has], return_inverse=True)
    assigned[~has] = next_id + fresh
    is_new[~has] = True

    with staged_output(out_dir, overwrite, SUMMARY_FILE) as tmp:
        cluster_of = np.concatenate([old_cluster, assigned])  # every combined row's cluster after this run
        words = describe(evidence[kept], model.evidence_names())
        matches = matches_frame(ids, left[kept], right[kept], score[kept], words, cluster_of)
        write_parquet(matches, tmp / MATCHES_FILE)
        write_parquet(
            pd.DataFrame({"variantid": new_cat.ids.to_numpy(), "cluster_id": assigned, "is_new_cluster": is_new}),
            tmp / CLUSTERS_FILE,
        )
        summary = {
            "mode": "incremental",
            "index": meta,
            "new_items": n_new,
            "candidates": len(left),
            "cluster_mates": expansion,
            "matches": int(kept.sum()),
            "joined_existing_clusters": int(has.sum()),
            "new_clusters": len(fresh_groups),
            "parameters": {**config.to_dict(), "threshold": threshold},
            "calibration": calibration,
            "clustering": asdict(report) | split_report(matches),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        write_json(summary, tmp / SUMMARY_FILE)
    return summary


def full_match_calibration(full: dict | None, config: MatchConfig) -> tuple[dict, float] | None:
    """(calibration, threshold) a full match's summary.json recorded, for its new items' candidates (the
    calibration's facts that say how to apply it; ``--threshold`` overrides the threshold); None when
    ``full`` is not a full match's summary."""
    if full is None or full.get("mode") == "incremental" or "calibration" not in full:
        return None
    keep = ("method", "prior", "training_prior", "platt", "threshold_rule")
    calibration = {k: full["calibration"][k] for k in keep if k in full["calibration"]}
    return calibration, full["parameters"]["threshold"] if config.threshold is None else config.threshold


def _calibrated(model, prob: np.ndarray, clusters_path, config: MatchConfig) -> tuple[np.ndarray, float, dict]:
    """The new candidates' probabilities, threshold and calibration facts, as the full match decided them.

    The full match re-calibrated its candidates (``--calibrate prior``) and chose its threshold on them; the
    new items' candidates are drawn the same way, so they get the same transform and threshold, read from the
    ``summary.json`` beside ``clusters_path``. Without one, the new candidates are calibrated on their own (as
    a full match would, on far fewer pairs), and the log says so. ``--calibrate none`` keeps the model's own
    probabilities and threshold; ``--threshold`` overrides the threshold in every case."""
    import json
    from pathlib import Path

    if config.calibrate == "none":
        threshold = model.threshold if config.threshold is None else config.threshold
        return prob, threshold, {"method": "none", "prior": model.calibrator.prior, "applied": "the model's own"}
    summary_path = Path(clusters_path).parent / SUMMARY_FILE
    recorded = full_match_calibration(json.loads(summary_path.read_text()) if summary_path.exists() else None, config)
    if recorded is not None:
        calibration, threshold = recorded
        log.info(
            "new candidates calibrated as the full match in %s was (%s; threshold %.4f)",
            summary_path.parent,
            calibration.get("method"),
            threshold,
        )
        facts = calibration | {"applied": f"the full match's, {summary_path}"}
        return apply_calibration(model, prob, calibration), threshold, facts
    log.warning(
        "%s not found beside %s: the new items' candidates are calibrated on their own, as a full match would "
        "calibrate its own (on far fewer pairs); give the clusters.parquet of a full `match` run to apply its "
        "calibration and threshold",
        SUMMARY_FILE,
        clusters_path,
    )
    out, calibration = calibrate_candidates(model, prob, None)
    threshold = config.threshold
    if threshold is None:
        threshold = expected_f1_threshold(out) if calibration["method"] != "none" else model.threshold
    return out, threshold, {**calibration, "applied": "the new candidates' own"}
