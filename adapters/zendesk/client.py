"""The Zendesk Support API calls the adapter makes, over an injected `httpx.AsyncClient`.

Errors::

    SupportBotError
    └── ZendeskError          a call failed; `status` is the HTTP status (None: no answer)

Writes are sent once: a timeout is not retried, since Zendesk may have applied the change. Only a
429 or 503 with ``Retry-After`` (Zendesk's rate limit and maintenance answers, sent before anything
changed) is retried, at most `MAX_RETRIES` times, waiting at most `MAX_RETRY_WAIT_S` each.

A comment that must be on the ticket once (a reply, a relayed message) is added by
`ZendeskClient.add_comment_once`, in an update whose custom metadata names it (`REPLY_ID_KEY`: the
reply's stored id; `POST_ID_KEY`: the relay's post id). Zendesk keeps an update's custom metadata
on its audit (``metadata.custom``, at most 1 KB, only when the update changes the ticket, which a
comment always does), so whenever a try may have reached Zendesk (a 5xx, no answer, an earlier
process's try) the ticket's audits are read first (`find_audit`, every page) and the audit that
carries the id is the comment's. Server errors, timeouts and rate limits that outlast the retries
above are retried with backoff. Matching on the text instead would take two comments that say the
same thing for one and miss a comment past the first page; the Support API's idempotency keys
(``Idempotency-Key``) are documented for creating tickets, not for the updates that add comments.
A reply without a stored id carries no metadata and cannot be looked for: only its rate limits
are retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final, cast

import httpx

from adapters.zendesk.payloads import (
    SatisfactionRating,
    SatisfactionRatingsPage,
    TicketCreate,
    TicketResponse,
    TicketUpdate,
)
from adapters.zendesk.settings import ZendeskSettings
from bot.errors import SupportBotError

__all__ = [
    "POST_ID_KEY",
    "REPLY_ID_KEY",
    "ZendeskClient",
    "ZendeskError",
    "api_auth",
    "audit_id_of",
    "client_options",
    "comment_id_in",
    "comment_id_of",
    "make_http_client",
    "next_link",
    "read_json",
    "same_origin",
]

logger = logging.getLogger(__name__)

MAX_RETRIES: Final = 2
#: Tries of a comment in all (`ZendeskClient.add_comment_once`).
COMMENT_ATTEMPTS: Final = 6
#: The first wait after a failed comment; it doubles with each try.
COMMENT_BACKOFF_S: Final = 0.5
#: The longest wait between two tries of a comment.
COMMENT_MAX_WAIT_S: Final = 30.0
MAX_RETRY_WAIT_S: Final = 10.0
#: Pages read by one listing at most: a runaway `next` link cannot loop forever.
MAX_PAGES: Final = 1000
#: The key of a bot reply's stored id in its comment's audit's custom metadata.
REPLY_ID_KEY: Final = "supportbot_reply_id"
#: The key of a relayed comment's post id in its audit's custom metadata (`relay`).
POST_ID_KEY: Final = "supportbot_post_id"
USER_AGENT = "supportbot-zendesk/0.1"


class ZendeskError(SupportBotError):
    """A Zendesk API call failed.

    Attributes:
        status: the HTTP status, or None when Zendesk did not answer.
        path: the API path called.
    """

    def __init__(self, message: str, *, status: int | None, path: str) -> None:
        self.status = status
        self.path = path
        super().__init__(message)


def api_auth(settings: ZendeskSettings) -> httpx.Auth | None:
    """API token authentication (``{email}/token:{token}``), or None without credentials."""
    if settings.email is None or settings.api_token is None:
        return None
    return httpx.BasicAuth(f"{settings.email}/token", settings.api_token.get_secret_value())


def make_http_client(
    settings: ZendeskSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An HTTP client for the account's API: base URL, API token authentication, timeout."""
    return httpx.AsyncClient(transport=transport, **client_options(settings))


def client_options(settings: ZendeskSettings) -> dict[str, Any]:
    """What every HTTP client for the account's API is built with (sync or async)."""
    return {
        "base_url": settings.base_url,
        "auth": api_auth(settings),
        "timeout": settings.http_timeout,
        "headers": {"User-Agent": USER_AGENT, "Accept": "application/json"},
    }


def comment_id_of(response: TicketResponse) -> int | None:
    """The id of the comment a ticket create or update added (from the change's audit)."""
    return comment_id_in(response.get("audit") or {})


def comment_id_in(audit: Mapping[str, Any]) -> int | None:
    """The id of the comment an audit records (its Comment event's id is the comment's), or
    None when the change added none."""
    for event in audit.get("events") or []:
        if isinstance(event, Mapping) and event.get("type") == "Comment":
            event_id = event.get("id")
            if isinstance(event_id, int):
                return event_id
    return None


