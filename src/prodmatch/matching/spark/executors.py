"""What runs on the Spark executors: the broadcast model, item vectors and tokens of a batch, IVF cell assignment and search, scoring, and the cluster guard."""

from __future__ import annotations

import io
import logging
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from prodmatch.blocking import token_occurrences
from prodmatch.candidates import informative_items, item_vectors, modality_vectors
from prodmatch.clustering import cluster_items
from prodmatch.io import catalogue_from_arrow
from prodmatch.models import load_model
from prodmatch.pairs import PairSet

log = logging.getLogger(__name__)


WORKER_MODELS: dict[str, object] = {}


def worker_model(bundle):
    """The model of a broadcast run directory, unpacked and loaded once per Python worker."""
    key, data = bundle.value
    model = WORKER_MODELS.get(key)
    if model is None:
        where = Path(tempfile.mkdtemp(prefix="prodmatch-run-"))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(where, filter="data")
        model = WORKER_MODELS[key] = load_model(where).for_job("catalogue")
    return model


def batch_catalogue(table: pa.Table, layout: dict[str, list[str]], id_column: str, data_config):
    """The Catalogue of a batch of joined item rows, read by the local engine's reader in memory: the batch is
    split back into its item files' columns (:func:`prodmatch.io.catalogue_from_arrow`)."""
    return catalogue_from_arrow(
        {name: table.select([id_column, *columns]) for name, columns in layout.items()}, data_config
    )


def vector_bytes(vectors: np.ndarray) -> pa.Array:
    """(n, d) float32 -> n binary values, each a row's 4 d bytes: how the Spark engine carries vectors. A vector
    as ``array<float>`` cost a repetition and a definition level per number in every parquet write and read,
    and about as much in every shuffle."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    n, d = vectors.shape
    offsets = (np.arange(n + 1, dtype=np.int32) * (4 * d)).astype(np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(vectors)])


def column_vectors(table: pa.Table, column: str) -> np.ndarray:
    """(n, d) float32 of a column of vectors: binary (:func:`vector_bytes`) or a list of floats."""
    arr = table[column].combine_chunks()
    if len(arr) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        if arr.null_count:
            raise ValueError(f"{column}: {arr.null_count} vectors are null")
        width = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
        offsets = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset : arr.offset + len(arr) + 1]
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        lengths = np.diff(offsets)
        if len(data) % (4 * len(arr)) or (lengths != lengths[0]).any():
            raise ValueError(f"{column}: vectors of different lengths")
        return np.ascontiguousarray(data.view("<f4").reshape(len(arr), -1), dtype=np.float32)
    values = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return np.ascontiguousarray(values.reshape(len(arr), -1))


def ids_array(values) -> pa.Array:
    return pa.array(values.tolist() if values.dtype == object else values)


def item_rows_fn(bundle, layout, id_column, data_config, want_tokens: bool, want_modality_vectors: bool):
    """mapInArrow: joined item rows -> (id, vec, searchable, category, tokens, mvec, complete)."""

    def run(batches):
        model = worker_model(bundle)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            cat = batch_catalogue(pa.Table.from_batches([batch]), layout, id_column, data_config)
            vectors, _ = item_vectors(model, cat)
            searchable = informative_items(model, cat)
            n = len(vectors)
            columns = {
                "id": ids_array(cat.ids.to_numpy()),
                "vec": vector_bytes(vectors),
                "searchable": pa.array(searchable),
                "category": pa.array(
                    cat.categories["category2"].astype(object).where(cat.categories["category2"].notna(), None).tolist()
                    if cat.categories is not None
                    else [None] * n,
                    pa.string(),
                ),
            }
            if want_tokens:
                rows, token = token_occurrences(cat)
                lists = [[] for _ in range(n)]
                for r, t in zip(rows.tolist(), token.tolist(), strict=True):
                    lists[r].append(t)
                columns["tokens"] = pa.array([sorted(set(x)) for x in lists], pa.list_(pa.string()))
            if want_modality_vectors:
                names = [name for name, _ in model.modalities_]
                mv = modality_vectors(cat, names)
                complete = np.ones(n, dtype=bool)
                for name in names:
                    complete &= cat.modalities[name].present
                columns["mvec"] = vector_bytes(mv)
                columns["complete"] = pa.array(complete)
            yield pa.RecordBatch.from_pydict(columns)

    return run


def assign_fn(centroids: np.ndarray, probes: int):
    """mapInArrow: (id, vec, block, is_query) -> a target row in the nearest cell, a query row in each of
    the ``probes`` nearest (only for queries)."""

    def run(batches):
        import faiss

        index = faiss.IndexFlatIP(centroids.shape[1])
        index.add(centroids)
        p = min(probes, len(centroids))
        for batch in batches:
            if batch.num_rows == 0:
                continue
            table = pa.Table.from_batches([batch])
            vec = column_vectors(table, "vec")
            _, cells = index.search(vec, p)
            query = table["is_query"].to_numpy(zero_copy_only=False)
            target = table["is_target"].to_numpy(zero_copy_only=False)
            # the nearest cell: the item's target row (if a target); every probed cell: a query row
            take_t = np.flatnonzero(target)
            take_q = np.repeat(np.flatnonzero(query), p)
            cell_q = cells[query].ravel()
            rows = np.concatenate([take_t, take_q])
            out = table.take(pa.array(rows)).select(["id", "vec", "block"])
            out = out.append_column("cell", pa.array(np.concatenate([cells[take_t, 0], cell_q]).astype(np.int64)))
            out = out.append_column(
                "role_target", pa.array(np.concatenate([np.ones(len(take_t), bool), np.zeros(len(take_q), bool)]))
            )
            yield from out.to_batches()

    return run


def search_cell_fn(k: int):
    """applyInArrow per (block, cell, chunk): each query's exact top-(k+1) targets by inner product."""

    def run(table: pa.Table) -> pa.Table:
        import faiss

        target = table["role_target"].to_numpy(zero_copy_only=False)
        t_tab, q_tab = table.filter(pa.array(target)), table.filter(pa.array(~target))
        empty = pa.table({"q": table["id"].slice(0, 0), "t": table["id"].slice(0, 0), "s": pa.array([], pa.float32())})
        if t_tab.num_rows == 0 or q_tab.num_rows == 0:
            return empty
        tv, qv = column_vectors(t_tab, "vec"), column_vectors(q_tab, "vec")
        index = faiss.IndexFlatIP(tv.shape[1])
        index.add(tv)
        kk = min(k + 1, len(tv))
        dist, nbr = index.search(qv, kk)
        ok = nbr >= 0
        q_rows = np.repeat(np.arange(len(qv)), kk)[ok.ravel()]
        t_rows = nbr[ok]
        return pa.table(
            {
                "q": q_tab["id"].take(pa.array(q_rows)),
                "t": t_tab["id"].take(pa.array(t_rows)),
                "s": pa.array(dist[ok].astype(np.float32)),
            }
        )

    return run


