"""Property-based fuzzing of the serve API from its own OpenAPI document (schemathesis)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from pipeline.serve.app import ServeState, create_app
from pipeline.serve.server import load_release
from pipeline.settings import ServeSettings, load

# Bounded, so the whole module runs in well under a minute on a busy 2-core machine.
EXAMPLES = 25
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible
    # 79-column records are big examples, and the body filters drop about half the cases.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)


def _schema(release: dict[str, Any]) -> Any:
    """The app serving ``release``'s package, loaded as `pipeline serve` loads it."""
    loaded = load_release(load(release["env"]).settings, None, release["package"])
    app = create_app(ServeState(ServeSettings(max_body_bytes=1 << 20), loaded=loaded))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _body(operation: Any, mode: GenerationMode, media_type: str) -> Any:
    """Cases of ``operation`` whose body is of ``media_type``."""
    return operation.as_strategy(mode).filter(lambda case: case.media_type == media_type)


def _fuzz(strategy: Any, checks: list[Any]) -> list[tuple[int, int]]:
    """Run ``checks`` on every case ``strategy`` generates: (status, predictions) of each call."""
    calls: list[tuple[int, int]] = []

    @given(case=strategy)
    @FUZZ
    def run(case: Any) -> None:
        response = case.call_and_validate(checks=checks)
        assert response.status_code < 500
        body = response.json() if response.status_code == 200 else {}
        calls.append((response.status_code, len(body.get("predictions", []))))

    run()
    return calls


# Every response: no 5xx, and it matches the documented schema, status codes and media type.
ALWAYS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@pytest.fixture(scope="module")
def house_schema(house: dict[str, Any]) -> Any:
    """house-prices: 79 columns, regression, the Id column copied through."""
    return _schema(house)


@pytest.fixture(scope="module")
def titanic_schema(titanic: dict[str, Any]) -> Any:
    """Titanic: binary classification with probabilities."""
    return _schema(titanic)


def test_valid_json_records_are_always_predicted(house_schema: Any) -> None:
    """Any body the document allows gets 200 and a response matching the documented model."""
    operation = house_schema["/v1/predict"]["POST"]
    strategy = _body(operation, GenerationMode.POSITIVE, "application/json")
    calls = _fuzz(strategy, [*ALWAYS, positive_data_acceptance])
    assert len(calls) >= EXAMPLES // 2
    assert sum(rows for _, rows in calls) >= EXAMPLES  # records were predicted, not just []


def test_invalid_json_records_are_refused_with_4xx(house_schema: Any) -> None:
    """Any body the document forbids gets a documented 4xx, never a 5xx or a 200."""
    operation = house_schema["/v1/predict"]["POST"]
    strategy = _body(operation, GenerationMode.NEGATIVE, "application/json")
    calls = _fuzz(strategy, [*ALWAYS, negative_data_rejection])
    assert len(calls) >= EXAMPLES // 2 and all(400 <= status < 500 for status, _ in calls)


def test_arbitrary_csv_bodies_never_fail_with_5xx(house_schema: Any) -> None:
    """Random text sent as text/csv is predicted or refused with a 4xx (it is only a string)."""
    operation = house_schema["/v1/predict"]["POST"]
    strategy = _body(operation, GenerationMode.POSITIVE, "text/csv")
    assert len(_fuzz(strategy, ALWAYS)) >= EXAMPLES // 2


def test_every_titanic_operation_answers_as_documented(titanic_schema: Any) -> None:
    """All operations of a classifier's API, fuzzed with valid and invalid data, never 5xx."""
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        assert len(_fuzz(titanic_schema.as_strategy(mode), ALWAYS)) >= EXAMPLES // 2
