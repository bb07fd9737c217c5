"""Recognise a binary file handed over as text (compressed, an archive, an image, a model file, ...) by its first
bytes, so the error says what the file is and what to do, instead of suggesting a text re-encoding."""

from __future__ import annotations

# Magic numbers at the start of a file: (prefix, what it is, what to do).
MAGIC = (
    (b"\x1f\x8b", "a gzip-compressed file", "decompress it first (gunzip, or zcat file.gz > file.txt)"),
    (b"BZh", "a bzip2-compressed file", "decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file", "decompress it first (unxz)"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file", "decompress it first (unzstd)"),
    (b"PK\x03\x04", "a zip archive (or a .docx/.xlsx/.npz file)", "extract the text files and give those"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive", "extract the text files and give those"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image", "give text files here; images go to an image dataset"),
    (b"\xff\xd8\xff", "a JPEG image", "give text files here; images go to an image dataset"),
    (b"GIF8", "a GIF image", "give text files here; images go to an image dataset"),
    (b"RIFF", "a RIFF file (WAV audio or WebP image)", "give text files here; audio goes to an audio dataset"),
    (b"%PDF", "a PDF document", "extract its text first (pdftotext file.pdf)"),
    (b"PAR1", "a Parquet file", "read it with dataset=hf dataset.hf_name=parquet dataset.files=[...]"),
    (b"SQLite format 3\x00", "an SQLite database", "export the text to a file first"),
    (b"\x93NUMPY", "a NumPy array file", "give text files here"),
    (b"\x7fELF", "an executable program", "point dataset.files at the data, not at a program"),
    (b"\x80\x02", "a Python pickle", "give text files here (ptcli never unpickles data)"),
    (b"\x80\x03", "a Python pickle", "give text files here (ptcli never unpickles data)"),
    (b"\x80\x04", "a Python pickle", "give text files here (ptcli never unpickles data)"),
    (b"\x80\x05", "a Python pickle", "give text files here (ptcli never unpickles data)"),
)


def sniff(head: bytes) -> tuple[str, str] | None:
    """(what the file is, what to do) when ``head`` (its first bytes) shows a binary format; None for text."""
    for magic, what, fix in MAGIC:
        if head.startswith(magic):
            return what, fix
    if b"\x00" in head[:4096] and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "binary data (it holds NUL bytes, which text never does)", "give a UTF-8 text file"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 encoded", "convert it to UTF-8 (iconv -f utf-16 -t utf-8)"
    return None
