"""The Spark engine: the local engine's stages, distributed with Apache Spark (PySpark 4, Java 17).

Same model, same rules, same output files; nothing the size of the catalogue is collected to the driver,
which holds the model, the coarse centroids and small statistics only.

1. **Items**: each item file is read by Spark (a file or a folder of parquet parts, any path Spark reads)
   and joined on the id. Executors parse a batch of items with the local engine's own reader
   (:func:`prodmatch.io.read_catalogue`), so validation and normalisation are one implementation.
2. **Item vectors**: the model, broadcast once and loaded once per Python worker, computes each batch's
   search vectors, the items' tokens and their modality vectors (``mapInArrow``).
3. **Candidates**: a distributed IVF search. Coarse centroids are trained with faiss k-means on a sample on
   the driver; every item is the target of its nearest centroid's cell and a query of its ``probes``
   nearest cells; each cell runs faiss exact top-k of its queries among its targets (``applyInArrow``), a
   cell over ``cell_cap`` targets split in chunks that every query visits (no straggler holds a popular
   cell); each query's lists are merged to its global top-k. One cell per block when the local engine
   would search exactly (``MatchConfig.index_kind``): the same neighbours. The items missing a modality get
   the same exact pass the local engine gives them, and the shared rare values are Spark joins.
4. **Scoring**: pairs are grouped by the cell of their first item, so each group needs the items of few
   cells; a group's pairs and items meet in ``cogroup().applyInArrow`` and are scored by the model's own
   ``predict_proba``. Calibration for the candidates (EM prior, best expected F1) runs on aggregates.
5. **Clustering**: connected components of the pairs at or above the threshold by min-label propagation
   with pointer jumping, the lineage cut by a parquet checkpoint every few rounds; then whole components,
   grouped, go through the local engine's :func:`prodmatch.clustering.cluster_items` (the
   anti-chaining guard): one implementation, two drivers.

Outputs are staged under a hidden path beside ``out_dir`` and renamed at the end (Hadoop FileSystem), so
an interrupted run leaves no partial output. ``matches.parquet`` and ``clusters.parquet`` are single files,
canonical as the local engine's (pairs with ``variantid1 < variantid2``, sorted); with
``SparkOptions.part_files`` (``--part-files``) folders of Spark's part files, which ``pandas.read_parquet``
and Spark read alike.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from prodmatch.blocking import token_occurrences
from prodmatch.calibration import PriorEstimate
from prodmatch.candidates import informative_items, item_vectors, modality_vectors, vector_kind
from prodmatch.clustering import ClusterReport, cluster_items
from prodmatch.config import CALIBRATION_K, MatchConfig
from prodmatch.errors import ConfigError, DataError, EngineError
from prodmatch.evidence import cap, describe
from prodmatch.io import (
    ATTRIBUTES_COLUMN,
    ATTRIBUTES_FILE,
    CLUSTERS_FILE,
    EXTRA_PICTURES_COLUMN,
    MATCHES_FILE,
    PICTURE_FILES,
    SUMMARY_FILE,
    TEXT_COLUMNS,
    TEXT_FILE,
    TRUTH_FILE,
    embedding_kind,
    read_catalogue,
)
from prodmatch.matching.incremental import INDEX_META_FILE, MATES_MAX_CLUSTER, full_match_calibration
from prodmatch.matching.link import check_disjoint_ids, link_facts
from prodmatch.matching.output import SOURCE_NAMES, split_report, timed
from prodmatch.matching.quality import first_with_column
from prodmatch.models import load_model
from prodmatch.pairs import PairSet

__all__ = [
    "SparkOptions",
    "build_spark_index",
    "connected_components",
    "java_version",
    "match_new_spark",
    "match_spark",
    "spark_session",
]

log = logging.getLogger(__name__)

MIN_JAVA = 17
RUN_FILES_SKIPPED = ("plots", "checkpoint.pt", "checkpoints")  # not needed to score: not broadcast


@dataclass(frozen=True)
class SparkOptions:
    """How the Spark engine runs (what :class:`MatchConfig` says is matched the same on both engines).

    Attributes:
        master: the master of a session started here (``local[*]``, ``yarn``, ``spark://...``); ignored
            when a session is passed in.
        conf: extra Spark settings of a session started here.
        partitions: shuffle partitions, and groups of cells and components; None: 4 per core.
        cells: coarse IVF cells; None: one when the local engine would search exactly, else sqrt(items).
        probes: cells each item searches (its nearest ``probes`` centroids).
        cell_cap: a cell with more targets than this is split in chunks (every query of the cell visits each).
        centroid_sample: items sampled to train the centroids on the driver (with faiss k-means).
        checkpoint_dir: where intermediate data and connected-components checkpoints go; None: inside the
            staging folder, removed at the end.
        checkpoint_every: connected-components rounds between lineage cuts.
        part_files: write matches.parquet and clusters.parquet as folders of Spark's part files (one per
            task) instead of single files, for outputs too large to funnel through one task.
    """

    master: str | None = None
    conf: dict = field(default_factory=dict)
    partitions: int | None = None
    cells: int | None = None
    probes: int = 8
    cell_cap: int = 20_000
    centroid_sample: int = 100_000
    checkpoint_dir: str | None = None
    checkpoint_every: int = 3
    part_files: bool = False

    def __post_init__(self) -> None:
        if self.probes < 1:
            raise ConfigError(f"--probes must be at least 1, got {self.probes}")
        if self.cells is not None and self.cells < 1:
            raise ConfigError(f"--cells must be at least 1, got {self.cells}")
        if self.cell_cap < 2:
            raise ConfigError(f"--cell-cap must be at least 2, got {self.cell_cap}")
        if self.partitions is not None and self.partitions < 1:
            raise ConfigError(f"--partitions must be at least 1, got {self.partitions}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every must be at least 1, got {self.checkpoint_every}")


# ------------------------------------------------------------------------------------------ session


def java_version(java: str | None = None) -> int | None:
    """The major version of the ``java`` that Spark would start ($JAVA_HOME's, else the one on PATH); None
    when there is none."""
    home = os.environ.get("JAVA_HOME")
    java = java or (str(Path(home) / "bin" / "java") if home else shutil.which("java"))
    if not java or not Path(java).exists():
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2)) if major == 1 and found.group(2) else major  # "1.8" is Java 8


def _require_spark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError as e:
        raise ConfigError("--engine spark needs PySpark: pip install 'prodmatch[spark]' (and Java 17 or newer)") from e
    version = java_version()
    if version is None or version < MIN_JAVA:
        found = "no java found (JAVA_HOME, PATH)" if version is None else f"found Java {version}"
        raise ConfigError(
            f"--engine spark needs Java {MIN_JAVA} or newer ({found}): install OpenJDK {MIN_JAVA} (e.g. apt install "
            f"openjdk-{MIN_JAVA}-jre-headless) and set JAVA_HOME; the local engine needs no Java"
        )


def spark_session(master: str | None = None, conf: dict | None = None):
    """A SparkSession for prodmatch (Arrow on), started with ``master`` (default ``local[*]``) and ``conf``."""
    _require_spark()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("prodmatch").master(master or "local[*]")
    settings = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.adaptive.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": "4g",  # local mode: the driver is the executor too
    }
    if (master or "local").startswith("local") and "PYSPARK_PYTHON" not in os.environ:
        os.environ["PYSPARK_PYTHON"] = sys.executable  # local workers import prodmatch from this environment
    settings |= {str(k): str(v) for k, v in (conf or {}).items()}
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


class _FileSystem:
    """The Hadoop FileSystem of a path (local, hdfs:, s3a:, ...), through the session's JVM."""

    def __init__(self, spark, path: str):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()
        self.fs = self._path(path).getFileSystem(self._conf)

    def _path(self, path: str):
        return self._jvm.org.apache.hadoop.fs.Path(str(path))

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._path(path)))

    def is_empty_dir(self, path: str) -> bool:
        return len(self.fs.listStatus(self._path(path))) == 0

    def delete(self, path: str) -> None:
        self.fs.delete(self._path(path), True)

    def rename(self, src: str, dst: str) -> None:
        if not self.fs.rename(self._path(src), self._path(dst)):
            raise OSError(f"could not rename {src} to {dst}")

    def entries(self, path: str) -> list[str]:
        """The paths of the files and folders directly inside folder ``path``."""
        return [str(st.getPath().toString()) for st in self.fs.listStatus(self._path(path))]

    def files(self, path: str) -> list[str]:
        """The paths of the files directly inside folder ``path``."""
        return [str(st.getPath().toString()) for st in self.fs.listStatus(self._path(path)) if st.isFile()]

    def write_text(self, path: str, text: str) -> None:
        out = self.fs.create(self._path(path), True)
        try:
            out.write(bytearray(text.encode()))
        finally:
            out.close()


def _join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *parts])


# ------------------------------------------------------------------------------------------ executors

_WORKER_MODELS: dict[str, object] = {}


def _worker_model(bundle):
    """The model of a broadcast run directory, unpacked and loaded once per Python worker."""
    key, data = bundle.value
    model = _WORKER_MODELS.get(key)
    if model is None:
        where = Path(tempfile.mkdtemp(prefix="prodmatch-run-"))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(where, filter="data")
        model = _WORKER_MODELS[key] = load_model(where).for_job("catalogue")
    return model


def _batch_catalogue(table: pa.Table, layout: dict[str, list[str]], id_column: str, data_config):
    """The Catalogue of a batch of joined item rows, read by the local engine's reader: the batch is split
    back into its item files in a private folder."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="prodmatch-items-") as tmp:
        for name, columns in layout.items():
            pq.write_table(table.select([id_column, *columns]), Path(tmp) / name)
        return read_catalogue(tmp, data_config)


def _vectors(table: pa.Table, column: str) -> np.ndarray:
    arr = table[column].combine_chunks()
    if len(arr) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    values = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return np.ascontiguousarray(values.reshape(len(arr), -1))


def _ids_array(values) -> pa.Array:
    return pa.array(values.tolist() if values.dtype == object else values)


def _item_rows_fn(bundle, layout, id_column, data_config, want_tokens: bool, want_modality_vectors: bool):
    """mapInArrow: joined item rows -> (id, vec, searchable, category, tokens, mvec, complete)."""

    def run(batches):
        model = _worker_model(bundle)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            cat = _batch_catalogue(pa.Table.from_batches([batch]), layout, id_column, data_config)
            vectors, _ = item_vectors(model, cat)
            searchable = informative_items(model, cat)
            n, d = vectors.shape
            columns = {
                "id": _ids_array(cat.ids.to_numpy()),
                "vec": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), d).cast(
                    pa.list_(pa.float32())
                ),
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
                columns["mvec"] = pa.FixedSizeListArray.from_arrays(
                    pa.array(np.ascontiguousarray(mv, dtype=np.float32).ravel(), pa.float32()), mv.shape[1]
                ).cast(pa.list_(pa.float32()))
                columns["complete"] = pa.array(complete)
            yield pa.RecordBatch.from_pydict(columns)

    return run


def _assign_fn(centroids: np.ndarray, probes: int):
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
            vec = _vectors(table, "vec")
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


def _search_cell_fn(k: int):
    """applyInArrow per (block, cell, chunk): each query's exact top-(k+1) targets by inner product."""

    def run(table: pa.Table) -> pa.Table:
        import faiss

        target = table["role_target"].to_numpy(zero_copy_only=False)
        t_tab, q_tab = table.filter(pa.array(target)), table.filter(pa.array(~target))
        empty = pa.table({"q": table["id"].slice(0, 0), "t": table["id"].slice(0, 0), "s": pa.array([], pa.float32())})
        if t_tab.num_rows == 0 or q_tab.num_rows == 0:
            return empty
        tv, qv = _vectors(t_tab, "vec"), _vectors(q_tab, "vec")
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


