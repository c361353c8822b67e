"""What every command shares: the Typer app and its global options, the consoles, turning errors into one
line, progress bars, and tables."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal

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

from prodmatch.config import MODEL_NAMES
from prodmatch.errors import ConfigError, ProdmatchError

app = typer.Typer(
    name="prodmatch",
    help="Product matching for marketplaces: decide whether two listings are the same product.\n\n"
    "Typical flow: `prodmatch synth DATA` (or bring E-CUP files), `prodmatch train DATA --out RUN`, "
    "`prodmatch evaluate RUN --data DATA --pairs PAIRS`, `prodmatch predict RUN --data DATA --pairs PAIRS --out OUT`.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # a docstring's paragraphs are wrapped to the terminal, not kept line by line
    pretty_exceptions_enable=False,
)
ADVANCED = "Advanced options"  # the help panel of the options most runs leave at their defaults
ModelName = Literal[MODEL_NAMES]  # --model's choices, listed in --help
# Arguments and options that many commands share, declared once.
RunDir = Annotated[Path, typer.Argument(help="A trained run directory.")]
ItemData = Annotated[Path, typer.Option("--data", "-d", help="Data directory with the items the pairs name.")]

console = Console(stderr=True)
stdout = Console()
log = logging.getLogger("prodmatch")


def example(command: str) -> str:
    """A command's help ends with one example of its use."""
    return f"**Example:** `{command}`"


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


class user_errors:
    """Turn prodmatch errors into one red line and exit code 2; no stack traces for users."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, ProdmatchError):
            # escaped: messages hold brackets (lists of ids, "prodmatch[serve]") that rich would read as markup
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        if isinstance(exc, KeyboardInterrupt):
            console.print("[yellow]interrupted[/]; nothing was written")
            raise typer.Exit(130)
        return False


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within the block, SIGTERM (a scheduler or ``kill`` stopping the job) is handled as Ctrl-C is: it raises
    KeyboardInterrupt, so the same clean-up runs (a resumable run is kept, anything else removed)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stage_bars(show: bool):
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


class TrainBars:
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

    def __enter__(self) -> TrainBars:
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


def parse_params(items: list[str], model_cls: Any) -> dict[str, Any]:
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
        if kind == "bool":
            flag = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(value.lower())
            if flag is None:
                raise ConfigError(f"--param {key}={value}: not a valid bool; use true or false")
            params[key] = flag
            continue
        try:
            params[key] = int(value) if kind == "int" else float(value) if kind == "float" else value
        except ValueError as e:
            raise ConfigError(f"--param {key}={value}: not a valid {kind}") from e
    return params


def metrics_table(columns: dict[str, dict], title: str = "") -> Table:
    from prodmatch.evaluation import METRIC_LABELS

    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    for key, label, fmt in METRIC_LABELS:
        table.add_row(label, *("—" if c.get(key) is None else fmt.format(c[key]) for c in columns.values()))
    return table


# ------------------------------------------------------------------------------------------- help


def _options_panel(*, name: str, params: list, ctx: Any, markup_mode: Any, console: Console) -> None:
    """One panel of a command's options, for people: each option's names whole (never cut, at any width or
    when piped), its type where it takes a value (switches show none; choices are listed), and its help on the
    lines below, indented, with the whole width to wrap in."""
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.text import Text
    from typer import rich_utils

    rows = []
    for param in params:
        argument = isinstance(param, rich_utils.TyperArgument)
        names = [*(o for o in param.opts if o.startswith("--")), *(o for o in param.opts if not o.startswith("--"))]
        if argument:
            names = [param.display_name_raw.upper()]
        flag = bool(getattr(param, "is_flag", False))
        label = Text(", ".join(names), style="bold cyan", no_wrap=True, overflow="ignore")
        if param.secondary_opts:
            label.append(" / " + ", ".join(param.secondary_opts), style="bold magenta")
        kind = None if flag or argument else param.display_type_rich(ctx=ctx)
        if kind:
            label.append(f" {kind}", style="yellow")
        helper = rich_utils._get_parameter_help(param=param, ctx=ctx, markup_mode=markup_mode)
        rows += [label, Padding(helper, (0, 0, 0, 4))]
    if rows:
        from rich.console import Group

        console.print(Panel(Group(*rows), border_style="dim", title=name, title_align="left"))


def _readable_help() -> None:
    """Replace typer's option table (five columns that squeeze the help into a narrow strip at 80 columns, and
    cut long option names) with :func:`_options_panel`. Left as typer's when its internals change."""
    from typer import rich_utils

    if all(hasattr(rich_utils, n) for n in ("_print_options_panel", "_get_parameter_help", "TyperArgument")):
        rich_utils._print_options_panel = _options_panel


_readable_help()
