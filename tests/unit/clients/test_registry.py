"""Client plug-ins: built-ins, entry points, registered factories, broken plug-ins named."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint

import pytest

from fhirsync.clients import registry
from fhirsync.clients.fhir import FhirClient
from fhirsync.clients.registry import (
    ClientContext,
    build_client,
    build_clients,
    load_client_factories,
    register_factory,
    unregister_factory,
)
from fhirsync.clients.rest import RestClient
from fhirsync.errors import ConfigurationError


@pytest.fixture
def ctx() -> Iterator[ClientContext]:
    context = ClientContext("http://127.0.0.1:9", None, batch_size=3)
    yield context
    context.close()


def _points(*points: EntryPoint) -> object:
    return lambda group: list(points) if group == registry.ENTRY_POINT_GROUP else []


def test_built_ins_share_one_http_client(ctx: ClientContext) -> None:
    clients = build_clients(ctx, dict(registry.BUILT_INS))
    assert isinstance(clients["fhir"], FhirClient) and isinstance(clients["rest"], RestClient)
    assert clients["fhir"]._http is clients["rest"]._http  # type: ignore[attr-defined]


def test_entry_point_plugins_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    point = EntryPoint("extra", "fhirsync.clients.registry:_fhir", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", _points(point))
    factories = load_client_factories()
    assert set(factories) >= {"fhir", "rest", "extra"}


def test_a_plugin_that_cannot_be_imported_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    point = EntryPoint("broken", "no_such_module.anywhere:make", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", _points(point))
    with pytest.raises(ConfigurationError, match="'broken'"):
        load_client_factories()


def test_a_plugin_that_is_not_callable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    point = EntryPoint("flat", "fhirsync.clients.registry:ENTRY_POINT_GROUP", "x")
    monkeypatch.setattr(registry, "entry_points", _points(point))
    with pytest.raises(ConfigurationError, match=r"'flat'.*not callable"):
        load_client_factories()


def test_a_factory_that_fails_or_returns_junk_is_named(ctx: ClientContext) -> None:
    def boom(_ctx: ClientContext) -> FhirClient:
        raise RuntimeError("no licence key")

    with pytest.raises(ConfigurationError, match=r"'boom'.*no licence key"):
        build_client("boom", boom, ctx)
    with pytest.raises(ConfigurationError, match=r"'junk'.*not a SourceClient"):
        build_client("junk", lambda _c: object(), ctx)  # type: ignore[arg-type,return-value]


def test_register_factory_adds_and_removes(ctx: ClientContext) -> None:
    register_factory("mine", registry.BUILT_INS["fhir"])
    try:
        assert "mine" in load_client_factories()
    finally:
        unregister_factory("mine")
    assert "mine" not in load_client_factories()
    with pytest.raises(ConfigurationError):
        register_factory("", registry.BUILT_INS["fhir"])
