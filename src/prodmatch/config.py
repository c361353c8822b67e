"""Typed settings for reading data and training. The CLI parses flags into these; Python callers build them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from prodmatch.errors import ConfigError

__all__ = ["DEFAULT_MODEL", "MODEL_NAMES", "DataConfig", "TrainConfig", "auto_batch_size"]

# The model `prodmatch train` fits unless told otherwise: the leaderboard's winner (see docs/models.md, The leaderboard).
DEFAULT_MODEL = "gbdt"
# Every model `prodmatch train` knows, listed here so that the command line offers them without importing the
# models (torch); tests check it against prodmatch.models.MODELS.
MODEL_NAMES = ("gbdt", "siamese", "concat-mlp", "item-mlp", "bi-encoder", "cross-encoder")
# Pairs (or items) per forward pass when a network scores. Measured on 2 million candidate pairs of the
# siamese head: batches of 65,536 took 23-36 s, of 16,384 11-14 s. A large batch's activations are fresh
# memory the system maps and faults in on every pass; a small one's stay in the allocator's cache.
INFERENCE_BATCH = 16384


@dataclass(frozen=True)
class DataConfig:
    """How to read a data directory.

    Attributes:
        modalities: embedding columns to use, in this order; None takes every one found.
        id_column: the item id column of the item files.
        invalid_vectors: what to do with an embedding holding NaN or inf: ``"error"`` stops with the
            ids, ``"missing"`` treats that item as lacking the modality (counted in the log).
        load_categories: read category levels from attributes.parquet when it exists.
        load_names: read the ``name`` column of text_and_bert.parquet when it exists.
        load_attributes: read ``characteristic_attributes_mapping`` of attributes.parquet when it exists.
        load_extra_pictures: read ``pic_embeddings_resnet_v1`` (extra photos) of the picture file when it exists.
        load_texts: read the long text of text_and_bert.parquet (``text``, a whole serialised record, or
            ``description``) when it exists.
        dims: the expected length of each of ``modalities`` (a fitted model's): a file that holds no vector
            at all of one of them (a small batch of new items without photos) then reads as every item
            missing it, where without ``dims`` its length is unknown and that is an error.
    """

    modalities: tuple[str, ...] | None = None
    id_column: str = "variantid"
    invalid_vectors: Literal["error", "missing"] = "error"
    load_categories: bool = True
    load_names: bool = False
    load_attributes: bool = False
    load_extra_pictures: bool = False
    load_texts: bool = False
    dims: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.dims is not None and (self.modalities is None or len(self.dims) != len(self.modalities)):
            raise ConfigError("DataConfig.dims needs one length per modality of DataConfig.modalities")
        if self.invalid_vectors not in ("error", "missing"):
            raise ConfigError(f"invalid_vectors must be 'error' or 'missing', got {self.invalid_vectors!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How to train a pairwise model.

    Attributes:
        epochs: maximum number of passes over the training pairs.
        batch_size: pairs per optimisation step; None picks one from the training set's size (see
            ``auto_batch_size``): 4096, the notebook's, for large sets, less for small ones.
        lr: Adam learning rate; None takes the model's default.
        patience: stop after this many epochs without improvement of ``monitor``; None never stops early.
        monitor: the validation metric that picks the best epoch.
        seed: seeds the split, initialisation, shuffling and dropout, so a run is reproducible.
        split: ``group`` keeps connected components of the pair graph on one side, falling back to
            ``items`` when one giant component leaves validation too few pairs; ``items`` assigns items to
            sides and keeps the pairs within a side; ``random`` is the notebook's row split, which lets
            items leak between train and validation.
        valid_fraction: share of pairs held out for validation.
        min_valid_fraction: the least share of pairs validation may get (the group split falls back to
            items below it, and a split that cannot reach it stops with an error); 0 accepts any.
        labels: a review's labels file (``prodmatch review``): its decided pairs join the training pairs, a
            relabelled pair takes the person's label, and test pairs among them are left out.
        valid_pairs: a labelled pairs file to validate on instead of splitting train.parquet (a
            benchmark's given split): all of train.parquet trains, these choose the epoch and threshold.
        drop_unknown: drop training pairs naming ids without any data (counted); False makes them an error.
        threads: torch intra-op threads; None uses every core this process may run on.
        eval_batch_size: pairs per forward pass when scoring.
        precision: ``bf16`` runs the networks' matrix products in bfloat16 (CPU autocast), ``fp32`` does not;
            ``auto`` picks bf16 on CPUs with AMX tiles, where it trains about 1.4x faster at equal quality.
        conflicts: what to do with a pair labelled both 1 and 0 (see ``prodmatch.pairs.clean_pairs``).
        augment: ``transitive`` adds the positives implied by components of positive training pairs.
        calibration: how probabilities are calibrated on validation pairs: platt, isotonic or none.
        target_precision: choose the lowest threshold reaching this validation precision; None: max F1.
        hard_negatives: negatives mined per training item from its top-``mine_k`` catalogue neighbours
            that the labels do not connect to it (see ``prodmatch.mining``); 0 mines none.
        mine_k: neighbours searched per item when mining (``match``'s k).
        far_negatives: negatives per training item drawn at random from the whole catalogue, beside the
            near ones, for ``match --k`` beyond ``mine_k`` (see ``prodmatch.mining.mine_negatives``).
        mine_max_items: mine for a random sample of at most this many items (of the training pairs, and of the
            validation pairs): beyond it more mined pairs add little and cost search, features and rows.
        drop_mined_above: drop the mined pairs a quick cross-fitted model scores this likely or more to be
            matches (a positive-unlabelled filter, see ``prodmatch.mining.drop_likely_positives``); None keeps
            them all. Off by default: it drops the hardest negatives (other products of the same family) with
            the unlabelled matches, and measured on the catalogue scenarios that costs more than the few
            wrong labels it saves (docs/benchmarks.md, table j).
        device: where the networks train (standalone, and the ones ``gbdt`` stacks): ``auto`` (a GPU when torch
            sees one), ``cpu`` or ``cuda``. Scoring runs on the CPU.
        aux_weights: the weights tried for the auxiliary training pairs (mined negatives, transitive
            positives), each source alone, beside the labelled pairs alone; each job keeps the weighting best
            on its own validation pairs (see ``prodmatch.auxiliary``). None: the model's default grid.
    """

    epochs: int = 10
    batch_size: int | None = None
    lr: float | None = None
    patience: int | None = 3
    monitor: Literal["pr_auc", "loss"] = "pr_auc"
    seed: int = 42
    split: Literal["group", "items", "random"] = "group"
    valid_fraction: float = 0.2
    min_valid_fraction: float = 0.1
    valid_pairs: str | None = None
    labels: str | None = None
    drop_unknown: bool = True
    threads: int | None = None
    eval_batch_size: int = INFERENCE_BATCH
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    conflicts: Literal["drop", "first", "positive", "negative"] = "drop"
    augment: Literal["none", "transitive"] = "none"
    calibration: Literal["platt", "isotonic", "none"] = "platt"
    target_precision: float | None = None
    hard_negatives: int = 2
    mine_k: int = 20
    far_negatives: int = 0
    mine_max_items: int = 100_000
    drop_mined_above: float | None = None
    aux_weights: tuple[float, ...] | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 (BatchNorm needs two rows), got {self.batch_size}")
        if self.split not in ("group", "items", "random"):
            raise ConfigError(f"split must be 'group', 'items' or 'random', got {self.split!r}")
        if not 0.0 <= self.min_valid_fraction < 1.0:
            raise ConfigError(f"min_valid_fraction must be in [0, 1), got {self.min_valid_fraction}")
        if self.monitor not in ("pr_auc", "loss"):
            raise ConfigError(f"monitor must be 'pr_auc' or 'loss', got {self.monitor!r}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be >= 1 or None, got {self.patience}")
        choices = {
            "precision": ("auto", "fp32", "bf16"),
            "conflicts": ("drop", "first", "positive", "negative"),
            "augment": ("none", "transitive"),
            "calibration": ("platt", "isotonic", "none"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {list(allowed)}, got {getattr(self, key)!r}")
        if self.target_precision is not None and not 0.0 < self.target_precision <= 1.0:
            raise ConfigError(f"target_precision must be in (0, 1], got {self.target_precision}")
        if not 0 <= self.hard_negatives <= 50:
            raise ConfigError(f"hard_negatives must be in [0, 50], got {self.hard_negatives}")
        if self.mine_max_items < 1:
            raise ConfigError(f"mine_max_items must be at least 1, got {self.mine_max_items}")
        if not 0 <= self.far_negatives <= 50:
            raise ConfigError(f"far_negatives must be in [0, 50], got {self.far_negatives}")
        if not 1 <= self.mine_k <= 1000:
            raise ConfigError(f"mine_k must be in [1, 1000], got {self.mine_k}")
        if self.drop_mined_above is not None and not 0.0 < self.drop_mined_above <= 1.0:
            raise ConfigError(
                f"drop_mined_above must be in (0, 1] or left out (keep every mined pair), got {self.drop_mined_above}"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.aux_weights is not None:
            bad = [w for w in self.aux_weights if not 0.0 <= w <= 100.0]
            if bad or not len(self.aux_weights):
                raise ConfigError(
                    f"aux_weights must be weights in [0, 100] (0: the labelled pairs alone), got {list(self.aux_weights)}"
                )
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")

    def to_dict(self) -> dict:
        return asdict(self)


def auto_batch_size(n_pairs: int) -> int:
    """A power of two giving about 64 steps per epoch, between 256 and the notebook's 4096."""
    size = 2 ** int(max(n_pairs // 64, 1)).bit_length()
    return int(min(max(size // 2, 256), 4096))


# ------------------------------------------------------------------------------------------- matching

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


def replace_index(config: MatchConfig, kind: str) -> MatchConfig:
    return replace(config, index=kind)
