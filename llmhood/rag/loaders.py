"""Document loaders: a file on disk to the text that is chunked, indexed and cited.

    .txt .md -> UTF-8 text as is        .html .htm -> text with the page's structure
    .pdf -> pypdf, page by page         .docx -> python-docx paragraphs and tables

Every loader returns plain text in which structure survives as the chunker reads it:
paragraphs are separated by blank lines and headings are markdown `#` lines, so that an
HTML `<h2>`, a Word "Heading 2" and a markdown `##` all start a section. Line endings are
normalised to `\\n` and nothing else is rewritten, because chunk offsets refer to this text.

Text files must be UTF-8 (a byte-order mark is dropped). A file in another encoding, e.g.
latin-1, is reported rather than guessed at: a wrong guess would index mojibake silently.
Any file that cannot be turned into text (binary, encrypted, corrupt, scanned without a text
layer, unreadable) raises `UnreadableFile`, which the ingest reports and skips.
"""

from __future__ import annotations

import io
import os
import re
from html.parser import HTMLParser
from pathlib import Path

from llmhood.errors import LLMHoodError

SUFFIXES = frozenset({".txt", ".md", ".html", ".htm", ".pdf", ".docx"})


class UnreadableFile(LLMHoodError):
    """A file that cannot be turned into text; the message says why and what to do."""


