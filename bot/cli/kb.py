"""Knowledge-base commands: `kb ingest|stats|calibrate`, `eval`, `data import-intents`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bot.cli.common import (
    MAX_MISSED_HELP,
    MinOosRecallOption,
    ModelOption,
    ObjectiveOption,
    app,
    cli_settings,
    console,
    data_app,
    kb_app,
    progress_bar,
)


@kb_app.command("ingest")
def kb_ingest(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="FAQ .jsonl/.csv files or article folders.")
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Drop every entry not in these paths.")
    ] = False,
    model: ModelOption = None,
    zendesk_help_center: Annotated[
        bool,
        typer.Option(
            "--zendesk-help-center",
            help="Also import the Zendesk Help Center's articles (ZENDESK_SUBDOMAIN; see "
            "docs/zendesk.md).",
        ),
    ] = False,
    zendesk_export: Annotated[
        Path | None,
        typer.Option(help="Read Help Center articles from this exported JSON file instead."),
    ] = None,
) -> None:
    """Add or update knowledge from files; only changed items are re-embedded."""
    from bot.service import ingest
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder
    from knowledge.ingest import load_sources

    if not paths and not zendesk_help_center and zendesk_export is None:
        raise typer.BadParameter("give files or folders to ingest, or --zendesk-help-center")
    settings = cli_settings(model=model)
    entries = load_sources(paths) if paths else []
    if zendesk_help_center or zendesk_export is not None:
        # Imported here: only those who use Zendesk need these.
        from adapters.zendesk.help_center import read_articles
        from knowledge.zendesk_help_center import articles_to_entries

        with progress_bar() as bar:
            task = bar.add_task("Help Center pages", total=None)
            articles = read_articles(
                zendesk_export,
                on_page=lambda n, _, total: bar.update(task, completed=n, total=total),
            )
        entries += articles_to_entries(articles)
        console.print(f"Zendesk Help Center: {len(articles)} articles")
    kb = KnowledgeBase(settings.index_dir, Embedder(settings.model))
    report = ingest(kb, entries, replace_all=replace, progress=True)
    console.print(
        f"[green]Ingested[/] {report.entries} entries ({report.units} units) in "
        f"{report.seconds:.1f}s: {report.added} added, {report.updated} updated, "
        f"{report.removed} removed, {report.unchanged} unchanged; "
        f"{report.embedded} texts embedded, {report.reused} reused."
    )


@kb_app.command("stats")
def kb_stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show what the knowledge base holds and the threshold in force."""
    from bot.service import confidence_model
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder

    settings = cli_settings()
    kb = KnowledgeBase(settings.index_dir, Embedder(settings.model)).load()
    stats = kb.stats()
    model = confidence_model(kb, settings.threshold)
    stats["threshold"] = model.threshold
    stats["threshold_origin"] = model.origin
    calibration = kb.calibration() if model.origin == "calibrated" else None
    if calibration and calibration.get("objective"):
        stats["threshold_objective"] = calibration["objective"]
        if calibration.get("objective_setting") is not None:
            stats["threshold_objective"] += f" ({calibration['objective_setting']:g})"
    if as_json:
        print(json.dumps(stats, indent=2, default=str))
        return
    table = Table(title="Knowledge base", show_header=False)
    for key, value in stats.items():
        table.add_row(key, str(value))
    console.print(table)


@kb_app.command("calibrate")
def kb_calibrate(
    queries: Annotated[Path, typer.Option(help="Labelled queries (JSONL).")],
    objective: ObjectiveOption = "recall",
    max_missed: Annotated[float, typer.Option(help=MAX_MISSED_HELP)] = 0.025,
    min_oos_recall: MinOosRecallOption = 0.70,
) -> None:
    """Fit the answering threshold on labelled queries and store it with the knowledge base."""
    from bot.engine import Responder
    from bot.evaluate import calibrate, load_queries
    from bot.service import confidence_model
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder
    from knowledge.retriever import Retriever

    settings = cli_settings()
    kb = KnowledgeBase(settings.index_dir, Embedder(settings.model)).load()
    items = load_queries(queries)
    responder = Responder(Retriever(kb), confidence_model(kb))
    with progress_bar() as bar:
        task = bar.add_task("Calibrating", total=len(items))
        model = calibrate(
            responder,
            items,
            objective,
            max_missed,
            lambda n: bar.advance(task, n),
            min_oos_recall=min_oos_recall,
        )
    data = model.to_json()
    data["queries_file"] = str(queries)
    data["objective"] = objective
    data["objective_setting"] = {"recall": max_missed, "coverage": min_oos_recall}.get(objective)
    kb.save_calibration(data)
    console.print(
        f"[green]Calibrated[/] on {model.samples} queries: threshold {model.threshold:.3f}"
    )


