"""The ``prodmatch`` command line: parses flags into config objects, sets up logging and progress bars,
and calls :mod:`prodmatch.api`. No logic lives here that the Python API lacks.

One module per group of commands (:mod:`.data`, :mod:`.training`, :mod:`.matching`, :mod:`.serving`,
:mod:`.text`), each registering its commands on the one Typer ``app`` of :mod:`.common`, which also holds
what they share (errors as one line, progress bars, tables). A new command touches one module.
"""

# Each module registers its commands; --help lists the groups in this order.
# isort: off
from prodmatch.cli import data, training, matching, serving, text  # noqa: F401

# isort: on
from prodmatch.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
