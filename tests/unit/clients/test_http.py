"""The one mapping of httpx outcomes to fhirsync errors."""

from __future__ import annotations

import httpx
import orjson
import pytest

from fhirsync.clients.http import error_for_response, make_http_client, request, translated
from fhirsync.errors import (
    ConfigurationError,
    ConnectionFailed,
    Forbidden,
    PayloadTooLarge,
    RecordGone,
    RecordNotFound,
    RemoteRejected,
    RequestTimeout,
    ServerUnavailable,
    Unauthenticated,
)


def _response(status: int, body: object = None) -> httpx.Response:
    content = orjson.dumps(body) if body is not None else b""
    return httpx.Response(
        status, content=content, request=httpx.Request("GET", "http://parent:8080/ws/x/secret-id")
    )


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, ServerUnavailable),
        (503, ServerUnavailable),
        (429, ServerUnavailable),
        (408, RequestTimeout),
        (401, Unauthenticated),
        (403, Forbidden),
        (404, RecordNotFound),
        (410, RecordGone),
        (413, PayloadTooLarge),
        (400, RemoteRejected),
        (409, RemoteRejected),
        (412, RemoteRejected),
        (302, RemoteRejected),
    ],
)
def test_status_mapping(status: int, error: type[Exception]) -> None:
    mapped = error_for_response(_response(status), category="patient", uuid="u1")
    assert type(mapped) is error
    if isinstance(mapped, RemoteRejected):
        assert mapped.status == status and mapped.uuid == "u1"


def test_success_maps_to_nothing() -> None:
    assert error_for_response(_response(200)) is None
    assert error_for_response(_response(204)) is None


def test_operation_outcome_diagnostics_are_in_the_message() -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "invalid",
                "diagnostics": "gender is bad",
                "expression": ["Patient.gender"],
            }
        ],
    }
    error = error_for_response(_response(400, outcome))
    assert error is not None and "gender is bad (at Patient.gender)" in str(error)


def test_rest_error_message_is_in_the_message() -> None:
    error = error_for_response(_response(422, {"error": {"message": "name is required"}}))
    assert error is not None and "name is required" in str(error)


def test_the_message_names_the_remote_but_not_the_path() -> None:
    error = error_for_response(_response(500, "not an object"))
    assert error is not None
    assert "http://parent:8080" in str(error) and "secret-id" not in str(error)


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        (httpx.ConnectError("refused"), ConnectionFailed),
        (httpx.ReadError("reset"), ConnectionFailed),
        (httpx.RemoteProtocolError("cut"), ConnectionFailed),
        (httpx.ConnectTimeout("slow"), RequestTimeout),
        (httpx.ReadTimeout("slow"), RequestTimeout),
        (httpx.PoolTimeout("busy"), RequestTimeout),
        (httpx.UnsupportedProtocol("ftp"), ConfigurationError),
        (httpx.DecodingError("gzip"), ServerUnavailable),
    ],
)
def test_exception_mapping_chains_the_cause(raised: Exception, error: type[Exception]) -> None:
    with pytest.raises(error) as caught, translated("http://parent"):
        raise raised
    assert caught.value.__cause__ is raised


def test_request_through_a_mock_transport_keeps_base_url_and_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json={})

    http = make_http_client("http://parent:1/openmrs/", ("u", "p"))
    http._transport = httpx.MockTransport(handler)
    request(http, "GET", "/ws/rest/v1/visittype/x", params={"v": "full"})
    http.close()
    assert str(seen[0].url) == "http://parent:1/openmrs/ws/rest/v1/visittype/x?v=full"
    assert "application/fhir+json" in seen[0].headers["accept"]
    assert seen[0].headers["authorization"].startswith("Basic ")
