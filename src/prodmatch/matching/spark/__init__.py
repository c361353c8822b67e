"""The Spark engine: the local engine's stages, distributed with Apache Spark (PySpark 4, Java 17).

Same model, same rules, same output files; nothing the size of the catalogue is collected to the driver,
which holds the model, the coarse centroids and small statistics only (where the data holds a truth, the
written clusters are read back there to measure them, about 40 bytes an item:
:func:`prodmatch.matching.evaluate.evaluate_outputs`).

1. **Items**: each item file is read by Spark (a file or a folder of parquet parts, any path Spark reads)
   and joined on the id. Executors parse a batch of items with the local engine's own reader
   in memory (:func:`prodmatch.io.catalogue_from_arrow`), so validation and normalisation are one implementation.
2. **Item vectors**: the model, broadcast once and loaded once per Python worker, computes each batch's
   search vectors, the items' tokens and their modality vectors (``mapInArrow``).
3. **Candidates**: a distributed IVF search. Coarse centroids are trained with faiss k-means on a sample on
   the driver; every item is the target of its nearest centroid's cell and a query of its ``probes``
   nearest cells; each cell runs faiss exact top-k of its queries among its targets (``applyInArrow``), a
   cell over ``cell_cap`` targets split in chunks that every query visits (no straggler holds a popular
   cell); each query's lists are merged to its global top-k. One cell per block when the local engine
   would search exactly (``MatchConfig.index_kind``): the same neighbours. The items missing a modality get
   the same exact pass the local engine gives them, and the shared rare values are Spark joins (a group of
   queries' pairs ranked together with the vectors they name).
4. **Scoring**: pairs are grouped by the cell of their first item, so each group needs the items of few
   cells; a group's pairs and items meet in ``cogroup().applyInArrow`` and are scored by the model's own
   ``predict_proba``. Calibration for the candidates (EM prior, best expected F1) runs on aggregates.
   Vectors travel as float32 bytes (``binary``), not ``array<float>``: parquet and the shuffles then move
   them as blobs instead of one nested value per number.
5. **Clustering**: connected components of the pairs at or above the threshold by the alternating
   large-star / small-star algorithm (Kiveris et al. 2014, O(log^2 n) rounds), the lineage cut by a parquet
   checkpoint every few rounds; then whole components, grouped, go through the local engine's
   :func:`prodmatch.clustering.cluster_items` (the anti-chaining guard): one implementation for both engines.

The numeric rules are the local engine's own, fed with Spark aggregates: the EM prior
(:func:`prodmatch.calibration.em_prior`), the expected-F1 threshold
(:func:`prodmatch.calibration.expected_f1_threshold_binned`) and the evidence gate (:func:`prodmatch.evidence.cap`).

The modules, by concern: :mod:`.session` (options, the session, the Hadoop file system, staged outputs, reading
items), :mod:`.executors` (what runs on the executors), :mod:`.ivf` (candidate search), :mod:`.graph` (components),
:mod:`.columns` (the rules on Spark columns), :mod:`.quality` (the truth's files and the candidates' counts
against it), :mod:`.engine` (the stages of :func:`prodmatch.matching.pipeline.run_match` as :class:`SparkEngine`)
and :mod:`.incremental`.

Outputs are staged under a hidden path beside ``out_dir`` and renamed at the end (Hadoop FileSystem), so
an interrupted run leaves no partial output. ``matches.parquet`` and ``clusters.parquet`` are single files,
canonical as the local engine's (pairs with ``variantid1 < variantid2``, sorted); with
``SparkOptions.part_files`` (``--part-files``) folders of Spark's part files, which ``pandas.read_parquet``
and Spark read alike.
"""

from prodmatch.matching.spark.engine import SparkEngine, match_spark
from prodmatch.matching.spark.graph import connected_components
from prodmatch.matching.spark.incremental import build_spark_index, match_new_spark
from prodmatch.matching.spark.session import MIN_JAVA, SparkOptions, java_version, spark_session

__all__ = [
    "MIN_JAVA",
    "SparkEngine",
    "SparkOptions",
    "build_spark_index",
    "connected_components",
    "java_version",
    "match_new_spark",
    "match_spark",
    "spark_session",
]
