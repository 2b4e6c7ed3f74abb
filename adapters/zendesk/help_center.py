"""Help Center articles: read through the Help Center API, or from an exported JSON file.

``GET /api/v2/help_center/articles.json`` (or ``/help_center/{locale}/articles.json``) is read
with cursor pagination (``page[size]=100``, then ``links.next`` while ``meta.has_more``); offset
pagination (``next_page``) is followed too, as older exports and proxies answer with it. Without
credentials only public articles are listed. Turning articles into knowledge-base entries is
`knowledge.zendesk_help_center`'s job: this module only fetches.

An export file is either what the API answers (``{"articles": [...]}``, one page or all), a list of
such pages, or a bare list of articles.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, cast

import httpx

from adapters.zendesk.client import ZendeskError, client_options, next_link, read_json
from adapters.zendesk.payloads import Article, ArticlesPage
from adapters.zendesk.settings import ZendeskSettings
from bot.errors import IngestError

__all__ = [
    "fetch_articles",
    "iter_article_pages",
    "load_export",
    "make_sync_client",
    "read_articles",
]

logger = logging.getLogger(__name__)

MAX_PAGES: Final = 1000
PAGE_SIZE: Final = 100

#: Called after each page with (pages read, articles so far, total pages if known).
PageCallback = Callable[[int, int, int | None], None]


def make_sync_client(
    settings: ZendeskSettings, *, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    """A blocking HTTP client for the account's API (the CLI's import runs without a loop)."""
    return httpx.Client(transport=transport, **client_options(settings))


def articles_path(locale: str | None) -> str:
    """The list endpoint, relative to ``…/api/v2/``."""
    if locale:
        return f"help_center/{locale}/articles.json"
    return "help_center/articles.json"


def _get_page(client: httpx.Client, url: str, params: dict[str, Any] | None) -> ArticlesPage:
    try:
        response = client.get(url, params=params)
    except httpx.HTTPError as e:
        raise ZendeskError(f"Zendesk did not answer GET {url}: {e!r}", status=None, path=url) from e
    hint = ""
    if response.status_code in (401, 403):
        hint = " (check ZENDESK_EMAIL and ZENDESK_API_TOKEN)"
    elif response.status_code == 404:
        hint = " (check ZENDESK_SUBDOMAIN, ZENDESK_HELP_CENTER_LOCALE, and that Help Center is on)"
    data = read_json(response, "GET", url, hint=hint)
    if not isinstance(data.get("articles"), list):
        raise ZendeskError(
            f"Zendesk answered GET {url} without an articles list",
            status=response.status_code,
            path=url,
        )
    return cast(ArticlesPage, data)


def iter_article_pages(
    client: httpx.Client, *, locale: str | None = None, page_size: int = PAGE_SIZE
) -> Iterator[ArticlesPage]:
    """Every page of the article list, following pagination.

    Raises:
        ZendeskError: a page could not be read.
    """
    url = articles_path(locale)
    params: dict[str, Any] | None = {"page[size]": page_size}
    for _ in range(MAX_PAGES):
        page = _get_page(client, url, params)
        yield page
        following = next_link(page, str(client.base_url))
        if following is None:
            return
        url, params = following, None
    logger.warning("Help Center: stopped after %d pages", MAX_PAGES)


def fetch_articles(
    client: httpx.Client,
    *,
    locale: str | None = None,
    on_page: PageCallback | None = None,
) -> list[Article]:
    """All articles of the Help Center (drafts included; the knowledge side drops them).

    Args:
        client: see `make_sync_client`.
        locale: the articles' locale; the Help Center's default when None.
        on_page: progress callback.

    Raises:
        ZendeskError: a page could not be read.
    """
    articles: list[Article] = []
    for number, page in enumerate(iter_article_pages(client, locale=locale), start=1):
        articles.extend(page.get("articles") or [])
        if on_page is not None:
            page_count = page.get("page_count")
            on_page(number, len(articles), page_count if isinstance(page_count, int) else None)
    logger.info("Help Center: %d articles read", len(articles))
    return articles


def load_export(path: Path) -> list[Article]:
    """Articles from an exported JSON file (see the module docstring for the shapes).

    Raises:
        IngestError: the file cannot be read or has none of those shapes.
    """
    try:
        data = json.loads(path.read_text("utf-8-sig"))
    except OSError as e:
        raise IngestError(path, f"cannot read the file: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise IngestError(path, "not valid UTF-8; save the export as UTF-8") from None
    except json.JSONDecodeError as e:
        raise IngestError(path, f"not valid JSON: {e.msg}", line=e.lineno) from None
    pages: list[Any]
    if isinstance(data, dict):
        pages = [data]
    elif isinstance(data, list) and all(
        isinstance(item, dict) and "articles" in item for item in data
    ):
        pages = data
    elif isinstance(data, list):
        pages = [{"articles": data}]
    else:
        pages = []
    articles: list[Article] = []
    for page in pages:
        items = page.get("articles") if isinstance(page, dict) else None
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise IngestError(
                path,
                'expected {"articles": [...]} as the Help Center API answers, a list of such '
                "pages, or a list of articles",
            )
        articles.extend(cast(list[Article], items))
    return articles


def read_articles(
    export: Path | None = None,
    *,
    settings: ZendeskSettings | None = None,
    on_page: PageCallback | None = None,
    transport: httpx.BaseTransport | None = None,
) -> list[Article]:
    """The Help Center's articles: from `export` when given, else through the API.

    Args:
        export: an exported JSON file to read instead of calling the API.
        settings: the account; read from the environment when None.
        on_page: progress callback (called once for an export).
        transport: an httpx transport (tests).

    Raises:
        ConfigError: the account is not configured (the message says how to fix it).
        ZendeskError: a page could not be read.
        IngestError: the export file is unreadable or malformed.
    """
    if export is not None:
        articles = load_export(export)
        if on_page is not None:
            on_page(1, len(articles), 1)
        return articles
    settings = settings or ZendeskSettings.from_env()
    settings.check_help_center()
    locale = settings.help_center_locale
    with make_sync_client(settings, transport=transport) as client:
        return fetch_articles(client, locale=locale, on_page=on_page)
