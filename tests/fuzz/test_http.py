"""Every HTTP endpoint under hostile input: a 4xx or a polite reply, never a 5xx, and nothing
stored from a request that is malformed or not authenticated.

The app is the real one (`create_app` with Slack and Zendesk mounted, the dashboard on, a SQLite
database, the sample knowledge base); signed requests carry the test secrets, so the parsers
behind the signature checks are reached.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import (
    BODY_CAP,
    FUZZ,
    FuzzApp,
    slack_headers,
    zendesk_headers,
)
from tests.fuzz.strategies import (
    ODD_CHARACTERS,
    ZALGO,
    deep_json,
    json_bytes,
    json_values,
    junk_bytes,
    mutated,
    odd_text,
)

pytestmark = pytest.mark.model

JSON = {"Content-Type": "application/json"}
POLITE_KINDS = {"answer", "clarify", "fallback", "handoff", "smalltalk", "feedback_reasons"}


def assert_not_5xx(response: Any) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])


def assert_polite(body: Any) -> None:
    """A chat answer: replies with words in them, of the kinds the bot speaks."""
    assert isinstance(body, dict) and isinstance(body.get("replies"), list)
    for reply in body["replies"]:
        assert reply["text"].strip()
        assert reply["kind"] in POLITE_KINDS


# POST /api/chat --------------------------------------------------------------------------------


@FUZZ
@given(body=st.one_of(json_values(), st.builds(dict)))
def test_chat_any_json_is_a_4xx_or_a_polite_reply(fuzz_app: FuzzApp, body: Any) -> None:
    before = fuzz_app.counts()
    response = fuzz_app.http.post("/api/chat", content=json_bytes(body), headers=JSON)
    assert_not_5xx(response)
    if response.status_code == 200:
        assert_polite(response.json())
    else:
        assert response.status_code in (400, 422), response.text[:300]
        assert fuzz_app.counts() == before


@FUZZ
@given(raw=junk_bytes, content_type=st.sampled_from(["application/json", "text/plain", "", "x"]))
def test_chat_junk_bytes_are_refused_and_store_nothing(
    fuzz_app: FuzzApp, raw: bytes, content_type: str
) -> None:
    before = fuzz_app.counts()
    response = fuzz_app.http.post("/api/chat", content=raw, headers={"Content-Type": content_type})
    assert_not_5xx(response)
    if response.status_code != 200:
        assert fuzz_app.counts() == before


@FUZZ
@given(text=odd_text(2000), conversation=odd_text(40), user=odd_text(40))
def test_chat_odd_unicode_gets_a_polite_reply(
    fuzz_app: FuzzApp, text: str, conversation: str, user: str
) -> None:
    body = {"conversation_id": conversation or "c", "user": user or "u", "text": text}
    response = fuzz_app.http.post("/api/chat", content=json_bytes(body), headers=JSON)
    assert_not_5xx(response)
    if response.status_code == 200:
        assert_polite(response.json())
        assert response.json()["replies"] or text.strip() == ""


@pytest.mark.parametrize(
    "text",
    [
        "\x00" * 50,
        "\ud800\udfff\ud800",
        "\u202e" + "drowssap teser" + "\u202c",
        ZALGO,
        "".join(ODD_CHARACTERS) * 20,
        "\U0001f468\u200d\U0001f469\u200d\U0001f467" * 500,
        "x" * 5000,
    ],
    ids=["nul", "surrogates", "rtl", "zalgo", "odd-mix", "zwj-emoji", "over-limit"],
)
def test_chat_named_hostile_texts(fuzz_app: FuzzApp, text: str) -> None:
    body = {"conversation_id": "hostile", "user": "mallory", "text": text}
    before = fuzz_app.counts()
    response = fuzz_app.http.post("/api/chat", content=json_bytes(body), headers=JSON)
    if "\ud800" in text:
        # A lone surrogate is not text: refused with a message naming the field.
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "text"]
        assert fuzz_app.counts() == before
        return
    assert response.status_code == 200, response.text[:300]
    assert_polite(response.json())
    if len(text) > 4000:
        assert "too long" in response.json()["replies"][0]["text"]


def test_chat_one_megabyte_string_is_413_and_stores_nothing(fuzz_app: FuzzApp) -> None:
    before = fuzz_app.counts()
    body = {"conversation_id": "big", "user": "mallory", "text": "é" * 1_000_000}
    response = fuzz_app.http.post("/api/chat", content=json_bytes(body), headers=JSON)
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]
    assert fuzz_app.counts() == before


@pytest.mark.parametrize("kind", ["list", "object"])
@pytest.mark.parametrize("path", ["/api/chat", "/api/feedback"])
def test_ten_thousand_deep_json_is_a_4xx(fuzz_app: FuzzApp, kind: str, path: str) -> None:
    before = fuzz_app.counts()
    response = fuzz_app.http.post(path, content=deep_json(10_000, kind=kind), headers=JSON)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert fuzz_app.counts() == before


# GET /api/chat/{id}/messages, POST /api/feedback ---------------------------------------------


@FUZZ
@given(conversation=odd_text(300), user=odd_text(300), after=st.one_of(st.integers(), odd_text(20)))
def test_relay_messages_any_query(
    fuzz_app: FuzzApp, conversation: str, user: str, after: Any
) -> None:
    path = (
        "/api/chat/" + quote(conversation.encode("utf-8", "surrogatepass"), safe="") + "/messages"
    )
    query = urlencode(
        {
            "user": user.encode("utf-8", "surrogatepass"),
            "after": str(after).encode("utf-8", "surrogatepass"),
        }
    )
    before = fuzz_app.counts()
    response = fuzz_app.http.get(f"{path}?{query}")
    assert_not_5xx(response)
    assert response.status_code in (200, 404, 422, 405), response.text[:300]
    assert fuzz_app.counts() == before


@FUZZ
@given(
    body=st.one_of(
        json_values(),
        st.fixed_dictionaries(
            {
                "reply_id": odd_text(80),
                "user": odd_text(30),
                "value": st.one_of(
                    st.none(), st.sampled_from(["up", "down", "sideways"]), json_values(3)
                ),
                "reason": st.one_of(st.none(), odd_text(300)),
            }
        ),
    )
)
def test_feedback_any_body(fuzz_app: FuzzApp, body: Any) -> None:
    before = fuzz_app.counts()
    response = fuzz_app.http.post("/api/feedback", content=json_bytes(body), headers=JSON)
    assert_not_5xx(response)
    # No reply has the made-up ids: nothing may be recorded.
    assert response.status_code in (404, 422, 400), response.text[:300]
    assert fuzz_app.counts() == before


# Slack -----------------------------------------------------------------------------------------


@FUZZ
@given(raw=st.one_of(junk_bytes, json_values().map(json_bytes)))
def test_slack_unsigned_requests_get_401_and_store_nothing(fuzz_app: FuzzApp, raw: bytes) -> None:
    before = fuzz_app.counts()
    response = fuzz_app.http.post("/slack/events", content=raw, headers=JSON)
    assert response.status_code == 401
    bad = {**slack_headers(raw, secret="not-the-secret"), **JSON}
    assert fuzz_app.http.post("/slack/events", content=raw, headers=bad).status_code == 401
    assert fuzz_app.counts() == before


def _slack_payloads() -> list[dict[str, Any]]:
    from tests.adapters.slack.conftest import payload

    names = ["message_im", "app_mention", "reaction_added", "message_changed", "block_actions"]
    return [payload(name) for name in names]


@FUZZ
@given(data=st.data())
def test_slack_signed_near_valid_payloads_never_5xx(fuzz_app: FuzzApp, data: Any) -> None:
    base = data.draw(st.sampled_from(_slack_payloads()))
    body = data.draw(mutated(base))
    if base.get("type") == "block_actions" and isinstance(body, dict):
        raw = urlencode({"payload": json.dumps(body)}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    else:
        raw, headers = json_bytes(body), dict(JSON)
    response = fuzz_app.http.post(
        "/slack/events", content=raw, headers={**headers, **slack_headers(raw)}
    )
    assert_not_5xx(response)
    fuzz_app.settle()


@FUZZ
@given(raw=st.one_of(junk_bytes, json_values().map(json_bytes)))
def test_slack_signed_junk_is_a_4xx_or_acknowledged(fuzz_app: FuzzApp, raw: bytes) -> None:
    before = fuzz_app.counts()
    response = fuzz_app.http.post(
        "/slack/events", content=raw, headers={**JSON, **slack_headers(raw)}
    )
    assert_not_5xx(response)
    fuzz_app.settle()
    if response.status_code >= 400:
        assert fuzz_app.counts() == before


@pytest.mark.parametrize("kind", ["list", "object"])
def test_slack_signed_deep_json_is_400(fuzz_app: FuzzApp, kind: str) -> None:
    raw = deep_json(10_000, kind=kind)
    response = fuzz_app.http.post(
        "/slack/events", content=raw, headers={**JSON, **slack_headers(raw)}
    )
    assert response.status_code == 400


# Zendesk ---------------------------------------------------------------------------------------


@FUZZ
@given(raw=st.one_of(junk_bytes, json_values().map(json_bytes)))
def test_zendesk_unsigned_requests_get_401_and_store_nothing(fuzz_app: FuzzApp, raw: bytes) -> None:
    before = fuzz_app.counts()
    response = fuzz_app.http.post("/zendesk/webhook", content=raw, headers=JSON)
    assert response.status_code == 401
    bad = {**zendesk_headers(raw, secret="not-the-secret"), **JSON}
    assert fuzz_app.http.post("/zendesk/webhook", content=raw, headers=bad).status_code == 401
    assert fuzz_app.counts() == before


def _zendesk_payloads() -> list[dict[str, Any]]:
    from tests.adapters.zendesk.conftest import payload

    names = ["comment_added_customer", "ticket_created", "ticket_status_changed"]
    return [payload(name) for name in names]


@FUZZ
@given(data=st.data())
def test_zendesk_signed_payloads_never_5xx(fuzz_app: FuzzApp, data: Any) -> None:
    body = data.draw(
        st.one_of(mutated(data.draw(st.sampled_from(_zendesk_payloads()))), json_values())
    )
    raw = json_bytes(body)
    response = fuzz_app.http.post(
        "/zendesk/webhook", content=raw, headers={**JSON, **zendesk_headers(raw)}
    )
    assert_not_5xx(response)


@pytest.mark.parametrize("raw", [deep_json(10_000), deep_json(10_000, kind="object"), b"\xff{"])
def test_zendesk_signed_unparsable_is_400(fuzz_app: FuzzApp, raw: bytes) -> None:
    before = fuzz_app.counts()
    response = fuzz_app.http.post(
        "/zendesk/webhook", content=raw, headers={**JSON, **zendesk_headers(raw)}
    )
    assert response.status_code == 400
    assert fuzz_app.counts() == before


# Dashboard, metrics, health --------------------------------------------------------------------


def _header_bytes(text: str) -> bytes:
    """Any text as a header value's bytes (UTF-8, no line breaks: those end a header)."""
    return text.encode("utf-8", "replace").replace(b"\r", b"").replace(b"\n", b"")


