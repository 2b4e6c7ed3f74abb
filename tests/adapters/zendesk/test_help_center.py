"""Help Center articles as knowledge: paginated API reads, exports, entries, incremental ingest."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.zendesk.client import ZendeskError
from adapters.zendesk.help_center import (
    fetch_articles,
    load_export,
    make_sync_client,
    read_articles,
)
from bot.cli import app as cli
from bot.errors import ConfigError, IngestError
from bot.service import ingest
from knowledge.base import KnowledgeBase
from knowledge.zendesk_help_center import SOURCE, articles_to_entries
from tests.adapters.zendesk.conftest import SUBDOMAIN, make_settings
from tests.adapters.zendesk.emulator import EMAIL, TOKEN, ZendeskEmulator

HC = f"https://{SUBDOMAIN}.zendesk.com/hc/en-us/articles"


def _article(article_id: int, title: str, body: str, **extra: Any) -> dict[str, Any]:
    article: dict[str, Any] = {
        "id": article_id,
        "url": f"https://{SUBDOMAIN}.zendesk.com/api/v2/help_center/en-us/articles/{article_id}.json",
        "html_url": f"{HC}/{article_id}-{title.lower().replace(' ', '-')}",
        "title": title,
        "name": title,
        "body": body,
        "locale": "en-us",
        "source_locale": "en-us",
        "draft": False,
        "label_names": ["billing"] if "refund" in body.lower() else [],
        "section_id": 360000001,
        "updated_at": "2026-01-05T10:00:00Z",
    }
    article.update(extra)
    return article


ARTICLES = [
    _article(
        101,
        "Refund policy",
        "<p>Annual plans can be refunded within <strong>30 days</strong> of purchase.</p>"
        "<h2>How to ask for a refund</h2><p>Open <em>Settings &gt; Billing</em> and choose "
        "<b>Request refund</b>.</p>",
    ),
    _article(
        102,
        "Offline mode",
        "<p>Notes you opened recently stay available offline on every device.</p>"
        "<h2>Turning it off</h2><ul><li>Open Settings</li><li>Switch off <i>Offline</i></li></ul>",
    ),
    _article(103, "Unfinished draft", "<p>Not ready yet.</p>", draft=True),
    _article(
        104,
        "Keyboard shortcuts",
        "<table><tr><th>Keys</th><th>Action</th></tr>"
        "<tr><td>Ctrl+K</td><td>Search</td></tr></table>",
    ),
    _article(105, "Empty article", ""),
]


@pytest.fixture
def help_center(emulator: ZendeskEmulator) -> ZendeskEmulator:
    emulator.articles = [dict(a) for a in ARTICLES]
    return emulator


def _pages(emulator: ZendeskEmulator) -> list[Any]:
    return [c for c in emulator.calls if c.path.endswith("/articles.json")]


@pytest.mark.parametrize("offset", [False, True], ids=["cursor", "offset"])
def test_every_page_is_fetched(help_center: ZendeskEmulator, offset: bool) -> None:
    help_center.offset_pages = offset
    progress: list[tuple[int, int, int | None]] = []
    with make_sync_client(make_settings(help_center)) as client:
        articles = fetch_articles(client, on_page=lambda *args: progress.append(args))

    assert [a["id"] for a in articles] == [101, 102, 103, 104, 105]
    assert len(_pages(help_center)) == 3  # five articles, two per page
    assert [n for n, _, _ in progress] == [1, 2, 3]
    assert progress[-1][1] == 5
    assert all(c.authorized for c in _pages(help_center))
    if offset:
        assert progress[0][2] == 3


def test_a_locale_reads_the_localised_list(help_center: ZendeskEmulator) -> None:
    help_center.articles.append(
        _article(201, "Remboursement", "<p>Sous 30 jours.</p>", locale="fr")
    )
    settings = make_settings(help_center, help_center_locale="fr")

    articles = read_articles(settings=settings)

    assert [a["id"] for a in articles] == [201]
    assert _pages(help_center)[0].path == "/api/v2/help_center/fr/articles.json"


def test_public_articles_need_no_credentials(help_center: ZendeskEmulator) -> None:
    settings = make_settings(help_center, email=None, api_token=None)
    assert len(read_articles(settings=settings)) == 5
    assert not any(c.authorized for c in _pages(help_center))


def test_wrong_credentials_say_what_to_check(help_center: ZendeskEmulator) -> None:
    settings = make_settings(help_center, api_token="wrong")
    with pytest.raises(ZendeskError, match="ZENDESK_EMAIL and ZENDESK_API_TOKEN"):
        read_articles(settings=settings)


def test_an_unconfigured_account_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ZENDESK_"):
            monkeypatch.delenv(name)
    with pytest.raises(ConfigError, match="ZENDESK_SUBDOMAIN"):
        read_articles()


def test_articles_become_entries_with_title_url_and_source() -> None:
    entries = articles_to_entries(ARTICLES)

    by_article: dict[str, list[Any]] = {}
    for entry in entries:
        by_article.setdefault(entry.title or "", []).append(entry)
    assert set(by_article) == {"Refund policy", "Offline mode", "Keyboard shortcuts"}
    refund = by_article["Refund policy"]
    assert [e.heading_path for e in refund] == [(), ("How to ask for a refund",)]
    assert refund[0].answer == "Annual plans can be refunded within 30 days of purchase."
    assert refund[1].question == "How to ask for a refund"
    assert "Settings > Billing" in refund[1].answer
    assert refund[0].url == f"{HC}/101-refund-policy"
    assert refund[0].tags == ("billing",)
    assert {e.source for e in entries} == {SOURCE}
    assert "- Switch off Offline" in by_article["Offline mode"][1].answer
    assert len({e.id for e in entries}) == len(entries)
    assert articles_to_entries(ARTICLES) == entries  # ids are stable
    assert len(articles_to_entries(ARTICLES, include_drafts=True)) == len(entries) + 1


def test_exports_in_every_accepted_shape(tmp_path: Path) -> None:
    page = {"articles": ARTICLES[:2], "next_page": None}
    shapes = {
        "page.json": page,
        "pages.json": [page, {"articles": ARTICLES[2:]}],
        "list.json": ARTICLES,
    }
    for name, data in shapes.items():
        path = tmp_path / name
        path.write_text(json.dumps(data), "utf-8")
        assert len(load_export(path)) == (2 if name == "page.json" else 5), name
    bad = tmp_path / "bad.json"
    bad.write_text('{"articles": 3}', "utf-8")
    with pytest.raises(IngestError, match="expected"):
        load_export(bad)
    broken = tmp_path / "broken.json"
    broken.write_text('{"articles": [', "utf-8")
    with pytest.raises(IngestError, match="not valid JSON"):
        load_export(broken)


def test_ingest_is_incremental_and_rerunning_changes_nothing(
    help_center: ZendeskEmulator, kb_copy: Path, embedder: Any
) -> None:
    kb = KnowledgeBase(kb_copy, embedder).load()
    before = len(kb.entries)
    entries = articles_to_entries(read_articles(settings=make_settings(help_center)))

    first = ingest(kb, entries)
    again = ingest(kb, articles_to_entries(read_articles(settings=make_settings(help_center))))

    assert first.added == len(entries) and first.removed == 0
    assert len(kb.entries) == before + len(entries)
    assert (again.added, again.updated, again.removed, again.embedded) == (0, 0, 0, 0)
    assert again.unchanged == len(entries)

    # An article deleted from the Help Center drops out; other sources stay.
    help_center.articles = [a for a in help_center.articles if a["id"] != 102]
    third = ingest(kb, articles_to_entries(read_articles(settings=make_settings(help_center))))
    assert third.removed == 2 and third.added == 0
    assert len(kb.entries) == before + len(entries) - 2


# The command line -------------------------------------------------------------------------------


@pytest.fixture
def cli_env(help_center: ZendeskEmulator, data_dir: Path) -> Iterator[dict[str, str | None]]:
    env: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith(("SUPPORTBOT_", "ZENDESK_"))
    }
    env.update(
        SUPPORTBOT_DATA_DIR=str(data_dir),
        ZENDESK_SUBDOMAIN=SUBDOMAIN,
        ZENDESK_API_URL=help_center.api_url,
        ZENDESK_EMAIL=EMAIL,
        ZENDESK_API_TOKEN=TOKEN,
        COLUMNS="500",
    )
    yield env


def test_cli_imports_the_help_center(
    help_center: ZendeskEmulator, cli_env: dict[str, str | None], data_dir: Path, embedder: Any
) -> None:
    runner = CliRunner()
    expected = len(articles_to_entries(ARTICLES))

    result = runner.invoke(cli, ["kb", "ingest", "--zendesk-help-center"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert "Zendesk Help Center: 5 articles" in result.stdout
    assert f"{expected} added" in result.stdout
    assert len(_pages(help_center)) == 3

    again = runner.invoke(cli, ["kb", "ingest", "--zendesk-help-center"], env=cli_env)
    assert again.exit_code == 0, again.output
    assert "0 added, 0 updated, 0 removed" in again.stdout
    assert "0 texts embedded" in again.stdout

    kb = KnowledgeBase(data_dir / "index", embedder).load()
    titles = {e.title for e in kb.entries if e.source == SOURCE}
    assert titles == {"Refund policy", "Offline mode", "Keyboard shortcuts"}


def test_cli_reads_an_export_file(
    cli_env: dict[str, str | None], tmp_path: Path, help_center: ZendeskEmulator
) -> None:
    export = tmp_path / "articles.json"
    export.write_text(json.dumps({"articles": ARTICLES}), "utf-8")

    result = CliRunner().invoke(cli, ["kb", "ingest", "--zendesk-export", str(export)], env=cli_env)

    assert result.exit_code == 0, result.output
    assert f"{len(articles_to_entries(ARTICLES))} added" in result.stdout
    assert _pages(help_center) == []  # no API call


def test_cli_needs_something_to_ingest(cli_env: dict[str, str | None]) -> None:
    result = CliRunner().invoke(cli, ["kb", "ingest"], env=cli_env)
    assert result.exit_code != 0
    assert "--zendesk-help-center" in result.output
