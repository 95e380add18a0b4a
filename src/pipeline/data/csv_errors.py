"""Why pyarrow could not parse a CSV file, said in the file's terms: the line that is ragged,
the delimiter the header looks written with, a quote never closed, a line longer than the
parser's block, a header without rows. Used by training's reader and by `pipeline predict`'s."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.data.cells import printable
from pipeline.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

_BOM = b"\xef\xbb\xbf"
# pyarrow's default block: a line longer than this cannot be parsed (it "straddles" two blocks).
BLOCK_BYTES = 1 << 20


def first_line(exc: BaseException) -> str:
    """The first line of a library's message, with unprintable bytes escaped."""
    text = str(exc).strip().splitlines()
    return printable(text[0] if text else type(exc).__name__, 300)


def is_blank(path: Path) -> bool:
    """True for a file that holds nothing but whitespace (and perhaps a BOM)."""
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 16):
            if chunk.removeprefix(_BOM).strip():
                return False
    return True


def not_utf8(path: Path, label: str, delimiter: str) -> DataError:
    """The error for a CSV file that is not UTF-8, naming the first bad byte's line and column
    (``label ... is not valid UTF-8 text`` alone left a user searching a million rows). A
    second, serial pass, run only once the read has failed; a quoted field across lines
    makes the line, not the row, the one named."""
    import csv
    import gzip
    import io

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    where = ""
    with opener(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
                continue
            except UnicodeDecodeError:
                pass
            text = raw.decode("utf-8", errors="replace")
            cells = next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
            bad = next((i for i, cell in enumerate(cells) if "\ufffd" in cell), None)
            with opener(path, "rt", encoding="utf-8-sig", errors="replace") as head:
                names = next(csv.reader(head, delimiter=delimiter), [])
            column = f"column '{names[bad]}', " if bad is not None and bad < len(names) else ""
            where = f" ({column}line {number})"
            break
    return DataError(f"{label} is not valid UTF-8 text{where}: re-encode it as UTF-8")


_RAGGED = re.compile(r"Expected (\d+) columns, got (\d+): (.*)", re.DOTALL)


# pyarrow shows at most about 100 characters of a malformed row, then this.
_CUT = " ..."


def find_line(path: Path, text: str, fields: int | None = None, delimiter: str = ",") -> int | None:
    """The 1-based number of the first line of ``path`` that starts with ``text`` (and has
    ``fields`` fields, when given and such a line exists), else None.

    pyarrow names a malformed row by its text only, cut short with " ..." past about 100
    characters (the row's line went unnamed then), so its line is found by a second, serial
    pass over the file, run only once a parse has already failed.
    """
    needle = text.removesuffix(_CUT).encode("utf-8", errors="replace")[:200]
    if not needle:
        return None
    first = None
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.removeprefix(_BOM if number == 1 else b"").startswith(needle):
                continue
            if fields is None or _fields(line, delimiter) == fields:
                return number
            first = first or number  # a line with the same start: the next may be the one
    return first


def _fields(line: bytes, delimiter: str) -> int:
    """How many fields one line holds, as CSV."""
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    return len(next(csv.reader([text], delimiter=delimiter), []))


def _ragged_error(
    label: str, message: str, path: Path, delimiter: str, advice: str | None
) -> DataError | None:
    """The error for a row whose field count differs from the header's, naming its line."""
    match = _RAGGED.search(message)
    if match is None:
        return None
    with path.open("rb") as fh:
        head = fh.readline(64).removeprefix(_BOM).strip()
    if re.fullmatch(rb"sep=.", head):  # Excel's hint line: the header is line 2
        return DataError(
            f"{label} starts with Excel's {head.decode(errors='replace')!r} line, which is not "
            "the header: remove line 1 (Excel writes it to name the delimiter)"
        )
    expected, actual, text = match.groups()
    first = text.splitlines()[0] if text.splitlines() else text
    number = find_line(path, first, int(actual), delimiter)
    where = f"line {number}" if number is not None else "a line"
    shown = printable(first, 80)
    if '"' in text and ("\n" in text or "\r" in text):
        return DataError(
            f"{label} has an unterminated quote on {where} ({shown!r}): the quoted field runs "
            "on through the following lines; close the quote, or escape a literal quote by "
            "doubling it"
        )
    if expected == "1" and advice is None:  # `a;b;c` over rows of `1,5;2,0`: decimal commas
        with path.open("rb") as fh:
            header = fh.readline(1 << 20).removeprefix(_BOM).decode("utf-8", errors="replace")
        hint = delimiter_hint([header.strip()])
        if hint:
            return DataError(
                f"{label} has {actual} fields on {where} where the header has 1: "
                f"{hint.removesuffix('; ')}, and write decimal commas as points (its lines "
                f"split on {delimiter!r} inside values: decimal commas?)"
            )
    advice = advice or f"check PIPELINE_DATA__DELIMITER (now {delimiter!r})"
    return DataError(
        f"{label} has {actual} fields on {where} where the header has {expected} ({shown!r}): "
        f"fix that line, quote any field that contains the delimiter, or {advice}"
    )


def excel_sep_line(columns: list[str]) -> bool:
    """Whether a header read as ``columns`` is Excel's ``sep=,`` hint line, not the header."""
    return 1 <= len(columns) <= 2 and re.fullmatch(r"sep=.?", columns[0].strip()) is not None


def delimiter_hint(columns: list[str], read_with: str | None = None) -> str:
    """Advice when a lone header column holds another delimiter (``;``, tab, ``|`` or ``,``).

    The column name cannot contain the delimiter the file was read with, so any of the others
    in it means the file was written with that one. ``read_with``: the delimiter a model's
    inputs must have (`pipeline predict`), which no setting changes.
    """
    if len(columns) != 1:
        return ""
    for other, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'"), (",", "','")):
        if other in columns[0]:
            shown = "\\t" if other == "\t" else other
            if read_with is not None:
                return (
                    f"the header looks delimited by {name}, but this model reads CSV delimited "
                    f"by {read_with!r}, as its training data was: convert the file; "
                )
            return f"the header looks delimited by {name}: set PIPELINE_DATA__DELIMITER='{shown}'; "
    return ""


def unterminated_quote(path: Path, quote: str = '"') -> bool:
    """True when ``path`` holds an odd number of quote characters (a quote never closed).

    In valid CSV quotes come in pairs (a literal quote is written twice), so an odd count means
    a quoted field ran on to the end of the file: pyarrow accepts that silently, swallowing
    every later line into one value.
    """
    mark = quote.encode()
    count = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            count += chunk.count(mark)
    return count % 2 == 1


def last_row_swallowed(table: pa.Table | pa.RecordBatch, path: Path) -> str | None:
    """The column of the last row whose text ran on past a line end through an open quote."""
    import pyarrow as pa

    if table.num_rows == 0:
        return None
    for name, column in zip(table.column_names, table.columns, strict=True):
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        value = column[table.num_rows - 1].as_py()
        if isinstance(value, str) and ("\n" in value or "\r" in value):
            return str(name) if unterminated_quote(path) else None
    return None


def parse_error(
    exc: BaseException,
    path: Path,
    label: str,
    delimiter: str,
    advice: str | None = None,
    block: int = BLOCK_BYTES,
) -> DataError:
    """The project's error for pyarrow's failure to parse ``path`` as CSV.

    ``advice`` says where the delimiter comes from (by default: the setting to change);
    ``block``: the parser's block size, the longest line it can read.
    """
    message = first_line(exc)
    if "Empty CSV file" in message and is_blank(path):
        return DataError(
            f"{label} is empty: expected a header line and at least one row; check "
            "PIPELINE_DATA__SOURCE"
        )
    if "Empty CSV file" in message and _one_unended_line(path, block):
        # pyarrow cannot tell where a first line without a newline ends: a header, no rows.
        return DataError(
            f"{label} has no rows, only a header line: expected a header line and at least one "
            "row; check that the file is complete"
        )
    if "Empty CSV file" in message or "straddl" in message:
        # The first line, or a later one, does not fit one parser block: not a line-based table.
        return DataError(
            f"{label} has a line longer than {block >> 20} MiB: expected CSV with one row "
            "per line; check that the file is CSV (not JSON or a binary format)"
        )
    ragged = _ragged_error(label, str(exc), path, delimiter, advice)
    if ragged is not None:
        return ragged
    if "UTF8" in message:
        return not_utf8(path, label, delimiter)
    advice = advice or "PIPELINE_DATA__FORMAT / PIPELINE_DATA__DELIMITER"
    return DataError(
        f"{label} cannot be parsed as CSV: {message}; check that the file is CSV, and {advice}"
    )


def _one_unended_line(path: Path, block: int) -> bool:
    """Whether ``path`` is one line shorter than ``block`` without a line break (gzip read
    through): a header without rows."""
    import gzip

    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as fh:
            head = fh.read(block)
    except (OSError, EOFError):
        return False
    return len(head) < block and b"\n" not in head and b"\r" not in head