DASHBOARD_GETS = [
    "/dashboard",
    "/dashboard/",
    "/dashboard/gaps",
    "/dashboard/review",
    "/dashboard/handoffs",
]


@FUZZ
@given(
    form=st.dictionaries(
        st.sampled_from(["token", "next", "csrf", "verdict", "note", "x"]), odd_text(200)
    ),
    raw=st.one_of(st.none(), junk_bytes),
)
def test_dashboard_login_with_anything_but_the_token_is_refused(
    fuzz_app: FuzzApp, form: dict[str, str], raw: bytes | None
) -> None:
    before = fuzz_app.counts()
    content = (
        raw
        if raw is not None
        else urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in form.items()}).encode()
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    response = fuzz_app.http.post(
        "/dashboard/login", content=content, headers=headers, follow_redirects=False
    )
    assert response.status_code == 401, response.text[:300]
    assert "set-cookie" not in response.headers
    item = fuzz_app.http.post(
        "/dashboard/review/1", content=content, headers=headers, follow_redirects=False
    )
    assert item.status_code in (401, 422)
    assert fuzz_app.counts() == before


@FUZZ
@given(
    path=st.sampled_from([*DASHBOARD_GETS, "/metrics", "/healthz", "/dashboard/login"]),
    query=st.dictionaries(odd_text(10), odd_text(100), max_size=4),
    cookie=st.one_of(st.none(), odd_text(80)),
    bearer=st.one_of(st.none(), odd_text(40).map(_header_bytes)),
)
def test_get_routes_with_odd_queries_and_credentials(
    fuzz_app: FuzzApp, path: str, query: dict[str, str], cookie: str | None, bearer: bytes | None
) -> None:
    before = fuzz_app.counts()
    encoded = urlencode(
        {
            k.encode("utf-8", "surrogatepass"): v.encode("utf-8", "surrogatepass")
            for k, v in query.items()
        }
    )
    headers: dict[str, str | bytes] = {}
    if cookie is not None:
        headers["Cookie"] = "supportbot_dashboard=" + quote(cookie.encode("utf-8", "surrogatepass"))
    if bearer is not None:
        headers["Authorization"] = b"Bearer " + bearer
    response = fuzz_app.http.get(f"{path}?{encoded}", headers=headers, follow_redirects=False)
    assert_not_5xx(response)
    if path.startswith("/dashboard") and path != "/dashboard/login":
        assert response.status_code == 303  # to the login form: nothing shown
    assert fuzz_app.counts() == before


