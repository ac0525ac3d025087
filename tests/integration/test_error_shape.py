"""Every surface answers errors in its own single shape (server/error_responses.py)."""

from __future__ import annotations

import httpx
import pytest

from fhirsync.testing.servers import NodeHandle


def _fhir(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "error"
    assert body["issue"][0]["diagnostics"]


def _json(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"]
    assert error["code"] == response.status_code


def _html(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower()


CASES = [
    ("GET", "/ws/fhir2/R4/Patient/nope", 404, _fhir),
    ("GET", "/ws/fhir2/R4/Spaceship/1", 404, _fhir),
    ("POST", "/ws/fhir2/R4/Patient", 400, _fhir),
    ("GET", "/ws/rest/v1/concept/nope", 404, _json),
    ("GET", "/ws/rest/v1/spaceship", 404, _json),
    ("POST", "/ws/rest/v1/concept", 400, _json),
    ("GET", "/ws/atomfeed/patient/99", 404, _json),
    ("GET", "/ws/rest/sync2/messages/nope", 404, _json),
    ("POST", "/ws/rest/sync2", 400, _json),
]


@pytest.mark.parametrize(("method", "path", "status", "check"), CASES)
def test_error_shapes(node: NodeHandle, method: str, path: str, status: int, check: object) -> None:
    with node.client() as client:
        response = client.request(
            method, path, content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert response.status_code == status, response.text
    check(response)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("path", "check"),
    [
        ("/ws/fhir2/R4/Patient", _fhir),
        ("/ws/rest/v1/concept", _json),
        ("/ws/atomfeed/patient/recent", _json),
        ("/ws/rest/sync2/messages", _json),
        ("/metrics", _json),
    ],
)
def test_unauthenticated_shapes(node: NodeHandle, path: str, check: object) -> None:
    response = httpx.get(f"{node.base_url}{path}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    check(response)  # type: ignore[operator]


def test_admin_pages_answer_html(node: NodeHandle) -> None:
    with httpx.Client(base_url=node.base_url) as client:
        response = client.post("/sync2/login", data={"username": "admin", "password": "x"})
    assert response.status_code in (400, 401, 403)
    _html(response)


def test_only_health_is_open(node: NodeHandle) -> None:
    assert httpx.get(f"{node.base_url}/health").status_code == 200
    probed = httpx.head(f"{node.base_url}/health")  # as uptime monitors probe
    assert (probed.status_code, probed.content) == (200, b"")


@pytest.mark.postgres  # PostgreSQL cannot compare text with a NUL: it was a 500 there
@pytest.mark.parametrize(
    ("path", "check"),
    [
        ("/ws/fhir2/R4/Patient/ab%00cd", _fhir),
        ("/ws/fhir2/R4/Patient?_id=ab%00cd", _fhir),
        ("/ws/rest/v1/concept/ab%00cd", _json),
        ("/ws/atomfeed/patient%00/1", _json),
        ("/ws/rest/sync2/messages?operation=PULL&resourceName=a%00", _json),
        ("/sync2/audit?record=ab%00cd", _html),
    ],
)
def test_a_nul_in_the_url_is_refused_in_each_shape(
    node: NodeHandle, path: str, check: object
) -> None:
    with node.client() as client:
        response = client.get(path)
    assert response.status_code == 400, response.text
    assert "NUL" in response.text
    check(response)  # type: ignore[operator]
    with node.client() as client:
        assert client.get("/ws/fhir2/R4/Patient?_count=1").status_code == 200  # still serving
