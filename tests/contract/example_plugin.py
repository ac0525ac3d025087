"""A small plug-in client for the contract suite: FHIR reads and writes one record per request.

It shows what a deployment's plug-in needs: a factory taking a ClientContext, the shared HTTP
client from the context, and the error mapping of ``fhirsync.clients.http``. Real deployments
publish the factory in the ``fhirsync.clients`` entry-point group of their package; the tests
register it with ``register_factory("onebyone", make_client)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import orjson

from fhirsync.categories import FHIR_BASE, Category
from fhirsync.clients.base import FetchResult, OutgoingChange, RecordRef, SendResult, SourceClient
from fhirsync.clients.http import error_for_response, request
from fhirsync.clients.registry import ClientContext
from fhirsync.errors import InvalidResource, RecordError, RecordGone, RecordNotFound

NAME = "onebyone"


class OneByOneClient:
    """GET/PUT/DELETE ``/ws/fhir2/R4/{Type}/{id}``, one record at a time."""

    name = NAME

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def supports(self, category: Category) -> bool:
        return category.fhir_type is not None

    def fetch(self, category: Category, refs: Sequence[RecordRef]) -> FetchResult:
        result = FetchResult()
        for ref in refs:
            url = f"{FHIR_BASE}/{category.fhir_type}/{ref.uuid}"
            response = request(self._http, "GET", url)
            error = error_for_response(response, category=category.name, uuid=ref.uuid)
            if isinstance(error, RecordNotFound | RecordGone):
                result.absent.add(ref.uuid)
            elif isinstance(error, RecordError):
                result.failed[ref.uuid] = error
            elif error is not None:
                raise error
            else:
                body = orjson.loads(response.content)
                if isinstance(body, dict):
                    result.found[ref.uuid] = body
                else:
                    result.failed[ref.uuid] = InvalidResource("not a JSON object", uuid=ref.uuid)
        return result

    def send(
        self, category: Category, changes: Sequence[OutgoingChange], *, origin: str | None = None
    ) -> SendResult:
        result = SendResult()
        stamp = {"X-Fhirsync-Origin": origin} if origin else {}
        for change in changes:
            url = f"{FHIR_BASE}/{category.fhir_type}/{change.uuid}"
            if change.action in ("VOIDED", "RETIRED", "DELETED"):
                response = request(self._http, "DELETE", url, headers=stamp)
            else:
                body = {**(change.body or {}), "id": change.uuid}
                headers = {"Content-Type": "application/fhir+json", **stamp}
                response = request(
                    self._http, "PUT", url, content=orjson.dumps(body), headers=headers
                )
            error = error_for_response(response, category=category.name, uuid=change.uuid)
            if error is None:
                result.sent.add(change.uuid)
            elif isinstance(error, RecordError):
                result.failed[change.uuid] = error
            else:
                raise error
        return result

    def close(self) -> None:
        pass  # the HTTP client belongs to the context


def make_client(ctx: ClientContext) -> SourceClient:
    """The plug-in's factory (what the entry point names)."""
    return OneByOneClient(ctx.http_client())
