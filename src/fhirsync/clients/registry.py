"""Client plug-ins: factories registered by name, built-ins ``fhir`` and ``rest``.

A deployment adds a transport by publishing a factory in the entry-point group
``fhirsync.clients`` of its package::

    [project.entry-points."fhirsync.clients"]
    hl7mllp = "my_package.client:make_client"

A factory is ``Callable[[ClientContext], SourceClient]``; its name is the key of the feed links
map and of ``preferredClient``. Tests (and embedding code) can register a factory without
packaging by calling :func:`register_factory`. A plug-in that cannot be loaded, or a factory that
does not return a SourceClient, is a :class:`~fhirsync.errors.ConfigurationError` naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from threading import Lock

import httpx

from fhirsync.clients.base import SourceClient
from fhirsync.clients.fhir import FhirClient
from fhirsync.clients.http import DEFAULT_POOL_SIZE, make_http_client
from fhirsync.clients.rest import RestClient
from fhirsync.errors import ConfigurationError
from fhirsync.settings import NodeConfig

ENTRY_POINT_GROUP = "fhirsync.clients"


@dataclass
class ClientContext:
    """What a client factory gets: where the remote is, how to log in, timeouts, batch size."""

    base_url: str
    auth: tuple[str, str] | None = None
    connect_timeout: float = 15.0
    read_timeout: float = 30.0
    batch_size: int = 500
    pool_size: int = DEFAULT_POOL_SIZE
    follow_any_rest_link: bool = False
    """True when the remote is a Java OpenMRS server (REST links for every category)."""
    ca_file: Path | None = None
    """PEM certificate authorities to trust for https (``parent_ca_file``); None: public CAs."""
    _http: httpx.Client | None = field(default=None, repr=False)
    _lock: Lock = field(default_factory=Lock, repr=False)

    def http_client(self) -> httpx.Client:
        """The keep-alive client shared by every client built from this context (made once)."""
        with self._lock:
            if self._http is None:
                self._http = make_http_client(
                    self.base_url,
                    self.auth,
                    connect_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout,
                    pool_size=self.pool_size,
                    ca_file=self.ca_file,
                )
            return self._http

    def close(self) -> None:
        """Close the shared HTTP client, if it was made."""
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()


ClientFactory = Callable[[ClientContext], SourceClient]


def _fhir(ctx: ClientContext) -> SourceClient:
    return FhirClient(ctx.http_client(), batch_size=ctx.batch_size)


def _rest(ctx: ClientContext) -> SourceClient:
    return RestClient(ctx.http_client(), follow_any_link=ctx.follow_any_rest_link)


BUILT_INS: dict[str, ClientFactory] = {"fhir": _fhir, "rest": _rest}
_registered: dict[str, ClientFactory] = {}
_registered_lock = Lock()


def register_factory(name: str, factory: ClientFactory) -> None:
    """Register ``factory`` under ``name`` in this process (deployments use the entry points)."""
    if not name or not callable(factory):
        raise ConfigurationError(f"client plug-in {name!r}: a name and a callable are required")
    with _registered_lock:
        _registered[name] = factory


def unregister_factory(name: str) -> None:
    """Remove a factory added by :func:`register_factory` (tests clean up with it)."""
    with _registered_lock:
        _registered.pop(name, None)


def load_client_factories() -> dict[str, ClientFactory]:
    """Every client factory by name: built-ins, then entry points, then registered ones.

    Raises ConfigurationError naming a plug-in that cannot be imported or is not callable.
    """
    factories: dict[str, ClientFactory] = dict(BUILT_INS)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        factories[point.name] = _load(point)
    with _registered_lock:
        factories.update(_registered)
    return factories


def client_names() -> set[str]:
    """The names of every client this process could build, without importing any plug-in."""
    names = set(BUILT_INS) | {point.name for point in entry_points(group=ENTRY_POINT_GROUP)}
    with _registered_lock:
        return names | set(_registered)


def unknown_preferences(config: NodeConfig) -> list[str]:
    """One sentence per client preference that names no client (a typo such as "fihr").

    Such a preference is not an error (OpenMRS too falls back to a link the event has), but
    records then travel another way than the administrator chose, so it is worth saying."""
    known = client_names()
    choices = ", ".join(sorted(known))
    out: list[str] = []
    default = config.settings.preferred_client
    if default not in known:
        out.append(
            f"fhirsync.json preferred_client {default!r} names no client ({choices}): classes "
            "without a preferredClient use a link their events have"
        )
    for direction in ("pull", "push"):
        for index, cls in enumerate(getattr(config.sync2, direction).classes):
            name = cls.preferred_client
            if name and name not in known:
                out.append(
                    f"sync2.json {direction}.classes[{index}].preferredClient {name!r} names no "
                    f"client ({choices}): {cls.category} uses the node's default instead"
                )
    return out


def build_clients(
    ctx: ClientContext | Callable[[str], ClientContext],
    factories: dict[str, ClientFactory] | None = None,
) -> dict[str, SourceClient]:
    """Call every factory; ``ctx`` may be one context or one per client name (overrides)."""
    out: dict[str, SourceClient] = {}
    for name, factory in (factories if factories is not None else load_client_factories()).items():
        context = ctx if isinstance(ctx, ClientContext) else ctx(name)
        out[name] = build_client(name, factory, context)
    return out


def build_client(name: str, factory: ClientFactory, ctx: ClientContext) -> SourceClient:
    """Call one factory; ConfigurationError naming it when it fails or returns no client."""
    try:
        client = factory(ctx)
    except ConfigurationError:
        raise
    except Exception as exc:  # a third-party factory may raise anything: name the plug-in
        raise ConfigurationError(
            f"client plug-in {name!r} failed to start: {type(exc).__name__}: {exc}",
            field=f"{ENTRY_POINT_GROUP}:{name}",
        ) from exc
    if not isinstance(client, SourceClient):
        raise ConfigurationError(
            f"client plug-in {name!r} returned {type(client).__name__}, not a SourceClient",
            field=f"{ENTRY_POINT_GROUP}:{name}",
        )
    return client


def _load(point: EntryPoint) -> ClientFactory:
    try:
        factory = point.load()
    except Exception as exc:  # an import error of any kind in a plug-in: name it, keep the cause
        raise ConfigurationError(
            f"client plug-in {point.name!r} ({point.value}) cannot be loaded: "
            f"{type(exc).__name__}: {exc}",
            field=f"{ENTRY_POINT_GROUP}:{point.name}",
        ) from exc
    if not callable(factory):
        raise ConfigurationError(
            f"client plug-in {point.name!r} ({point.value}) is not callable",
            field=f"{ENTRY_POINT_GROUP}:{point.name}",
        )
    factory_: ClientFactory = factory
    return factory_