def load_text(path: Path) -> str:
    """The text of a document, with `\\n` line endings; raises `UnreadableFile`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UnreadableFile(
            f"{path} is not a document llmhood can read; use one of {', '.join(sorted(SUFFIXES))}."
        )
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UnreadableFile(
            f"Cannot read {path}: {error.strerror or error}. Check that it is a file you may read."
        ) from None
    if suffix == ".pdf":
        text = _pdf_text(path, data)
    elif suffix == ".docx":
        text = _docx_text(path, data)
    elif suffix in (".html", ".htm"):
        text = _html_text(_decode(path, data))
    else:
        text = _decode(path, data)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def find_files(root: Path) -> list[Path]:
    """Every loadable file under `root`, sorted; hidden files and folders (a name starting
    with '.') are left out. Links to files are followed, links to folders are not, so a link
    cannot make the walk loop."""
    found = []
    for folder, subfolders, names in os.walk(root):  # followlinks=False
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in names:
            path = Path(folder) / name
            if not name.startswith(".") and path.suffix.lower() in SUFFIXES and path.is_file():
                found.append(path)
    return sorted(found)


def _decode(path: Path, data: bytes) -> str:
    if b"\0" in data:
        raise UnreadableFile(
            f"{path} is a binary file (it contains NUL bytes), not text; rename it or move it "
            "out of the documents folder."
        )
    try:
        return data.decode("utf-8-sig")  # plain UTF-8, and a leading byte-order mark dropped
    except UnicodeDecodeError as error:
        raise UnreadableFile(
            f"{path} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8`."
        ) from None


def _pdf_text(path: Path, data: bytes) -> str:
    import pypdf

    # pypdf fails on a malformed file in many ways (PdfReadError, ValueError, KeyError, ...),
    # and any failure while parsing means the same thing to the user: the file is damaged.
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):  # many open with the empty password
            raise UnreadableFile(
                f"{path} is an encrypted PDF that needs a password; save a copy without the "
                "password (e.g. `qpdf --decrypt --password=... in.pdf out.pdf`) and ingest that."
            )
        pages = [page.extract_text() for page in reader.pages]
    except UnreadableFile:
        raise
    except Exception as error:
        raise UnreadableFile(
            f"{path} is not a readable PDF ({type(error).__name__}: {error}); it may be damaged "
            "or truncated: open it in a PDF viewer, save it again, and re-ingest."
        ) from None
    text = "\n\n".join(page.strip("\n") for page in pages if page.strip())
    if not text:
        raise UnreadableFile(
            f"{path} has no extractable text: it is probably a scan (images of pages). Run OCR "
            "on it first, e.g. `ocrmypdf in.pdf out.pdf`."
        )
    return text


_HEADING_STYLE = re.compile(r"heading (\d)", re.IGNORECASE)


def _docx_text(path: Path, data: bytes) -> str:
    import docx
    from docx.table import Table

    try:  # a damaged package fails as BadZipFile, KeyError, XML errors, ...: all mean damaged
        blocks = list(docx.Document(io.BytesIO(data)).iter_inner_content())
    except Exception as error:
        raise UnreadableFile(
            f"{path} is not a readable .docx file ({type(error).__name__}: {error}); open it in "
            "a word processor and save it again as .docx."
        ) from None
    parts = []
    for block in blocks:
        if isinstance(block, Table):
            parts.append(_docx_table(block))
        elif block.text.strip():
            parts.append(_docx_heading_marks(block) + block.text)
    return "\n\n".join(part for part in parts if part)


def _docx_heading_marks(paragraph) -> str:
    name = paragraph.style.name if paragraph.style is not None else ""
    if name == "Title":
        return "# "
    heading = _HEADING_STYLE.fullmatch(name)
    return "#" * min(int(heading.group(1)), 6) + " " if heading else ""


def _docx_table(table) -> str:
    """One line per row, cells separated by " | "; a merged cell is written once."""
    lines = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) not in seen:  # a merged cell repeats across the row's grid
                seen.add(id(cell._tc))
                cells.append(" ".join(cell.text.split()))
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def _html_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return parser.text()


class _HtmlText(HTMLParser):
    """Visible text of a page. Paragraph-like elements become blank-line-separated blocks,
    line-like ones (list items, rows, <br>) line breaks, <hN> a line of N '#'; whitespace
    runs collapse to one space as a browser renders them, except inside <pre>."""

    SKIP = frozenset({"script", "style", "head", "template", "noscript"})
    BLOCKS = frozenset(
        {"p", "blockquote", "pre", "table", "section", "article", "header", "footer", "nav"}
        | {"aside", "main", "figure", "form", "fieldset", "details", "address", "hr"}
    )
    LINES = frozenset({"div", "li", "tr", "dt", "dd", "figcaption", "summary", "caption", "br"})
    LISTS = frozenset({"ul", "ol", "dl"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # entities arrive unescaped in handle_data
        self.lines: list[str] = []  # finished lines; "" is a blank line
        self.line: list[str] = []  # pieces of the line being read
        self.prefix = ""  # "## " or "  - " in front of the line being read
        self.skipping = 0
        self.pre = 0
        self.lists: list[list] = []  # open lists: [tag, number of the last item]

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "body":
            self.skipping = 0  # a <head> that was never closed ends here
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._break(blank=True)
            self.prefix = "#" * int(tag[1]) + " "
        elif tag in self.LISTS:
            self._break(blank=not self.lists)
            self.lists.append([tag, 0])
        elif tag == "li":
            self._break(blank=False)
            self.prefix = self._bullet()
        elif tag in self.BLOCKS or tag in self.LINES:
            self._break(blank=tag in self.BLOCKS)
            if tag == "pre":
                self.pre += 1
        elif tag in ("td", "th"):
            self.line.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._break(blank=True)
        elif tag in self.LISTS:
            if self.lists:
                self.lists.pop()
            self._break(blank=not self.lists)
        elif tag in self.BLOCKS or tag in self.LINES:
            self._break(blank=tag in self.BLOCKS)
            if tag == "pre" and self.pre:
                self.pre -= 1

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.line.append(data)

    def text(self) -> str:
        self._break(blank=True)
        return "\n".join(self.lines).strip("\n")

    def _bullet(self) -> str:
        if not self.lists:
            return "- "
        current = self.lists[-1]
        current[1] += 1
        mark = f"{current[1]}." if current[0] == "ol" else "-"
        return "  " * (len(self.lists) - 1) + mark + " "

    def _break(self, blank: bool) -> None:
        """End the line being read; with `blank`, also end the paragraph."""
        text = "".join(self.line)
        text = text.strip("\n") if self.pre else " ".join(text.split())
        if text:
            self.lines.append(self.prefix + text)
        self.line, self.prefix = [], ""
        if blank and self.lines and self.lines[-1]:
            self.lines.append("")
