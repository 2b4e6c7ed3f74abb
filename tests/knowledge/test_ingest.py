"""Tests for knowledge.ingest: FAQ files, article folders, ids and error reporting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bot.errors import IngestError
from knowledge.ingest import load_jsonl_entries, load_sources
from knowledge.types import Entry, content_id

FIXTURES = Path(__file__).parent / "fixtures"
ARTICLES = FIXTURES / "articles"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(*records: object) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


# --- JSONL --------------------------------------------------------------------------------


def test_jsonl_fixture_loads_all_fields() -> None:
    entries = load_sources([FIXTURES / "faq.jsonl"])
    source = str((FIXTURES / "faq.jsonl").resolve())
    assert [e.id for e in entries] == ["reset-password", "refund", "arabic-emoji"]
    reset = entries[0]
    assert reset == Entry(
        id="reset-password",
        answer=(
            "Open Settings → Security and choose **Reset password**. "
            "We email you a link that works for 30 minutes."
        ),
        question="How do I reset my password?",
        examples=("forgot my password", "can't log in"),
        title="Password reset",
        url="https://help.example.com/reset",
        tags=("account", "login"),
        source=source,
    )


def test_jsonl_unknown_keys_are_ignored_and_unicode_kept() -> None:
    entries = load_sources([str(FIXTURES / "faq.jsonl")])
    refund = entries[1]
    assert refund.answer == "Yes, within 14 days of purchase."
    assert refund.examples == () and refund.tags == () and refund.url is None
    assert entries[2].question == "هل تدعمون العربية؟ 🌍"
    assert "👋🏽" in entries[2].answer


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object, got an array"),
        ('"text"', "expected a JSON object, got a string"),
        ('{"answer": "a"}', "missing required field 'id'"),
        ('{"id": "", "answer": "a"}', "field 'id' is empty"),
        ('{"id": 7, "answer": "a"}', "field 'id' must be a string, got a number"),
        ('{"id": "x"}', "missing required field 'answer'"),
        ('{"id": "x", "answer": "   "}', "field 'answer' is empty"),
        ('{"id": "x", "answer": "a", "tags": "billing"}', "'tags' must be a list of strings"),
        ('{"id": "x", "answer": "a", "examples": ["ok", 3]}', "item 1 is a number"),
        ('{"id": "x", "answer": "a", "url": false}', "'url' must be a string, got a boolean"),
        ('{"id": "x", "answer": "a", "question": {}}', "'question' must be a string"),
    ],
)
def test_malformed_jsonl_line_reports_its_number(tmp_path: Path, line: str, message: str) -> None:
    good = _jsonl({"id": "a", "answer": "A"})
    path = _write(tmp_path / "faq.jsonl", good + "\n" + line + "\n")
    with pytest.raises(IngestError, match=message) as caught:
        load_sources([path])
    assert caught.value.line == 3  # the blank line 2 still counts
    assert caught.value.path == path.resolve()
    assert f"{path.resolve()}:3: " in str(caught.value)


def test_duplicate_id_in_one_jsonl_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "faq.jsonl", _jsonl({"id": "a", "answer": "1"}, {"id": "a", "answer": "2"})
    )
    with pytest.raises(IngestError, match=r"duplicate id 'a' \(first used on line 1\)") as caught:
        load_sources([path])
    assert caught.value.line == 2


def test_duplicate_id_across_files_names_both(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.jsonl", _jsonl({"id": "same", "answer": "1"}))
    second = _write(tmp_path / "b.jsonl", _jsonl({"id": "same", "answer": "2"}))
    with pytest.raises(IngestError) as caught:
        load_sources([first, second])
    assert caught.value.path == second.resolve()
    assert str(first.resolve()) in str(caught.value)
    assert "'same'" in str(caught.value)


def test_load_jsonl_entries_helper() -> None:
    lines = [
        '{"id": "x", "answer": " A \\u0000 ", "examples": ["q1", "q1", " "], "title": ""}\n',
        "\n",
        '{"id": "y", "answer": "B", "question": null, "tags": null}',
    ]
    entries = load_jsonl_entries(lines, source="export:help-center")
    assert entries == [
        Entry(id="x", answer="A", examples=("q1",), source="export:help-center"),
        Entry(id="y", answer="B", source="export:help-center"),
    ]
    with pytest.raises(IngestError, match="invalid JSON") as caught:
        load_jsonl_entries(['{"id": "a", "answer": "b"}', "", "nope"], source="export:x")
    assert caught.value.line == 3


def test_jsonl_line_separators_inside_strings_do_not_split_lines(tmp_path: Path) -> None:
    answer = "one\u2028two\u2029three\x85four"
    path = _write(tmp_path / "faq.jsonl", _jsonl({"id": "u", "answer": answer}))
    assert load_sources([path])[0].answer == answer


def test_huge_jsonl_line_and_nul_bytes(tmp_path: Path) -> None:
    answer = "x" * 5_000_000
    record = {"id": "big", "answer": answer, "question": "nul\x00inside"}
    path = _write(tmp_path / "faq.jsonl", _jsonl(record))
    [entry] = load_sources([path])
    assert len(entry.answer) == 5_000_000
    assert entry.question == "nulinside"


# --- CSV ----------------------------------------------------------------------------------


def test_csv_fixture() -> None:
    entries = load_sources([FIXTURES / "faq.csv"])
    assert [e.question for e in entries] == [
        "How much does the Pro plan cost?",
        "Do you offer discounts?",
    ]
    pro, discounts = entries
    assert pro.id == content_id("How much does the Pro plan cost?")
    assert pro.tags == ("billing", "pricing")
    assert pro.examples == ("price of pro", "pro plan cost")
    assert discounts.tags == ("billing", "discounts")
    assert discounts.examples == ()
    assert discounts.answer == "Yes: 50% off for non-profits.\r\nContact sales for details."


def test_csv_with_id_column_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_bytes("\ufeffID,question,ANSWER,url\nq1,Hi?,Hello,https://x.example\n".encode())
    [entry] = load_sources([path])
    assert (entry.id, entry.question, entry.answer, entry.url) == (
        "q1",
        "Hi?",
        "Hello",
        "https://x.example",
    )


def test_csv_missing_columns_names_found_and_needed(tmp_path: Path) -> None:
    path = _write(tmp_path / "faq.csv", "question,reply\nHi?,Hello\n")
    with pytest.raises(IngestError, match="missing required column") as caught:
        load_sources([path])
    message = str(caught.value)
    assert "found columns: question, reply" in message
    assert "needed: question, answer" in message


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("Hi?,Hello\n,No question\n", 3, "question is empty"),
        ("Hi?,Hello\nHi?,Again\n", 3, "duplicate id"),
        ("Hi?,Hello,extra\n", 2, "row has 3 fields but the header has 2"),
        ('"Multi\nline?","Yes"\nBad?,\n', 4, "answer is empty"),
    ],
)
def test_malformed_csv_row_reports_its_line(
    tmp_path: Path, body: str, line: int, message: str
) -> None:
    path = _write(tmp_path / "faq.csv", "question,answer\n" + body)
    with pytest.raises(IngestError, match=message) as caught:
        load_sources([path])
    assert caught.value.line == line


def test_empty_csv(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="empty CSV"):
        load_sources([_write(tmp_path / "faq.csv", "")])


# --- articles and directories -------------------------------------------------------------


def test_directory_loads_articles_and_faq_files_in_sorted_order() -> None:
    entries = load_sources([ARTICLES])
    sources = [Path(e.source).relative_to(ARTICLES.resolve()).as_posix() for e in entries]
    assert sources == sorted(sources)  # deterministic: sorted by path
    assert set(sources) == {
        "getting-started.md",
        "guides/02-contact_us.txt",
        "guides/billing.html",
        "guides/more-faq.jsonl",
    }  # hidden folders and unsupported files are skipped

    md = [e for e in entries if e.source.endswith("getting-started.md")]
    assert [(e.heading_path, e.question) for e in md] == [
        ((), "Getting Started"),
        (("Install",), "Install"),
        (("Install", "On Windows"), "On Windows"),
        (("Configure",), "Configure"),
    ]
    assert all(e.title == "Getting Started" and e.url is None for e in md)
    assert "# this is a comment, not a heading" in md[1].answer
    for entry in md:
        assert entry.id == content_id(entry.source, "/".join(entry.heading_path), entry.answer)

    html = [e for e in entries if e.source.endswith("billing.html")]
    assert [e.heading_path for e in html] == [
        (),
        ("Payment methods",),
        ("Payment methods", "Invoices"),
    ]
    assert all(e.title == "Billing FAQ" for e in html)
    assert html[1].answer == "We accept:\n\n- Credit cards\n- SEPA direct debit"
    assert "Invoice #123\n  Total:   $12.00" in html[2].answer
    assert not any("trackPageView" in e.answer or "Acme Inc" in e.answer for e in html)

    [text] = [e for e in entries if e.source.endswith(".txt")]
    assert text.title == "Contact us"
    assert text.question == "Contact us"
    assert text.answer.startswith("Email support@example.com")

    [faq] = [e for e in entries if e.source.endswith(".jsonl")]
    assert faq.id == "shipping"


def test_ids_are_stable_across_loads_and_change_with_content(tmp_path: Path) -> None:
    folder = tmp_path / "kb"
    shutil.copytree(ARTICLES, folder)
    first = load_sources([folder])
    second = load_sources([folder])
    assert [e.id for e in first] == [e.id for e in second]
    assert first == second

    article = folder / "getting-started.md"
    article.write_text(
        article.read_text(encoding="utf-8").replace("Download the installer", "Get the installer"),
        encoding="utf-8",
    )
    third = load_sources([folder])
    changed = {e.id for e in first} ^ {e.id for e in third}
    assert len(changed) == 2  # only the Install passage: its old id out, its new id in
    install = next(e for e in third if e.heading_path == ("Install",))
    assert install.id in changed


def test_single_article_files(tmp_path: Path) -> None:
    md = _write(tmp_path / "how_to-export.md", "Just text, no headings.\n")
    [entry] = load_sources([md])
    assert entry.title == entry.question == "How to export"
    assert entry.heading_path == ()
    html = _write(tmp_path / "page.htm", "<p>Only a paragraph.</p>")
    [entry] = load_sources([html])
    assert (entry.title, entry.answer) == ("Page", "Only a paragraph.")


def test_same_file_twice_is_read_once(tmp_path: Path) -> None:
    path = _write(tmp_path / "faq.jsonl", _jsonl({"id": "a", "answer": "A"}))
    assert len(load_sources([path, tmp_path, str(path)])) == 1


def test_unknown_extension_lists_supported_ones(tmp_path: Path) -> None:
    path = _write(tmp_path / "manual.pdf", "x")
    with pytest.raises(IngestError, match=r"unsupported file type '\.pdf'.*\.jsonl.*\.md"):
        load_sources([path])


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file or directory") as caught:
        load_sources([tmp_path / "nope"])
    assert caught.value.path == tmp_path / "nope"


def test_single_string_instead_of_a_list_is_rejected() -> None:
    with pytest.raises(TypeError):
        load_sources(str(FIXTURES))


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "old.txt"
    path.write_bytes("first line\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(IngestError, match="not valid UTF-8") as caught:
        load_sources([path])
    assert caught.value.line == 2

    utf16 = tmp_path / "faq.jsonl"
    utf16.write_bytes('{"id": "a", "answer": "b"}\n'.encode("utf-16"))
    with pytest.raises(IngestError, match="UTF-16"):
        load_sources([utf16])


def test_odd_text_does_not_crash(tmp_path: Path) -> None:
    _write(tmp_path / "nul.txt", "before\x00after\n\nمرحبا 👋🏽 שלום")
    words = [f"w{i}" for i in range(700_000)]
    _write(tmp_path / "huge.md", "# Huge\n\n" + " ".join(words))  # one 5 MB line
    _write(tmp_path / "rtl.html", "<h1>\u202eעברית</h1><p>\u200fنص\u200e 🇸🇦</p>")
    entries = load_sources([tmp_path], max_chars=1200)
    assert all("\x00" not in e.answer for e in entries)
    assert all(len(e.answer) <= 1200 for e in entries)
    assert [w for e in entries if e.title == "Huge" for w in e.answer.split()] == words
    assert any("🇸🇦" in e.answer for e in entries)
    assert len({e.id for e in entries}) == len(entries)


def test_a_failing_source_returns_nothing(tmp_path: Path) -> None:
    _write(tmp_path / "a.jsonl", _jsonl({"id": "ok", "answer": "fine"}))
    _write(tmp_path / "b.jsonl", "{broken\n")
    with pytest.raises(IngestError) as caught:
        load_sources([tmp_path])
    assert caught.value.line == 1
    assert caught.value.path.name == "b.jsonl"
