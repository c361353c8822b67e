"""How to match a catalogue (:class:`MatchConfig`), the output files, and the staging that makes every
output appear whole or not at all."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from prodmatch.errors import ConfigError

log = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "flat", "hnsw")
RECALL_KS = (5, 10, 20, 50)  # recall@k is reported at these k (synthetic data)
# The candidates' share of matches and the threshold are fitted on the pairs within either item's top 20
# (the default k), and carried to the rest: every pair is moved by the same Bayes factor and cut at the same
# threshold. Fitted on every candidate, the share fell with k (most of an item's 1,000 nearest items are other
# products) until the EM estimate collapsed to zero, and a larger k ruined the clusters.
CALIBRATION_K = 20
MAX_K = 1000  # neighbours per item: beyond this, items x k candidate pairs outgrow memory on any catalogue


@dataclass(frozen=True)
class MatchConfig:
    """How to match a catalogue.

    Attributes:
        k: neighbours searched per item.
        threshold: a pair at or above this probability is a match; None: with ``calibrate="prior"``, the
            threshold of the best F1 the calibrated candidate probabilities expect; else the model's own.
        calibrate: ``prior`` re-calibrates the probabilities for the share of true matches among the
            candidates (estimated, see :func:`calibrate_candidates`); ``none`` keeps the model's, which
            are calibrated for its labelled validation pairs.
        block_by: ``"category"`` searches only within each level-2 category; None searches everything.
        index: ``flat`` (exact), ``hnsw`` (approximate), or ``auto``: flat up to ``exact_max_items`` items.
        exact_max_items: the size up to which ``auto`` searches exactly.
        hnsw_m, hnsw_ef_construction, hnsw_ef_search: HNSW graph degree and search breadth.
        linkage_max: components larger than this get the sparse average linkage (the same clusters from the
            scored pairs alone) instead of a dense one, to bound memory; counted.
        token_k: extra candidates per item from shared rare values (attribute values, name words; see
            :mod:`prodmatch.blocking`); 0 turns them off.
        token_max_block: a value held by more items than this is too common to block on.
        rescore: a second run directory (a text model, or ``gbdt`` with one stacked) whose evidence updates
            the candidates whose probability lies within ``rescore_band`` of the threshold: a cascade, where
            the costly model reads only the pairs the first is unsure of (see :func:`rescore_uncertain`).
            None: off.
        rescore_band: the half-width of that band, in (candidate-calibrated) probability.
        truth_column: a column of the data's parquet files that holds each item's true product (for example
            ``product_id``): quality is measured against it, over the items that have a value. None:
            ``truth.parquet``'s ``product_id`` where the data has that file (synthetic data).
        one_to_one: linking two sources (``match --link``), clusters hold at most one item of each: a
            maximum-weight matching of each component instead of the average-linkage guard.
    """

    k: int = 20
    threshold: float | None = None
    calibrate: str = "prior"
    block_by: str | None = None
    index: str = "auto"
    exact_max_items: int = 20_000
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    # 64: on the 1M-item bench's 64-d vectors, recall of the exact top-20 0.987 in 93 s of search; 96: 0.993
    # in 144 s (48: 0.981 in 79 s). The shared-value candidates recover pairs the graph misses.
    hnsw_ef_search: int = 64
    linkage_max: int = 5000
    token_k: int = 10
    token_max_block: int = 100
    rescore: str | None = None
    rescore_band: float = 0.2
    truth_column: str | None = None
    one_to_one: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise ConfigError(
                f"--k must be between 1 and {MAX_K:,}, got {self.k:,}: every item's k nearest neighbours become "
                "candidate pairs to score (items x k of them); 20 to 100 finds nearly every match"
            )
        if not 0 <= self.token_k <= MAX_K:
            raise ConfigError(f"--token-k must be between 0 (off) and {MAX_K:,}, got {self.token_k:,}")
        if self.token_max_block < 2:
            raise ConfigError(
                f"--token-max-block must be at least 2 (a value two items share), got {self.token_max_block}"
            )
        if self.calibrate not in ("prior", "none"):
            raise ConfigError(f"--calibrate must be 'prior' or 'none', got {self.calibrate!r}")
        if self.index not in INDEX_KINDS:
            raise ConfigError(f"--index must be one of {list(INDEX_KINDS)}, got {self.index!r}")
        if self.block_by not in (None, "category"):
            raise ConfigError(f"--block-by must be 'category' or left out, got {self.block_by!r}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 < self.rescore_band <= 1.0:
            raise ConfigError(
                f"--rescore-band must be in (0, 1], got {self.rescore_band}: the pairs within it of the threshold "
                "are re-scored (1 re-scores every candidate)"
            )

    def index_kind(self, n_items: int) -> str:
        if self.index != "auto":
            return self.index
        return "flat" if n_items <= self.exact_max_items else "hnsw"

    def to_dict(self) -> dict:
        return asdict(self)


MATCHES_FILE = "matches.parquet"
CLUSTERS_FILE = "clusters.parquet"
SUMMARY_FILE = "summary.json"


def timed(stages: dict, name: str):
    """Context manager recording a stage's wall seconds and peak RSS into ``stages``."""
    import contextlib
    import resource

    @contextlib.contextmanager
    def run():
        t0 = time.perf_counter()
        yield
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stages[name] = {"seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(peak_mb, 1)}
        log.info("%s: %.1fs (peak memory so far %.0f MB)", name, stages[name]["seconds"], peak_mb)

    return run()


def _staged_output(out_dir, overwrite: bool, marker: str):
    """A context manager yielding a temporary directory that replaces ``out_dir`` on success only."""
    import contextlib
    import shutil
    import tempfile
    from pathlib import Path

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out_dir} is not empty; pass --overwrite to replace it or choose another --out")
        if not (out_dir / marker).exists():
            raise ConfigError(f"{out_dir} holds files that prodmatch did not write; refusing to delete them")

    @contextlib.contextmanager
    def staged():
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        try:
            yield tmp
            if out_dir.exists():
                shutil.rmtree(out_dir)
            tmp.rename(out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    return staged()


def replace_index(config: MatchConfig, kind: str) -> MatchConfig:
    from dataclasses import replace

    return replace(config, index=kind)
