"""The dashboard: access control over HTTP, then every page in a real headless Chromium.

The database is seeded with conversations run through the real engine and model. The browser is
Debian's /usr/bin/chromium driven by playwright (no browser download); every request the pages
make must stay on 127.0.0.1.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from bot.app import create_app
from bot.model import FeedbackEvent, FeedbackValue, InboundMessage, Reply, ReplyKind
from bot.service import Services
from bot.storage.tables import ReviewItem
from monitoring.dashboard import COOKIE
from tests.support import free_port, run_python, sample_services

pytestmark = pytest.mark.model

TOKEN = "test-dashboard-token-5f2c"
CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 900}

CONVERSATIONS = (
    ("How do I reset my password?", "thanks, that solved it"),
    ("How do I change the email address on my account?",),
    ("Do you sell gift cards?", "can I buy a gift voucher for a friend"),
    ("is lumen notes environmentally sustainable",),
    ("How do I export my notes to PDF?",),
    ("I want to talk to a human",),
)


def ask(services: Services, text: str, channel: str) -> list[Reply]:
    message = InboundMessage("web", "", channel, "ann", uuid.uuid4().hex, text)
    return list(services.engine.handle(message))


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, sample_kb_dir: Path, embedder: object
) -> Iterator[Services]:
    with sample_services(
        tmp_path_factory.mktemp("dashboard"),
        sample_kb_dir,
        embedder,
        dashboard_token=TOKEN,
        review_sample_rate=1.0,
    ) as built:
        for turns in CONVERSATIONS:
            channel = uuid.uuid4().hex
            for text in turns:
                for reply in ask(built, text, channel):
                    assert reply.id is not None
                    if reply.kind is ReplyKind.ANSWER and "email" in text:
                        built.engine.record_feedback(
                            FeedbackEvent(
                                "web", reply.id, "ann", FeedbackValue.DOWN, uuid.uuid4().hex
                            )
                        )
                    elif reply.kind is ReplyKind.ANSWER:
                        built.engine.record_feedback(
                            FeedbackEvent(
                                "web", reply.id, "ann", FeedbackValue.UP, uuid.uuid4().hex
                            )
                        )
        yield built


@pytest.fixture(scope="module")
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, adapters={})) as test_client:
        yield test_client


# Access control ----------------------------------------------------------------------------------


def test_pages_redirect_to_the_login_form_without_a_session(client: TestClient) -> None:
    for path in ("/dashboard", "/dashboard/gaps", "/dashboard/review", "/dashboard/handoffs"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/dashboard/login?next=/dashboard")
    assert client.post("/dashboard/review/1", content=b"verdict=right").status_code == 401
    client.cookies.set(COOKIE, "9999999999.forged")
    assert client.get("/dashboard", follow_redirects=False).status_code == 303
    client.cookies.clear()


def test_login_sets_a_signed_http_only_cookie(client: TestClient) -> None:
    wrong = client.post(
        "/dashboard/login",
        content=b"token=nope",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert wrong.status_code == 401 and "Wrong token" in wrong.text
    response = client.post(
        "/dashboard/login",
        content=f"token={TOKEN}&next=/dashboard/gaps".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/gaps"
    cookie = response.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert TOKEN not in cookie
    offsite = client.post(
        "/dashboard/login",
        content=f"token={TOKEN}&next=//evil.example.com".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert offsite.headers["location"] == "/dashboard"
    client.cookies.clear()


def test_a_bearer_token_works_for_scripts(client: TestClient) -> None:
    response = client.get("/dashboard/handoffs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert "Recent handoffs" in response.text


def test_without_a_token_the_dashboard_is_disabled(services: Services) -> None:
    settings = services.settings.model_copy(update={"dashboard_token": None})
    disabled = Services(settings, services.store, services.kb, services.retriever, services.engine)
    with TestClient(create_app(disabled, adapters={})) as plain:
        for path in ("/dashboard", "/dashboard/login"):
            response = plain.get(path)
            assert response.status_code == 503
            assert "SUPPORTBOT_DASHBOARD_TOKEN" in response.text


# The browser ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(services: Services) -> Iterator[str]:
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        create_app(services, adapters={}), host="127.0.0.1", port=port, log_level="warning"
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not instance.started:
        assert time.monotonic() < deadline, "the dashboard server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


def check_screenshot(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        assert image.size == (VIEWPORT["width"], VIEWPORT["height"])
        small = image.convert("RGB").resize((160, 112))
        colors = small.getcolors(maxcolors=160 * 112)
        assert colors is not None and len(colors) > 20, f"{path.name} looks blank"
        extrema = small.convert("L").getextrema()
        assert extrema[1] - extrema[0] > 100, f"{path.name} has no contrast"


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium (apt-get install chromium); required under CI",
)
def test_every_page_in_headless_chromium(server: str, services: Services, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
            page.on("request", lambda request: requests.append(request.url))

            page.goto(f"{server}/dashboard")
            assert "/dashboard/login" in page.url
            page.screenshot(path=str(tmp_path / "login.png"))
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(f"{server}/dashboard")

            # Overview: figures and SVG charts drawn from the metrics.
            assert page.locator("svg.chart").count() == 4
            assert page.locator("svg.chart polyline.series").count() >= 2
            box = page.locator("svg.chart").first.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100
            text = page.inner_text("main")
            assert "Answer rate" in text and "Reviewed accuracy" in text
            page.screenshot(path=str(tmp_path / "overview.png"))

            page.click("text=Knowledge gaps")
            page.wait_for_url(f"{server}/dashboard/gaps")
            assert page.locator("tr.cluster").count() >= 1
            assert "gift" in page.inner_text("table.gaps").lower()
            assert "retrieval miss" in page.inner_text("table.failure-counts")
            page.screenshot(path=str(tmp_path / "gaps.png"))

            page.click("text=Review queue")
            page.wait_for_url(f"{server}/dashboard/review")
            row = page.locator("tr.review-item").first
            item_id = int(row.get_attribute("id").removeprefix("item-"))  # type: ignore[union-attr]
            row.locator("input[name=note]").fill("answered the wrong plan")
            row.locator("button.wrong").click()
            page.wait_for_url("**/dashboard/review?message=*")
            assert f"Item {item_id} marked wrong" in page.inner_text("p.notice")
            assert "answered the wrong plan" in page.inner_text(f"#reviewed-{item_id}")
            page.screenshot(path=str(tmp_path / "review.png"))
            with Session(services.store.engine) as session:
                stored = session.get(ReviewItem, item_id)
                assert stored is not None
                assert (stored.verdict, stored.note, stored.reviewer) == (
                    "wrong",
                    "answered the wrong plan",
                    "dashboard",
                )

            page.click("text=Handoffs")
            page.wait_for_url(f"{server}/dashboard/handoffs")
            assert page.locator("tr.handoff").count() >= 1
            assert "web" in page.inner_text("table.handoffs")
            page.screenshot(path=str(tmp_path / "handoffs.png"))
        finally:
            browser.close()

    for name in ("login", "overview", "gaps", "review", "handoffs"):
        check_screenshot(tmp_path / f"{name}.png")
    hosts = {urlsplit(url).hostname for url in requests}
    assert hosts == {"127.0.0.1"}, requests
    assert any(url.endswith("/dashboard/static/dashboard.css") for url in requests)


def test_the_web_app_imports_jinja2_only_when_a_page_is_rendered() -> None:
    """jinja2 took 40 ms of every worker's start; most workers never render a page."""
    script = """
import sys
import bot.app
import monitoring.dashboard
print("jinja2" in sys.modules)
"""
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
