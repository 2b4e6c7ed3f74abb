"""Every route of the app either is on the public allow-list or refuses an unauthenticated call.

The route list comes from the running app, so adding a route that lets anyone in fails here
until it is protected (or consciously added to `PUBLIC` with a reason).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from monitoring.review import DEFAULT_SAMPLED_KINDS, is_sampled
from tests.fuzz.conftest import DASHBOARD_TOKEN, FuzzApp

pytestmark = pytest.mark.model

#: (method, path) → why anyone may call it.
PUBLIC: dict[tuple[str, str], str] = {
    ("GET", "/"): "the customers' chat page",
    ("POST", "/api/chat"): "customers chat without accounts; size-capped, rate-limited",
    ("GET", "/api/chat/{conversation_id}/messages"): "a customer's own conversation: needs "
    "its id and user (404 otherwise)",
    ("POST", "/api/feedback"): "customers rate replies; unknown replies are 404",
    ("GET", "/healthz"): "load balancers; says nothing about customers",
    ("GET", "/metrics"): "Prometheus counters only (no customer data); restrict at the network",
    ("GET", "/api/docs"): "the API's documentation page",
    ("GET", "/docs/oauth2-redirect"): "part of the documentation page (static)",
    ("GET", "/openapi.json"): "the API's schema (public routes only: admin routes are hidden)",
    ("GET", "/dashboard/login"): "the login form",
    ("POST", "/dashboard/login"): "logging in (checks the token)",
    ("GET", "/dashboard/logout"): "logging out (clears the cookie)",
    ("GET", "/dashboard/static/dashboard.css"): "the dashboard's stylesheet",
}
#: Routes whose callers prove who they are with a signature instead of a login.
SIGNED: dict[tuple[str, str], str] = {
    ("POST", "/slack/events"): "Slack's v0 signature (SLACK_SIGNING_SECRET)",
    ("POST", "/zendesk/webhook"): "Zendesk's webhook signature (ZENDESK_WEBHOOK_SECRET)",
}


def _walk(items: list[Any], prefix: str, found: list[tuple[str, str]]) -> None:
    for route in items:
        if isinstance(route, APIRoute | Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    found.append((method, prefix + route.path))
        elif hasattr(route, "original_router"):
            # FastAPI >= 0.165 keeps an included router as one entry (`_IncludedRouter`).
            context = getattr(route, "include_context", None)
            _walk(route.original_router.routes, prefix + getattr(context, "prefix", ""), found)
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}; teach this test it")


def routes(fuzz_app: FuzzApp) -> list[tuple[str, str]]:
    """Every (method, path) the running app serves, included routers flattened."""
    found: list[tuple[str, str]] = []
    _walk(list(fuzz_app.http.app.routes), "", found)  # type: ignore[attr-defined]
    assert len(found) == len(set(found))
    return found


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_the_allow_lists_name_real_routes(fuzz_app: FuzzApp) -> None:
    present = set(routes(fuzz_app))
    assert set(PUBLIC) - present == set(), "stale entries in PUBLIC"
    assert set(SIGNED) - present == set(), "stale entries in SIGNED"


def test_every_other_route_refuses_an_unauthenticated_call(fuzz_app: FuzzApp) -> None:
    checked = []
    for method, path in routes(fuzz_app):
        if (method, path) in PUBLIC or (method, path) in SIGNED:
            continue
        before = fuzz_app.counts()
        response = fuzz_app.http.request(
            method, concrete(path), content=b"verdict=right", follow_redirects=False
        )
        refused = response.status_code in (401, 403) or (
            response.status_code == 303
            and response.headers["location"].startswith("/dashboard/login")
        )
        assert refused, f"{method} {path} answered {response.status_code} without a login"
        assert fuzz_app.counts() == before, f"{method} {path} stored something"
        checked.append((method, path))
    # The dashboard's pages and its review form are among them: the test is not vacuous.
    assert ("GET", "/dashboard/review") in checked
    assert ("POST", "/dashboard/review/{item_id}") in checked


def test_the_protected_routes_open_with_the_token(fuzz_app: FuzzApp) -> None:
    bearer = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
    for path in ("/dashboard", "/dashboard/gaps", "/dashboard/review", "/dashboard/handoffs"):
        response = fuzz_app.http.get(path, headers=bearer, follow_redirects=False)
        assert response.status_code == 200, path
    wrong = {"Authorization": f"Bearer {DASHBOARD_TOKEN}x"}
    assert fuzz_app.http.get("/dashboard", headers=wrong, follow_redirects=False).status_code == 303


@pytest.mark.parametrize(("method", "path"), sorted(SIGNED))
def test_signed_routes_refuse_unsigned_calls(fuzz_app: FuzzApp, method: str, path: str) -> None:
    before = fuzz_app.counts()
    body = b'{"type": "event_callback", "event": {"type": "message", "text": "hi"}}'
    response = fuzz_app.http.request(
        method, path, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    assert fuzz_app.counts() == before


def test_admin_routes_stay_out_of_the_public_schema(fuzz_app: FuzzApp) -> None:
    schema = fuzz_app.http.get("/openapi.json").json()
    assert not [p for p in schema["paths"] if p.startswith(("/dashboard", "/slack", "/zendesk"))]


def test_a_logged_in_form_post_without_its_csrf_token_is_refused(fuzz_app: FuzzApp) -> None:
    from monitoring.dashboard import COOKIE, session_cookie

    before = fuzz_app.counts()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    jar = fuzz_app.http.cookies
    try:
        jar.set(COOKIE, session_cookie(DASHBOARD_TOKEN))
        assert fuzz_app.http.get("/dashboard/review", follow_redirects=False).status_code == 200
        for body in (b"verdict=right", b"verdict=right&csrf=forged"):
            response = fuzz_app.http.post("/dashboard/review/1", content=body, headers=form)
            assert response.status_code == 403
        assert fuzz_app.counts() == before
        # A cookie signed with another token is no session at all.
        jar.clear()
        jar.set(COOKIE, session_cookie("another-token"))
        response = fuzz_app.http.get("/dashboard", follow_redirects=False)
        assert response.status_code == 303
    finally:
        jar.clear()


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/dashboard//evil.example", "/api/chat"]
)
def test_login_never_redirects_off_the_dashboard(fuzz_app: FuzzApp, target: str) -> None:
    from urllib.parse import urlencode

    body = urlencode({"token": DASHBOARD_TOKEN, "next": target}).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        response = fuzz_app.http.post(
            "/dashboard/login", content=body, headers=form, follow_redirects=False
        )
    finally:
        fuzz_app.http.cookies.clear()
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"


def test_dashboard_pages_escape_customer_text(fuzz_app: FuzzApp) -> None:
    """A customer's message shown to staff (gaps, review) cannot run script in their browser."""
    script = "<script>alert('x')</script> how do I export?"
    rate = fuzz_app.services.settings.review_sample_rate
    sampled = 0
    for n in range(400):  # a share of replies, by their ids, is sampled into the review queue
        chat = {"conversation_id": f"xss-{n}", "user": "mallory", "text": script}
        response = fuzz_app.http.post("/api/chat", json=chat)
        assert response.status_code == 200
        sampled += sum(
            is_sampled(reply["id"], rate)
            for reply in response.json()["replies"]
            if reply["kind"] in DEFAULT_SAMPLED_KINDS
        )
        if sampled >= 3:
            break
    bearer = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
    shown = []
    for path in ("/dashboard/gaps?days=1", "/dashboard/review", "/dashboard/handoffs"):
        page = fuzz_app.http.get(path, headers=bearer)
        assert page.status_code == 200
        assert "<script>alert(" not in page.text, path
        if "&lt;script&gt;" in page.text:
            shown.append(path)
    assert "/dashboard/review" in shown  # the text was on the page, escaped
