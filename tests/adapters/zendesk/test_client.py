"""The API client over httpx.MockTransport: retries, errors, pagination safety, adding a comment
once."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from adapters.zendesk.client import (
    REPLY_ID_KEY,
    ZendeskClient,
    ZendeskError,
    audit_id_of,
    comment_id_of,
    next_link,
)

BASE = "https://acme.zendesk.com/api/v2/"


def _client(handler: Any) -> ZendeskClient:
    return ZendeskClient(httpx.AsyncClient(base_url=BASE, transport=httpx.MockTransport(handler)))


async def test_rate_limits_are_retried_after_the_wait_zendesk_asks_for() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len(seen) == 1:
            return httpx.Response(429, headers={"Retry-After": "0"})
        return httpx.Response(200, json={"ticket": {"id": 1}, "audit": {"id": 5, "events": []}})

    client = _client(handler)
    response = await client.update_ticket(1, {"status": "open"})
    await client.aclose()
    assert seen == ["PUT", "PUT"]
    assert audit_id_of(response) == 5 and comment_id_of(response) is None


async def test_a_timeout_is_not_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadTimeout("slow", request=request)

    client = _client(handler)
    with pytest.raises(ZendeskError, match="did not answer") as caught:
        await client.create_ticket({"subject": "x"})
    await client.aclose()
    assert calls == 1 and caught.value.status is None


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(422, json={"error": "RecordInvalid"}), "HTTP 422"),
        (httpx.Response(429), "HTTP 429"),  # no Retry-After: not retried
        (httpx.Response(200, text="<html>"), "not JSON"),
        (httpx.Response(200, json=[1]), "not an object"),
    ],
)
async def test_refusals_raise_with_the_status(response: httpx.Response, message: str) -> None:
    client = _client(lambda request: response)
    with pytest.raises(ZendeskError, match=message):
        await client.update_ticket(1, {"status": "open"})
    await client.aclose()


def test_next_links() -> None:
    cursor = {"meta": {"has_more": True}, "links": {"next": BASE + "x.json?page[after]=a"}}
    assert next_link(cursor, BASE) == BASE + "x.json?page[after]=a"
    assert next_link({"meta": {"has_more": False}, "links": {"next": BASE + "y"}}, BASE) is None
    assert next_link({"next_page": BASE + "x.json?page=2"}, BASE) == BASE + "x.json?page=2"
    assert next_link({"next_page": None}, BASE) is None
    assert next_link({"next_page": "x.json?page=2"}, BASE) == BASE + "x.json?page=2"
    # Credentials never follow a link to another host.
    assert next_link({"next_page": "https://evil.example/api/v2/x.json"}, BASE) is None
    assert next_link({"next_page": "http://acme.zendesk.com/api/v2/x.json"}, BASE) is None


async def test_a_comment_is_not_sent_again_while_the_audits_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a 500 the comment may be on the ticket: a failed read of the audits is a failed
    try, not a reason to send it again; the audit read next time is the comment's."""
    monkeypatch.setattr("adapters.zendesk.client.COMMENT_BACKOFF_S", 0.0)
    seen: list[str] = []
    custom = {REPLY_ID_KEY: "r-1"}
    audit = {"id": 8, "metadata": {"custom": custom}, "events": [{"id": 77, "type": "Comment"}]}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path.rsplit('/', 1)[-1]}")
        if request.method == "PUT":
            assert json.loads(request.content)["ticket"]["metadata"] == custom
            return httpx.Response(500, json={"error": "InternalError"})
        if seen.count(seen[-1]) == 1:
            return httpx.Response(502, text="Bad Gateway")
        other = {"id": 7, "metadata": {"custom": {}}, "events": []}
        return httpx.Response(200, json={"audits": [other, audit], "meta": {"has_more": False}})

    client = _client(handler)
    found = await client.add_comment_once(
        1,
        {"comment": {"html_body": "<p>hi</p>", "public": True}},
        key=REPLY_ID_KEY,
        value="r-1",
    )
    await client.aclose()
    assert seen == ["PUT 1.json", "GET audits.json", "GET audits.json"]
    assert found == audit
