"""Document loaders on real files written here with the libraries that make them (fpdf2,
pypdf, python-docx), and the failures that must be reported, not indexed."""

from __future__ import annotations

import os

import pytest

from llmhood.errors import LLMHoodError
from llmhood.rag.loaders import SUFFIXES, UnreadableFile, find_files, load_text

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Retrieval needs good chunks."]


def write_pdf(path, pages: list[str]) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 10, text)
    pdf.output(str(path))


def test_pdf_pages_are_joined_with_blank_lines(tmp_path):
    path = tmp_path / "doc.pdf"
    write_pdf(path, SENTENCES)
    text = load_text(path)
    assert [" ".join(page.split()) for page in text.split("\n\n")] == SENTENCES


def test_an_encrypted_pdf_is_reported(tmp_path):
    import pypdf

    write_pdf(tmp_path / "plain.pdf", SENTENCES)
    writer = pypdf.PdfWriter(clone_from=str(tmp_path / "plain.pdf"))
    writer.encrypt("secret")
    writer.write(str(tmp_path / "locked.pdf"))
    with pytest.raises(UnreadableFile, match=r"encrypted.*password"):
        load_text(tmp_path / "locked.pdf")


def test_a_pdf_encrypted_with_the_empty_password_opens(tmp_path):
    import pypdf

    write_pdf(tmp_path / "plain.pdf", SENTENCES)
    writer = pypdf.PdfWriter(clone_from=str(tmp_path / "plain.pdf"))
    writer.encrypt("", owner_password="owner")  # opens for reading, restricts editing
    writer.write(str(tmp_path / "restricted.pdf"))
    assert pypdf.PdfReader(str(tmp_path / "restricted.pdf")).is_encrypted
    assert SENTENCES[1] in " ".join(load_text(tmp_path / "restricted.pdf").split())


def test_corrupt_pdfs_are_reported(tmp_path):
    (tmp_path / "noise.pdf").write_bytes(os.urandom(2000))
    write_pdf(tmp_path / "whole.pdf", SENTENCES * 20)
    data = (tmp_path / "whole.pdf").read_bytes()
    (tmp_path / "cut.pdf").write_bytes(data[: len(data) // 3])
    for name in ("noise.pdf", "cut.pdf"):
        with pytest.raises(UnreadableFile, match=r"not a readable PDF|no extractable text"):
            load_text(tmp_path / name)


def test_a_pdf_without_text_needs_ocr(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50, style="F")  # a page with a drawing and no text, like a scan
    pdf.output(str(tmp_path / "scan.pdf"))
    with pytest.raises(UnreadableFile, match="OCR"):
        load_text(tmp_path / "scan.pdf")


def test_docx_headings_paragraphs_and_tables(tmp_path):
    import docx

    document = docx.Document()
    document.add_heading("Report", level=1)
    document.add_paragraph(SENTENCES[0])
    document.add_heading("Details", level=2)
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate([["name", "value"], ["alpha", "1"]]):
        for c, cell in enumerate(row):
            table.cell(r, c).text = cell
    document.add_paragraph(SENTENCES[1])
    document.save(str(tmp_path / "report.docx"))
    assert load_text(tmp_path / "report.docx") == (
        f"# Report\n\n{SENTENCES[0]}\n\n## Details\n\nname | value\nalpha | 1\n\n{SENTENCES[1]}"
    )


def test_a_corrupt_docx_is_reported(tmp_path):
    (tmp_path / "bad.docx").write_bytes(b"PK\x03\x04 not really a zip archive")
    with pytest.raises(UnreadableFile, match=r"not a readable .docx"):
        load_text(tmp_path / "bad.docx")


HTML = """<!DOCTYPE html>
<html><head><title>Ignored title</title><style>p { color: red }</style></head>
<body>
<script>var hidden = "not text";</script>
<h1>Fish &amp; Chips</h1>
<p>A   classic
   British dish &mdash; served <b>hot</b>.</p>
<h3>Steps</h3>
<ul><li>Cut potatoes<ul><li>thick</li><li>even</li></ul></li><li>Fry &lt;twice&gt;</li></ul>
<ol><li>Serve</li></ol>
<pre>keep   this
  as is</pre>
<p>Line one<br>line two</p>
</body></html>"""


def test_html_keeps_structure_and_drops_code(tmp_path):
    (tmp_path / "page.html").write_text(HTML, encoding="utf-8")
    assert load_text(tmp_path / "page.html") == (
        "# Fish & Chips\n\n"
        "A classic British dish \u2014 served hot.\n\n"
        "### Steps\n\n"
        "- Cut potatoes\n  - thick\n  - even\n- Fry <twice>\n\n"
        "1. Serve\n\n"
        "keep   this\n  as is\n\n"
        "Line one\nline two"
    )


def test_a_binary_file_named_txt_is_reported(tmp_path):
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(UnreadableFile, match="binary"):
        load_text(tmp_path / "image.txt")


def test_utf8_with_a_bom_and_crlf_line_endings(tmp_path):
    (tmp_path / "notes.md").write_bytes("\ufeff# Título\r\n\r\nçà va\rok".encode())
    assert load_text(tmp_path / "notes.md") == "# Título\n\nçà va\nok"


def test_latin1_is_reported_not_guessed(tmp_path):
    (tmp_path / "old.txt").write_bytes("café crème".encode("latin-1"))
    with pytest.raises(UnreadableFile, match=r"not UTF-8.*0xe9.*iconv"):
        load_text(tmp_path / "old.txt")


def test_what_cannot_be_read_is_reported(tmp_path):
    (tmp_path / "folder.txt").mkdir()
    (tmp_path / "gone.txt").symlink_to(tmp_path / "missing.txt")
    for name in ("folder.txt", "gone.txt", "never-written.pdf"):
        with pytest.raises(UnreadableFile, match="Cannot read"):
            load_text(tmp_path / name)
    assert issubclass(UnreadableFile, LLMHoodError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_a_file_without_read_permission_is_reported(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("hidden", encoding="utf-8")
    path.chmod(0)
    with pytest.raises(UnreadableFile, match="Cannot read"):
        load_text(path)


def test_find_files(tmp_path):
    names = ["a.txt", "B.MD", "sub/c.html", "sub/deep/d.PDF", "e.docx", "f.htm"]
    ignored = [".hidden.txt", ".git/config.md", "sub/.cache/x.txt", "notes.rtf", "README"]
    for name in names + ignored:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x", encoding="utf-8")
    (tmp_path / "dir.txt").mkdir()  # a folder with a document's name is not a document
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")  # links to files are followed
    (tmp_path / "sub" / "loop").symlink_to(tmp_path)  # links to folders are not
    (tmp_path / "broken.md").symlink_to(tmp_path / "nowhere.md")
    found = find_files(tmp_path)
    assert found == sorted(tmp_path / name for name in [*names, "link.txt"])
    assert {path.suffix.lower() for path in found} <= SUFFIXES
