"""Split documents into passages by headings, then by length.

Every splitter returns :class:`Section` objects whose ``text`` is at most ``max_chars`` long.
Long sections are cut at paragraph boundaries first, then at sentence (or list-item) boundaries,
then at line breaks, then between words; a word is only cut when it alone is longer than
``max_chars``. Fenced code blocks are kept whole when they fit; a code block longer than
``max_chars`` is split between its lines and each piece is re-fenced, so every passage stays
valid Markdown.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, XMLParsedAsHTMLWarning
from bs4.element import NavigableString, PreformattedString, Tag
from markdown_it import MarkdownIt
from markdown_it.token import Token

logger = logging.getLogger(__name__)

__all__ = ["Section", "split_html", "split_markdown", "split_text"]


@dataclass(frozen=True, slots=True)
class Section:
    """One passage of a document.

    Attributes:
        title: the document's title (its first H1, or the HTML ``<title>``), if it has one.
        heading_path: the headings above the passage, outermost first; the title is not
            included.
        text: the passage; Markdown for Markdown input, plain text otherwise.
    """

    title: str | None
    heading_path: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class _Block:
    """A unit that length splitting keeps whole when it can.

    Attributes:
        text: the block's text.
        sep: how it was separated from the block before it (``"\\n\\n"``, ``"\\n"``, ``" "``,
            or ``""``); used when it is joined to that block in one passage.
        code: whether it is code (split between lines, never inside one where avoidable).
        fence: for a fenced Markdown code block, its opening and closing fence lines.
    """

    text: str
    sep: str = "\n\n"
    code: bool = False
    fence: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class _Heading:
    level: int
    text: str


# Where a long paragraph may be cut, best first. Each entry is (probe, finder): the probe is a
# cheap forward scan for a character the gap needs; the finder finds the *last* gap in the text
# it is matched against (its greedy ``.*`` backtracks from the end), and its group 1 is the gap
# that is dropped between the two pieces.
_Gaps = tuple[tuple[re.Pattern[str], re.Pattern[str]], ...]
_SENTENCE_GAPS: _Gaps = (
    (re.compile(r"[.!?…]"), re.compile(r"(?s:.*)[.!?…][)\]\"'”’»]*(\s+)")),
    (re.compile(r"[。！？]"), re.compile(r"(?s:.*)[。！？][」』）)]*(\s*)")),
    # A line that starts a list item, a table row or a quote.
    (
        re.compile(r"\n"),
        re.compile(r"(?s:.*)(?<!\s)(\s*\n)(?=[ \t]*(?:[-*+][ \t]|\d{1,9}[.)][ \t]|\||>))"),
    ),
)
_LINE_GAPS: _Gaps = ((re.compile(r"\n"), re.compile(r"(?s:.*)(?<!\s)(\s*\n\s*)")),)
_WORD_GAPS: _Gaps = ((re.compile(r"\s"), re.compile(r"(?s:.*)(?<!\s)(\s+)")),)
_NON_SPACE = re.compile(r"\S")
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
_NEWLINES = re.compile(r"\r\n?")
_FENCE_LINE = re.compile(r"^[\s>]*(`{3,}|~{3,})\s*$")
_FRONT_MATTER_KEY = re.compile(r"^[A-Za-z_][\w-]*\s*:")

_ZERO_WIDTH_JOINERS = frozenset("\u200d\u200c\ufe0e\ufe0f")

_HTML_DROP = frozenset(
    {"script", "style", "nav", "footer", "noscript", "template", "head", "title", "iframe"}
)
_HTML_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4}
_HTML_MINOR_HEADINGS = frozenset({"h5", "h6"})
_HTML_BLOCKS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "center",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "form",
        "header",
        "hgroup",
        "hr",
        "html",
        "main",
        "p",
        "section",
        "summary",
    }
)


def split_markdown(text: str, *, max_chars: int = 1200) -> list[Section]:
    """Split a Markdown document into sections by headings, then by length.

    The first H1 is the document title and is not part of any heading path. Headings inside
    code fences, lists or quotes do not start sections. A leading YAML front-matter block is
    skipped. Section text is the Markdown source of the section.

    Args:
        text: the Markdown document.
        max_chars: the longest a section's text may be.

    Returns:
        The non-empty sections, in document order.

    Raises:
        ValueError: if ``max_chars`` is less than 1.
    """
    _check_max_chars(max_chars)
    text = _strip_front_matter(_normalize(text))
    lines = text.split("\n")
    tokens = MarkdownIt("commonmark").parse(text)

    headings: list[tuple[int, int, _Heading]] = []  # (first line, end line, heading)
    code: dict[int, tuple[int, Token]] = {}  # first line -> (end line, token)
    for index, token in enumerate(tokens):
        if token.map is None:
            continue
        start, end = token.map
        if token.type == "heading_open" and token.level == 0:
            inline = tokens[index + 1] if index + 1 < len(tokens) else None
            title = _plain_inline(inline) if inline is not None else ""
            headings.append((start, end, _Heading(int(token.tag[1]), title)))
        elif token.type in ("fence", "code_block"):
            code.setdefault(start, (end, token))

    events: list[_Heading | _Block] = []
    position = 0
    for start, end, heading in headings:
        events.extend(_markdown_blocks(lines, position, start, code))
        events.append(heading)
        position = end
    events.extend(_markdown_blocks(lines, position, len(lines), code))
    return _assemble(events, title=None, max_chars=max_chars)


def split_html(html: str, *, max_chars: int = 1200) -> list[Section]:
    """Split an HTML page into plain-text sections by its h1-h4 headings, then by length.

    Scripts, styles, navigation and footers are dropped. The title is the page's ``<title>``,
    or else its first ``<h1>``; the first ``<h1>`` is never part of a heading path. Paragraphs
    are separated by blank lines, list items become ``- item`` lines, table rows become
    ``cell | cell`` lines, and ``<pre>`` text keeps its whitespace.

    Args:
        html: the page.
        max_chars: the longest a section's text may be.

    Returns:
        The non-empty sections, in document order.

    Raises:
        ValueError: if ``max_chars`` is less than 1.
    """
    _check_max_chars(max_chars)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(_normalize(html), "html.parser")

    title: str | None = None
    title_tag = soup.find("title")
    if isinstance(title_tag, Tag):
        title = _collapse(title_tag.get_text(" ")) or None
    for dropped in soup.find_all(list(_HTML_DROP)):
        if not dropped.decomposed:  # a nested one goes with its parent
            dropped.decompose()
    return _assemble(list(_html_events(soup)), title=title, max_chars=max_chars)


def split_text(text: str, *, title: str | None, max_chars: int = 1200) -> list[Section]:
    """Split plain text into sections by length, at blank lines where possible.

    Args:
        text: the document.
        title: the document's title, copied to every section.
        max_chars: the longest a section's text may be.

    Returns:
        The non-empty sections, in document order, each with an empty heading path.

    Raises:
        ValueError: if ``max_chars`` is less than 1.
    """
    _check_max_chars(max_chars)
    blocks = [
        _Block(paragraph.rstrip())
        for paragraph in _BLANK_LINES.split(_normalize(text))
        if paragraph.strip()
    ]
    return [Section(title, (), chunk) for chunk in _pack(blocks, max_chars)]


# --- shared -------------------------------------------------------------------------------


def _check_max_chars(max_chars: int) -> None:
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")


def _normalize(text: str) -> str:
    """Unify line endings and drop NUL characters, which no store or renderer wants."""
    return _NEWLINES.sub("\n", text).replace("\x00", "")


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _assemble(
    events: list[_Heading | _Block], *, title: str | None, max_chars: int
) -> list[Section]:
    """Turn headings and blocks into sections.

    The first level-1 heading names the document (when ``title`` is not given) and is kept out
    of heading paths; every other heading replaces the headings at its level and below.
    """
    sections: list[Section] = []
    stack: list[_Heading] = []
    blocks: list[_Block] = []
    seen_h1 = False
    path: tuple[str, ...] = ()

    def flush() -> None:
        sections.extend(Section(title, path, chunk) for chunk in _pack(blocks, max_chars))
        blocks.clear()

    for event in events:
        if isinstance(event, _Block):
            blocks.append(event)
            continue
        flush()
        while stack and stack[-1].level >= event.level:
            stack.pop()
        if event.level == 1 and not seen_h1:
            seen_h1 = True
            if title is None and event.text:
                title = event.text
        elif event.text:
            stack.append(event)
        path = tuple(heading.text for heading in stack)
    flush()
    # The title may come from an H1 found after earlier sections were made.
    return [Section(title, s.heading_path, s.text) for s in sections]


def _pack(blocks: list[_Block], max_chars: int) -> list[str]:
    """Join blocks greedily into passages of at most ``max_chars``, splitting long blocks."""
    chunks: list[str] = []
    current = ""
    for block in blocks:
        pieces = [block] if len(block.text) <= max_chars else _split_block(block, max_chars)
        for piece in pieces:
            if current and len(current) + len(piece.sep) + len(piece.text) <= max_chars:
                current += piece.sep + piece.text
            else:
                if current:
                    chunks.append(current)
                current = piece.text
    if current:
        chunks.append(current)
    return [chunk for chunk in (c.strip("\n").rstrip() for c in chunks) if chunk.strip()]


def _split_block(block: _Block, max_chars: int) -> list[_Block]:
    """Split one block longer than ``max_chars`` into pieces that fit."""
    if not block.code:
        pieces = _cut(block.text, max_chars)
        first = _Block(pieces[0].text, sep=block.sep)
        return [first, *pieces[1:]]

    opening, closing = block.fence or ("", "")
    lines = block.text.split("\n")
    if block.fence is not None:
        lines = lines[1:]
        if lines and _FENCE_LINE.match(lines[-1]):
            lines = lines[:-1]
    overhead = len(opening) + len(closing) + 2 if block.fence is not None else 0
    budget = max_chars - overhead
    if budget < max(8, max_chars // 4):  # too small to be worth re-fencing
        opening, closing, budget = "", "", max_chars

    bodies: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        parts = [line] if len(line) <= budget else [p.text for p in _cut(line, budget)]
        for part in parts:
            added = len(part) + (1 if current else 0)
            if current and size + added > budget:
                bodies.append("\n".join(current))
                current, size = [], 0
                added = len(part)
            current.append(part)
            size += added
    if current:
        bodies.append("\n".join(current))

    return [
        _Block(
            f"{opening}\n{body}\n{closing}" if opening else body,
            sep=block.sep if index == 0 else "\n",
            code=True,
        )
        for index, body in enumerate(bodies)
    ]


def _cut(text: str, max_chars: int) -> list[_Block]:
    """Cut text into pieces of at most ``max_chars``, at the best boundaries available.

    Sentence ends (and list-item line starts) are used when they leave a piece at least a
    third full, then line breaks, then any whitespace; a run of text with no whitespace that is
    longer than ``max_chars`` is cut hard (never inside a combining sequence).
    """
    pieces: list[_Block] = []
    length = len(text)
    min_fill = max(1, max_chars // 3)
    first = _NON_SPACE.search(text)
    position = first.start() if first else length
    sep = ""
    while position < length:
        if length - position <= max_chars:
            pieces.append(_Block(text[position:].rstrip(), sep=sep))
            break
        end_limit = position + max_chars + 1
        gap = (
            _last_gap(_SENTENCE_GAPS, text, position, end_limit, min_fill)
            or _last_gap(_LINE_GAPS, text, position, end_limit, min_fill)
            or _last_gap(_WORD_GAPS, text, position, end_limit, 1)
        )
        if gap is not None:
            cut, resume = gap
            gap_text = text[cut:resume]
            next_sep = "\n\n" if "\n\n" in gap_text else "\n" if "\n" in gap_text else " "
            if not gap_text:
                next_sep = ""
        else:
            cut = resume = _hard_cut(text, position, max_chars)
            next_sep = ""
        piece = text[position:cut].rstrip()
        if piece:
            pieces.append(_Block(piece, sep=sep))
        sep = next_sep
        found = _NON_SPACE.search(text, resume)
        position = found.start() if found else length
    return pieces


def _last_gap(
    gaps: _Gaps, text: str, start: int, end: int, min_fill: int
) -> tuple[int, int] | None:
    """The last gap in ``text[start:end]``, if it leaves a first piece of ``min_fill`` or more."""
    best: tuple[int, int] | None = None
    for probe, finder in gaps:
        if probe.search(text, start + min_fill, end) is None:
            continue
        match = finder.match(text, start, end)
        if match is None:
            continue
        gap_start, gap_end = match.span(1)
        if gap_start - start >= min_fill and (best is None or gap_start > best[0]):
            best = (gap_start, gap_end)
    return best


def _hard_cut(text: str, start: int, max_chars: int) -> int:
    """Where to cut a run with no whitespace: as late as possible, not inside a grapheme."""
    cut = start + max_chars
    for _ in range(16):
        if cut - 1 <= start:
            break
        char, before = text[cut], text[cut - 1]
        if (
            unicodedata.combining(char)
            or char in _ZERO_WIDTH_JOINERS
            or before == "\u200d"
            or "\U0001f3fb" <= char <= "\U0001f3ff"  # skin-tone modifiers
        ):
            cut -= 1
        else:
            break
    return cut


# --- Markdown -----------------------------------------------------------------------------


def _strip_front_matter(text: str) -> str:
    """Remove a leading ``---`` YAML front-matter block, if the document has one."""
    if not text.startswith("---\n"):
        return text
    lines = text.split("\n")
    if len(lines) < 3 or not _FRONT_MATTER_KEY.match(lines[1]):
        return text
    for index in range(1, min(len(lines), 200)):
        if lines[index].rstrip() in ("---", "..."):
            return "\n".join(lines[index + 1 :])
    return text


def _plain_inline(token: Token) -> str:
    """The plain text of an inline token: markup, links and images reduced to their text."""
    if token.type != "inline":
        return ""
    parts: list[str] = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return _collapse("".join(parts))


def _markdown_blocks(
    lines: list[str], start: int, end: int, code: dict[int, tuple[int, Token]]
) -> Iterator[_Block]:
    """The paragraphs and code blocks in ``lines[start:end]``, with their separators."""
    found: list[tuple[str, bool, tuple[str, str] | None, bool]] = []  # text, code, fence, blank
    index = start
    paragraph_start: int | None = None
    blank_before = True
    while index < end:
        if index in code:
            if paragraph_start is not None:
                found.append(("\n".join(lines[paragraph_start:index]), False, None, blank_before))
                paragraph_start, blank_before = None, False
            code_end, token = code[index]
            code_end = min(code_end, end)
            code_lines = lines[index:code_end]
            while code_lines and not code_lines[-1].strip():
                code_lines.pop()
            fence: tuple[str, str] | None = None
            if token.type == "fence" and code_lines:
                closed = len(code_lines) > 1 and _FENCE_LINE.match(code_lines[-1]) is not None
                indent = code_lines[0][: len(code_lines[0]) - len(code_lines[0].lstrip())]
                fence = (code_lines[0], code_lines[-1] if closed else indent + token.markup)
            if code_lines:
                found.append(("\n".join(code_lines), True, fence, blank_before))
                blank_before = False
            index = code_end
            continue
        if not lines[index].strip():
            if paragraph_start is not None:
                found.append(("\n".join(lines[paragraph_start:index]), False, None, blank_before))
                paragraph_start = None
            blank_before = True
        elif paragraph_start is None:
            paragraph_start = index
        index += 1
    if paragraph_start is not None:
        found.append(("\n".join(lines[paragraph_start:end]), False, None, blank_before))
    for text, is_code, fence, blank in found:
        yield _Block(text.rstrip(), sep="\n\n" if blank else "\n", code=is_code, fence=fence)


# --- HTML ---------------------------------------------------------------------------------


def _html_events(soup: BeautifulSoup) -> Iterator[_Heading | _Block]:
    """Walk the page (iteratively, so deep nesting cannot overflow the stack)."""
    inline: list[str] = []

    def flush() -> _Block | None:
        text = "".join(inline)
        inline.clear()
        lines = (_collapse(line) for line in text.split("\n"))
        joined = "\n".join(line for line in lines if line)
        return _Block(joined) if joined else None

    # Each item is a node to visit, or None: "a block element ends here".
    stack: list[Tag | NavigableString | None] = [soup]
    while stack:
        node = stack.pop()
        if node is None or (isinstance(node, Tag) and _is_html_block(node)):
            done = flush()
            if done is not None:
                yield done
        if node is None:
            continue
        if isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):  # comments, doctypes, CDATA
                inline.append(str(node))
            continue
        name = node.name
        if name in _HTML_DROP:
            continue
        if name in _HTML_HEADINGS or name in _HTML_MINOR_HEADINGS or name in ("pre", "ul", "ol"):
            done = flush()
            if done is not None:
                yield done
        if name in _HTML_HEADINGS:
            yield _Heading(_HTML_HEADINGS[name], _inline_text(node))
        elif name in _HTML_MINOR_HEADINGS:
            text = _inline_text(node)
            if text:
                yield _Block(text)
        elif name == "pre":
            text = node.get_text().strip("\n").rstrip()
            if text.strip():
                yield _Block(text, code=True)
        elif name in ("ul", "ol"):
            text = _html_list(node)
            if text:
                yield _Block(text)
        elif name == "table":
            done = flush()
            if done is not None:
                yield done
            rows = [
                " | ".join(_inline_text(cell) for cell in row.find_all(["th", "td"]))
                for row in node.find_all("tr")
            ]
            text = "\n".join(row for row in rows if row.strip(" |"))
            if text:
                yield _Block(text)
        elif name == "br":
            inline.append("\n")
        else:
            if _is_html_block(node):
                stack.append(None)
            stack.extend(
                reversed([c for c in node.children if isinstance(c, (Tag, NavigableString))])
            )
    done = flush()
    if done is not None:
        yield done


def _is_html_block(tag: Tag) -> bool:
    return tag.name in _HTML_BLOCKS or tag.name in ("li", "tr")


def _inline_text(tag: Tag) -> str:
    """A tag's text on one line: inline markup joined as written, blocks set apart by spaces."""
    parts: list[str] = []
    for node in tag.descendants:
        if isinstance(node, Tag):
            if _is_html_block(node) or node.name in ("br", "td", "th", "li", "pre"):
                parts.append(" ")
        elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
            previous = node.previous_sibling
            if isinstance(previous, Tag) and _is_html_block(previous):
                parts.append(" ")
            parts.append(str(node))
    return _collapse("".join(parts))


def _html_list(root: Tag) -> str:
    """A list as ``- item`` lines, nested lists indented by two spaces."""
    lines: list[str] = []
    stack: list[tuple[Tag, int]] = [
        (item, 0) for item in reversed(root.find_all("li", recursive=False))
    ]
    while stack:
        item, depth = stack.pop()
        nested: list[Tag] = []
        parts: list[str] = []
        for child in item.children:
            if isinstance(child, Tag) and child.name in ("ul", "ol"):
                nested.append(child)
            elif isinstance(child, Tag):
                text = _inline_text(child)
                parts.append(f" {text} " if _is_html_block(child) else text)
            elif isinstance(child, NavigableString) and not isinstance(child, PreformattedString):
                parts.append(str(child))
        text = _collapse("".join(parts))
        if text:
            lines.append(f"{'  ' * depth}- {text}")
        for sub in reversed(nested):
            stack.extend((li, depth + 1) for li in reversed(sub.find_all("li", recursive=False)))
    return "\n".join(lines)