def audit_id_of(response: TicketResponse) -> int | None:
    """The id of the audit that records a ticket create or update."""
    audit_id = (response.get("audit") or {}).get("id")
    return audit_id if isinstance(audit_id, int) else None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_WAIT_S)
    except ValueError:
        return None


def read_json(
    response: httpx.Response, method: str, path: str, *, hint: str = ""
) -> dict[str, Any]:
    """The JSON object a Zendesk API call answered.

    Args:
        hint: said after the status of an error answer (what to check).

    Raises:
        ZendeskError: an error status, a body that is not JSON, or JSON that is not an object.
    """
    if response.is_error:
        raise ZendeskError(
            f"Zendesk refused {method} {path}: HTTP {response.status_code}{hint} "
            f"{response.text[:300]}",
            status=response.status_code,
            path=path,
        )
    try:
        data = response.json()
    except ValueError as e:
        raise ZendeskError(
            f"Zendesk answered {method} {path} with something that is not JSON",
            status=response.status_code,
            path=path,
        ) from e
    if not isinstance(data, dict):
        raise ZendeskError(
            f"Zendesk answered {method} {path} with JSON that is not an object",
            status=response.status_code,
            path=path,
        )
    return data


class ZendeskClient:
    """Tickets, comments and satisfaction ratings.

    Args:
        http: a client whose base URL is the account's ``…/api/v2/`` (see `make_http_client`);
            the caller closes it, or calls `aclose`.
    """

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        for attempt in range(MAX_RETRIES + 1):
            try:
                response = await self.http.request(method, path, json=json, params=params)
            except httpx.HTTPError as e:
                raise ZendeskError(
                    f"Zendesk did not answer {method} {path}: {e!r}", status=None, path=path
                ) from e
            wait = _retry_after(response)
            if response.status_code in (429, 503) and wait is not None and attempt < MAX_RETRIES:
                logger.warning(
                    "Zendesk answered %s to %s %s; retrying in %.1fs",
                    response.status_code,
                    method,
                    path,
                    wait,
                )
                await asyncio.sleep(wait)
                continue
            return read_json(response, method, path)
        raise AssertionError("unreachable")  # pragma: no cover

    async def update_ticket(
        self, ticket_id: int, ticket: TicketUpdate, *, metadata: Mapping[str, str] | None = None
    ) -> TicketResponse:
        """``PUT /tickets/{id}.json``: add a comment and/or change fields.

        Args:
            metadata: custom metadata for the update's audit (Zendesk's ``ticket.metadata``,
                read back as the audit's ``metadata.custom``).

        Raises:
            ZendeskError: the update failed.
        """
        body: dict[str, Any] = dict(ticket)
        if metadata is not None:
            body["metadata"] = dict(metadata)
        data = await self._request("PUT", f"tickets/{ticket_id}.json", json={"ticket": body})
        return cast(TicketResponse, data)

    async def audits(self, ticket_id: int) -> AsyncIterator[dict[str, Any]]:
        """``GET /tickets/{id}/audits.json`` (cursor pagination), oldest first, every page.

        Raises:
            ZendeskError: a page could not be read.
        """
        path = f"tickets/{ticket_id}/audits.json"
        async for page in self._pages(path, {"page[size]": 100}, f"ticket {ticket_id}'s audits"):
            for audit in page.get("audits") or []:
                if isinstance(audit, dict):
                    yield audit

    async def find_audit(self, ticket_id: int, key: str, value: str) -> dict[str, Any] | None:
        """The ticket's audit whose custom metadata has ``key`` set to ``value``, or None.

        Raises:
            ZendeskError: the audits could not be read.
        """
        async for audit in self.audits(ticket_id):
            metadata = audit.get("metadata")
            custom = metadata.get("custom") if isinstance(metadata, Mapping) else None
            if isinstance(custom, Mapping) and custom.get(key) == value:
                return audit
        return None

    async def add_comment_once(
        self,
        ticket_id: int,
        ticket: TicketUpdate,
        *,
        key: str,
        value: str,
        look_first: bool = False,
        attempts: int = COMMENT_ATTEMPTS,
    ) -> Mapping[str, Any]:
        """Add the comment in ``ticket`` once, retrying what failed without adding it twice.

        The update carries ``{key: value}`` as its custom metadata. Before a try that may follow
        one that reached Zendesk, the ticket's audits are read, and the audit carrying that
        value is returned instead of adding the comment again. A try is retried after a 429, a
        5xx or no answer, waiting `COMMENT_BACKOFF_S` doubling; audits that cannot be read count
        as a failed try (adding the comment blindly could add it twice).

        Args:
            ticket_id: the ticket.
            ticket: the update, with its comment.
            key: the metadata key (`REPLY_ID_KEY`, `POST_ID_KEY`).
            value: the id no other update on the ticket carries; "" (a reply that was never
                stored) sends no metadata, so there is nothing to look for: only rate limits,
                answered before anything changed, are retried, and a 5xx or no answer raises.
            look_first: an earlier try (another process's) may have reached Zendesk: look
                before the first try too.
            attempts: tries in all; 1 for a caller that retries on its own (the relay).

        Returns:
            The audit of the update: Zendesk's answer's, or the one found ({} when Zendesk's
            answer had none).

        Raises:
            ZendeskError: Zendesk refused the update or the audits (a 4xx other than 429), a
                try without ``value`` may have reached it, or every try failed.
        """
        metadata = {key: value} if value else None
        may_have_arrived = look_first
        last: ZendeskError | None = None
        for attempt in range(max(1, attempts)):
            try:
                if may_have_arrived and value:
                    found = await self.find_audit(ticket_id, key, value)
                    if found is not None:
                        logger.info("ticket %s: %s %s was already added", ticket_id, key, value)
                        return found
                response = await self.update_ticket(ticket_id, ticket, metadata=metadata)
                return response.get("audit") or {}
            except ZendeskError as e:
                rate_limited = e.status == 429  # answered before anything changed
                refused = e.status is not None and e.status < 500 and not rate_limited
                if refused or not (rate_limited or value):
                    raise  # or it may have arrived, and without an id it cannot be found
                last = e
                may_have_arrived = may_have_arrived or not rate_limited
            if attempt + 1 < attempts:
                wait = min(COMMENT_BACKOFF_S * 2**attempt, COMMENT_MAX_WAIT_S)
                logger.warning(
                    "ticket %s: comment failed (try %d of %d): %s; trying again in %.1fs",
                    ticket_id,
                    attempt + 1,
                    attempts,
                    last,
                    wait,
                )
                await asyncio.sleep(wait)
        assert last is not None
        raise last

    async def create_ticket(self, ticket: TicketCreate) -> TicketResponse:
        """``POST /tickets.json``.

        Raises:
            ZendeskError: the ticket was not created.
        """
        data = await self._request("POST", "tickets.json", json={"ticket": ticket})
        return cast(TicketResponse, data)

    async def satisfaction_ratings(
        self, *, score: str = "received", start_time: int | None = None, page_size: int = 100
    ) -> AsyncIterator[SatisfactionRating]:
        """``GET /satisfaction_ratings.json`` (cursor pagination), every page.

        Args:
            score: Zendesk's filter ("received": good and bad).
            start_time: only ratings created at or after this Unix time.
            page_size: ratings per page (at most 100).

        Raises:
            ZendeskError: a page could not be read (needs an admin's credentials).
        """
        first: dict[str, Any] = {"score": score, "page[size]": page_size}
        if start_time is not None:
            first["start_time"] = start_time
        async for page in self._pages("satisfaction_ratings.json", first, "satisfaction ratings"):
            for rating in cast(SatisfactionRatingsPage, page).get("satisfaction_ratings") or []:
                yield rating

    async def _pages(
        self, path: str, params: Mapping[str, Any], what: str
    ) -> AsyncIterator[dict[str, Any]]:
        """Every page of a listing, following its next-page links (`MAX_PAGES` at most: a
        runaway link cannot loop forever); `what` names the listing in the log."""
        query: Mapping[str, Any] | None = params
        for _ in range(MAX_PAGES):
            page = await self._request("GET", path, params=query)
            yield page
            following = next_link(page, str(self.http.base_url))
            if following is None:
                return
            path, query = following, None
        logger.warning("%s: stopped after %d pages", what, MAX_PAGES)


def same_origin(url: str, base_url: str) -> bool:
    """Whether `url` is on the same scheme, host and port as `base_url` (credentials are only
    ever sent there)."""
    a, b = httpx.URL(url), httpx.URL(base_url)
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def next_link(page: Mapping[str, Any], base_url: str) -> str | None:
    """The next page's URL, or None on the last page.

    Reads cursor pagination (``meta.has_more`` + ``links.next``) or offset pagination
    (``next_page``). A link to another origin than `base_url` is not followed (it would carry
    the API credentials elsewhere).
    """
    following = _raw_next_link(page)
    if following is None:
        return None
    following = str(httpx.URL(base_url).join(following))
    if not same_origin(following, base_url):
        logger.warning("not following a next-page link to another host: %s", following)
        return None
    return following


def _raw_next_link(page: Mapping[str, Any]) -> str | None:
    meta = page.get("meta")
    links = page.get("links")
    if isinstance(meta, Mapping) and "has_more" in meta:
        if not meta.get("has_more"):
            return None
        following = links.get("next") if isinstance(links, Mapping) else None
        return following if isinstance(following, str) and following else None
    following = page.get("next_page")
    return following if isinstance(following, str) and following else None
