"""The monitoring dashboard at ``/dashboard``: charts, knowledge gaps, review queue, handoffs.

Access: ``SUPPORTBOT_DASHBOARD_TOKEN``. The login form at ``/dashboard/login`` takes the token and
sets an HTTP-only, SameSite=Strict cookie signed with it (HMAC-SHA256, valid 12 hours), so the
token itself never sits in the browser. Scripts may send ``Authorization: Bearer <token>``
instead. Without the cookie a page redirects to the login form (303) and a form post gets 401.
With no token configured the dashboard is *disabled*: every ``/dashboard`` URL answers 503 with a
page that says how to turn it on. (Not a generated token printed at start-up: it would end up in
logs, and every replica would print a different one.) Marking a review item also needs a CSRF
token derived from the session cookie.

Everything is rendered on the server (jinja2 templates, SVG charts); the one stylesheet is served
from the package. The pages make no request outside the bot.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import or_
from sqlmodel import Session, col, select

from bot.model import utcnow
from bot.storage.tables import Conversation, Handoff, Message, RelayLink
from monitoring.dashboard.charts import Series, line_chart
from monitoring.review import ReviewError, ReviewQueue

if TYPE_CHECKING:
    from jinja2 import Environment

    from bot.service import Services

__all__ = ["COOKIE", "dashboard_router", "session_cookie"]

logger = logging.getLogger(__name__)

COOKIE: Final = "supportbot_dashboard"
SESSION_S: Final = 12 * 3600
_HERE = Path(__file__).resolve().parent
_GAPS_CACHE_S: Final = 60.0


@functools.cache
def _templates() -> Environment:
    """The pages' templates, loaded when the first page is rendered: jinja2 takes 40 ms of a
    worker's start, and a worker whose dashboard nobody opens never needs it."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _sign(token: str, message: str) -> str:
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


def session_cookie(token: str, now: float | None = None) -> str:
    """A session cookie value for `token`: its expiry and an HMAC of it."""
    expires = int((now if now is not None else time.time()) + SESSION_S)
    return f"{expires}.{_sign(token, f'session:{expires}')}"


