"""The Spark engine's session and I/O: options, the session, the Hadoop file system, staged outputs and the items read."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from prodmatch.errors import ConfigError, DataError, EngineError
from prodmatch.io import (
    ATTRIBUTES_COLUMN,
    ATTRIBUTES_FILE,
    EXTRA_PICTURES_COLUMN,
    PICTURE_FILES,
    TEXT_COLUMNS,
    TEXT_FILE,
    embedding_kind,
)

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
        driver_components_max_edges: matched pairs up to which connected components run on the driver (scipy, one
            pass; 16 bytes an edge) instead of in rounds of Spark joins; 0: always in Spark.
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
    driver_components_max_edges: int = 2_000_000
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
        if self.driver_components_max_edges < 0:
            raise ConfigError(f"driver_components_max_edges must be 0 or more, got {self.driver_components_max_edges}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every must be at least 1, got {self.checkpoint_every}")


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


def require_spark() -> None:
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
    require_spark()
    import warnings

    from pyspark.sql import SparkSession

    # PySpark 4 warns on every pandas conversion that it does not yet fully support pandas 3, and uses a keyword
    # pandas 3 deprecates; prodmatch's Spark path runs its whole test suite on pandas 3 (tests/test_spark.py),
    # so the warnings say nothing to a user and are not shown.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    warnings.filterwarnings("ignore", message="The copy keyword is deprecated", module="pyspark")

    builder = SparkSession.builder.appName("prodmatch").master(master or "local[*]")
    settings = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.adaptive.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": "4g",  # local mode: the driver is the executor too
    }
    if (master or "local").startswith("local"):
        if "PYSPARK_PYTHON" not in os.environ:
            os.environ["PYSPARK_PYTHON"] = sys.executable  # local workers import prodmatch from this environment
        # one machine: listen on the loopback interface only, not on every address the machine has
        settings |= {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    settings |= {str(k): str(v) for k, v in (conf or {}).items()}
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


class FileSystem:
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


def join_path(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *parts])


def materialise(spark, df, path: str):
    """Write ``df`` to parquet at ``path`` and read it back: computed once, lineage cut."""
    df.write.mode("overwrite").parquet(path)
    return spark.read.parquet(path)


def read_items(spark, data_dir: str, data_config, fs: FileSystem):
    """The catalogue's item files joined on the id, and the layout (file -> columns) to split batches back.

    The columns are the ones the local reader would read for ``data_config``; an item missing from one file
    gets nulls there, which that reader reads as missing (as it reads an item absent from the file)."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_type

    id_column = data_config.id_column
    if not fs.exists(join_path(data_dir, TEXT_FILE)):
        raise DataError(f"{join_path(data_dir, TEXT_FILE)} not found: a data directory needs {TEXT_FILE}")
    pictures = [f for f in PICTURE_FILES if fs.exists(join_path(data_dir, f))]
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
    if side[ATTRIBUTES_FILE] and fs.exists(join_path(data_dir, ATTRIBUTES_FILE)):
        files.append(ATTRIBUTES_FILE)
    wanted = set(data_config.modalities) if data_config.modalities is not None else None
    layout: dict[str, list[str]] = {}
    frames = []
    found: dict[str, str] = {}
    for name in files:
        path = join_path(data_dir, name)
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


def write_table(spark, frame, path: str, part_files: bool, order: tuple[str, ...] = ()) -> None:
    """``frame`` as parquet at ``path``: one file sorted by ``order``, or a folder of Spark's part files with
    ``part_files`` (each written by its own task: for outputs too large for one)."""
    if part_files:
        (frame.orderBy(*order) if order else frame).write.parquet(path)
        return
    parts = path + ".parts"
    # One partition, sorted within it: a globally sorted frame coalesced to one partition does not keep its
    # order (its range partitions were concatenated out of order: one break in 144,000 rows, a different one
    # each run), so the one file is sorted where it is written.
    one = frame.coalesce(1)
    (one.sortWithinPartitions(*order) if order else one).write.parquet(parts)
    fs = FileSystem(spark, parts)
    (single,) = [f for f in fs.files(parts) if f.rsplit("/", 1)[-1].startswith("part-")]
    fs.rename(single, path)
    fs.delete(parts)


def start_session(spark, master, spark_conf, options: SparkOptions):
    if spark is None:
        spark = spark_session(master or options.master, {**options.conf, **(spark_conf or {})})
    partitions = options.partitions or 4 * spark.sparkContext.defaultParallelism
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    return spark, partitions


def stage_output(
    spark, out_dir: str, overwrite: bool, marker: str, options: SparkOptions
) -> tuple[FileSystem, str, str]:
    """(the output's file system, a hidden staging path beside ``out_dir``, the work path for intermediate
    data); refuses a non-empty ``out_dir`` that prodmatch did not write (``marker`` is its file)."""
    fs = FileSystem(spark, out_dir)
    if fs.exists(out_dir) and not fs.is_empty_dir(out_dir):
        if not overwrite:
            raise ConfigError(f"{out_dir} is not empty; pass --overwrite to replace it or choose another --out")
        if not fs.exists(join_path(out_dir, marker)):
            raise ConfigError(f"{out_dir} holds files that prodmatch did not write; refusing to delete them")
    parent, _, name = out_dir.rpartition("/")
    token = uuid.uuid4().hex[:8]
    staging = join_path(parent or ".", f".{name}.{token}")
    work = (
        join_path(options.checkpoint_dir, f"prodmatch-{name}-{token}")
        if options.checkpoint_dir
        else join_path(staging, "_work")
    )
    return fs, staging, work


def finish_staging(fs: FileSystem, staging: str, work: str, tmp_out: str, out_dir: str) -> None:
    if fs.exists(out_dir):
        fs.delete(out_dir)
    fs.rename(tmp_out, out_dir)
    fs.delete(staging)
    fs.delete(work)


def fail_staging(fs: FileSystem, staging: str, work: str, error: BaseException) -> None:
    """Remove what a failed run staged; turn an executor's failure into one clear error."""
    fs.delete(staging)
    fs.delete(work)
    if type(error).__name__ in ("PythonException", "Py4JJavaError"):
        raise EngineError(f"--engine spark: a stage failed on an executor: {first_line(error)}") from error


def first_line(error: BaseException) -> str:
    text = str(error)
    for line in text.splitlines():
        if ("Error" in line and "prodmatch" in line) or line.startswith(("prodmatch.errors", "RuntimeError")):
            return line.strip()
    lines = [x for x in text.splitlines() if x.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def read_json(spark, path: str) -> dict:
    return json.loads("\n".join(r[0] for r in spark.read.text(path).collect()))