def score_fn(bundle, layout, id_column, data_config, shipped):
    """cogroup applyInArrow: a group's pairs (id1, id2) and its items -> (id1, id2, score, evidence)."""

    def run(pairs: pa.Table, items: pa.Table) -> pa.Table:
        if pairs.num_rows == 0:
            return pa.table(
                {
                    "id1": pairs["id1"],
                    "id2": pairs["id2"],
                    "score": pa.array([], pa.float64()),
                    "evidence": pa.array([], pa.int64()),
                }
            )
        model = worker_model(bundle)
        shipped.add(items.num_rows)
        cat = batch_catalogue(items.drop_columns(["part"]), layout, id_column, data_config)
        id1 = pairs["id1"].to_numpy(zero_copy_only=False)
        id2 = pairs["id2"].to_numpy(zero_copy_only=False)
        a, b = cat.ids.get_indexer(id1), cat.ids.get_indexer(id2)
        if (a < 0).any() or (b < 0).any():
            raise RuntimeError("prodmatch: a scoring group lacks items of its pairs (a bug; please report it)")
        pairset = PairSet(a.astype(np.int32), b.astype(np.int32), None, np.arange(len(a)), id1, id2)
        scores = model.score(cat, pairset)
        score = model.calibrated(scores)
        return pa.table(
            {
                "id1": pairs["id1"],
                "id2": pairs["id2"],
                "score": pa.array(np.asarray(score, np.float64)),
                "evidence": pa.array(scores.evidence.astype(np.int64)),
            }
        )

    return run


GUARD_COUNTS = ("components", "relinked", "split", "too_large", "one_to_one_pairs", "matched_greedily")


