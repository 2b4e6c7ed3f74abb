"""What every `supportbot` command shares: the Typer apps, the consoles, settings and progress
bars, and the entry point `main`.

Heavy modules (torch, sentence-transformers, FAISS) are imported inside the commands that
need them, so `supportbot --help` answers at once.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import typer
from rich.console import Console
from rich.markup import escape

from bot.errors import SupportBotError

if TYPE_CHECKING:
    from bot.settings import Settings


app = typer.Typer(
    name="supportbot",
    help="A customer-support bot that answers from your knowledge base.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kb_app = typer.Typer(help="Build and inspect the knowledge base.", no_args_is_help=True)
data_app = typer.Typer(help="Prepare data sets.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
app.add_typer(data_app, name="data")
review_app = typer.Typer(
    help="The review queue: sampled and QA-flagged replies.", no_args_is_help=True
)
app.add_typer(review_app, name="review")

console = Console()
err_console = Console(stderr=True)

#: `knowledge.calibration.OBJECTIVES`, spelled out so `--help` need not import NumPy (a test
#: keeps the two equal).
Objective = Literal["recall", "accuracy", "balanced", "coverage"]
OBJECTIVE_CHOICES: tuple[str, ...] = get_args(Objective)
OBJECTIVE_HELP = (
    "recall: answer nearly all answerable questions, abstain on as many others as that allows; "
    "accuracy: most right answers plus right abstentions; balanced: mean of both recalls; "
    "coverage: answer the most in-scope questions while declining --min-oos-recall of the others."
)
MAX_MISSED_HELP = "With --objective recall: in-scope accuracy that may be traded for abstentions."
ObjectiveOption = Annotated[Objective, typer.Option(help=OBJECTIVE_HELP)]
MinOosRecallOption = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        help="With --objective coverage: the share of out-of-scope queries to decline.",
    ),
]

ModelOption = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="A sentence-transformers model directory, or a `supportbot train --out` folder.",
    ),
]


def cli_settings(**overrides: Any) -> Settings:
    from bot.settings import load_settings

    return load_settings(**overrides)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def progress_bar() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


proposals_app = typer.Typer(
    help="Knowledge-base entries proposed from agents' answers in resolved handoffs.",
    no_args_is_help=True,
)
kb_app.add_typer(proposals_app, name="proposals")


prompts_app = typer.Typer(help="Check the generative answers' prompts.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")


def main() -> None:
    """Console-script entry point: errors print a clear message, not a traceback."""
    try:
        app()
    except SupportBotError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}")
        sys.exit(1)
