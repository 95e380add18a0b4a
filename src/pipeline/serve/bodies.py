"""JSON request bodies to records: msgspec's typed decoder first, pydantic to explain a refusal.

A validated record is a tuple of its values in the contract's ``fields`` order: the model's
input columns, then the id column when it is not one of them. msgspec decodes a body straight
into such records, about 5x faster than pydantic for 100 records of 80 columns, and accepts
strictly less: whatever it accepts, pydantic accepts with the same values (JSON numbers as
floats, no NaN or infinity, strings and booleans only as themselves, null for missing, the last
of duplicate keys). Everything it refuses, a record carrying keys the model does not use
included, goes to pydantic, which either accepts it too or names every problem for the 422.
"""

from __future__ import annotations

from typing import Any

import msgspec

# The JSON type of each kind of input column (a column of another kind is sent as text).
_TYPES: dict[str, Any] = {"numeric": float | None, "boolean": bool | None}


class FastRecords:
    """msgspec's decoder for ``{"records": [...]}`` bodies whose records hold exactly the
    model's input columns (and the id column, optional, when it is not one of them)."""

    def __init__(self, kinds: dict[str, str], id_column: str | None) -> None:
        spec: list[Any] = [
            (f"f{i}", _TYPES.get(kind, str | None)) for i, kind in enumerate(kinds.values())
        ]
        names = list(kinds)
        self.loose_id = bool(id_column) and id_column not in kinds
        if self.loose_id:  # copied through as sent, whatever its type; it may be absent
            spec.append((f"f{len(names)}", Any, msgspec.UNSET))
            names.append(str(id_column))
        rename = {f"f{i}": name for i, name in enumerate(names)}
        record: Any = msgspec.defstruct("Record", spec, rename=rename, forbid_unknown_fields=True)
        request = [("records", list[record])]
        body = msgspec.defstruct("PredictRequest", request, forbid_unknown_fields=True)
        self.decoder = msgspec.json.Decoder(body)

    def __call__(self, body: bytes) -> list[tuple[Any, ...]] | None:
        """The body's records as tuples, or None when msgspec does not accept it."""
        try:
            decoded = self.decoder.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError included; a string
            return None  # that is not UTF-8 raises the latter: pydantic's 400 names its place
        rows = [msgspec.structs.astuple(r) for r in decoded.records]  # type: ignore[attr-defined]
        if self.loose_id:
            ids = [r[-1] for r in rows]
            if any(isinstance(v, dict | list) for v in ids):
                return None  # pydantic's path refuses it with the record named
            if any(v is msgspec.UNSET for v in ids):
                rows = [(*r[:-1], None) if r[-1] is msgspec.UNSET else r for r in rows]
        return rows


def as_rows(records: list[dict[str, Any]], fields: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """Records validated by pydantic (dicts) as tuples in ``fields`` order (an absent id:
    None)."""
    return [tuple(r.get(f) for f in fields) for r in records]
