"""Serving commands: ``export`` (ONNX) and ``serve`` (the HTTP API)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from prodmatch.cli.common import (
    ADVANCED,
    RunDir,
    app,
    console,
    example,
    stdout,
    user_errors,
)
from prodmatch.errors import ConfigError

PANEL = "Serve"  # the group of commands in --help

# ------------------------------------------------------------------------------------- export, serve


@app.command(rich_help_panel=PANEL, epilog=example("prodmatch export runs/demo --data data/demo"))
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
    from prodmatch.io import read_catalogue
    from prodmatch.models import load_model

    with user_errors():
        catalogue = None
        if data is not None:
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


@app.command(rich_help_panel=PANEL, epilog=example("prodmatch serve runs/demo --data data/demo --port 8000"))
def serve(
    run_dir: RunDir,
    data: Annotated[Path, typer.Option("--data", "-d", help="The catalogue to serve (the model's layout).")],
    host: Annotated[str, typer.Option(help="Interface to listen on; 0.0.0.0 for every interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port, 1-65535.", min=1, max=65535)] = 8000,
    index_dir: Annotated[
        Path | None,
        typer.Option(
            help="A saved `prodmatch index` directory (item vectors, ANN index and, for gbdt, the item-feature "
            "store, memory-mapped); built at start-up when left out.",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    clusters: Annotated[
        Path | None,
        typer.Option(
            help="clusters.parquet of a `prodmatch match` run, to answer cluster ids.", rich_help_panel=ADVANCED
        ),
    ] = None,
    runtime: Annotated[
        Literal["auto", "onnx", "torch"],
        typer.Option(help="onnx (after `prodmatch export`), torch, or auto: onnx when exported."),
    ] = "auto",
    threads: Annotated[int, typer.Option(help="Compute threads per request.", rich_help_panel=ADVANCED)] = 1,
    max_batch: Annotated[
        int, typer.Option(help="Most pairs in one /v1/score or /v1/explain request.", rich_help_panel=ADVANCED)
    ] = 1024,
    max_k: Annotated[int, typer.Option(help="Largest k of /v1/similar.", rich_help_panel=ADVANCED)] = 100,
    access_log: Annotated[bool, typer.Option(help="Log every request.", rich_help_panel=ADVANCED)] = True,
) -> None:
    """Serve a model over HTTP: POST /v1/score, POST /v1/explain, POST /v1/similar, GET /v1/model, GET /health; the
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

    with user_errors():
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
            problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise ConfigError(f"invalid serve settings: {problems}") from None
        _check_port(host, port)  # before loading: the model and catalogue can take minutes
        application = create_app(settings)
        stdout.print(f"serving {run_dir} on http://{host}:{port}  (docs: http://{host}:{port}/docs)")
        uvicorn.run(application, host=host, port=port, access_log=access_log, log_level="info")


def _check_port(host: str, port: int) -> None:
    """Refuse, in one line, an address another process is listening on (bound and released at once, as uvicorn
    will bind it)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host}: not an address of this machine ({e})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({e.strerror}): another process is using it; choose another --port"
            ) from None


# ----------------------------------------------------------------------------------------------- review


@app.command(
    rich_help_panel=PANEL,
    epilog=example("prodmatch review runs/demo --data data/demo --matches matches/demo --labels labels.parquet"),
)
def review(
    run_dir: RunDir,
    data: Annotated[Path, typer.Option("--data", "-d", help="The catalogue that was matched.")],
    matches: Annotated[Path, typer.Option("--matches", "-m", help="The output folder of `prodmatch match`.")],
    labels: Annotated[
        Path,
        typer.Option(
            "--labels", "-l", help="Where the labels go (parquet), written at every decision; an existing file resumes."
        ),
    ],
    reviewer: Annotated[str, typer.Option(help="Your name, recorded with every label.")] = "reviewer",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port, 1-65535.", min=1, max=65535)] = 8765,
    pool_items: Annotated[
        int,
        typer.Option(
            help="Items whose nearest neighbours below the threshold join the pool.", min=1, rich_help_panel=ADVANCED
        ),
    ] = 5000,
) -> None:
    """Review a matched catalogue in your browser: a local page walks you through the pairs a label would teach
    the most (uncertain: near the threshold; diverse: one per cluster in turn; audit: random matches, for an
    unbiased precision estimate in review.json). Each pair shows both items with their differences marked, the
    probability, why (the explanation's contributions) and the items' clusters; a cluster can be opened and a
    member split out (negative labels). Keys: m match, n not a match, u unsure, s skip, z undo. Labels go to
    --labels at once, atomically; `prodmatch train --labels` learns from them."""
    try:
        import uvicorn

        from prodmatch.review.app import create_review_app
    except ImportError as e:
        console.print(f"[bold red]error:[/] {escape(f'review needs {e.name}: pip install prodmatch[serve]')}")
        raise typer.Exit(2) from e
    from prodmatch.review import Review
    from prodmatch.review.labels import check_writable

    with user_errors():
        check_writable(labels)  # before loading anything: a read-only path is said at once
        _check_port(host, port)
        with console.status("loading the run, the catalogue and the match; scoring the pool"):
            session = Review.open(run_dir, data, matches, labels, reviewer=reviewer, pool_items=pool_items)
        stdout.print(
            f"reviewing {len(session.pool):,} pairs ({len(session.labels):,} labelled so far in {labels}): "
            f"open http://{host}:{port}"
        )
        uvicorn.run(create_review_app(session), host=host, port=port, log_level="warning")
