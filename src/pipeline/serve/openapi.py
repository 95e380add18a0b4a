"""The OpenAPI components of a package's HTTP contract: the request, the response, errors.

The request's models come from the same pydantic ``TypeAdapter`` that validates bodies
(``Contract.request_schema``), so the request the documentation shows is exactly the request
the server accepts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.data import cells

if TYPE_CHECKING:
    from pipeline.serve.contract import Contract


def components(contract: Contract) -> dict[str, Any]:
    """OpenAPI ``components.schemas`` for the request, the response and errors."""
    doc = contract.request_schema()
    schemas: dict[str, Any] = dict(doc.pop("$defs", {}))
    schemas["PredictRequest"] = doc
    schemas["Prediction"] = _prediction_schema(contract)
    schemas["PredictResponse"] = {
        "title": "PredictResponse",
        "type": "object",
        "properties": {
            "predictions": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Prediction"},
                "description": "One entry per record, in order",
            },
            "model": {"type": "string"},
            "version": {"type": "string"},
            "package_id": {"type": "string"},
            "release": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "ignored_columns": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Keys of the records that the model does not use (the first "
                f"{cells.SHOWN_COLUMNS} in order, each cut to {cells.SHOWN_CHARS} characters)",
            },
            "ignored_columns_count": {
                "type": "integer",
                "description": "How many keys of the records the model does not use",
            },
            "misspelt_categories": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                },
                "description": "Per column, values the model never saw that are a known one "
                "but for case or surrounding spaces (given: known): they were scored as "
                "unknown categories; categories match exactly",
            },
        },
        "required": ["predictions", "model", "version", "package_id", "release"],
    }
    schemas["ErrorDetail"] = {
        "title": "ErrorDetail",
        "type": "object",
        "properties": {
            "record": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "column": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "type": {"type": "string"},
            "message": {"type": "string"},
            "input": {},
        },
        "required": ["record", "column", "type", "message"],
    }
    schemas["Error"] = {
        "title": "Error",
        "type": "object",
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "detail": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorDetail"}},
        },
        "required": ["error", "message"],
    }
    return schemas


def _prediction_schema(contract: Contract) -> dict[str, Any]:
    number = {"anyOf": [{"type": "number"}, {"type": "null"}]}
    props: dict[str, Any] = {}
    if contract.id_column:
        props[contract.id_column] = {"description": "Copied from the record's id column"}
    if contract.schema.task == "regression":
        props["prediction"] = {**number, "description": f"Predicted {contract.schema.target}"}
    else:
        props["prediction"] = {
            "anyOf": [{"type": "string", "enum": contract.classes}, {"type": "null"}],
            "description": f"Predicted class of {contract.schema.target}",
        }
        for name in contract.classes:
            props[f"probability_{name}"] = {**number, "description": f"P({name})"}
    if contract.error_column:
        props["error"] = {"type": "string", "description": "Why this row has no prediction"}
    return {
        "title": "Prediction",
        "type": "object",
        "properties": props,
        "required": list(props),
    }
