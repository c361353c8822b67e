"""Training and evaluation commands: ``train``, ``compare``, ``evaluate``, ``predict``, ``explain``, ``report``,
``models``."""

from __future__ import annotations

import contextlib
import time
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from prodmatch.cli.common import (
    ADVANCED,
    ItemData,
    ModelName,
    RunDir,
    TrainBars,
    app,
    console,
    example,
    log,
    metrics_table,
    parse_params,
    stdout,
    terminate_as_interrupt,
    user_errors,
)
from prodmatch.config import DEFAULT_MODEL, DataConfig, TrainConfig
from prodmatch.errors import ConfigError

PANEL = "Train and evaluate"  # the group of commands in --help

# ------------------------------------------------------------------------------------------- train


@app.command(rich_help_panel=PANEL, epilog=example("prodmatch train data/demo --out runs/demo"))
def train(
    data_dir: Annotated[Path, typer.Argument(help="Data directory in the E-CUP layout.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")],
    model: Annotated[ModelName, typer.Option(help="Model name; see `prodmatch models`.")] = DEFAULT_MODEL,
    epochs: Annotated[int, typer.Option(help="Maximum epochs (networks).", rich_help_panel=ADVANCED)] = 10,
    split: Annotated[
        Literal["group", "items", "random"],
        typer.Option(
            help="group: whole components of the pair graph, no item on both sides (default; falls back to "
            "items when one giant component leaves validation too few pairs); items: items assigned to sides, "
            "pairs across left out; random: the notebook's row split (items leak).",
            rich_help_panel=ADVANCED,
        ),
    ] = "group",
    seed: Annotated[int, typer.Option(help="Seed for split, initialisation and shuffling.")] = 42,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Pairs per step; default: about 64 steps per epoch, 256 to 4096.", rich_help_panel=ADVANCED),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Learning rate; default: the model's.", rich_help_panel=ADVANCED)
    ] = None,
    patience: Annotated[
        int,
        typer.Option(help="Early-stop after this many epochs without improvement; 0 never.", rich_help_panel=ADVANCED),
    ] = 3,
    monitor: Annotated[
        Literal["pr_auc", "loss"],
        typer.Option(help="Validation metric that picks the best epoch: pr_auc or loss.", rich_help_panel=ADVANCED),
    ] = "pr_auc",
    valid_fraction: Annotated[
        float, typer.Option(help="Share of pairs held out for validation.", rich_help_panel=ADVANCED)
    ] = 0.2,
    min_valid_fraction: Annotated[
        float,
        typer.Option(
            help="Least share of pairs validation may get; below it group falls back to items; 0: any.",
            rich_help_panel=ADVANCED,
        ),
    ] = 0.1,
    valid_pairs: Annotated[
        Path | None,
        typer.Option(
            help="Validate on this labelled pairs file instead of splitting train.parquet (a benchmark's "
            "given split, e.g. DATA/valid.parquet): it picks the epoch, the calibration and the threshold."
        ),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="A `prodmatch review` labels file: its decided pairs train, never validate.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Model hyperparameter KEY=VALUE, repeatable (e.g. -p hidden=256)."),
    ] = None,
    modalities: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated embedding columns to use; default: every one found.", rich_help_panel=ADVANCED
        ),
    ] = None,
    strict_ids: Annotated[
        bool,
        typer.Option(
            help="Fail on pairs naming ids without data, instead of dropping them with a count.",
            rich_help_panel=ADVANCED,
        ),
    ] = False,
    invalid_vectors: Annotated[
        Literal["error", "missing"],
        typer.Option(
            help="NaN/inf embeddings: 'error' stops, 'missing' treats them as absent (counted).",
            rich_help_panel=ADVANCED,
        ),
    ] = "error",
    threads: Annotated[int | None, typer.Option(help="CPU threads; default: every core.")] = None,
    conflicts: Annotated[
        str,
        typer.Option(
            help="A pair labelled both 1 and 0: drop it, or keep the first / positive / negative label.",
            rich_help_panel=ADVANCED,
        ),
    ] = "drop",
    augment: Annotated[
        str,
        typer.Option(
            help="'transitive': add positives implied by chains of positive training pairs.", rich_help_panel=ADVANCED
        ),
    ] = "none",
    calibration: Annotated[
        Literal["platt", "isotonic", "none"],
        typer.Option(
            help="Probability calibration on validation pairs: platt, isotonic or none.", rich_help_panel=ADVANCED
        ),
    ] = "platt",
    target_precision: Annotated[
        float | None,
        typer.Option(help="Threshold: the lowest reaching this validation precision; default: max F1."),
    ] = None,
    precision: Annotated[
        Literal["auto", "fp32", "bf16"],
        typer.Option(help="Network arithmetic: auto (bf16 on CPUs with AMX), fp32 or bf16.", rich_help_panel=ADVANCED),
    ] = "auto",
    hard_negatives: Annotated[
        int,
        typer.Option(
            help="Negatives mined per training item from its nearest catalogue neighbours that the labels do "
            "not link to it, so the model learns the pairs `match` will score; 0: none.",
            rich_help_panel=ADVANCED,
        ),
    ] = 2,
    mine_k: Annotated[
        int, typer.Option(help="Neighbours searched per item when mining (match's --k).", rich_help_panel=ADVANCED)
    ] = 20,
    far_negatives: Annotated[
        int,
        typer.Option(
            help="Also this many negatives per training item drawn at random from the whole catalogue, for "
            "match --k far beyond --mine-k (pairs far down an item's list, often across categories).",
            rich_help_panel=ADVANCED,
        ),
    ] = 0,
    mine_max_items: Annotated[
        int,
        typer.Option(
            help="Mine for a random sample of at most this many items (of training, of validation).",
            rich_help_panel=ADVANCED,
        ),
    ] = 100_000,
    aux_weights: Annotated[
        str | None,
        typer.Option(
            help="Weights tried for the auxiliary training pairs (mined negatives, --augment's positives), "
            "comma-separated, beside the labelled pairs alone: each job keeps the weighting best on its own "
            "validation pairs (predict's on the labelled ones, match's on the validation items' candidates). "
            "Default: the model's (gbdt 0.25,1; networks 1). 0: the labelled pairs only.",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    drop_mined_above: Annotated[
        float | None,
        typer.Option(
            help="Drop mined pairs a quick cross-fitted model scores this likely or more to be matches (a "
            "positive-unlabelled filter; it drops the hardest negatives too); default: keep them all.",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    encoder_path: Annotated[
        Path | None,
        typer.Option(
            help="Text models (bi-encoder, or gbdt with -p stack_text=words,bi-encoder): a local Hugging Face "
            "model folder to fine-tune instead of the bundled all-MiniLM-L6-v2 (nothing is downloaded).",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    device: Annotated[
        str,
        typer.Option(
            help="Where the networks and text models train (gbdt's stacked ones too): auto (a GPU when torch "
            "sees one), cpu or cuda. Scoring runs on the CPU.",
            rich_help_panel=ADVANCED,
        ),
    ] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last checkpoint.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.", rich_help_panel=ADVANCED)] = True,
) -> None:
    """Train a pairwise model on DATA_DIR/train.parquet and evaluate it.

    Duplicate and conflicting pairs are cleaned (--conflicts), the pairs are split into train and
    validation (--split), and the model keeps its best epoch (or boosting round) on validation.
    Probabilities are calibrated and a threshold is chosen on validation (--calibration,
    --target-precision). If DATA_DIR/test.parquet has targets, the model is also evaluated on it. The run
    directory gets config.json, the weights, metrics.json, history.json and plots/.
    """
    from prodmatch import api
    from prodmatch.models import MODELS

    with user_errors():
        params = parse_params(param or [], MODELS.get(model))
        takes = {f.name for f in fields(MODELS[model].params_class)} if model in MODELS else set()
        if encoder_path is not None:
            if "encoder_path" not in takes:
                raise ConfigError(f"--encoder-path is for the text models; {model} reads no text")
            params["encoder_path"] = str(encoder_path)
        if device != "auto" and "device" in takes:  # the text models (and gbdt's stacked transformers)
            params["device"] = device
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
            labels=None if labels is None else str(labels),
            drop_unknown=not strict_ids,  # type: ignore[arg-type]
            threads=threads,
            conflicts=conflicts,  # type: ignore[arg-type]
            augment=augment,  # type: ignore[arg-type]
            calibration=calibration,  # type: ignore[arg-type]
            target_precision=target_precision,
            precision=precision,  # type: ignore[arg-type]
            hard_negatives=hard_negatives,
            mine_k=mine_k,
            far_negatives=far_negatives,
            mine_max_items=mine_max_items,
            drop_mined_above=drop_mined_above,
            aux_weights=None if aux_weights is None else parse_weights(aux_weights),
            device=device,
        )
        data_cfg = DataConfig(
            modalities=tuple(m.strip() for m in modalities.split(",")) if modalities else None,
            invalid_vectors=invalid_vectors,  # type: ignore[arg-type]
        )
        bars = TrainBars() if progress and console.is_terminal else None
        try:
            with bars or contextlib.nullcontext(), terminate_as_interrupt():
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
        except KeyboardInterrupt:
            from prodmatch.training import resumable

            if resumable(out):
                console.print(
                    "[yellow]interrupted[/]; what was trained is kept: run the same command with --resume to continue"
                )
            else:
                console.print("[yellow]interrupted[/] before anything resumable was trained; the run was removed")
            raise typer.Exit(130) from None
        m = report.metrics
        columns = {"validation": m["valid"]} | ({"test": m["test"]} if "test" in m else {})
        fitted = (
            f"best epoch {m['best_epoch']} of {m['epochs_run']}"
            if "best_epoch" in m
            else f"{m['best_iteration']} trees"
        )
        th = m["threshold"]
        stdout.print(metrics_table(columns, title=f"{model}: {fitted}, {m['train_seconds']:.1f}s"))
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


@app.command(
    rich_help_panel=PANEL, epilog=example("prodmatch compare data/demo --out runs/compare --models siamese,gbdt")
)
def compare(
    data_dir: Annotated[Path, typer.Argument(help="Data directory in the E-CUP layout.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the leaderboard and the runs.")],
    models: Annotated[
        str, typer.Option(help="Comma-separated models; the first is the baseline for 'time to reach'.")
    ] = "concat-mlp,item-mlp,siamese,gbdt",
    epochs: Annotated[int, typer.Option(help="Maximum epochs (networks).", rich_help_panel=ADVANCED)] = 10,
    split: Annotated[
        Literal["group", "random"], typer.Option(help="group (default) or random.", rich_help_panel=ADVANCED)
    ] = "group",
    seed: Annotated[int, typer.Option(help="Seed for the split and every model.")] = 42,
    batch_size: Annotated[
        int | None, typer.Option(help="Pairs per step; default: automatic.", rich_help_panel=ADVANCED)
    ] = None,
    precision: Annotated[
        Literal["auto", "fp32", "bf16"],
        typer.Option(help="Network arithmetic: auto, fp32 or bf16.", rich_help_panel=ADVANCED),
    ] = "auto",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="MODEL.KEY=VALUE, repeatable (e.g. -p gbdt.num_leaves=31)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads; default: every core.", rich_help_panel=ADVANCED)
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing comparison.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.", rich_help_panel=ADVANCED)] = True,
) -> None:
    """Train several models on the same split and print a leaderboard.

    Ranks on DATA_DIR/test.parquet when it has targets (else on validation): PR-AUC, E-CUP macro PR-AUC,
    ROC-AUC, F1 at the best threshold, accuracy at 0.5, training seconds, seconds to reach the first
    model's validation PR-AUC, and scoring pairs/s. Synthetic data adds its Bayes-optimal oracle as the
    ceiling. Writes OUT/leaderboard.json, OUT/pr_curves.png and a run directory per model in OUT/models.
    """
    from prodmatch.compare import compare as run_compare
    from prodmatch.models import MODELS

    with user_errors():
        names = [m.strip() for m in models.split(",") if m.strip()]
        per_model: dict[str, list[str]] = {}
        for item in param or []:
            name, dot, rest = item.partition(".")
            if not dot or name not in names:
                raise ConfigError(f"--param {item!r}: expected MODEL.KEY=VALUE with MODEL one of {names}")
            per_model.setdefault(name, []).append(rest)
        params = {name: parse_params(items, MODELS.get(name)) for name, items in per_model.items()}
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            split=split,  # type: ignore[arg-type]
            precision=precision,  # type: ignore[arg-type]
            threads=threads,
        )
        bars = TrainBars() if progress and console.is_terminal else None
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


# ---------------------------------------------------------------------------------------- evaluate


@app.command(
    rich_help_panel=PANEL,
    epilog=example("prodmatch evaluate runs/demo --data data/demo --pairs data/demo/test.parquet"),
)
def evaluate(
    run_dir: RunDir,
    data: ItemData,
    pairs: Annotated[Path, typer.Option("--pairs", help="Labelled pairs parquet (variantid1, variantid2, target).")],
    out_json: Annotated[Path | None, typer.Option("--out", "-o", help="Write the metrics JSON here.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Decision threshold; default: the model's.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PR-curve PNG here.")] = None,
) -> None:
    """Evaluate a saved model on labelled pairs: loss, accuracy, precision, recall, F1, PR-AUC, ROC-AUC,
    the best-F1 threshold and the E-CUP macro PR-AUC over level-2 categories."""
    from prodmatch import api

    with user_errors():
        metrics = api.evaluate(run_dir, data, pairs, out=out_json, threshold=threshold, plot=plot)
        stdout.print(metrics_table({pairs.name: metrics}, title=f"{run_dir}"))
        if out_json:
            stdout.print(f"metrics: {out_json}")


# ----------------------------------------------------------------------------------------- predict


@app.command(
    rich_help_panel=PANEL,
    epilog=example("prodmatch predict runs/demo --data data/demo --pairs data/demo/test.parquet --out scores.parquet"),
)
def predict(
    run_dir: RunDir,
    data: ItemData,
    pairs: Annotated[Path, typer.Option("--pairs", help="Pairs parquet (variantid1, variantid2).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Output parquet: variantid1, variantid2, target.")],
    labels: Annotated[
        bool,
        typer.Option(
            help="Add a 'label' column (1 where the probability reaches the model's threshold) and an 'evidence' "
            "column (what the two items had to compare; 'none': never a match)."
        ),
    ] = False,
) -> None:
    """Score every pair: writes variantid1, variantid2 and target (a calibrated probability), one row per
    input row, in input order (the E-CUP submission format). Unknown ids are an error that lists them."""
    from prodmatch import api

    with user_errors():
        t0 = time.perf_counter()
        frame = api.predict(run_dir, data, pairs, out_path, labels=labels)
        log.info("scored %d pairs in %.2fs -> %s", len(frame), time.perf_counter() - t0, out_path)


# ----------------------------------------------------------------------------------- explain, report


@app.command(
    rich_help_panel=PANEL,
    epilog=example("prodmatch explain runs/demo --data data/demo --pairs data/demo/test.parquet --out why"),
)
def explain(
    run_dir: RunDir,
    data: ItemData,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the explanations to.")],
    pairs: Annotated[
        Path | None, typer.Option("--pairs", help="Pairs parquet (variantid1, variantid2; target optional).")
    ] = None,
    pair: Annotated[
        tuple[str, str] | None, typer.Option("--pair", help="One pair of ids instead of --pairs: --pair ID1 ID2.")
    ] = None,
    plots: Annotated[
        int,
        typer.Option(
            help="Waterfall PNGs for the first this many pairs; -1: every pair (about 0.2 s each).",
            rich_help_panel=ADVANCED,
        ),
    ] = 20,
    show: Annotated[
        int, typer.Option(help="Print the explanations of the first this many pairs.", rich_help_panel=ADVANCED)
    ] = 3,
    job: Annotated[
        Literal["pairs", "catalogue"],
        typer.Option(
            help="Whose model explains: pairs (predict's, for labelled-like pairs) or catalogue (match's, for a "
            "catalogue's candidates)."
        ),
    ] = "pairs",
) -> None:
    """Why did two listings match? For every pair: the calibrated score, the threshold, and contributions
    that add up to the model's raw score (log-odds), each with its evidence in words.

    gbdt: LightGBM's exact TreeSHAP contributions summed per feature group (each embedding, picture,
    categories, attributes, name text, stacked network). Networks: exact Shapley values over the modalities,
    a modality left out being absent on both items. Writes explanations.parquet (a row per pair),
    contributions.parquet (a row per pair and feature), explanations.json and waterfalls/*.png.
    """
    from prodmatch.explain import explain as run_explain

    with user_errors():
        if (pairs is None) == (pair is None):
            raise ConfigError("give --pairs FILE or --pair ID1 ID2 (one of them)")
        t0 = time.perf_counter()
        found = run_explain(run_dir, data, pairs=pairs, pair=pair, out=out, plots=plots, job=job)
        seconds = time.perf_counter() - t0
        for i in range(min(show, len(found))):
            stdout.print(_explanation_table(found.pair(i)))
        n = len(found)
        if n > show:
            stdout.print(f"showing the first {min(show, n)} of {n:,} pairs (--show to change); all are in {out}")
        rate = f" ({n / max(found.seconds, 1e-9):,.0f} pairs/s)" if n >= 100 else ""
        stdout.print(
            f"{n:,} pair{'s' if n != 1 else ''} explained ({found.method}) in {found.seconds:.2f}s{rate}; "
            f"{seconds:.1f}s with loading and writing -> {out}"
        )


def parse_weights(text: str) -> tuple[float, ...]:
    """``--aux-weights 0.25,1`` -> (0.25, 1.0); an error naming the value that is not a number."""
    out = []
    for part in text.split(","):
        try:
            out.append(float(part))
        except ValueError:
            raise ConfigError(f"--aux-weights: {part.strip()!r} is not a number; give weights such as 0.25,1") from None
    return tuple(out)


def _explanation_table(e: dict) -> Table:
    verdict = "[green]match[/]" if e["label"] else "[red]no match[/]"
    truth = "" if e.get("target") is None else f", labelled {int(e['target'])}"
    table = Table(
        title=f"{e['variantid1']} vs {e['variantid2']}: p={e['score']:.3f} (threshold {e['threshold']:.3f}) "
        f"{verdict}{truth}; the {e['job']} job's model; evidence: {escape(e['evidence'])}",
        title_justify="left",
    )
    table.add_column("group")
    table.add_column("log-odds", justify="right")
    table.add_column("evidence")
    table.add_row("base value", f"{e['base_value']:+.3f}", "")
    for c in e["contributions"]:
        colour = "green" if c["contribution"] >= 0 else "red"
        table.add_row(c["group"], f"[{colour}]{c['contribution']:+.3f}[/]", escape(c["why"]))
    table.add_row("raw score", f"{e['raw_score']:+.3f}", f"threshold at {e['threshold_raw_score']:+.3f}")
    return table


@app.command(
    rich_help_panel=PANEL,
    epilog=example("prodmatch report runs/demo --data data/demo --pairs data/demo/test.parquet --out report.html"),
)
def report(
    run_dir: RunDir,
    data: ItemData,
    pairs: Annotated[Path, typer.Option("--pairs", help="Labelled pairs parquet (variantid1, variantid2, target).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    top: Annotated[int, typer.Option(help="False positives and false negatives to show, each.")] = 10,
) -> None:
    """One self-contained HTML page about a model on labelled pairs (opens with no network): metrics, PR and
    ROC curves, a reliability diagram, score histograms by label, a threshold table, the E-CUP per-category
    PR-AUC (worst first), and the top false positives and negatives with names, categories and explanations."""
    from prodmatch.report import build_report

    with user_errors():
        t0 = time.perf_counter()
        path = build_report(run_dir, data, pairs, out, top=top)
        stdout.print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f}s)")


@app.command(rich_help_panel=PANEL, epilog=example("prodmatch models"))
def models() -> None:
    """List the registered models and their default hyperparameters."""
    from prodmatch.models import MODELS

    table = Table(title="models")
    table.add_column("name")
    table.add_column("defaults")
    for name, cls in MODELS.items():
        defaults = ", ".join(f"{f.name}={f.default}" for f in fields(cls.params_class))
        table.add_row(name + (" (default)" if name == DEFAULT_MODEL else ""), defaults)
    stdout.print(table)
