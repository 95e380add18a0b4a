"""Reading a dataset file (CSV or Parquet) into a pandas frame through pyarrow.

Every failure becomes a ``DataError`` naming the file and, where it applies, the column and row.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import DataError
from pipeline.settings import DataSettings

if TYPE_CHECKING:
    import pandas as pd

_GZIP = b"\x1f\x8b"
_PARQUET = b"PAR1"


def detect_format(path: Path, declared: str = "auto") -> str:
    """``csv`` or ``parquet``: the declared format, else the magic bytes, else the suffix."""
    if declared != "auto":
        return declared
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise DataError(f"dataset file {path} cannot be read: {exc.strerror}") from exc
    if head == _PARQUET:
        return "parquet"
    if head[:2] == _GZIP and not path.name.endswith(".gz"):
        raise DataError(
            f"dataset file {path} is gzip-compressed but not named .gz: decompress it or rename it "
            "to end in .csv.gz"
        )
    if path.suffix.lower() in (".parquet", ".pq"):
        raise DataError(
            f"dataset file {path} is named .parquet but is not Parquet (no PAR1 header)"
        )
    return "csv"


def _first_line(exc: BaseException) -> str:
    """The first line of a library's message, with unprintable bytes escaped."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)[:300]


def read_table(path: Path, data: DataSettings, *, label: str | None = None) -> pd.DataFrame:
    """Read ``path`` with ``data``'s format, delimiter and missing markers.

    ``label`` is how the file is named in errors (the URI the user gave). Raises ``DataError``
    for empty, unreadable or malformed files, duplicate column names, or no rows.
    """
    import pyarrow as pa

    shown = label or str(path)
    fmt = detect_format(path, data.format)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(delimiter=data.delimiter),
                convert_options=pacsv.ConvertOptions(
                    null_values=data.missing_values,
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                ),
            )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        message = _first_line(exc)
        if "Empty CSV file" in message:
            raise DataError(
                f"dataset {shown} is empty: expected a header line and at least one row; check "
                "PIPELINE_DATA__SOURCE"
            ) from exc
        raise DataError(
            f"dataset {shown} cannot be parsed as {fmt}: {message}; check that the file is "
            "CSV or Parquet, and PIPELINE_DATA__FORMAT / PIPELINE_DATA__DELIMITER"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"dataset {shown} is not valid UTF-8 text: re-encode it as UTF-8") from exc
    except OSError as exc:
        raise DataError(
            f"dataset {shown} cannot be read: {_first_line(exc)}; check the file and its "
            "permissions"
        ) from exc

    names = table.column_names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(
            f"dataset {shown} has duplicate column names {dupes}: give every column a unique name"
        )
    if table.num_rows == 0:
        raise DataError(
            f"dataset {shown} has a header but no rows: expected at least one row; check "
            "PIPELINE_DATA__SOURCE"
        )
    for field in table.schema:
        # pyarrow reads text that is not valid UTF-8 as raw bytes rather than failing.
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            raise DataError(
                f"dataset {shown} is not valid UTF-8 text (column '{field.name}'): re-encode the "
                "file as UTF-8"
            )
    return table.to_pandas()
