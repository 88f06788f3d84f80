"""The ``conceptalpha`` command line.

Each stage contributes a command group from its own ``cli_*`` module; this file
assembles them and turns user mistakes (:class:`~conceptalpha.errors.UserError`)
into a one-line ``error:`` message and exit code 2. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import sys

import typer

from conceptalpha.errors import UserError
from conceptalpha.experiments import cli_concepts, cli_data, cli_doctor, cli_features, cli_report, cli_run

app = typer.Typer(
    name="conceptalpha",
    help="Mine daily stock-return factors with HIST (a GNN over company concepts) and its peers, end to end.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(cli_data.app, name="data", help="Read, summarise and synthesise market data.")
app.add_typer(cli_features.app, name="features", help="Build Alpha360 / Alpha158 feature tables.")
app.add_typer(cli_concepts.app, name="concepts", help="Build and inspect the stock→concept graph.")
cli_report.register(app)
cli_run.register(app)
cli_doctor.register(app)

_DEBUG = {"on": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    _DEBUG["on"] = debug


def main() -> None:
    _DEBUG["on"] = "--debug" in sys.argv
    try:
        app(standalone_mode=False)
    except UserError as err:
        if _DEBUG["on"]:
            raise
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.secho("aborted", err=True)
        sys.exit(130)
    except typer.Exit as ex:
        sys.exit(ex.exit_code)
    except Exception as err:  # click usage errors carry their own exit code
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
