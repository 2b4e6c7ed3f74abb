"""Tests for knowledge.chunking: heading paths, titles and length splitting."""

from __future__ import annotations

import re

import pytest

from knowledge.chunking import Section, split_html, split_markdown, split_text

FENCE = re.compile(r"^\s*(`{3,}|~{3,})", re.MULTILINE)

MARKDOWN = """\
Intro before the title.

# Getting Started

Welcome.

## Install

Download it.

```bash
# a comment, not a heading
./install.sh
```

### On Windows

Run setup.exe.

Setup heading
-------------

Setext body.

#### Deep

Deep body.

## Configure

Edit the file.
"""


def _words(text: str) -> list[str]:
    return text.split()


def _fences_balanced(text: str) -> bool:
    return len(FENCE.findall(text)) % 2 == 0


def test_markdown_title_and_heading_paths() -> None:
    sections = split_markdown(MARKDOWN)
    assert {s.title for s in sections} == {"Getting Started"}
    assert [(s.heading_path, s.text.splitlines()[0]) for s in sections] == [
        ((), "Intro before the title."),
        ((), "Welcome."),
        (("Install",), "Download it."),
        (("Install", "On Windows"), "Run setup.exe."),
        (("Setup heading",), "Setext body."),
        (("Setup heading", "Deep"), "Deep body."),
        (("Configure",), "Edit the file."),
    ]


def test_markdown_heading_inside_fence_is_not_a_heading() -> None:
    install = next(s for s in split_markdown(MARKDOWN) if s.heading_path == ("Install",))
    assert install.text == (
        "Download it.\n\n```bash\n# a comment, not a heading\n./install.sh\n```"
    )


def test_markdown_heading_text_is_plain_and_empty_sections_dropped() -> None:
    text = (
        "# The **Bold** `Title`\n\n## [Linked](https://x.example) heading\n\n"
        "## Empty\n\n## Body\n\nx"
    )
    sections = split_markdown(text)
    assert sections == [
        Section("The Bold Title", ("Body",), "x"),
    ]


def test_markdown_without_h1_has_no_title_and_skips_front_matter() -> None:
    sections = split_markdown("---\ntitle: Hello\nlayout: page\n---\n## A\n\nText a.\n")
    assert sections == [Section(None, ("A",), "Text a.")]


def test_markdown_long_section_splits_at_paragraphs() -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 30 for i in range(10)]
    text = "# T\n\n## Long\n\n" + "\n\n".join(p.strip() for p in paragraphs)
    sections = split_markdown(text, max_chars=400)
    assert len(sections) > 1
    assert all(len(s.text) <= 400 for s in sections)
    assert all(s.heading_path == ("Long",) for s in sections)
    # Every passage starts at a paragraph start, and nothing is lost.
    assert all(s.text.startswith("Paragraph ") for s in sections)
    assert _words(" ".join(s.text for s in sections)) == _words("\n\n".join(paragraphs))


def test_long_paragraph_splits_at_sentences_never_mid_word() -> None:
    sentence = "The quick brown fox jumps over the lazy dog again and again."
    paragraph = " ".join([sentence] * 40)
    sections = split_markdown(paragraph, max_chars=250)
    assert len(sections) > 1
    for section in sections:
        assert len(section.text) <= 250
        assert section.text.startswith("The quick")
        assert section.text.endswith("again.")
    assert _words(" ".join(s.text for s in sections)) == _words(paragraph)


def test_sentence_free_text_splits_between_words() -> None:
    words = [f"w{i:04d}" for i in range(600)]
    sections = split_text(" ".join(words), title=None, max_chars=100)
    assert all(len(s.text) <= 100 for s in sections)
    assert [w for s in sections for w in s.text.split()] == words


def test_code_fence_is_kept_whole_when_it_fits() -> None:
    code = "```python\n" + "\n".join(f"x{i} = {i}\n" for i in range(10)) + "```"
    text = "# T\n\n## Code\n\n" + "Some prose here. " * 15 + "\n\n" + code + "\n\nAfter the code."
    sections = split_markdown(text, max_chars=300)
    assert all(len(s.text) <= 300 for s in sections)
    assert all(_fences_balanced(s.text) for s in sections)
    holding = [s for s in sections if "```python" in s.text]
    assert len(holding) == 1
    assert code in holding[0].text  # blank lines inside the fence did not split it