def guard_fn(threshold: float, linkage_max: int, linking: bool = False, one_to_one: bool = False):
    """applyInArrow per group of whole components: the local engine's clustering of their scored pairs ->
    (id, rep, and the group's ClusterReport counts on its first row). ``linking``: the pairs carry each
    item's source (``s1``, ``s2``), and the clusters are the local engine's for two sources."""

    def run(table: pa.Table) -> pa.Table:
        id1 = table["id1"].to_numpy(zero_copy_only=False)
        id2 = table["id2"].to_numpy(zero_copy_only=False)
        ids, inverse = np.unique(np.concatenate([id1, id2]), return_inverse=True)
        left, right = inverse[: len(id1)], inverse[len(id1) :]
        score = table["score"].to_numpy(zero_copy_only=False).astype(np.float64)
        sources = None
        if linking:
            sources = np.zeros(len(ids), dtype=np.int8)
            sources[left] = table["s1"].to_numpy(zero_copy_only=False)
            sources[right] = table["s2"].to_numpy(zero_copy_only=False)
        labels, report = cluster_items(len(ids), left, right, score, threshold, linkage_max, sources, one_to_one)
        rep = pd.Series(ids).groupby(labels).transform("min").to_numpy()  # a cluster's smallest id names it
        counts = np.zeros((len(GUARD_COUNTS), len(ids)), dtype=np.int64)
        counts[:, 0] = [
            report.components,
            report.components_relinked,
            report.components_split,
            report.components_too_large,
            report.one_to_one_pairs,
            report.components_matched_greedily,
        ]
        return pa.table({"id": ids_array(ids), "rep": ids_array(rep), **dict(zip(GUARD_COUNTS, counts, strict=True))})

    return run


def exact_top_fn(queries: np.ndarray, blocks: np.ndarray, k: int):
    """mapInArrow over (id, vec, block) targets: each sampled query's top-k of the batch, by inner product,
    among the targets of its own block."""

    def run(batches):
        for batch in batches:
            if batch.num_rows == 0:
                continue
            table = pa.Table.from_batches([batch])
            sim = queries @ column_vectors(table, "vec").T  # (Q, B)
            block = table["block"].to_numpy(zero_copy_only=False)
            sim[blocks[:, None] != block[None, :]] = -np.inf
            kk = min(k, sim.shape[1])
            best = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
            q = np.repeat(np.arange(len(queries)), kk)
            s_best = sim[q, best.ravel()]
            ok = np.isfinite(s_best)
            yield from pa.table(
                {"qi": pa.array(q[ok]), "t": table["id"].take(pa.array(best.ravel()[ok])), "s": pa.array(s_best[ok])}
            ).to_batches()

    return run


def sort_codes(values) -> np.ndarray:
    """Integer codes of an Arrow column in Spark's order (numbers by value, strings by their UTF-8 bytes, which
    is code-point order)."""
    return np.unique(values.to_numpy(zero_copy_only=False), return_inverse=True)[1].ravel()


def first_k(group: np.ndarray, keys: tuple[np.ndarray, ...], k: int) -> np.ndarray:
    """The rows that are among their group's first ``k`` by ``keys`` (the last key first, as ``np.lexsort``): a
    window's ``row_number() <= k`` in one sort."""
    order = np.lexsort((*keys, group))
    g = group[order]
    return order[np.arange(len(g)) - np.searchsorted(g, g, side="left") < k]


TIE_PIECE = 65_536  # pairs per gathered block of vectors


def token_top_fn(k: int):
    """cogroup applyInArrow: a group's (q, j, w) pairs and the (id, vec) of the items they name -> each query's
    ``k`` pairs by weight, then the inner product of the two vectors, then ``j``. The product is summed in
    float32 in dimension order, as Spark's ``aggregate`` of ``zip_with`` did."""

    def run(pairs: pa.Table, items: pa.Table) -> pa.Table:
        import pyarrow.compute as pc

        if pairs.num_rows == 0:
            return pa.table({"q": pairs["q"], "j": pairs["j"]})
        vectors = column_vectors(items, "vec")
        qi = pc.index_in(pairs["q"], value_set=items["id"]).to_numpy(zero_copy_only=False)
        ji = pc.index_in(pairs["j"], value_set=items["id"]).to_numpy(zero_copy_only=False)
        tie = np.empty(len(qi), dtype=np.float32)
        for s in range(0, len(qi), TIE_PIECE):
            product = vectors[qi[s : s + TIE_PIECE]] * vectors[ji[s : s + TIE_PIECE]]
            tie[s : s + TIE_PIECE] = np.cumsum(product, axis=1, dtype=np.float32)[:, -1]
        w = pairs["w"].to_numpy(zero_copy_only=False)
        picked = pa.array(first_k(sort_codes(pairs["q"]), (sort_codes(pairs["j"]), -tie, -w), k))
        return pa.table({"q": pairs["q"].take(picked), "j": pairs["j"].take(picked)})

    return run