def _score_fn(bundle, layout, id_column, data_config, shipped):
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
        model = _worker_model(bundle)
        shipped.add(items.num_rows)
        cat = _batch_catalogue(items.drop_columns(["part"]), layout, id_column, data_config)
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


def _guard_fn(threshold: float, linkage_max: int, linking: bool = False, one_to_one: bool = False):
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
        return pa.table({"id": _ids_array(ids), "rep": _ids_array(rep), **dict(zip(GUARD_COUNTS, counts, strict=True))})

    return run


# ------------------------------------------------------------------------------------------ stages


def connected_components(
    spark,
    edges,
    checkpoint_dir: str,
    *,
    checkpoint_every: int = 3,
    max_rounds: int | None = None,
):
    """Connected components of an undirected edge list in Spark: (labels, rounds).

    ``edges`` has columns ``src`` and ``dst`` (any orderable id type); ``labels`` has ``id`` and
    ``component``, the smallest id of its component, for every node with an edge (self-loops ignored).

    The alternating large-star / small-star algorithm of Kiveris et al. ("Connected Components in
    MapReduce and Beyond", 2014): large-star links every neighbour larger than a node to the smallest of
    its neighbourhood, small-star links a node and its smaller neighbours to the smallest of them; each
    keeps the components and the pair shrinks them until every component is a star around its smallest
    id. Plain min-label propagation needs as many rounds as the longest shortest path (a chain of a
    million listings: a million rounds); this needs O(log^2 n) rounds (proved there), in practice about
    log2 of the longest path (measured: a chain of 4,000 nodes in 10
    rounds with its ids shuffled, 12 with them ascending, a chain of 20,000 in 12). The edges stay at most
    as many as the input's. The lineage is cut every ``checkpoint_every`` rounds by writing the edges to
    parquet under ``checkpoint_dir`` and reading them back, so the query plan never grows with the rounds.

    Raises:
        RuntimeError: not converged within ``max_rounds`` (default log2(nodes)^2 + 16, the proved order),
            naming the edges still moving.
    """
    from pyspark.sql import functions as F

    def undirected(df):
        return df.union(df.select(F.col("v").alias("u"), F.col("u").alias("v"))).distinct()

    def large_star(e):
        nb = undirected(e)
        low = nb.groupBy("u").agg(F.least(F.min("v"), F.first("u")).alias("m"))
        return nb.where(F.col("v") > F.col("u")).join(low, "u").select(F.col("v").alias("u"), F.col("m").alias("v"))

    def small_star(e):
        nb = undirected(e).where(F.col("v") < F.col("u"))  # each node's smaller neighbours
        low = nb.groupBy("u").agg(F.min("v").alias("m"))
        linked = nb.join(low, "u").where(F.col("v") != F.col("m")).select(F.col("v").alias("u"), F.col("m").alias("v"))
        return linked.union(low.select("u", F.col("m").alias("v"))).distinct()

    e = edges.select(F.col("src").alias("u"), F.col("dst").alias("v")).where(F.col("u") != F.col("v"))
    e = _materialise(
        spark,
        e.select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v")).distinct(),
        _join(checkpoint_dir, "cc_0"),
    )
    nodes = e.select("u").union(e.select("v")).distinct().count()
    cap = max_rounds or math.ceil(math.log2(nodes + 2)) ** 2 + 16
    rounds = 0
    while True:
        rounds += 1
        e = small_star(large_star(e))
        if rounds % checkpoint_every == 0:
            e = _materialise(spark, e, _join(checkpoint_dir, f"cc_{rounds}"))
        else:
            e = e.localCheckpoint(eager=True)
        # done when every component is a star around its smallest node: no node is both a leaf (u, the
        # larger end) and a centre (v) of an edge
        moving = e.select(F.col("u").alias("v")).join(e, "v", "left_semi").count()
        log.info("connected components: round %d, %d nodes still linked to a non-root", rounds, moving)
        if moving == 0:
            break
        if rounds >= cap:
            raise RuntimeError(
                f"connected components did not converge in {rounds} rounds ({moving:,} nodes still moving among "
                f"{nodes:,}); the algorithm's bound is O(log^2 n) rounds: please report this graph"
            )
    centres = e.select(F.col("v").alias("id"), F.col("v").alias("component")).distinct()
    labels = e.select(F.col("u").alias("id"), F.col("v").alias("component")).union(centres)
    return labels, rounds


def _materialise(spark, df, path: str):
    """Write ``df`` to parquet at ``path`` and read it back: computed once, lineage cut."""
    df.write.mode("overwrite").parquet(path)
    return spark.read.parquet(path)


