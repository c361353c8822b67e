"""Catalogue matching commands: ``match`` (candidates, scores and product clusters over a whole catalogue),
``quality`` (a match's output files against known true products) and ``index`` (a saved candidate index for
incremental matching)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from prodmatch.cli.common import (
    ADVANCED,
    RunDir,
    app,
    example,
    stage_bars,
    stdout,
    user_errors,
)
from prodmatch.errors import ConfigError

PANEL = "Match a catalogue"  # the group of commands in --help

# ------------------------------------------------------------------------------------------- match


@app.command(rich_help_panel=PANEL, epilog=example("prodmatch match runs/demo --data data/demo --out matches/demo"))
def match(
    run_dir: RunDir,
    out: Annotated[str, typer.Option("--out", "-o", help="Output directory.")],
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="The catalogue to match (E-CUP layout); or give --link.")
    ] = None,
    link: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--link",
            metavar="LEFT RIGHT",
            help="Link two sources instead (a supplier's feed and the catalogue, each in E-CUP layout, ids unique "
            "across both): only pairs of one item of each are candidates; the outputs add source1/source2 to "
            "matches.parquet and source (left, right) to clusters.parquet.",
        ),
    ] = None,
    one_to_one: Annotated[
        bool,
        typer.Option(
            "--one-to-one",
            help="With --link: each cluster holds at most one item of each source (a maximum-weight matching of "
            "each component), for sources without duplicates of their own.",
        ),
    ] = False,
    k: Annotated[int, typer.Option(help="Nearest neighbours searched per item.")] = 20,
    threshold: Annotated[
        float | None, typer.Option(help="Match probability threshold; default: the model's saved one.")
    ] = None,
    calibrate: Annotated[
        str,
        typer.Option(
            help="prior: re-calibrate the probabilities for the share of matches among the candidates (estimated, "
            "or from --labelled-sample) and pick the threshold of best expected F1; none: the model's own.",
            rich_help_panel=ADVANCED,
        ),
    ] = "prior",
    labelled_sample: Annotated[
        Path | None,
        typer.Option(
            help="A parquet of candidate pairs labelled by hand (variantid1, variantid2, target), drawn at random "
            "from the candidates: calibrates on them instead of estimating.",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    block_by: Annotated[
        str | None, typer.Option(help="'category': search only within each level-2 category.", rich_help_panel=ADVANCED)
    ] = None,
    index: Annotated[
        Literal["auto", "flat", "hnsw"],
        typer.Option(
            help="auto (exact up to 20,000 items, then HNSW), flat (exact) or hnsw.", rich_help_panel=ADVANCED
        ),
    ] = "auto",
    token_k: Annotated[
        int,
        typer.Option(
            help="Extra candidates per item that share its rarest attribute values or name words (a model "
            "number, an article code), found whatever the embeddings say; 0: off.",
            rich_help_panel=ADVANCED,
        ),
    ] = 10,
    token_max_block: Annotated[
        int,
        typer.Option(
            help="A value or word held by more items than this (a brand, a colour) is not blocked on.",
            rich_help_panel=ADVANCED,
        ),
    ] = 100,
    rescore: Annotated[
        Path | None,
        typer.Option(
            help="A cascade: a second run (a text model such as cross-encoder, or gbdt with one stacked) re-scores "
            "the candidates the first is unsure of, those within --rescore-band of the threshold.",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    rescore_band: Annotated[
        float,
        typer.Option(
            help="With --rescore: half-width of the band around the threshold, in probability.",
            rich_help_panel=ADVANCED,
        ),
    ] = 0.2,
    truth_column: Annotated[
        str | None,
        typer.Option(
            help="A column of the data's parquet files holding each item's true product (e.g. product_id): "
            "summary.json then measures the match against it, over the items that have one. Default: "
            "truth.parquet's product_id, where the data has that file.",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    new: Annotated[
        str | None,
        typer.Option(
            help="Incremental: a data directory of newly listed items to match against --index-dir.",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    index_dir: Annotated[
        str | None,
        typer.Option(help="Incremental: the catalogue's saved index (`prodmatch index`).", rich_help_panel=ADVANCED),
    ] = None,
    clusters: Annotated[
        str | None,
        typer.Option(help="Incremental: the catalogue's clusters.parquet from a full match.", rich_help_panel=ADVANCED),
    ] = None,
    engine: Annotated[
        Literal["local", "spark"],
        typer.Option(
            help="local: one process (default). spark: Apache Spark (pip install 'prodmatch\\[spark]', Java 17+), "
            "for catalogues beyond one machine; the same output files. --data and --out may then be any path "
            "Spark reads (file:, hdfs:, s3a:).",
            rich_help_panel=ADVANCED,
        ),
    ] = "local",
    master: Annotated[
        str | None,
        typer.Option(
            help="--engine spark: the Spark master (local[*], yarn, spark://host:7077).", rich_help_panel=ADVANCED
        ),
    ] = None,
    spark_conf: Annotated[
        list[str] | None,
        typer.Option(
            "--spark-conf",
            help="--engine spark: a Spark setting KEY=VALUE (repeat the option).",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(
            help="--engine spark: shuffle partitions and groups; default 4 per core.", rich_help_panel=ADVANCED
        ),
    ] = None,
    cells: Annotated[
        int | None,
        typer.Option(
            help="--engine spark: IVF cells of the candidate search; default sqrt(items), or one (exact) where the "
            "local engine searches exactly.",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    probes: Annotated[
        int, typer.Option(help="--engine spark: cells each item searches.", rich_help_panel=ADVANCED)
    ] = 8,
    cell_cap: Annotated[
        int,
        typer.Option(
            help="--engine spark: a cell with more items than this is searched in chunks.", rich_help_panel=ADVANCED
        ),
    ] = 20_000,
    checkpoint_dir: Annotated[
        str | None,
        typer.Option(
            help="--engine spark: where intermediate data and checkpoints go (default: beside --out).",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    part_files: Annotated[
        bool,
        typer.Option(
            help="--engine spark: write matches.parquet and clusters.parquet as folders of Spark's part files "
            "(one per task) instead of single files, for outputs too large for one task.",
            rich_help_panel=ADVANCED,
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.", rich_help_panel=ADVANCED)] = True,
) -> None:
    """Group a whole catalogue into products: candidate search, scoring, clustering.

    Finds every item's top-k neighbours with faiss, and the items sharing its rarest attribute values or name
    words (--token-k), scores each candidate pair with the model, keeps pairs
    at or above the threshold, and clusters items: connected components, each re-cut by average linkage so
    that one weak link cannot chain two groups together. Writes OUT/matches.parquet (variantid1 <
    variantid2, sorted; score, evidence, and same_cluster: whether the clusters keep the pair together),
    OUT/clusters.parquet (variantid, cluster_id) and OUT/summary.json (counts, timings
    and peak memory per stage, parameters, and quality against truth.parquet when the data has it).

    Probabilities are re-calibrated for the candidates (--calibrate): the model's are calibrated on its
    labelled pairs, where matches are far more common than among an item's nearest neighbours. On
    synthetic data the summary sets every figure against the Bayes oracle's on the same catalogue.

    --link LEFT RIGHT links two sources instead of one catalogue (Splink's link_only): every item's
    neighbours are the other source's, and quality counts the pairs of two sources only.
    """
    from prodmatch.matching import ENGINES, MatchConfig, match_catalogue, match_new
    from prodmatch.matching.spark import SparkOptions

    with user_errors():
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
            truth_column=truth_column,
            one_to_one=one_to_one,
        )
        if (data is None) == (link is None):
            raise ConfigError(
                "give the catalogue as --data DIR, or two sources to link as --link LEFT RIGHT (one of the two)"
            )
        if one_to_one and link is None:
            raise ConfigError("--one-to-one applies to linking two sources: give them as --link LEFT RIGHT")
        if engine not in ENGINES:
            raise ConfigError(f"--engine must be one of {list(ENGINES)}, got {engine!r}")
        spark_args: dict = {}
        if engine == "spark":
            spark_args["options"] = SparkOptions(
                master=master,
                conf=_spark_conf(spark_conf),
                partitions=partitions,
                cells=cells,
                probes=probes,
                cell_cap=cell_cap,
                checkpoint_dir=checkpoint_dir,
                part_files=part_files,
            )
        elif master or spark_conf or checkpoint_dir or partitions or cells or part_files:
            raise ConfigError(
                "--master, --spark-conf, --partitions, --cells, --checkpoint-dir and --part-files need --engine spark"
            )
        if new is not None or index_dir is not None or clusters is not None:
            if link is not None:
                raise ConfigError("--link matches two whole sources; incremental matching (--new) takes --data")
            if new is None or index_dir is None or clusters is None:
                raise ConfigError("incremental matching needs --new, --index-dir and --clusters together")
            if rescore is not None:
                raise ConfigError(
                    "--rescore applies to a full match; incremental matching (--new) scores with RUN_DIR only"
                )
            summary = match_new(
                run_dir, data, index_dir, new, clusters, out, cfg, engine=engine, overwrite=overwrite, **spark_args
            )
            stdout.print(
                f"{summary['new_items']:,} new items: {summary['joined_existing_clusters']:,} joined existing clusters, "
                f"{summary['new_clusters']:,} new clusters; {summary['matches']:,} matches "
                f"({summary['seconds']:.1f}s). outputs: {out}/matches.parquet, clusters.parquet, summary.json"
            )
            return
        with stage_bars(progress) as stage:
            summary = match_catalogue(
                run_dir,
                data if link is None else link[0],
                out,
                cfg,
                link_with=None if link is None else link[1],
                engine=engine,
                overwrite=overwrite,
                progress=stage,
                labelled_sample=labelled_sample,
                **spark_args,
            )
        linked = summary.get("link")
        what = (
            f"{linked['items']['left']:,} + {linked['items']['right']:,} items linked"
            if linked
            else f"{summary['items']:,} items"
        )
        table = Table(title=f"{what} -> {summary['clustering']['clusters']:,} clusters")
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
        _print_quality(summary["quality"])
        stdout.print(f"outputs: {out}/matches.parquet, clusters.parquet, summary.json")


def _print_quality(quality: dict) -> None:
    quality = dict(quality)
    truth = quality.pop("truth", None)
    if truth is not None:
        stdout.print(
            f"quality against {truth['file']}'s {truth['column']!r}: {truth['items_with_truth']:,} of "
            f"{truth['items']:,} items have one"
        )
    for key, value in quality.items():
        if isinstance(value, dict):
            stdout.print(f"{key}: " + ", ".join(f"@{k} {v:.4f}" for k, v in value.items() if v is not None))
        else:
            stdout.print(f"{key}: {value:.4f}" if value is not None else f"{key}: -")


@app.command("quality", rich_help_panel=PANEL, epilog=example("prodmatch quality matches/demo --data data/demo"))
def quality_command(
    out: Annotated[str, typer.Argument(help="A match's output directory (matches.parquet, clusters.parquet).")],
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            "-d",
            help="Where the items' true products are: a data directory with truth.parquet (or --truth-column); "
            "twice, LEFT then RIGHT, for the outputs of `match --link`.",
        ),
    ],
    truth_column: Annotated[
        str | None,
        typer.Option(help="The column of the data's parquet files holding each item's true product."),
    ] = None,
    id_column: Annotated[str, typer.Option(help="The id column of the truth files.")] = "variantid",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")] = None,
) -> None:
    """Measure a match's output files against known true products: the clusters' pairwise and B-cubed
    precision and recall, and the matches' precision and recall. Any `match` output (either engine, any run)
    can be measured, the same way `match` measures its own when the data holds a truth."""
    from prodmatch.atomic import write_json
    from prodmatch.matching.evaluate import evaluate_outputs, truth_files

    with user_errors():
        truths = truth_files(data, truth_column, id_column)
        if truths is None:
            raise ConfigError(
                f"no true products in {' and '.join(data)}: give a data directory with truth.parquet, or name the "
                "column that holds them with --truth-column"
            )
        quality = evaluate_outputs(out, truths, id_column)
        _print_quality(quality)
        if json_out is not None:
            write_json(quality, json_out)
            stdout.print(f"figures: {json_out}")


def _spark_conf(items: list[str] | None) -> dict[str, str]:
    """--spark-conf KEY=VALUE options as a dict."""
    conf = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--spark-conf takes KEY=VALUE, got {item!r}")
        conf[key.strip()] = value.strip()
    return conf


@app.command(
    "index", rich_help_panel=PANEL, epilog=example("prodmatch index runs/demo --data data/demo --out index/demo")
)
def index_command(
    run_dir: RunDir,
    data: Annotated[str, typer.Option("--data", "-d", help="The catalogue to index (E-CUP layout).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Directory for the index.")],
    index: Annotated[Literal["auto", "flat", "hnsw"], typer.Option(help="auto, flat (exact) or hnsw.")] = "auto",
    engine: Annotated[
        Literal["local", "spark"],
        typer.Option(
            help="local: a faiss index (default). spark: item vectors and IVF centroids as parquet, for "
            "`match --engine spark --new`.",
            rich_help_panel=ADVANCED,
        ),
    ] = "local",
    master: Annotated[
        str | None, typer.Option(help="--engine spark: the Spark master.", rich_help_panel=ADVANCED)
    ] = None,
    spark_conf: Annotated[
        list[str] | None,
        typer.Option("--spark-conf", help="--engine spark: a Spark setting KEY=VALUE.", rich_help_panel=ADVANCED),
    ] = None,
    cells: Annotated[
        int | None, typer.Option(help="--engine spark: IVF cells (default sqrt(items)).", rich_help_panel=ADVANCED)
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index directory.")] = False,
) -> None:
    """Save a catalogue's item vectors and nearest-neighbour index, so that newly listed items can be
    matched against it later (`prodmatch match ... --new NEW --index-dir OUT --clusters CLUSTERS`)
    without rebuilding it; for a gbdt model also its item-feature store (OUT/store), which
    `prodmatch serve --index-dir OUT` memory-maps instead of computing it at start-up."""
    from prodmatch.matching import MatchConfig, build_index_dir
    from prodmatch.matching.spark import SparkOptions

    with user_errors():
        if engine == "spark":
            options = SparkOptions(master=master, conf=_spark_conf(spark_conf), cells=cells)
            meta = build_index_dir(
                run_dir, data, out, MatchConfig(index=index), engine=engine, options=options, overwrite=overwrite
            )
            stdout.print(
                f"indexed {meta['items']:,} items ({meta['item_vectors']}, {meta['index']}, {meta['cells']:,} cells) "
                f"in {meta['seconds']:.1f}s -> {out}"
            )
            return
        if engine != "local":
            raise ConfigError(f"--engine must be 'local' or 'spark', got {engine!r}")
        if master or spark_conf or cells:
            raise ConfigError("--master, --spark-conf and --cells need --engine spark")
        meta = build_index_dir(run_dir, Path(data), Path(out), MatchConfig(index=index), overwrite=overwrite)
        store = meta.get("item_store")
        saved = f", item-feature store {store['bytes'] / 2**20:,.0f} MB" if store else ""
        stdout.print(
            f"indexed {meta['items']:,} items ({meta['item_vectors']}, {meta['index']}{saved}) "
            f"in {meta['seconds']:.1f}s -> {out}"
        )