def _valid_cookie(token: str, value: str | None) -> bool:
    if not value or "." not in value:
        return False
    expires, _, signature = value.partition(".")
    if not expires.isdigit() or int(expires) < time.time():
        return False
    return hmac.compare_digest(signature, _sign(token, f"session:{expires}"))


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def dashboard_router(services: Services) -> APIRouter:
    """The ``/dashboard`` routes, reading the services' store, knowledge base and settings."""
    router = APIRouter(prefix="/dashboard", include_in_schema=False)
    secret = services.settings.dashboard_token
    token = secret.get_secret_value() or None if secret is not None else None
    store = services.store
    queue = ReviewQueue(store.engine, sample_rate=services.settings.review_sample_rate)
    gaps_cache: dict[float, tuple[float, Any, Any]] = {}

    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = _templates().get_template(name).render(**context)
        return HTMLResponse(html, status_code=status)

    def disabled() -> HTMLResponse:
        return render("disabled.html", status=503, page="disabled")

    def authorized(request: Request) -> bool:
        assert token is not None
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return hmac.compare_digest(header[7:].strip().encode(), token.encode())
        return _valid_cookie(token, request.cookies.get(COOKIE))

    def csrf(request: Request) -> str:
        assert token is not None
        return _sign(token, "csrf:" + (request.cookies.get(COOKIE) or "bearer"))

    def guard(request: Request) -> Response | None:
        """None when the request may see the page, else the response to give instead."""
        if token is None:
            return disabled()
        if authorized(request):
            return None
        if request.method == "GET":
            target = quote(request.url.path, safe="/")
            return RedirectResponse(f"/dashboard/login?next={target}", status_code=303)
        return HTMLResponse("Log in first at /dashboard/login.", status_code=401)

    def period(request: Request) -> float:
        try:
            days = float(request.query_params.get("days", "14"))
        except ValueError:
            days = 14.0
        return min(max(days, 1.0), 365.0)

    async def form(request: Request) -> dict[str, str]:
        body = (await request.body())[:20_000].decode("utf-8", "replace")
        return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}

    @router.get("/static/dashboard.css")
    def stylesheet() -> Response:
        css = (_HERE / "static" / "dashboard.css").read_text("utf-8")
        return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        if token is None:
            return disabled()
        return render("login.html", page="login", next=request.query_params.get("next", ""))

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        if token is None:
            return disabled()
        data = await form(request)
        given = data.get("token", "")
        target = data.get("next", "")
        if not target.startswith("/dashboard") or "//" in target:
            target = "/dashboard"
        if not hmac.compare_digest(given.encode(), token.encode()):
            logger.warning(
                "dashboard: failed login from %s", request.client and request.client.host
            )
            return render("login.html", status=401, page="login", next=target, error="Wrong token.")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            session_cookie(token),
            max_age=SESSION_S,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/dashboard",
        )
        return response

    @router.get("/logout")
    def logout() -> Response:
        response = RedirectResponse("/dashboard/login", status_code=303)
        response.delete_cookie(COOKIE, path="/dashboard")
        return response

    @router.get("", response_class=HTMLResponse)
    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        from monitoring.metrics import compute

        days = period(request)
        until = utcnow()
        since = until - timedelta(days=days)
        metrics = compute(store, since=since, until=until, bucket="day")
        buckets = metrics.series
        labels = [b.start.strftime("%d %b") for b in buckets]
        charts = [
            line_chart(
                "Replies per day",
                labels,
                [
                    Series("replies", tuple(float(b.replies) for b in buckets)),
                    Series("answers", tuple(float(b.answers) for b in buckets)),
                    Series("fallbacks", tuple(float(b.fallbacks) for b in buckets)),
                    Series("handoffs", tuple(float(b.handoffs) for b in buckets)),
                ],
            ),
            line_chart(
                "Answer rate and CSAT",
                labels,
                [
                    Series("answer rate", tuple(b.answer_rate for b in buckets)),
                    Series("CSAT (👍 share)", tuple(b.csat for b in buckets)),
                ],
                y_max=1.0,
                y_format=lambda v: f"{v * 100:.0f}%",
            ),
            line_chart(
                "Latency",
                labels,
                [
                    Series("p50", tuple(b.latency_p50_ms for b in buckets)),
                    Series("p95", tuple(b.latency_p95_ms for b in buckets)),
                ],
                y_format=lambda v: f"{v:.0f} ms",
            ),
            line_chart(
                "Customer sentiment (VADER, −1…1, shifted to 0…2)",
                labels,
                [
                    Series(
                        "sentiment + 1",
                        tuple(None if b.sentiment is None else b.sentiment + 1 for b in buckets),
                    )
                ],
                y_max=2.0,
                y_format=lambda v: f"{v - 1:+.1f}",
            ),
        ]
        accuracy = queue.accuracy(since, until)
        figures = [
            ("Conversations", str(metrics.conversations)),
            ("Answer rate", _percent(metrics.answer_rate)),
            ("Fallback rate", _percent(metrics.fallback_rate)),
            ("Handoff rate", _percent(metrics.handoff_rate)),
            ("Deflection", _percent(metrics.deflection.rate)),
            ("CSAT", _percent(metrics.csat.overall.rate)),
            ("CSAT bot only", _percent(metrics.csat.bot_only.rate)),
            ("CSAT bot → human", _percent(metrics.csat.bot_then_human.rate)),
            ("Latency p95", _ms(metrics.latency_ms.p95)),
            (
                "Time to human p50",
                "–"
                if metrics.time_to_human_s.p50 is None
                else f"{metrics.time_to_human_s.p50:.0f} s",
            ),
            ("Reviewed accuracy", f"{_percent(accuracy.accuracy)} of {accuracy.reviewed}"),
            ("Never events", str(metrics.anomalies.total)),
        ]
        return render("overview.html", page="overview", days=days, figures=figures, charts=charts)

    @router.get("/gaps", response_class=HTMLResponse)
    def gaps(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        from monitoring.gaps import classify_failures, failure_counts, find_gaps

        days = period(request)
        cached = gaps_cache.get(days)
        if cached is not None and time.monotonic() - cached[0] < _GAPS_CACHE_S:
            report, failures = cached[1], cached[2]
        else:
            until = utcnow()
            since = until - timedelta(days=days)
            threshold = services.engine.responder.confidence.threshold
            report = find_gaps(
                store.engine,
                services.kb.embedder,
                since=since,
                until=until,
                low_confidence=threshold + 0.1,
            )
            failures = classify_failures(
                store.engine, since=since, until=until, retriever=services.retriever
            )
            gaps_cache[days] = (time.monotonic(), report, failures)
        return render(
            "gaps.html",
            page="gaps",
            days=days,
            report=report,
            failures=failures[:50],
            counts=failure_counts(failures),
        )

    @router.get("/review", response_class=HTMLResponse)
    def review(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        queue.sample()
        pending = queue.entries(status="pending", limit=50)
        reviewed = queue.entries(status="reviewed", limit=20)
        return render(
            "review.html",
            page="review",
            pending=pending,
            reviewed=reviewed,
            csrf=csrf(request),
            message=request.query_params.get("message"),
        )

    @router.post("/review/{item_id}")
    async def mark(item_id: int, request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        data = await form(request)
        if not hmac.compare_digest(data.get("csrf", "").encode(), csrf(request).encode()):
            return HTMLResponse("Stale form: reload the review page.", status_code=403)
        try:
            entry = queue.mark(
                item_id,
                data.get("verdict", ""),
                reviewer="dashboard",
                note=data.get("note"),
                expected_entry=data.get("expected"),
            )
        except ReviewError as e:
            return HTMLResponse(str(e), status_code=400)
        message = quote(f"Item {entry.id} marked {entry.verdict}.")
        return RedirectResponse(f"/dashboard/review?message={message}", status_code=303)

    @router.get("/handoffs", response_class=HTMLResponse)
    def handoffs(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        return render("handoffs.html", page="handoffs", rows=_recent_handoffs(services))

    return router


def _recent_handoffs(services: Services, limit: int = 50) -> list[dict[str, Any]]:
    """The newest handoffs (and requests without a desk) with their conversation, relay state and
    first agent reply."""
    query = (
        select(Handoff, Conversation, RelayLink)
        .join(Conversation, col(Handoff.conversation_id) == col(Conversation.id))
        .outerjoin(RelayLink, col(RelayLink.conversation_id) == col(Conversation.id))
        # Handoffs to a person, and requests no desk could take ("no_desk:…", bot to bot).
        .where(or_(col(Handoff.to_owner) == "human", col(Handoff.reason).startswith("no_desk:")))
        .order_by(col(Handoff.created_at).desc(), col(Handoff.id).desc())
        .limit(limit)
    )
    rows: list[dict[str, Any]] = []
    with Session(services.store.engine) as session:
        for handoff, conversation, link in session.exec(query):
            agent_at: datetime | None = session.exec(
                select(Message.created_at)
                .where(
                    Message.conversation_id == conversation.id,
                    Message.role == "agent",
                    col(Message.created_at) >= handoff.created_at,
                )
                .order_by(col(Message.id))
                .limit(1)
            ).first()
            waited = None if agent_at is None else (agent_at - handoff.created_at).total_seconds()
            rows.append(
                {
                    "at": handoff.created_at.strftime("%Y-%m-%d %H:%M"),
                    "conversation": conversation.id,
                    "platform": conversation.platform,
                    "reason": handoff.reason or "",
                    "actor": handoff.actor,
                    "owner": conversation.owner,
                    "relay": link.state if link is not None else "–",
                    "first_reply": "waiting" if waited is None else f"{waited:.0f} s",
                }
            )
    return rows
