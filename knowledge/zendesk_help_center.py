"""Zendesk Help Center articles → knowledge-base entries.

Each published article's HTML body is split into passages by `knowledge.chunking.split_html`;
every passage becomes an entry titled with the article's title, linking to its ``html_url``, with
``source`` "zendesk:help-center". Re-ingesting therefore replaces exactly the Help Center's entries
(articles deleted since drop out, other sources stay), and entry ids are content hashes, so
an unchanged article is not re-embedded.

The articles come from `adapters.zendesk.help_center` (API or export file); this module only
reads the fields it needs from each article mapping, so it does not depend on the adapter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

from knowledge.chunking import split_html
from knowledge.types import Entry, content_id

__all__ = ["SOURCE", "articles_to_entries"]

logger = logging.getLogger(__name__)

SOURCE: Final = "zendesk:help-center"


def _article_entries(article: Mapping[str, Any], *, max_chars: int) -> list[Entry]:
    article_id = str(article.get("id", ""))
    title = str(article.get("title") or article.get("name") or "").strip() or None
    url = article.get("html_url")
    url = url if isinstance(url, str) and url else None
    labels = article.get("label_names")
    tags = tuple(str(label) for label in labels) if isinstance(labels, list) else ()
    body = article.get("body")
    if not isinstance(body, str) or not body.strip():
        logger.debug("Help Center article %s has no body: skipped", article_id)
        return []
    entries: list[Entry] = []
    seen: set[str] = set()
    for section in split_html(body, max_chars=max_chars):
        entry_id = content_id(SOURCE, article_id, "/".join(section.heading_path), section.text)
        if entry_id in seen:
            continue
        seen.add(entry_id)
        entries.append(
            Entry(
                id=entry_id,
                answer=section.text,
                question=section.heading_path[-1] if section.heading_path else title,
                title=title,
                url=url,
                tags=tags,
                source=SOURCE,
                heading_path=section.heading_path,
            )
        )
    return entries


def articles_to_entries(
    articles: Iterable[Mapping[str, Any]],
    *,
    max_chars: int = 1200,
    include_drafts: bool = False,
) -> list[Entry]:
    """The entries of the published articles, in article order.

    Args:
        articles: Help Center article objects (``id``, ``title``, ``body``, ``html_url``,
            ``draft``, ``label_names``, ...).
        max_chars: the longest a passage may be.
        include_drafts: also use draft articles (customers cannot open their links).

    Returns:
        One entry per passage; an article listed twice (e.g. in two export pages) counts once.
    """
    entries: list[Entry] = []
    seen_articles: set[str] = set()
    for article in articles:
        key = str(article.get("id", ""))
        if key and key in seen_articles:
            continue
        seen_articles.add(key)
        if article.get("draft") and not include_drafts:
            logger.debug("Help Center article %s is a draft: skipped", key)
            continue
        entries.extend(_article_entries(article, max_chars=max_chars))
    return entries