def test_oversized_code_fence_is_split_between_lines_and_refenced() -> None:
    body = [f"print('line {i}')" for i in range(80)]
    text = "## Big\n\n```python\n" + "\n".join(body) + "\n```\n"
    sections = split_markdown(text, max_chars=200)
    assert len(sections) > 1
    lines: list[str] = []
    for section in sections:
        assert len(section.text) <= 200
        assert section.text.startswith("```python\n")
        assert section.text.endswith("\n```")
        lines.extend(section.text.splitlines()[1:-1])
    assert lines == body


def test_html_sections_title_lists_pre_and_dropped_chrome() -> None:
    html = """<html><head><title>Help Center</title><script>var x = 1;</script></head>
    <body><nav>Home | Docs</nav>
    <h1>Billing</h1><p>Intro   text<br>next line</p>
    <h2>Pay</h2><ul><li>Card</li><li>Bank<ul><li>SEPA</li></ul></li>
    <li>See <code>x.example</code>.</li></ul>
    <h3>Invoices</h3><pre>Total:
      $12.00</pre><!-- a comment -->
    <h2>Tables</h2><table><tr><th>Plan</th><th>Price</th></tr><tr><td>Pro</td><td>$12</td></tr></table>
    <footer>(c) Acme<script>x()</script></footer><nav><noscript>Enable JS</noscript></nav>
    <style>p { color: red }</style></body></html>"""
    assert split_html(html) == [
        Section("Help Center", (), "Intro text\nnext line"),
        Section("Help Center", ("Pay",), "- Card\n- Bank\n  - SEPA\n- See x.example."),
        Section("Help Center", ("Pay", "Invoices"), "Total:\n      $12.00"),
        Section("Help Center", ("Tables",), "Plan | Price\nPro | $12"),
    ]


def test_html_title_falls_back_to_first_h1_and_paragraphs_are_separated() -> None:
    html = "<h1>Returns</h1><div><p>First.</p><p>Second.</p></div><h2>More</h2><p>Third</p>"
    assert split_html(html) == [
        Section("Returns", (), "First.\n\nSecond."),
        Section("Returns", ("More",), "Third"),
    ]


def test_html_long_section_is_split() -> None:
    html = "<h1>T</h1><h2>S</h2>" + "".join(
        f"<p>Paragraph {i} " + "x " * 50 + "</p>" for i in range(20)
    )
    sections = split_html(html, max_chars=300)
    assert len(sections) > 1
    assert all(len(s.text) <= 300 and s.heading_path == ("S",) for s in sections)


def test_text_paragraphs_and_title() -> None:
    sections = split_text("First para\nstill first.\r\n\r\n\n  \nSecond para.", title="Doc")
    assert sections == [Section("Doc", (), "First para\nstill first.\n\nSecond para.")]
    assert split_text("  \n\n \n", title="Doc") == []


def test_odd_unicode_and_nul_bytes_survive() -> None:
    text = "# دليل 📘\n\n## الفواتير 🧾\n\nمرحبا\x00 بكم 👩‍👩‍👧‍👦 in our help centre. " * 3
    sections = split_markdown(text)
    assert sections[0].title == "دليل 📘"
    assert sections[0].heading_path == ("الفواتير 🧾",)
    assert all("\x00" not in s.text for s in sections)
    assert "👩‍👩‍👧‍👦" in sections[0].text


def test_hard_cut_does_not_break_emoji_sequences() -> None:
    family = "👩‍👩‍👧‍👦"
    text = family * 200  # no whitespace anywhere
    sections = split_text(text, title=None, max_chars=50)
    assert all(len(s.text) <= 50 for s in sections)
    assert "".join(s.text for s in sections) == text
    assert all(s.text.startswith("👩") and s.text.endswith("👦") for s in sections)


def test_huge_single_line_does_not_crash() -> None:
    line = ("abcdefghij" * 100 + " ") * 5000  # about 5 MB on one line
    sections = split_markdown(line, max_chars=1200)
    assert all(len(s.text) <= 1200 for s in sections)
    assert sum(len(s.text.split()) for s in sections) == 5000


def test_max_chars_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        split_text("x", title=None, max_chars=0)
