"""`supportbot report`: rich tables, CSV, JSON and self-contained HTML from the database."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from typer.testing import CliRunner

from bot.cli import app
from bot.storage.store import Store
from tests.monitoring.test_metrics import DAY0, _history


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    store = Store.from_url(url)
    _history(store)
    store.close()
    monkeypatch.setenv("SUPPORTBOT_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "200")
    return url


def test_report_prints_tables_and_writes_csv_json_html(database: str, tmp_path: Path) -> None:
    out = {ext: tmp_path / f"report.{ext}" for ext in ("csv", "json", "html")}
    result = CliRunner().invoke(
        app,
        [
            "report",
            "--since",
            DAY0.date().isoformat(),
            "--until",
            "2026-01-08",
            *("--csv", str(out["csv"]), "--json", str(out["json"]), "--html", str(out["html"])),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Answer rate" in result.output and "62.5 %" in result.output
    assert "Never: duplicate replies" in result.output

    data = json.loads(out["json"].read_text("utf-8"))
    assert data["replies"] == 9 and data["summary"]["answer_rate"] == pytest.approx(0.625)
    assert len(data["series"]) == 3

    with out["csv"].open(encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    summary = {r["metric"]: r["value"] for r in table if r["section"] == "summary"}
    assert summary["duplicate_replies"] == "1" and summary["handoffs"] == "2"
    series = [r for r in table if r["section"] == "series" and r["metric"] == "replies"]
    assert [r["value"] for r in series] == ["4", "5", "0"]

    page = out["html"].read_text("utf-8")
    soup = BeautifulSoup(page, "html.parser")
    assert soup.find("script") is None
    assert not [t for t in soup.find_all(["link", "img"]) if t.get("href") or t.get("src")]
    assert "http://" not in page and "https://" not in page
    cells = [td.get_text(strip=True) for td in soup.find_all("td")]
    assert "Answer rate" in cells and "62.5 %" in cells
    assert len(soup.find_all("rect")) == 3
    assert soup.find("tr", class_="never") is not None  # the anomalies stand out


def test_report_refuses_bad_dates_and_buckets(database: str) -> None:
    runner = CliRunner()
    bad_date = runner.invoke(app, ["report", "--since", "last tuesday"])
    assert bad_date.exit_code == 2 and "not a date" in bad_date.output
    bad_bucket = runner.invoke(app, ["report", "--bucket", "month"])
    assert bad_bucket.exit_code == 2 and "--bucket" in bad_bucket.output
    backwards = runner.invoke(app, ["report", "--since", "2026-02-01", "--until", "2026-01-01"])
    assert backwards.exit_code == 2 and "after" in backwards.output
