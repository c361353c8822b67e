"""Data commands: ``synth`` (a synthetic catalogue in the E-CUP layout), ``info`` (validate and describe a
data directory) and ``import-em`` (a public entity-matching benchmark as a data directory)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from prodmatch.cli.common import (
    ADVANCED,
    app,
    console,
    example,
    log,
    stage_bars,
    stdout,
    user_errors,
)
from prodmatch.errors import ConfigError

PANEL = "Data"  # the group of commands in --help

# ------------------------------------------------------------------------------------------- synth


@app.command(rich_help_panel=PANEL, epilog=example("prodmatch synth data/demo --items 20000 --pairs 8000"))
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
        typer.Option(
            help="Labelled pairs per item (0.25-20); above ~2 the pair graph is one giant component.",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    negatives: Annotated[
        Literal["mixed", "random", "category", "siblings", "neighbours"] | None,
        typer.Option(
            help="How negatives are drawn: mixed, random, category, siblings or neighbours.", rich_help_panel=ADVANCED
        ),
    ] = None,
    positive_rate: Annotated[
        float | None, typer.Option(help="Share of positive pairs; default 0.48.", rich_help_panel=ADVANCED)
    ] = None,
    listings_per_product: Annotated[
        float | None, typer.Option(help="Mean listings per product; default 2.3.", rich_help_panel=ADVANCED)
    ] = None,
    noise: Annotated[
        float | None, typer.Option(help="Listing-noise multiplier; default 1.", rich_help_panel=ADVANCED)
    ] = None,
    no_picture: Annotated[
        float | None, typer.Option(help="Share of items without a picture; default 0.03.", rich_help_panel=ADVANCED)
    ] = None,
    zero_vectors: Annotated[
        float | None, typer.Option(help="Share of all-zero vectors; default 0.003.", rich_help_panel=ADVANCED)
    ] = None,
    extra_pictures: Annotated[
        float | None, typer.Option(help="Mean extra photos per item; 0: no column.", rich_help_panel=ADVANCED)
    ] = None,
    names: Annotated[
        bool | None, typer.Option("--names/--no-names", help="Write names and descriptions.", rich_help_panel=ADVANCED)
    ] = None,
    attributes: Annotated[
        bool | None,
        typer.Option("--attributes/--no-attributes", help="Write the attribute mappings.", rich_help_panel=ADVANCED),
    ] = None,
) -> None:
    """Write a synthetic dataset in the Ozon E-CUP layout, with ground-truth products in truth.parquet and
    the Bayes-optimal score of every labelled pair in oracle.parquet.

    Items come from a latent product model (categories, product families, several noisy listings per
    product), with hard negatives, items without a picture, zero vectors, reversed duplicate pairs and
    conflicting labels, like the real data. The structure can be changed (item reuse, how negatives are
    drawn, the positive share, side data, noise, missing vectors), one knob at a time or with a
    --scenario preset: default, giant-component, small, random-negatives, sibling-negatives,
    neighbour-negatives, rare-positives, embeddings-only, noisy, missing-vectors, many-listings,
    easy-negatives, noisy-listings, sparse-labels (labelled pairs unlike a catalogue's neighbours), and for
    catalogue matching catalogue-category, catalogue-siblings, catalogue-neighbours, catalogue-single,
    catalogue-five, catalogue-identifiable, catalogue-ambiguous. oracle_items.npz lets `match` score any
    pair with the oracle.
    """
    from prodmatch.synth import SCENARIOS, SynthConfig, generate

    with user_errors():
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


# -------------------------------------------------------------------------------------------- info


@app.command(rich_help_panel=PANEL, epilog=example("prodmatch info data/demo"))
def info(data_dir: Annotated[Path, typer.Argument(help="Data directory in the E-CUP layout.")]) -> None:
    """Validate a data directory the way train, predict and match will read it, and describe it: items,
    modalities and their coverage, pairs, labels, duplicates and the pair graph.

    Every problem gets a line that says which command refuses it; every fact a command handles by a stated
    policy (conflicting labels, items without any embedding) a note that says how. Exit code 1 when a command
    would refuse something, 0 otherwise."""
    from prodmatch.checks import check_directory
    from prodmatch.io import read_catalogue

    with user_errors():
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
        found = check_directory(data_dir, cat)
        problems, notes = found.problems, found.notes
        for fname, c in found.pairs.items():
            labels = (
                f"{100 * c.positive_rate:.1f}% positive"
                if c.positive_rate is not None
                else "labelled"
                if c.labelled
                else "no labels"
            )
            h = c.hygiene
            dup = (
                f"; {h['reversed_duplicates']:,} reversed duplicates"
                + (f", {h['conflicting_labels']:,} with conflicting labels" if c.labelled else "")
                if h
                else ""
            )
            stdout.print(f"{fname}: {c.rows:,} pairs, {labels}{dup}")
            g = c.graph
            if g:
                note = (
                    " (whole components cannot make a validation set: train splits by item)"
                    if g["largest_component_share"] > 0.9
                    else ""
                )
                stdout.print(
                    f"  pair graph: {g['items']:,} items, {g['pairs_per_item']:.2f} pairs per item; the largest "
                    f"connected component holds {100 * g['largest_component_share']:.1f}% of the pairs{note}"
                )
        for p in notes:
            stdout.print(f"[cyan]note:[/] {escape(p)}", highlight=False, soft_wrap=True)
        for p in problems:
            stdout.print(f"[yellow]problem:[/] {escape(p)}", highlight=False, soft_wrap=True)
        if problems:
            raise typer.Exit(1)
        stdout.print("no problems: train, predict and match can read this directory")


@app.command(
    "import",
    rich_help_panel=PANEL,
    epilog=example(
        "prodmatch import examples/products.csv data/shop --id sku --text title,brand --category category "
        "--attributes brand,colour,price --pairs examples/labels.csv --left sku_a --right sku_b --label same"
    ),
)
def import_command(
    table: Annotated[Path, typer.Argument(help="The catalogue: a .csv, .tsv, .jsonl or .parquet file.")],
    out_dir: Annotated[Path, typer.Argument(help="The data directory to create.")],
    id_column: Annotated[str, typer.Option("--id", help="The column of item ids.")],
    text: Annotated[
        str | None, typer.Option(help="Text columns, comma-separated, the title first: embedded and compared.")
    ] = None,
    vector: Annotated[
        str | None,
        typer.Option(
            help="Columns that already hold embeddings (lists of numbers), comma-separated; then no text is embedded."
        ),
    ] = None,
    category: Annotated[str | None, typer.Option(help="A category path column (levels split on '>').")] = None,
    attributes: Annotated[
        str | None, typer.Option(help="Columns compared as values (brand, colour, price...), comma-separated.")
    ] = None,
    pairs: Annotated[
        Path | None, typer.Option(help="Labelled pairs to train on (any of the same formats): train.parquet.")
    ] = None,
    left: Annotated[str, typer.Option(help="--pairs: the first id column.")] = "variantid1",
    right: Annotated[str, typer.Option(help="--pairs: the second id column.")] = "variantid2",
    label: Annotated[str, typer.Option(help="--pairs: the 0/1 label column (true/false, yes/no too).")] = "target",
    encoder: Annotated[
        Literal["use", "e5"],
        typer.Option(help="The offline text encoder, where no --vector is given.", rich_help_panel=ADVANCED),
    ] = "use",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing data directory.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.", rich_help_panel=ADVANCED)] = True,
) -> None:
    """Import your own catalogue table, with your own column names, as a data directory every command reads:
    ids, a title and other texts (embedded with the bundled offline encoder), or your own vectors, a category
    path, attributes, and labelled pairs. Then it is checked as `prodmatch info` checks a directory."""
    from prodmatch.tables import import_table

    def columns(value: str | None) -> list[str]:
        return [c.strip() for c in (value or "").split(",") if c.strip()]

    with user_errors():
        with stage_bars(progress) as stage:
            summary = import_table(
                table, out_dir, id_column=id_column, text_columns=columns(text), vector_columns=columns(vector),
                category_column=category, attribute_columns=columns(attributes), pairs=pairs,
                pair_columns=(left, right, label), encoder=encoder, overwrite=overwrite, progress=stage,
            )  # fmt: skip
        extra = ""
        if "pairs" in summary:
            p = summary["pairs"]
            extra = f"; {p['pairs']:,} labelled pairs ({100 * p['positive_rate']:.1f}% positive) -> train.parquet"
        stdout.print(f"{summary['items']:,} items ({summary['id_kind']} ids){extra} -> {out_dir}")
    with contextlib.suppress(typer.Exit):  # the import is done; what info finds is said, not an import failure
        info(out_dir)


@app.command("import-em", rich_help_panel=PANEL, epilog=example("prodmatch import-em path/to/Abt-Buy data/abt"))
def import_em_command(
    src_dir: Annotated[Path, typer.Argument(help="An EM benchmark folder: records.parquet, train/valid/test.parquet.")],
    out_dir: Annotated[Path, typer.Argument(help="The prodmatch data directory to create.")],
    encoder: Annotated[Literal["use", "e5"], typer.Option(help="Text encoder: use or e5.")] = "use",
    fields: Annotated[
        str, typer.Option(help="Texts to embed: name (the title), text (the whole record).", rich_help_panel=ADVANCED)
    ] = "name,text",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing import.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.", rich_help_panel=ADVANCED)] = True,
) -> None:
    """Turn an entity-matching benchmark folder (Magellan/DeepMatcher, Ditto's serialisation) into a
    prodmatch data directory: items with string ids and text embeddings, attributes, and the given
    train/valid/test pairs. Then: prodmatch train OUT --out RUN --valid-pairs OUT/valid.parquet."""
    from prodmatch.em import import_em

    with user_errors():
        with stage_bars(progress) as stage:
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