# Size caps on every POST route -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/chat", "/api/feedback", "/slack/events", "/zendesk/webhook", "/dashboard/login"]
)
def test_bodies_over_the_cap_get_413_before_anything(fuzz_app: FuzzApp, path: str) -> None:
    before = fuzz_app.counts()
    raw = b'{"text": "' + b"a" * (BODY_CAP + 1) + b'"}'
    signed = {**slack_headers(raw), **zendesk_headers(raw), **JSON}
    response = fuzz_app.http.post(path, content=raw, headers=signed)
    assert response.status_code == 413
    assert fuzz_app.counts() == before


def test_a_streamed_body_without_length_is_counted(fuzz_app: FuzzApp) -> None:
    before = fuzz_app.counts()

    def chunks() -> Any:
        for _ in range(BODY_CAP // 1000 + 5):
            yield b"a" * 1000

    response = fuzz_app.http.post("/api/chat", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert fuzz_app.counts() == before


@pytest.mark.parametrize(
    ("length", "status"), [("12abc", 400), ("-1", 400), ("9" * 5000, 413), ("1" + "0" * 19, 413)]
)
def test_odd_content_lengths_are_refused(fuzz_app: FuzzApp, length: str, status: int) -> None:
    before = fuzz_app.counts()
    response = fuzz_app.http.post(
        "/api/chat", content=b"{}", headers={**JSON, "Content-Length": length}
    )
    assert response.status_code == status
    assert fuzz_app.counts() == before


@pytest.mark.parametrize("actions", [None, [], "x"], ids=["null", "empty", "text"])
def test_slack_block_actions_without_actions_are_400(fuzz_app: FuzzApp, actions: Any) -> None:
    """Found by fuzzing: bolt indexed ``actions[0]`` and the request escaped as a 500."""
    from tests.adapters.slack.conftest import payload

    body = payload("block_actions")
    body["actions"] = actions
    raw = urlencode({"payload": json.dumps(body)}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **slack_headers(raw)}
    before = fuzz_app.counts()
    response = fuzz_app.http.post("/slack/events", content=raw, headers=headers)
    assert response.status_code == 400
    assert fuzz_app.counts() == before