def _read_items(spark, data_dir: str, data_config, fs: _FileSystem):
    """The catalogue's item files joined on the id, and the layout (file -> columns) to split batches back.

    The columns are the ones the local reader would read for ``data_config``; an item missing from one file
    gets nulls there, which that reader reads as missing (as it reads an item absent from the file)."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_type

    id_column = data_config.id_column
    if not fs.exists(_join(data_dir, TEXT_FILE)):
        raise DataError(f"{_join(data_dir, TEXT_FILE)} not found: a data directory needs {TEXT_FILE}")
    pictures = [f for f in PICTURE_FILES if fs.exists(_join(data_dir, f))]
    if len(pictures) > 1:
        raise DataError(f"both {PICTURE_FILES[0]} and {PICTURE_FILES[1]} are in {data_dir}; keep one")
    side = {
        TEXT_FILE: (["name"] if data_config.load_names else [])
        + (list(TEXT_COLUMNS) if data_config.load_texts else []),
        ATTRIBUTES_FILE: (["categories"] if data_config.load_categories else [])
        + ([ATTRIBUTES_COLUMN] if data_config.load_attributes else []),
    }
    for name in pictures:
        side[name] = [EXTRA_PICTURES_COLUMN] if data_config.load_extra_pictures else []
    files = [TEXT_FILE, *pictures]
    if side[ATTRIBUTES_FILE] and fs.exists(_join(data_dir, ATTRIBUTES_FILE)):
        files.append(ATTRIBUTES_FILE)
    wanted = set(data_config.modalities) if data_config.modalities is not None else None
    layout: dict[str, list[str]] = {}
    frames = []
    found: dict[str, str] = {}
    for name in files:
        path = _join(data_dir, name)
        df = spark.read.parquet(path)
        if id_column not in df.columns:
            raise DataError(f"{path}: no id column {id_column!r}; columns are {df.columns}")
        columns = []
        for fld in df.schema.fields:
            if fld.name == id_column:
                continue
            is_modality = name != ATTRIBUTES_FILE and embedding_kind(to_arrow_type(fld.dataType), fld.name)
            if (is_modality and (wanted is None or fld.name in wanted)) or fld.name in side.get(name, []):
                if fld.name in found:
                    raise DataError(f"column {fld.name!r} is in both {found[fld.name]} and {path}; keep one")
                found[fld.name] = path
                columns.append(fld.name)
        longs = [c for c in TEXT_COLUMNS if c in columns]
        columns = [c for c in columns if c not in longs[1:]]  # the first long text found, as locally
        layout[name] = columns
        bad = df.groupBy(id_column).count().where((F.col("count") > 1) | F.col(id_column).isNull()).limit(6).collect()
        nulls = [r["count"] for r in bad if r[id_column] is None]
        if nulls:
            raise DataError(f"{path}: {id_column} has {nulls[0]} nulls; every item needs an id")
        dup = [r for r in bad if r[id_column] is not None]
        if dup:
            raise DataError(
                f"{path}: duplicate {id_column} values, e.g. {[r[id_column] for r in dup]}; keep one row per item"
            )
        frames.append((name, df.select(id_column, *columns)))
    absent = sorted((wanted or set()) - set(found))
    if absent:
        raise DataError(f"modalities {absent} not found in the item files of {data_dir}")
    items = frames[0][1]
    for name, df in frames[1:]:
        how = "left" if name == ATTRIBUTES_FILE else "full_outer"  # attributes of items without embeddings: ignored
        items = items.join(df, id_column, how)
    return items, layout


def _train_centroids(targets, cells: int, sample: int, seed: int = 0) -> np.ndarray:
    """(cells, d) unit centroids by faiss spherical k-means on at most ``sample`` target vectors, brought to
    the driver (the one sample the driver holds); fewer cells when the sample is small."""
    import faiss

    n_targets = targets.count()
    fraction = min(1.0, sample / max(n_targets, 1))
    picked = targets.sample(fraction=fraction, seed=seed).select("vec").limit(sample).toArrow()  # no Python floats
    train = _vectors(picked, "vec")
    cells = max(1, min(cells, len(train) // 4))
    if cells == 1:
        return np.zeros((1, train.shape[1]), dtype=np.float32)
    kmeans = faiss.Kmeans(train.shape[1], cells, niter=20, seed=seed, spherical=True, verbose=False)
    kmeans.train(train)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def _ivf_search(
    spark,
    rows,
    k: int,
    cells: int,
    probes: int,
    cell_cap: int,
    sample: int,
    work: str,
    tag: str,
    *,
    centroids: np.ndarray | None = None,
    queries_are_targets: bool = True,
    ranked: bool = False,
):
    """Every query's top-k targets of its own block, by a cell-wise exact search (see the module docstring).

    ``rows``: (id, vec, block, is_query, is_target). ``centroids``: given (a saved index's), else trained
    on the targets when ``cells`` > 1. ``queries_are_targets``: a query finds itself, so k + 1 are searched
    and itself dropped (as the local engine does). Returns (DataFrame of (q, t, s) with q != t, at most k per
    q; facts; the target rows' (id, cell, block) when there is more than one cell, else None). ``ranked``:
    with each target's place ``r`` in its query's list (1 first, counting the query itself where it is a
    target, as the local engine's search lists do).
    """
    from pyspark.sql import functions as F

    dim = len(rows.select("vec").first()[0])
    if centroids is None:
        centroids = (
            _train_centroids(rows.where("is_target"), cells, sample)
            if cells > 1
            else np.zeros((1, dim), dtype=np.float32)
        )
    cells = len(centroids)
    assigned = rows.mapInArrow(
        _assign_fn(centroids, probes if cells > 1 else 1),
        f"id {rows.schema['id'].dataType.simpleString()}, vec array<float>, block string, cell bigint, "
        "role_target boolean",
    )
    assigned = _materialise(spark, assigned, _join(work, f"{tag}_assigned"))
    sizes = assigned.where("role_target").groupBy("block", "cell").count()
    chunks = sizes.select("block", "cell", F.ceil(F.col("count") / F.lit(cell_cap)).alias("chunks"))
    stats = sizes.agg(
        F.count("*").alias("cells"), F.max("count").alias("largest"), F.countDistinct("block").alias("blocks")
    ).first()
    split = chunks.where("chunks > 1").count()
    with_chunks = assigned.join(F.broadcast(chunks) if cells == 1 else chunks, ["block", "cell"], "left")
    with_chunks = with_chunks.where(F.col("chunks").isNotNull())  # a probe of a cell with no target: nothing
    t_part = with_chunks.where("role_target").withColumn("chunk", F.pmod(F.xxhash64("id"), F.col("chunks")))
    q_part = with_chunks.where(~F.col("role_target")).withColumn(
        "chunk", F.explode(F.sequence(F.lit(0).cast("bigint"), F.col("chunks") - 1))
    )
    cols = ["id", "vec", "block", "cell", "chunk", "role_target"]
    cell_rows = t_part.select(*cols).unionByName(q_part.select(*cols))
    found = cell_rows.groupBy("block", "cell", "chunk").applyInArrow(
        _search_cell_fn(k),
        f"q {rows.schema['id'].dataType.simpleString()}, t {rows.schema['id'].dataType.simpleString()}, s float",
    )
    from pyspark.sql import Window

    best = Window.partitionBy("q").orderBy(F.col("s").desc(), F.col("t"))
    top = found.withColumn("r", F.row_number().over(best)).where(F.col("r") <= k + int(queries_are_targets))
    top = top.where(F.col("q") != F.col("t")).select("q", "t", "s", *(["r"] if ranked else []))
    facts = {
        "blocks": int(stats["blocks"] or 0),
        "cells": int(stats["cells"] or 0),
        "probes": probes if cells > 1 else 1,
        "largest_cell": int(stats["largest"] or 0),
        "cells_split": int(split),
        "cell_cap": cell_cap,
        "dimensions": dim,
    }
    home = assigned.where("role_target").select("id", "cell", "block") if cells > 1 else None
    return top, facts, home, centroids


def _exact_top_fn(queries: np.ndarray, blocks: np.ndarray, k: int):
    """mapInArrow over (id, vec, block) targets: each sampled query's top-k of the batch, by inner product,
    among the targets of its own block."""

    def run(batches):
        for batch in batches:
            if batch.num_rows == 0:
                continue
            table = pa.Table.from_batches([batch])
            sim = queries @ _vectors(table, "vec").T  # (Q, B)
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


# Inner products of unit vectors this close are a tie: float32 products blocked differently (by chunk, by CPU
# kernel) round apart by about 1e-7.
TIE_TOLERANCE = 1e-5


def _recall_vs_exact(spark, rows, top, k: int, sample: int = 2000, seed: int = 0, queries=None) -> float | None:
    """The share of the exact top-k neighbours (same block, itself left out) of a random sample of items that
    the IVF search returned, up to ties at the k-th place: the sample's vectors (at most ``sample``) are the
    driver's only load. ``queries``: the rows the sample is drawn from, where they are not ``rows`` (linking:
    each item queries with the other source's block)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    queries = rows if queries is None else queries
    n = queries.count()
    picked = queries.sample(fraction=min(1.0, 2 * sample / max(n, 1)), seed=seed).limit(sample).collect()
    if not picked:
        return None
    ids = [r["id"] for r in picked]
    queries = np.asarray([r["vec"] for r in picked], dtype=np.float32)
    blocks = np.asarray([r["block"] for r in picked], dtype=object)
    id_type = rows.schema["id"].dataType.simpleString()
    found = rows.select("id", "vec", "block").mapInArrow(
        _exact_top_fn(queries, blocks, k + 1), f"qi bigint, t {id_type}, s float"
    )
    lookup = spark.createDataFrame(pd.DataFrame({"qi": np.arange(len(ids)), "q": ids}), f"qi bigint, q {id_type}")
    order = Window.partitionBy("q").orderBy(F.col("s").desc(), F.col("t"))
    exact = (
        found.join(F.broadcast(lookup), "qi")
        .where(F.col("q") != F.col("t"))
        .withColumn("r", F.row_number().over(order))
        .where(F.col("r") <= k)
        .select("q", "t", "s")
    )
    total = exact.count()
    if not total:
        return None
    hits = exact.join(top.select("q", "t"), ["q", "t"], "left_semi").count()
    # Up to ties: an exact neighbour the search missed, where the search found k others and the k-th of them
    # is within TIE_TOLERANCE of it, is a near-tie at the k-th place (the search's blocked products round
    # differently from the check's, by CPU kernel), not a miss: the same neighbours up to ties.
    kth = top.groupBy("q").agg(F.min("s").alias("kth"), F.count("*").alias("found")).where(F.col("found") >= k)
    missed = exact.join(top.select("q", "t"), ["q", "t"], "left_anti").join(kth, "q")
    ties = missed.where(F.col("kth") >= F.col("s") - TIE_TOLERANCE).count()
    return (hits + ties) / total


def _expected_f1_threshold(scores, bins: int = 4096) -> float:
    """:func:`prodmatch.calibration.expected_f1_threshold` of a Spark column of probabilities, exactly, with
    aggregates: per-bin counts and sums bound the best F1 inside each bin; only the bins that could hold the
    best threshold are brought to the driver and searched score by score."""
    from pyspark.sql import functions as F

    per_bin = (
        scores.select(F.least(F.floor(F.col("score") * bins), F.lit(bins - 1)).cast("int").alias("b"), "score")
        .groupBy("b")
        .agg(F.count("*").alias("n"), F.sum("score").alias("s"))
    )
    table = per_bin.toPandas().sort_values("b", ascending=False)
    total = float(table["s"].sum())
    if not len(table) or total <= 0:
        return 0.5
    n_above = np.concatenate([[0], np.cumsum(table["n"].to_numpy())[:-1]])  # in bins above this one
    s_above = np.concatenate([[0.0], np.cumsum(table["s"].to_numpy())[:-1]])
    whole = 2 * (s_above + table["s"].to_numpy()) / (n_above + table["n"].to_numpy() + total)  # all of the bin
    bound = 2 * (s_above + table["s"].to_numpy()) / (n_above + 1 + total)  # best conceivable inside it
    open_bins = table["b"].to_numpy()[bound >= whole.max() - 1e-12]
    inside = scores.where(
        F.least(F.floor(F.col("score") * bins), F.lit(bins - 1)).cast("int").isin([int(b) for b in open_bins])
    )
    values = np.sort(np.asarray([r[0] for r in inside.select("score").collect()], dtype=np.float64))[::-1]
    where = {int(b): i for i, b in enumerate(table["b"].to_numpy())}
    best, best_value = -1.0, 0.5
    b_of = np.minimum(np.floor(values * bins), bins - 1).astype(int)
    for b in sorted(set(b_of.tolist()), reverse=True):
        v = values[b_of == b]  # descending
        i = where[b]
        f1 = 2 * (s_above[i] + np.cumsum(v)) / (n_above[i] + np.arange(1, len(v) + 1) + total)
        j = int(np.argmax(f1))
        if f1[j] > best:
            best, best_value = float(f1[j]), float(v[j])
    return best_value


def _gate(scores, prior: float | None, threshold: float):
    """:func:`prodmatch.evidence.gate` on a Spark column: a pair without evidence scores at most ``prior``, below
    ``threshold``."""
    from pyspark.sql import functions as F

    limit = F.lit(cap(prior, threshold))
    return scores.withColumn(
        "score", F.when(F.col("evidence") == 0, F.least(F.col("score"), limit)).otherwise(F.col("score"))
    )


def _matches_table(kept, clusters, model):
    """matches.parquet's rows, as the local engine writes them (:func:`prodmatch.matching.output.matches_frame`):
    ``variantid1 < variantid2``, sorted by the two ids, with ``same_cluster`` from ``clusters`` (variantid,
    cluster_id)."""
    from pyspark.sql import functions as F

    def side(name: str, alias: str):
        return clusters.select(F.col("variantid").alias(name), F.col("cluster_id").alias(alias))

    out = kept.select(
        F.least("id1", "id2").alias("variantid1"),
        F.greatest("id1", "id2").alias("variantid2"),
        "score",
        _evidence_words(kept, model),
    )
    out = out.join(side("variantid1", "c1"), "variantid1", "left").join(side("variantid2", "c2"), "variantid2", "left")
    linked = []
    if "source" in clusters.columns:  # linking: each item's source, as the local engine writes it
        for name, alias in (("variantid1", "source1"), ("variantid2", "source2")):
            out = out.join(clusters.select(F.col("variantid").alias(name), F.col("source").alias(alias)), name, "left")
            linked.append(alias)
    return out.select(
        "variantid1",
        "variantid2",
        "score",
        "evidence",
        F.coalesce(F.col("c1") == F.col("c2"), F.lit(False)).alias("same_cluster"),
        *linked,
    ).orderBy("variantid1", "variantid2")


def _write_table(spark, frame, path: str, part_files: bool) -> None:
    """``frame`` as parquet at ``path``: one file (in ``frame``'s order), or a folder of Spark's part files
    with ``part_files`` (each written by its own task: for outputs too large for one)."""
    if part_files:
        frame.write.parquet(path)
        return
    parts = path + ".parts"
    frame.coalesce(1).write.parquet(parts)  # coalesce keeps a sorted frame's order: no shuffle
    fs = _FileSystem(spark, parts)
    (single,) = [f for f in fs.files(parts) if f.rsplit("/", 1)[-1].startswith("part-")]
    fs.rename(single, path)
    fs.delete(parts)


def _evidence_words(scores, model):
    """The evidence column in words (``prodmatch.evidence.describe``), from the few distinct masks."""
    from itertools import chain

    from pyspark.sql import functions as F

    masks = sorted(r[0] for r in scores.select("evidence").distinct().collect())
    words = list(describe(np.asarray(masks, dtype=np.uint32), model.evidence_names())) if masks else []
    pairs = list(chain.from_iterable((F.lit(int(m)), F.lit(str(w))) for m, w in zip(masks, words, strict=True)))
    if not pairs:
        return F.lit(None).cast("string").alias("evidence")
    return F.element_at(F.create_map(*pairs), F.col("evidence")).alias("evidence")


def _shifted_score(old: float, new: float):
    """:func:`prodmatch.calibration.shift_prior` of the ``score`` column."""
    from pyspark.sql import functions as F

    p = F.least(F.greatest(F.col("score").cast("double"), F.lit(1e-12)), F.lit(1 - 1e-12))
    odds = p / (1 - p) * F.lit((new / (1 - new)) / (old / (1 - old)))
    return odds / (1 + odds)


def _new_items_calibration(spark, scored, model, clusters_path: str, config: MatchConfig):
    """The local engine's :func:`prodmatch.matching.incremental._calibrated` on Spark: the new candidates'
    scores, threshold and calibration facts, as the full match whose summary.json sits beside
    ``clusters_path`` decided them; else calibrated on their own, logged."""
    from pyspark.sql import functions as F

    if config.calibrate == "none":
        threshold = model.threshold if config.threshold is None else config.threshold
        return scored, threshold, {"method": "none", "prior": model.calibrator.prior, "applied": "the model's own"}
    summary_path = _join(clusters_path.rsplit("/", 1)[0], SUMMARY_FILE)
    full = _read_json(spark, summary_path) if _FileSystem(spark, summary_path).exists(summary_path) else None
    recorded = full_match_calibration(full, config)
    if recorded is not None:
        calibration, threshold = recorded
        method = calibration.get("method")
        if method == "em":
            scored = scored.withColumn("score", _shifted_score(calibration["training_prior"], calibration["prior"]))
        elif method == "labelled-sample":
            p = F.least(F.greatest(F.col("score").cast("double"), F.lit(1e-12)), F.lit(1 - 1e-12))
            z = F.lit(calibration["platt"]["a"]) * F.log(p / (1 - p)) + F.lit(calibration["platt"]["b"])
            scored = scored.withColumn("score", 1 / (1 + F.exp(-z)))
        log.info("new candidates calibrated as the full match was (%s; threshold %.4f)", method, threshold)
        return scored, threshold, calibration | {"applied": f"the full match's, {summary_path}"}
    log.warning(
        "%s not found beside %s: the new items' candidates are calibrated on their own; give the clusters of a "
        "full `match` run to apply its calibration and threshold",
        SUMMARY_FILE,
        clusters_path,
    )
    scored, calibration = _calibrate(scored, model)
    threshold = config.threshold
    if threshold is None:
        threshold = _expected_f1_threshold(scored) if calibration["method"] != "none" else model.threshold
    return scored, threshold, {**calibration, "applied": "the new candidates' own"}


def _calibrate(scores, model, fit: str | None = None) -> tuple[object, dict]:
    """:func:`prodmatch.matching.scoring.calibrate_candidates` (the EM estimate of the candidates' share of
    matches, then Bayes' rule) on a Spark column of probabilities; the estimate over the rows where the
    boolean column ``fit`` holds (None: all), the shift applied to every row."""
    from pyspark.sql import functions as F

    training_prior = model.calibrator.prior
    if training_prior is None:
        log.warning("the run does not record its calibration prior; probabilities are used as they are")
        return scores, PriorEstimate(float("nan"), "none", None).to_dict()

    shifted = _shifted_score
    fitted = scores if fit is None else scores.where(F.col(fit))
    mean = fitted.agg(F.mean("score")).first()[0]
    pi = float(np.clip(mean, 1e-6, 1 - 1e-6)) if mean is not None else training_prior
    it = 0
    for it in range(1, 201):  # noqa: B007 (the count is reported)
        new = float(np.clip(fitted.agg(F.mean(shifted(training_prior, pi))).first()[0], 1e-6, 1 - 1e-6))
        done = abs(new - pi) < 1e-7
        pi = new
        if done:
            break
    estimate = PriorEstimate(prior=pi, method="em", training_prior=training_prior, iterations=it)
    if pi < 1e-4:
        log.warning("the share of matches among the candidates cannot be estimated; probabilities used as they are")
        return scores, estimate.to_dict() | {"method": "none", "reason": "the EM estimate fell to zero"}
    log.info("matches among the candidates: %.2f%% estimated", 100 * pi)
    facts = estimate.to_dict()
    if fit is not None:
        facts["fitted_on"] = {"pairs": fitted.count(), "within_top": CALIBRATION_K}
    return scores.withColumn("score", shifted(training_prior, pi)), facts


def _consecutive_ids(spark, reps, path: str):
    """(rep, cluster_id): the distinct representatives numbered 0..C-1 in their sort order, without a
    single-partition window: per-partition counts (P numbers) give each partition its offset."""
    from pyspark.sql import functions as F

    ordered = _materialise(spark, reps.distinct().orderBy("rep"), path)
    tagged = ordered.select("rep", F.spark_partition_id().alias("pid"), F.monotonically_increasing_id().alias("mid"))
    counts = {r["pid"]: r["count"] for r in tagged.groupBy("pid").count().collect()}
    offsets, total = {}, 0
    for pid in sorted(counts):
        offsets[pid] = total
        total += counts[pid]
    offset_of = F.create_map(*[x for pid, off in offsets.items() for x in (F.lit(pid), F.lit(off))])
    low = F.col("mid").bitwiseAND(F.lit((1 << 33) - 1))  # the record's place in its partition
    return tagged.select("rep", (offset_of[F.col("pid")] + low).cast("bigint").alias("cluster_id")), total


# ------------------------------------------------------------------------------------------ the job


@dataclass
class _Job:
    """What every stage of a Spark run shares: the session, the model broadcast once, the items read."""

    spark: object
    model: object
    bundle: object
    data_config: object
    partitions: int
    work: str
    items: object = None
    layout: dict = field(default_factory=dict)
    id_type: str = "bigint"


def _start(spark, master, spark_conf, options: SparkOptions):
    if spark is None:
        spark = spark_session(master or options.master, {**options.conf, **(spark_conf or {})})
    partitions = options.partitions or 4 * spark.sparkContext.defaultParallelism
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    return spark, partitions


def _staging(spark, out_dir: str, overwrite: bool, marker: str, options: SparkOptions) -> tuple[_FileSystem, str, str]:
    """(the output's file system, a hidden staging path beside ``out_dir``, the work path for intermediate
    data); refuses a non-empty ``out_dir`` that prodmatch did not write (``marker`` is its file)."""
    fs = _FileSystem(spark, out_dir)
    if fs.exists(out_dir) and not fs.is_empty_dir(out_dir):
        if not overwrite:
            raise ConfigError(f"{out_dir} is not empty; pass --overwrite to replace it or choose another --out")
        if not fs.exists(_join(out_dir, marker)):
            raise ConfigError(f"{out_dir} holds files that prodmatch did not write; refusing to delete them")
    parent, _, name = out_dir.rpartition("/")
    token = uuid.uuid4().hex[:8]
    staging = _join(parent or ".", f".{name}.{token}")
    work = (
        _join(options.checkpoint_dir, f"prodmatch-{name}-{token}")
        if options.checkpoint_dir
        else _join(staging, "_work")
    )
    return fs, staging, work


def _finish(fs: _FileSystem, staging: str, work: str, tmp_out: str, out_dir: str) -> None:
    if fs.exists(out_dir):
        fs.delete(out_dir)
    fs.rename(tmp_out, out_dir)
    fs.delete(staging)
    fs.delete(work)


def _fail(fs: _FileSystem, staging: str, work: str, error: BaseException) -> None:
    """Remove what a failed run staged; turn an executor's failure into one clear error."""
    fs.delete(staging)
    fs.delete(work)
    if type(error).__name__ in ("PythonException", "Py4JJavaError"):
        raise EngineError(f"--engine spark: a stage failed on an executor: {_first_line(error)}") from error


def _load(
    spark,
    run_dir,
    data_dir: str,
    partitions: int,
    work: str,
    data_config=None,
    *,
    text: bool = False,
    categories: bool = False,
) -> _Job:
    """The model, broadcast once (its run directory's files, unpacked once per Python worker), and the items."""
    from dataclasses import replace

    model = load_model(run_dir).for_job("catalogue")
    data_config = data_config or model.data_config()
    if text:
        data_config = replace(data_config, load_names=True, load_attributes=True)
    if categories:
        data_config = replace(data_config, load_categories=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(Path(run_dir).iterdir()):
            if path.name not in RUN_FILES_SKIPPED:
                tar.add(path, arcname=path.name)
    bundle = spark.sparkContext.broadcast((uuid.uuid4().hex, buffer.getvalue()))
    job = _Job(spark, model, bundle, data_config, partitions, work)
    job.items, job.layout, job.id_type = _items_of(job, data_dir, "items")
    return job


def _items_of(job: _Job, data_dir: str, tag: str):
    """(items, layout, id type) of a data directory, the ids cast to bigint or string, written once."""
    from pyspark.sql import functions as F

    id_column = job.data_config.id_column
    items, layout = _read_items(job.spark, data_dir, job.data_config, _FileSystem(job.spark, data_dir))
    id_type = items.schema[id_column].dataType.simpleString()
    if id_type not in ("bigint", "int", "smallint", "tinyint", "string"):
        raise DataError(f"{data_dir}: {id_column} has type {id_type}; ids must be integers or strings")
    id_type = "string" if id_type == "string" else "bigint"
    items = items.withColumn(id_column, F.col(id_column).cast(id_type))
    return _materialise(job.spark, items.repartition(job.partitions), _join(job.work, tag)), layout, id_type


def _linked_items(job: _Job, left_dir: str, right_dir: str):
    """Linking: LEFT's items (``job.items``) and RIGHT's as one items table, and (id, source) of every item
    (0: left, 1: right), each written once. Both are read with the model's data settings; the columns are
    the ones both sources have (side data only one has is left out, with a warning, as the local engine's
    :meth:`prodmatch.catalogue.Catalogue.concat` does), named in ``job.layout`` as LEFT's files name them.

    Raises:
        DataError: ids of different types, or ids in both sources.
    """
    from pyspark.sql import functions as F

    id_col = job.data_config.id_column
    right, right_layout, right_id_type = _items_of(job, right_dir, "items_right")
    if right_id_type != job.id_type:
        raise DataError(
            f"{left_dir} has {job.id_type} ids and {right_dir} has {right_id_type} ids: linking needs one id type "
            "(write both sources' ids as integers, or both as strings)"
        )
    left_columns = {c for cols in job.layout.values() for c in cols}
    right_columns = {c for cols in right_layout.values() for c in cols}
    for has, lacks, only in (  # the model's embeddings are in both: the reader asks each source for them
        (left_dir, right_dir, left_columns - right_columns),
        (right_dir, left_dir, right_columns - left_columns),
    ):
        if only:
            log.warning("%s has %s and %s has none: linking does without them", has, sorted(only), lacks)
    shared = left_columns & right_columns
    layout = {name: [c for c in cols if c in shared] for name, cols in job.layout.items()}
    layout = {name: cols for name, cols in layout.items() if cols or name == TEXT_FILE}
    kept = [id_col, *(c for cols in layout.values() for c in cols)]
    both = job.items.select(id_col).join(right.select(id_col), id_col)
    some = [r[id_col] for r in both.limit(5).collect()]
    if some:  # counted only to say how many
        check_disjoint_ids(some, left_dir, right_dir, count=both.count())
    items = job.items.select(*kept).unionByName(right.select(*kept))
    side_of = job.items.select(F.col(id_col).alias("id"), F.lit(0).cast("tinyint").alias("source")).unionByName(
        right.select(F.col(id_col).alias("id"), F.lit(1).cast("tinyint").alias("source"))
    )
    job.layout = layout
    items = _materialise(job.spark, items.repartition(job.partitions), _join(job.work, "items_linked"))
    return items, _materialise(job.spark, side_of, _join(job.work, "sources"))


def _vectors_of(job: _Job, items, tag: str, *, tokens: bool = False, modality_vectors: bool = False):
    """(id, vec, searchable, category[, tokens][, mvec, complete]) of every item, written once; and counts."""
    from pyspark.sql import functions as F

    schema = f"id {job.id_type}, vec array<float>, searchable boolean, category string"
    if tokens:
        schema += ", tokens array<string>"
    if modality_vectors:
        schema += ", mvec array<float>, complete boolean"
    fn = _item_rows_fn(job.bundle, job.layout, job.data_config.id_column, job.data_config, tokens, modality_vectors)
    vec = _materialise(job.spark, items.mapInArrow(fn, schema), _join(job.work, tag))
    counts = vec.agg(F.count("*").alias("n"), F.sum(F.col("searchable").cast("int")).alias("s")).first()
    n, n_searchable = int(counts["n"]), int(counts["s"] or 0)
    if n_searchable < n:
        log.warning(
            "%d of %d items have none of the model's embeddings: they are not matched and stay single-item clusters",
            n - n_searchable,
            n,
        )
    return vec, n, n_searchable


def _score(job: _Job, pairs, part_of, items, tag: str):
    """(id1, id2, score) of every pair, written once, and the item rows shipped to scoring groups.

    ``part_of`` (id, part) puts a pair in its first item's group; a group's pairs and the rows of the items
    they name meet in one ``cogroup`` call and are scored by the model's own ``predict_proba``."""
    from pyspark.sql import functions as F

    spark, id_col = job.spark, job.data_config.id_column
    grouped = pairs.join(part_of.withColumnRenamed("id", "id1"), "id1")
    grouped.write.parquet(_join(job.work, f"{tag}_grouped"))
    grouped = spark.read.parquet(_join(job.work, f"{tag}_grouped"))  # two reads, two plans: cogroup's sides
    seen = spark.read.parquet(_join(job.work, f"{tag}_grouped"))
    needed = (
        seen.select("part", F.col("id1").alias("id"))
        .unionByName(seen.select("part", F.col("id2").alias("id")))
        .distinct()
    )
    group_items = needed.join(items.withColumnRenamed(id_col, "id"), "id").withColumnRenamed("id", id_col)
    shipped = spark.sparkContext.accumulator(0)
    scored = (
        grouped.groupBy("part")
        .cogroup(group_items.groupBy("part"))
        .applyInArrow(
            _score_fn(job.bundle, job.layout, id_col, job.data_config, shipped),
            f"id1 {job.id_type}, id2 {job.id_type}, score double, evidence bigint",
        )
    )
    scored = _materialise(spark, scored, _join(job.work, tag))
    if scored.count() != pairs.count():
        raise RuntimeError("prodmatch: scoring lost candidate pairs (a bug; please report it)")
    return scored, shipped.value


def _cluster(
    job: _Job, scored, threshold: float, linkage_max: int, checkpoint_every: int, side_of=None, one_to_one=False
):
    """(id, rep, report counts) of every item in a component, by the local engine's guard, and the rounds
    connected components took. ``side_of``: (id, source) of every item, when linking two sources."""
    from pyspark.sql import functions as F

    scored = scored.where(F.col("evidence") != 0)  # a pair without evidence is no edge, whatever the threshold
    edges = scored.where(F.col("score") >= threshold).select(F.col("id1").alias("src"), F.col("id2").alias("dst"))
    labels, rounds = connected_components(job.spark, edges, _join(job.work, "cc"), checkpoint_every=checkpoint_every)
    comp1 = labels.withColumnRenamed("id", "id1").withColumnRenamed("component", "c1")
    comp2 = labels.withColumnRenamed("id", "id2").withColumnRenamed("component", "c2")
    inner = scored.join(comp1, "id1").join(comp2, "id2").where(F.col("c1") == F.col("c2"))
    inner = inner.withColumn("bucket", F.pmod(F.xxhash64("c1"), F.lit(job.partitions)))
    columns = ["bucket", "id1", "id2", "score"]
    if side_of is not None:
        for name, alias in (("id1", "s1"), ("id2", "s2")):
            inner = inner.join(side_of.select(F.col("id").alias(name), F.col("source").alias(alias)), name)
        columns += ["s1", "s2"]
    guarded = (
        inner.select(*columns)
        .groupBy("bucket")
        .applyInArrow(
            _guard_fn(threshold, linkage_max, side_of is not None, one_to_one),
            f"id {job.id_type}, rep {job.id_type}, " + ", ".join(f"{c} bigint" for c in GUARD_COUNTS),
        )
    )
    return _materialise(job.spark, guarded, _join(job.work, "guarded")), rounds


def match_spark(
    run_dir,
    data_dir,
    out_dir,
    config: MatchConfig | None = None,
    *,
    spark=None,
    master: str | None = None,
    spark_conf: dict | None = None,
    options: SparkOptions | None = None,
    overwrite: bool = False,
    progress=None,
    labelled_sample=None,
    link_with=None,
) -> dict:
    """:func:`prodmatch.matching.match_local` on Apache Spark: the same outputs (see the module docstring).

    Args:
        spark: a running SparkSession (Databricks, YARN, ...); None starts one with ``master`` and
            ``spark_conf`` (or ``options.master`` / ``options.conf``).
        options: the engine's own settings (partitions, cells, probes, cell cap, checkpoints).
        link_with: a second data directory to link ``data_dir`` with, as the local engine links them (see
            :mod:`prodmatch.matching.link`): every search is one source's items among the other's (each item
            queries with its block and the other source, and is a target with its own).
    """
    from pyspark.sql import functions as F

    config = config or MatchConfig()
    options = options or SparkOptions()
    linking = link_with is not None
    if config.one_to_one and not linking:
        raise ConfigError("--one-to-one applies to linking two sources: give them as --link LEFT RIGHT")
    if labelled_sample is not None:
        raise ConfigError("--labelled-sample is not supported with --engine spark yet; use --engine local")
    if config.rescore:
        raise ConfigError("--rescore is not supported with --engine spark yet; use --engine local")
    spark, partitions = _start(spark, master, spark_conf, options)
    sc = spark.sparkContext
    data_dir, out_dir = str(data_dir).rstrip("/"), str(out_dir).rstrip("/")
    fs, staging, work = _staging(spark, out_dir, overwrite, SUMMARY_FILE, options)
    stages: dict[str, dict] = {}
    t_start = time.perf_counter()

    def whole(stage: str):
        return progress(stage, 1) if progress else (lambda _n: None)

    try:
        with timed(stages, "load"):
            job = _load(
                spark,
                run_dir,
                data_dir,
                partitions,
                work,
                text=config.token_k > 0,
                categories=config.block_by == "category",
            )
            side_of = None
            if linking:
                link_with = str(link_with).rstrip("/")
                job.items, side_of = _linked_items(job, data_dir, link_with)
            model, items, id_type = job.model, job.items, job.id_type
        threshold = model.threshold if config.threshold is None else config.threshold
        multi = len(model.modalities_) >= 2

        with timed(stages, "vectors"):
            done = whole("item vectors")
            vec, n, n_searchable = _vectors_of(job, items, "vectors", tokens=config.token_k > 0, modality_vectors=multi)
            if linking:
                vec = _materialise(spark, vec.join(side_of, "id"), _join(work, "vectors_linked"))
            done(1)
        block = F.col("category") if config.block_by == "category" else F.lit("")
        block = F.coalesce(block, F.lit("\x00none"))  # no category: searched among themselves, as locally

        with timed(stages, "candidates"):
            done = whole("candidates")
            exact = config.index_kind(n_searchable) == "flat"
            cells = 1 if exact and options.cells is None else (options.cells or max(1, round(math.sqrt(n_searchable))))
            base = _search_rows(vec.where("searchable"), block, F.lit(True), linking)
            # as far as the calibration pairs (each item's top CALIBRATION_K) where k is smaller
            reach = max(config.k, CALIBRATION_K)
            itself = 0 if linking else 1  # a search list counts the query itself where it is a target
            top, search_facts, home, _ = _ivf_search(
                spark,
                base,
                reach,
                cells,
                options.probes,
                options.cell_cap,
                options.centroid_sample,
                work,
                "ivf",
                ranked=True,
                queries_are_targets=not linking,
            )
            top = _materialise(spark, top, _join(work, "ivf_ranked"))
            near = top.where(F.col("r") <= CALIBRATION_K + itself).select(
                F.least("q", "t").alias("id1"), F.greatest("q", "t").alias("id2")
            )
            near = _materialise(spark, near.distinct(), _join(work, "calibration_pairs"))
            top = top.where(F.col("r") <= config.k + itself).select("q", "t", "s")
            if search_facts["cells"] > 1:  # approximate: how much of the exact top-k it finds, on a sample
                top = _materialise(spark, top, _join(work, "ivf_top"))
                search_facts["recall_vs_exact"] = _recall_vs_exact(
                    spark, base.where("is_target"), top, config.k, queries=base.where("is_query")
                )
            pairs = top.select(F.least("q", "t").alias("id1"), F.greatest("q", "t").alias("id2")).distinct()
            pairs = _materialise(spark, pairs, _join(work, "candidates_ivf"))
            search_facts = {
                "blocks": search_facts.pop("blocks"),
                "index": ["flat"] if search_facts["cells"] <= 1 else ["ivf"],
                "ivf": search_facts,
                "items_without_embeddings": n - n_searchable,
                "incomplete_items": 0,
                **({"linked_sources": 2} if linking else {}),
            }
            if multi:
                big = n_searchable > config.exact_max_items and "category" in vec.columns
                inc_block = F.coalesce(F.col("category"), F.lit("\x00none")) if big else F.lit("")
                with_mvec = vec.where("searchable").withColumn("vec", F.col("mvec"))
                inc = _search_rows(with_mvec, inc_block, ~F.col("complete"), linking)
                search_facts["incomplete_items"] = vec.where("searchable AND NOT complete").count()
                if search_facts["incomplete_items"]:
                    more, _, _, _ = _ivf_search(
                        spark,
                        inc,
                        config.k,
                        1,
                        1,
                        options.cell_cap,
                        options.centroid_sample,
                        work,
                        "incomplete",
                        queries_are_targets=not linking,
                    )
                    more = more.select(F.least("q", "t").alias("id1"), F.greatest("q", "t").alias("id2"))
                    before = pairs.count()
                    pairs = _materialise(spark, pairs.unionByName(more).distinct(), _join(work, "candidates_inc"))
                    search_facts["candidates_from_incomplete_items"] = pairs.count() - before
            if config.token_k > 0:
                token_pairs, token_report = _shared_values(vec, config, n_searchable, linking)
                before = pairs.count()
                pairs = pairs.unionByName(token_pairs).distinct()
            pairs = _materialise(spark, pairs, _join(work, "candidates"))
            n_candidates = pairs.count()
            if config.token_k > 0:
                search_facts["shared_values"] = token_report | {"new_candidates": n_candidates - before}
            done(1)
        log.info("%d candidate pairs from %d items (k=%d, %d cells)", n_candidates, n, config.k, cells)

        with timed(stages, "scoring"):
            done = whole("scoring")
            if home is None:
                part_of = vec.where("searchable").select(
                    "id", F.pmod(F.xxhash64("id"), F.lit(partitions)).alias("part")
                )
            else:
                part_of = home.select("id", F.pmod(F.xxhash64("block", "cell"), F.lit(partitions)).alias("part"))
            # the calibration pairs beyond k are scored for calibration only, as locally
            extra = near.join(pairs, ["id1", "id2"], "left_anti") if config.calibrate == "prior" else near.limit(0)
            extra = _materialise(spark, extra, _join(work, "calibration_extra"))
            scored, shipped = _score(job, pairs.unionByName(extra), part_of, items, "scored")
            done(1)
        calibration: dict = {"method": "none"}
        if config.calibrate == "prior":
            fit = near.withColumn("fit", F.lit(True))
            scored = scored.join(fit, ["id1", "id2"], "left").withColumn("fit", F.coalesce("fit", F.lit(False)))
            scored, calibration = _calibrate(scored, model, fit="fit")
            scored = _materialise(spark, scored, _join(work, "calibrated"))
            if config.threshold is None and calibration["method"] != "none":
                threshold = _expected_f1_threshold(scored.where("fit"))
                calibration["threshold_rule"] = (
                    f"best expected F1 over the candidates within either item's top {CALIBRATION_K}"
                )
            scored = scored.join(extra, ["id1", "id2"], "left_anti").drop("fit")  # the candidates only
        if scored.count() != n_candidates:
            raise RuntimeError("prodmatch: scoring lost candidate pairs (a bug; please report it)")
        # no evidence, no match: at most the candidates' prior, below the threshold (as the local engine)
        scored = _materialise(spark, _gate(scored, calibration.get("prior"), threshold), _join(work, "gated"))
        without_evidence = scored.where(F.col("evidence") == 0).count()
        agg = scored.agg(
            F.sum("score").alias("total"),
            F.sum(F.when(F.col("score") >= threshold, F.col("score"))).alias("kept_sum"),
            F.sum((F.col("score") >= threshold).cast("int")).alias("kept"),
        ).first()
        kept_n = int(agg["kept"] or 0)
        calibration |= {
            "estimated_precision": float(agg["kept_sum"] / kept_n) if kept_n else 1.0,
            "estimated_recall_among_candidates": float((agg["kept_sum"] or 0.0) / agg["total"])
            if agg["total"]
            else 0.0,
        }

        with timed(stages, "clustering"):
            done = whole("clustering")
            guarded, rounds = _cluster(
                job, scored, threshold, config.linkage_max, options.checkpoint_every, side_of, config.one_to_one
            )
            reps = (
                vec.select("id")
                .join(guarded.select("id", "rep"), "id", "left")
                .select("id", F.coalesce("rep", "id").alias("rep"))
            )
            numbered, n_clusters = _consecutive_ids(spark, reps.select("rep"), _join(work, "reps"))
            clusters = reps.join(numbered, "rep").select(
                F.col("id").alias("variantid"), F.col("cluster_id").cast("bigint")
            )
            if linking:  # each item's source, named as the local engine names it
                names = F.array(*[F.lit(x) for x in SOURCE_NAMES])
                source = side_of.select(
                    F.col("id").alias("variantid"), F.element_at(names, F.col("source") + 1).alias("source")
                )
                clusters = clusters.join(source, "variantid")
            clusters = _materialise(spark, clusters, _join(work, "clusters"))
            report = _cluster_report(clusters, guarded, kept_n, n_clusters)
            done(1)

        quality: dict = {}
        truth = _truth_source(spark, data_dir, config.truth_column, job.data_config.id_column)
        if linking:  # both sources' products, or none (no pair of two sources could be judged)
            found = [truth, _truth_source(spark, link_with, config.truth_column, job.data_config.id_column)]
            truth = found if None not in found else None
            if truth is None and found != [None, None]:
                lacks = data_dir if found[0] is None else link_with
                log.warning("%s has no true products: the link's quality is not measured", lacks)
        if truth is not None:
            with timed(stages, "quality"):
                done = whole("quality")
                quality = _quality(
                    spark, truth, clusters, scored, threshold, config, id_type, n, job.data_config.id_column
                )
                if quality and search_facts["ivf"].get("recall_vs_exact") is not None:
                    quality["ann_recall_vs_exact"] = search_facts["ivf"]["recall_vs_exact"]
                done(1)

        with timed(stages, "writing"):
            tmp_out = _join(staging, "out")
            kept = scored.where((F.col("score") >= threshold) & (F.col("evidence") != 0))
            matches = _materialise(spark, _matches_table(kept, clusters, model), _join(work, "matches"))
            _write_table(spark, matches, _join(tmp_out, MATCHES_FILE), options.part_files)
            _write_table(spark, clusters.orderBy("variantid"), _join(tmp_out, CLUSTERS_FILE), options.part_files)
            split = matches.where(~F.col("same_cluster")).count()
            summary = {
                "model": model.name,
                "run_dir": str(run_dir),
                "data": data_dir,
                "items": n,
                **({"link": _link_facts(side_of, data_dir, link_with, config.one_to_one)} if linking else {}),
                "engine": {
                    "name": "spark",
                    "master": sc.master,
                    "spark_version": spark.version,
                    **{k: v for k, v in asdict(options).items() if k not in ("master", "conf")},
                    "partitions": partitions,
                    "connected_components_rounds": rounds,
                    "items_shipped_per_item_scored": float(shipped / max(n_searchable, 1)),
                },
                "parameters": {**config.to_dict(), "threshold": threshold},
                "item_vectors": vector_kind(model),
                "search": search_facts,
                "candidates": n_candidates,
                "candidates_without_evidence": without_evidence,
                "matches": kept_n,
                "scorer": model.describe_job(),
                "calibration": calibration,
                "cascade": {},
                "clustering": asdict(report) | split_report(split, config.one_to_one),
                "quality": quality,
                "stages": stages,
                "seconds": round(time.perf_counter() - t_start, 3),
            }
            _FileSystem(spark, tmp_out).write_text(
                _join(tmp_out, SUMMARY_FILE), json.dumps(summary, indent=2, default=str)
            )
        _finish(fs, staging, work, tmp_out, out_dir)
    except BaseException as e:
        _fail(fs, staging, work, e)
        raise
    return summary


def _search_rows(vec, block, is_query, linking: bool):
    """(id, vec, block, is_query, is_target) rows of one IVF search over ``vec``'s items. Linking, every item
    is a target in its block of its own source and, where ``is_query``, a query in its block of the other
    source, so each query meets the other source's items only."""
    from pyspark.sql import functions as F

    if not linking:
        return vec.select("id", "vec", block.alias("block"), is_query.alias("is_query"), F.lit(True).alias("is_target"))

    def tagged(source):
        return F.concat_ws("|", block, source.cast("string"))

    queries = vec.where(is_query).select(
        "id",
        "vec",
        tagged(1 - F.col("source")).alias("block"),
        F.lit(True).alias("is_query"),
        F.lit(False).alias("is_target"),
    )
    targets = vec.select(
        "id",
        "vec",
        tagged(F.col("source")).alias("block"),
        F.lit(False).alias("is_query"),
        F.lit(True).alias("is_target"),
    )
    return queries.unionByName(targets)


def _link_facts(side_of, left_dir: str, right_dir: str, one_to_one: bool) -> dict:
    counts = dict(side_of.groupBy("source").count().collect())
    return link_facts(left_dir, right_dir, (counts.get(0, 0), counts.get(1, 0)), one_to_one)


def _first_line(error: BaseException) -> str:
    text = str(error)
    for line in text.splitlines():
        if ("Error" in line and "prodmatch" in line) or line.startswith(("prodmatch.errors", "RuntimeError")):
            return line.strip()
    lines = [x for x in text.splitlines() if x.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def _shared_values(vec, config: MatchConfig, n_targets: int, linking: bool = False):
    """:func:`prodmatch.blocking.shared_token_neighbours` as Spark joins: each item's ``token_k`` items
    sharing the heaviest rare tokens (weight log((targets + 1) / holders)), ties broken by the inner product
    of the search vectors, then by id. ``linking``: among the other source's items (``vec`` has ``source``;
    a token's rarity still counts every item that holds it)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    held = vec.where("searchable").select("id", *(["source"] if linking else []), F.explode("tokens").alias("token"))
    holders = held.groupBy("token").agg(F.count("*").alias("df"))
    totals = holders.agg(
        F.count("*").alias("tokens"),
        F.sum((F.col("df") > config.token_max_block).cast("int")).alias("purged"),
        F.sum(((F.col("df") >= 2) & (F.col("df") <= config.token_max_block)).cast("int")).alias("kept"),
    ).first()
    with_tokens = held.select("id").distinct().count()
    useful = holders.where((F.col("df") >= 2) & (F.col("df") <= config.token_max_block)).select(
        "token", F.log(F.lit(float(n_targets + 1)) / F.col("df")).cast("float").alias("w")
    )
    kept = held.join(useful, "token")
    other = (F.col("a.source") != F.col("b.source")) if linking else (F.col("a.id") != F.col("b.id"))
    pairs = (
        kept.alias("a")
        .join(kept.select("token", "id", *(["source"] if linking else [])).alias("b"), "token")
        .where(other)
        .groupBy(F.col("a.id").alias("q"), F.col("b.id").alias("j"))
        .agg(F.sum("w").cast("float").alias("w"))  # float32, as the local engine sums them
    )
    vq = vec.select(F.col("id").alias("q"), F.col("vec").alias("vq"))
    vj = vec.select(F.col("id").alias("j"), F.col("vec").alias("vj"))
    dot = F.aggregate(F.zip_with("vq", "vj", lambda x, y: x * y), F.lit(0.0).cast("float"), lambda acc, x: acc + x)
    ranked = pairs.join(vq, "q").join(vj, "j").withColumn("tie", dot)
    order = Window.partitionBy("q").orderBy(F.col("w").desc(), F.col("tie").desc(), F.col("j"))
    top = ranked.withColumn("r", F.row_number().over(order)).where(F.col("r") <= config.token_k)
    report = {
        "k": config.token_k,
        "max_block": config.token_max_block,
        "items_with_tokens": int(with_tokens),
        "tokens": int(totals["tokens"] or 0),
        "tokens_purged": int(totals["purged"] or 0),
        "tokens_kept": int(totals["kept"] or 0),
    }
    out = top.select(F.least("q", "j").alias("id1"), F.greatest("q", "j").alias("id2"))
    return out, report


def _cluster_report(clusters, guarded, edges: int, n_clusters: int) -> ClusterReport:
    from pyspark.sql import functions as F

    sums = guarded.agg(*[F.sum(c).alias(c) for c in GUARD_COUNTS]).first()
    sizes = clusters.groupBy("cluster_id").count().groupBy(F.col("count").alias("size")).count().toPandas()
    sizes = sizes.set_index("size")["count"].sort_index()
    report = ClusterReport(
        edges=edges,
        components=int(sums["components"] or 0),
        components_relinked=int(sums["relinked"] or 0),
        components_split=int(sums["split"] or 0),
        components_too_large=int(sums["too_large"] or 0),
        one_to_one_pairs=int(sums["one_to_one_pairs"] or 0),
        components_matched_greedily=int(sums["matched_greedily"] or 0),
        clusters=n_clusters,
        items_in_multi_item_clusters=int((sizes.index[sizes.index > 1] * sizes[sizes.index > 1]).sum()),
        largest_cluster=int(sizes.index.max()) if len(sizes) else 0,
    )
    report.sizes = {str(k): int(v) for k, v in sizes.items() if k <= 10}
    report.sizes[">10"] = int(sizes[sizes.index > 10].sum())
    return report


def _truth_source(spark, data_dir: str, column: str | None, id_column: str) -> tuple[str, str] | None:
    """:func:`prodmatch.matching.quality.truth_source` on any path Spark reads: (path, column) of the items'
    true products, or None."""
    fs = _FileSystem(spark, data_dir)
    if column is None:
        path = _join(data_dir, TRUTH_FILE)
        return (path, "product_id") if fs.exists(path) else None
    paths = sorted(p for p in fs.entries(data_dir) if p.rstrip("/").endswith(".parquet"))
    schemas = ((path, spark.read.parquet(path).columns) for path in paths)
    return first_with_column(schemas, column, id_column, data_dir), column


def _quality(
    spark,
    truth: tuple[str, str] | list[tuple[str, str]],
    clusters,
    scored,
    threshold: float,
    config: MatchConfig,
    id_type: str,
    n: int,
    id_column: str = "variantid",
) -> dict:
    """:func:`prodmatch.matching.quality.truth_quality` as Spark aggregates: over the items with a product.
    Linking two sources (``clusters`` has ``source``; ``truth`` one (path, column) per source), the pairwise
    figures count the pairs of two sources only, as the local engine's."""
    from functools import reduce

    from pyspark.sql import functions as F

    truths = truth if isinstance(truth, list) else [truth]
    path, column = truths[0]
    products = reduce(
        lambda a, b: a.unionByName(b),
        [
            spark.read.parquet(p)
            .where(F.col(c).isNotNull())
            .select(F.col(id_column).cast(id_type).alias("variantid"), F.col(c).cast("string").alias("p"))
            for p, c in truths
        ],
    ).distinct()
    frame = clusters.join(products, "variantid")
    linking = "source" in clusters.columns
    facts = {"file": path.rsplit("/", 1)[-1], "column": column, "items_with_truth": frame.count(), "items": n}
    if facts["items_with_truth"] == 0:
        log.warning("%s: no item of the catalogue has a %r; quality is not computed", path, column)
        return {"truth": facts}
    truth = products

    def squares(*keys) -> int:
        return int(frame.groupBy(*keys).count().agg(F.sum(F.col("count") * F.col("count"))).first()[0] or 0)

    def pairs_of(*keys) -> float:  # pairs of items sharing the keys (of two sources, when linking)
        alike = squares(*keys, "source") if linking else facts["items_with_truth"]
        return (squares(*keys) - alike) / 2

    both = frame.groupBy("cluster_id", "p").count()
    tp = pairs_of("cluster_id", "p")
    predicted = pairs_of("cluster_id")
    true = pairs_of("p")
    precision = tp / predicted if predicted else 1.0
    recall = tp / true if true else 1.0
    c_size = frame.groupBy("cluster_id").agg(F.count("*").alias("cs"))
    p_size = frame.groupBy("p").agg(F.count("*").alias("ps"))
    bc = (
        both.join(c_size, "cluster_id")
        .join(p_size, "p")
        .agg(
            (F.sum(F.col("count") * F.col("count") / F.col("cs")) / F.sum("count")).alias("bp"),
            (F.sum(F.col("count") * F.col("count") / F.col("ps")) / F.sum("count")).alias("br"),
        )
        .first()
    )
    p1 = truth.withColumnRenamed("variantid", "id1").withColumnRenamed("p", "p1")
    p2 = truth.withColumnRenamed("variantid", "id2").withColumnRenamed("p", "p2")
    judged = scored.join(p1, "id1").join(p2, "id2").withColumn("same", F.col("p1") == F.col("p2"))
    c = judged.agg(
        F.sum(F.col("same").cast("int")).alias("same"),
        F.sum((F.col("same") & (F.col("score") >= threshold)).cast("int")).alias("tp"),
        F.sum((F.col("score") >= threshold).cast("int")).alias("kept"),
    ).first()
    same, tp_m, kept = int(c["same"] or 0), int(c["tp"] or 0), int(c["kept"] or 0)
    return {
        "truth": facts,
        f"candidate_recall_at_{config.k}": same / true if true else None,
        "pairwise_precision": precision,
        "pairwise_recall": recall,
        "pairwise_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "bcubed_precision": float(bc["bp"]),
        "bcubed_recall": float(bc["br"]),
        "match_precision": tp_m / kept if kept else None,
        "match_recall_among_candidates": tp_m / same if same else None,
    }


# ------------------------------------------------------------------------------------------ incremental

INDEX_VECTORS = "vectors.parquet"
INDEX_CENTROIDS = "centroids.parquet"


def _read_json(spark, path: str) -> dict:
    return json.loads("\n".join(r[0] for r in spark.read.text(path).collect()))


def build_spark_index(
    run_dir,
    data_dir,
    out_dir,
    config: MatchConfig | None = None,
    *,
    spark=None,
    master: str | None = None,
    spark_conf: dict | None = None,
    options: SparkOptions | None = None,
    overwrite: bool = False,
) -> dict:
    """The catalogue's item vectors and coarse centroids, saved for matching new items later with
    :func:`match_new_spark`: ``vectors.parquet`` (id, vec, searchable, category), ``centroids.parquet`` and
    ``index.json``. One cell (exact search) where the local engine would search exactly."""
    config = config or MatchConfig()
    options = options or SparkOptions()
    spark, partitions = _start(spark, master, spark_conf, options)
    data_dir, out_dir = str(data_dir).rstrip("/"), str(out_dir).rstrip("/")
    fs, staging, work = _staging(spark, out_dir, overwrite, INDEX_META_FILE, options)
    t0 = time.perf_counter()
    try:
        job = _load(spark, run_dir, data_dir, partitions, work)
        vec, n, n_searchable = _vectors_of(job, job.items, "vectors")
        exact = config.index_kind(n_searchable) == "flat"
        cells = 1 if exact and options.cells is None else (options.cells or max(1, round(math.sqrt(n_searchable))))
        dim = len(vec.select("vec").first()[0])
        targets = vec.where("searchable")
        centroids = (
            _train_centroids(targets, cells, options.centroid_sample)
            if cells > 1
            else np.zeros((1, dim), dtype=np.float32)
        )
        tmp_out = _join(staging, "out")
        vec.select("id", "vec", "searchable", "category").write.parquet(_join(tmp_out, INDEX_VECTORS))
        frame = pd.DataFrame({"cell": np.arange(len(centroids)), "vec": [c.tolist() for c in centroids]})
        spark.createDataFrame(frame, "cell bigint, vec array<float>").coalesce(1).write.parquet(
            _join(tmp_out, INDEX_CENTROIDS)
        )
        meta = {
            "engine": "spark",
            "run_dir": str(run_dir),
            "data": data_dir,
            "items": n,
            "searchable_items": n_searchable,
            "item_vectors": vector_kind(job.model),
            "index": "flat" if len(centroids) == 1 else "ivf",
            "cells": len(centroids),
            "id_type": job.id_type,
            "parameters": config.to_dict(),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        _FileSystem(spark, tmp_out).write_text(_join(tmp_out, INDEX_META_FILE), json.dumps(meta, indent=2))
        _finish(fs, staging, work, tmp_out, out_dir)
    except BaseException as e:
        _fail(fs, staging, work, e)
        raise
    return meta


def match_new_spark(
    run_dir,
    data_dir,
    index_dir,
    new_dir,
    clusters_path,
    out_dir,
    config: MatchConfig | None = None,
    *,
    spark=None,
    master: str | None = None,
    spark_conf: dict | None = None,
    options: SparkOptions | None = None,
    overwrite: bool = False,
) -> dict:
    """:func:`prodmatch.matching.incremental.match_new_items` on Spark, against an index saved by
    :func:`build_spark_index`, with the same join rule: a group of new items joins the existing cluster
    it matches best on average over all that cluster's members (unscored pairs count as 0), if that
    average reaches the threshold; else it is a new cluster. Existing clusters are never merged or split."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    config = config or MatchConfig()
    options = options or SparkOptions()
    if config.rescore:
        raise ConfigError("rescore applies to a full match; incremental matching scores with run_dir only")
    spark, partitions = _start(spark, master, spark_conf, options)
    data_dir, out_dir = str(data_dir).rstrip("/"), str(out_dir).rstrip("/")
    index_dir, new_dir, clusters_path = (str(x).rstrip("/") for x in (index_dir, new_dir, clusters_path))
    meta_path = _join(index_dir, INDEX_META_FILE)
    if not _FileSystem(spark, meta_path).exists(meta_path):
        raise ConfigError(f"{meta_path} not found: build the index with `prodmatch index --engine spark`")
    meta = _read_json(spark, meta_path)
    if meta.get("engine") != "spark":
        raise ConfigError(
            f"{index_dir} is a local engine's index (faiss); with --engine spark build one with "
            "`prodmatch index RUN --data DATA --out DIR --engine spark`"
        )
    fs, staging, work = _staging(spark, out_dir, overwrite, SUMMARY_FILE, options)
    t0 = time.perf_counter()
    try:
        job = _load(spark, run_dir, data_dir, partitions, work)
        id_col, id_type = job.data_config.id_column, job.id_type
        index_vec = spark.read.parquet(_join(index_dir, INDEX_VECTORS)).withColumn("id", F.col("id").cast(id_type))
        old_ids = job.items.select(F.col(id_col).alias("id"))
        stray = (
            old_ids.join(index_vec, "id", "left_anti").limit(1).count()
            + index_vec.join(old_ids, "id", "left_anti").limit(1).count()
        )
        if stray:
            raise ConfigError(f"{index_dir} indexes other items than {data_dir}; rebuild it with `prodmatch index`")
        new_items, _, _ = _items_of(job, new_dir, "new_items")
        columns = [c for c in job.items.columns]
        types = {f.name: f.dataType for f in job.items.schema.fields}
        new_items = new_items.select(
            *[(F.col(c) if c in new_items.columns else F.lit(None)).cast(types[c]).alias(c) for c in columns]
        )
        again = new_items.join(job.items, id_col, "left_semi").limit(5).collect()
        if again:
            raise DataError(
                f"{new_dir}: items already in the catalogue {data_dir}, e.g. {[r[id_col] for r in again]}; "
                "new items must be new"
            )
        new_vec, n_new, _ = _vectors_of(job, new_items, "new_vectors")
        centroids = np.asarray(
            [r["vec"] for r in spark.read.parquet(_join(index_dir, INDEX_CENTROIDS)).orderBy("cell").collect()],
            dtype=np.float32,
        )
        old_rows = index_vec.where("searchable").select(
            "id", "vec", F.lit("").alias("block"), F.lit(False).alias("is_query"), F.lit(True).alias("is_target")
        )
        queries = new_vec.where("searchable").select(
            "id", "vec", F.lit("").alias("block"), F.lit(True).alias("is_query"), F.lit(False).alias("is_target")
        )
        to_old, facts, _, _ = _ivf_search(
            spark,
            old_rows.unionByName(queries),
            config.k,
            len(centroids),
            options.probes,
            options.cell_cap,
            options.centroid_sample,
            work,
            "new_old",
            centroids=centroids,
            queries_are_targets=False,
        )
        among_new, _, _, _ = _ivf_search(  # new among new: exact, as locally
            spark,
            queries.withColumn("is_target", F.lit(True)),
            config.k,
            1,
            1,
            options.cell_cap,
            options.centroid_sample,
            work,
            "new_new",
        )
        existing = spark.read.parquet(clusters_path).select(
            F.col("variantid").cast(id_type).alias("id"), F.col("cluster_id").cast("bigint").alias("c")
        )
        if old_ids.join(existing, "id", "left_anti").limit(1).count():
            raise ConfigError(f"{clusters_path} lacks some catalogue items; use the clusters of a full `match` run")
        # every member of the candidates' clusters, as the local engine's cluster_mates
        members = existing.withColumnRenamed("id", "t")
        reached = to_old.select("q", "t").join(members, "t").select("q", "c").distinct()
        size = existing.groupBy("c").agg(F.count("*").alias("n"))
        reached = _materialise(spark, reached.join(size, "c"), _join(work, "reached"))
        mates = reached.where(F.col("n") <= MATES_MAX_CLUSTER).join(members, "c").select("q", "t")
        mates = _materialise(spark, mates, _join(work, "mates"))
        expansion = {
            "max_cluster": MATES_MAX_CLUSTER,
            "pairs": mates.count(),
            "clusters_too_large": reached.where(F.col("n") > MATES_MAX_CLUSTER).select("c").distinct().count(),
        }
        pairs = (
            to_old.select("q", "t")
            .unionByName(mates)
            .unionByName(among_new.select("q", "t"))
            .select(F.least("q", "t").alias("id1"), F.greatest("q", "t").alias("id2"))
            .distinct()
        )
        pairs = _materialise(spark, pairs, _join(work, "candidates"))
        n_candidates = pairs.count()
        everyone = index_vec.select("id").unionByName(new_vec.select("id"))
        part_of = everyone.select("id", F.pmod(F.xxhash64("id"), F.lit(partitions)).alias("part"))
        scored, _ = _score(job, pairs, part_of, job.items.unionByName(new_items), "scored")
        scored, threshold, calibration = _new_items_calibration(spark, scored, job.model, clusters_path, config)
        scored = _materialise(spark, _gate(scored, calibration.get("prior"), threshold), _join(work, "calibrated"))
        guarded, rounds = _cluster(job, scored, threshold, config.linkage_max, options.checkpoint_every)

        next_id = int(existing.agg(F.max("c")).first()[0] or -1) + 1
        group = (
            new_vec.select("id")
            .join(guarded.select("id", "rep"), "id", "left")
            .select("id", F.coalesce("rep", "id").alias("g"))
        )
        group = _materialise(spark, group, _join(work, "new_groups"))
        new_side = group.select(F.col("id").alias("x"), "g")
        old_side = existing.select(F.col("id").alias("o"), "c")
        cross = (
            scored.join(old_side.withColumnRenamed("o", "id1"), "id1")
            .join(new_side.withColumnRenamed("x", "id2"), "id2")
            .select("g", "c", "score")
            .unionByName(
                scored.join(old_side.withColumnRenamed("o", "id2"), "id2")
                .join(new_side.withColumnRenamed("x", "id1"), "id1")
                .select("g", "c", "score")
            )
        )
        total = cross.groupBy("g", "c").agg(F.sum("score").alias("s"))
        sizes_g = group.groupBy("g").agg(F.count("*").alias("gn"))
        sizes_c = existing.groupBy("c").agg(F.count("*").alias("cn"))
        avg = total.join(sizes_g, "g").join(sizes_c, "c").withColumn("avg", F.col("s") / (F.col("gn") * F.col("cn")))
        order = Window.partitionBy("g").orderBy(F.col("avg").desc(), F.col("c"))
        best = avg.where(F.col("avg") >= threshold).withColumn("r", F.row_number().over(order)).where("r = 1")
        joined = group.join(best.select("g", "c"), "g", "left")
        fresh, n_fresh = _consecutive_ids(
            spark, joined.where(F.col("c").isNull()).select(F.col("g").alias("rep")), _join(work, "fresh")
        )
        assigned = joined.join(fresh.withColumnRenamed("rep", "g"), "g", "left").select(
            F.col("id").alias("variantid"),
            F.coalesce("c", F.col("cluster_id") + F.lit(next_id)).cast("bigint").alias("cluster_id"),
            F.col("c").isNull().alias("is_new_cluster"),
        )
        assigned = _materialise(spark, assigned, _join(work, "assigned"))
        n_joined = assigned.where(~F.col("is_new_cluster")).count()
        reps = everyone.join(guarded.select("id", "rep"), "id", "left").select(
            F.coalesce("rep", "id").alias("cluster_id")
        )
        kept = scored.where((F.col("score") >= threshold) & (F.col("evidence") != 0))
        report = _cluster_report(reps, guarded, kept.count(), reps.distinct().count())

        tmp_out = _join(staging, "out")
        cluster_of = existing.select(F.col("id").alias("variantid"), F.col("c").alias("cluster_id")).unionByName(
            assigned.select("variantid", "cluster_id")
        )
        matches = _materialise(spark, _matches_table(kept, cluster_of, job.model), _join(work, "matches"))
        _write_table(spark, matches, _join(tmp_out, MATCHES_FILE), options.part_files)
        _write_table(spark, assigned.orderBy("variantid"), _join(tmp_out, CLUSTERS_FILE), options.part_files)
        split = matches.where(~F.col("same_cluster")).count()
        summary = {
            "mode": "incremental",
            "index": meta,
            "new_items": n_new,
            "candidates": n_candidates,
            "cluster_mates": expansion,
            "matches": report.edges,
            "joined_existing_clusters": n_joined,
            "new_clusters": n_fresh,
            "parameters": {**config.to_dict(), "threshold": threshold},
            "calibration": calibration,
            "clustering": asdict(report) | split_report(split),
            "engine": {
                "name": "spark",
                "master": spark.sparkContext.master,
                "partitions": partitions,
                "connected_components_rounds": rounds,
                "search": facts,
            },
            "seconds": round(time.perf_counter() - t0, 3),
        }
        _FileSystem(spark, tmp_out).write_text(_join(tmp_out, SUMMARY_FILE), json.dumps(summary, indent=2))
        _finish(fs, staging, work, tmp_out, out_dir)
    except BaseException as e:
        _fail(fs, staging, work, e)
        raise
    return summary