@app.command("eval")
def evaluate(
    kb: Annotated[list[Path], typer.Option("--kb", help="Knowledge base file(s) or folder(s).")],
    queries: Annotated[Path, typer.Option(help="Labelled queries to evaluate (JSONL).")],
    calibrate_file: Annotated[
        Path | None, typer.Option("--calibrate", help="Tune the threshold on these queries first.")
    ] = None,
    model: ModelOption = None,
    objective: ObjectiveOption = "recall",
    max_missed: Annotated[float, typer.Option(help=MAX_MISSED_HELP)] = 0.025,
    min_oos_recall: MinOosRecallOption = 0.70,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    replay_feedback: Annotated[
        bool,
        typer.Option(
            "--feedback-replay",
            help="Split the queries in halves A and B; rate A's answers (👍 right top-1; 👎 wrong "
            "top-1 and the right entry endorsed) and measure B before and after that feedback.",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Shuffle seed of the --feedback-replay split.")] = 0,
) -> None:
    """Measure answer quality and latency on labelled queries."""
    from bot.engine import Responder
    from bot.evaluate import calibrate, feedback_replay, load_queries, metrics, run_queries
    from bot.service import confidence_model, ingest, make_embedder
    from knowledge.base import KnowledgeBase
    from knowledge.ingest import load_sources
    from knowledge.retriever import Retriever

    items = load_queries(queries)
    calibration_items = load_queries(calibrate_file) if calibrate_file else None
    with tempfile.TemporaryDirectory(prefix="supportbot-eval-") as tmp:
        # SUPPORTBOT_EMBED_BACKEND / _QUANTIZE apply, so their effect on quality is measurable.
        base = KnowledgeBase(Path(tmp) / "index", make_embedder(cli_settings(), model))
        ingest(base, load_sources(kb), progress=not as_json)
        responder = Responder(Retriever(base), confidence_model(base))
        with progress_bar() as bar:
            if calibration_items:
                task = bar.add_task("Calibrating", total=len(calibration_items))
                responder.confidence = calibrate(
                    responder,
                    calibration_items,
                    objective,
                    max_missed,
                    lambda n: bar.advance(task, n),
                    min_oos_recall=min_oos_recall,
                )
            if replay_feedback:
                # Half B twice (before, after) and half A once.
                total = 2 * (len(items) - len(items) // 2) + len(items) // 2
                task = bar.add_task("Replaying feedback", total=total)
                replay = feedback_replay(
                    responder, items, seed=seed, progress=lambda n: bar.advance(task, n)
                )
            else:
                task = bar.add_task("Evaluating", total=len(items))
                outcomes = run_queries(responder, items, lambda n: bar.advance(task, n))
        if replay_feedback:
            _print_replay(replay.as_dict(), queries, as_json)
            return
        result = metrics(outcomes, responder.confidence.threshold)
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"Evaluation of {queries}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        table.add_row(key, str(value))
    console.print(table)


def _print_replay(result: dict[str, Any], queries: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    table = Table(
        title=f"Feedback replay on {queries}: {result['rated']} of half A's "
        f"{result['half_a']} queries rated (+{result['endorsed']} / -{result['rejected']}), "
        f"half B ({result['half_b']}) measured"
    )
    table.add_column("metric (half B)")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("change", justify="right")
    before, after, delta = result["before"], result["after"], result["delta"]
    for key, value in before.items():
        if key in delta:
            table.add_row(key, f"{value:.4f}", f"{after[key]:.4f}", f"{delta[key]:+.4f}")
        elif isinstance(value, dict):
            table.add_row(
                key,
                ", ".join(f"{k} {v}" for k, v in value.items()),
                ", ".join(f"{k} {v}" for k, v in after[key].items()),
                "",
            )
    console.print(table)


@data_app.command("import-intents")
def import_intents(
    source: Annotated[Path, typer.Argument(help="A folder like BANKING77 (train.csv, oos/...).")],
    out: Annotated[Path, typer.Option(help="Where to write KB and query files.")] = Path(
        ".supportbot/data"
    ),
) -> None:
    """Convert a labelled intent data set into knowledge-base and query files."""
    from knowledge.datasets import import_intents as convert

    written = convert(source, out)
    table = Table(title=f"Written to {out}")
    table.add_column("file")
    table.add_column("rows", justify="right")
    for path, n in written.values():
        table.add_row(path.name, str(n))
    console.print(table)


# Knowledge gaps, review queue, QA (monitoring/gaps.py, review.py, qa.py) ----------------------
