"""Picks the client of each feed entry and reads record uuids out of feed links.

Client choice (spec §5.2, made deterministic): the class's ``preferredClient``, else the node's
global preference (default ``fhir``), else a client named by a link the entry has (in name order,
not a Java hash map's), else any client that supports the category. The chosen client always
supports the category.

uuid extraction (spec §5.3): template based first (the category's link templates, including the
Java forms ``/ws/fhir/{Type}/{uuid}`` and ``/ws/rest/v1/...``), then the LAST uuid in the link (so a
sub-resource link yields the child, not its owner). Sub-resource entries (person_name, ...) name
their owner in the ``{parent-uuid}`` segment: :meth:`ClientFacade.owner_ref`.

Old ``/ws/fhir/{Type}/{uuid}`` links (a Java parent's STU3 module, spec §11): the link is only read
for its uuid. The ``fhir`` client never follows it; it fetches the category's R4 type from
``/ws/fhir2/R4`` by ``_id`` (so ``test_order``'s STU3 ``ProcedureRequest`` link is fetched as an R4
``ServiceRequest``), which a Java OpenMRS with the fhir2 module serves. ``preferredClient:
"rest"`` on such a class is ignored (the category has no REST resource here; falls back to fhir).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

from fhirsync import categories
from fhirsync.categories import REST_BASE, Category
from fhirsync.clients.base import SourceClient
from fhirsync.clients.registry import ClientContext, ClientFactory, build_clients
from fhirsync.errors import ConfigurationError, UnknownResourceType
from fhirsync.settings import NodeConfig

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_JAVA_FHIR_TEMPLATE = "/ws/fhir/{type}/{uuid}"
"""The old OpenMRS FHIR module (STU3) link form Java feeds carry."""


class ClientFacade:
    """The clients of one remote node, and the rules that pick one per entry."""

    def __init__(
        self,
        clients: Mapping[str, SourceClient],
        global_preferred: str = "fhir",
        *,
        on_close: Iterable[Callable[[], None]] = (),
    ) -> None:
        self.clients = dict(clients)
        self.global_preferred = global_preferred
        self._on_close = list(on_close)

    @classmethod
    def for_parent(
        cls, config: NodeConfig, factories: dict[str, ClientFactory] | None = None
    ) -> ClientFacade:
        """The facade over ``config``'s parent: every registered client, per-client overrides
        (``general.clients[name]`` hostAddress/login/password, spec §5.4/5.5) applied."""
        contexts = parent_contexts(config)
        try:
            clients = build_clients(contexts, factories)
        except ConfigurationError:
            contexts.close()
            raise
        return cls(clients, config.settings.preferred_client, on_close=[contexts.close])

    def close(self) -> None:
        """Close every client and the HTTP connections made for them."""
        for client in self.clients.values():
            client.close()
        for close in self._on_close:
            close()

    # --- client choice --------------------------------------------------------------------------

    def choose(
        self, category: Category, links: Mapping[str, str], preferred: str | None = None
    ) -> SourceClient:
        """The client to use for ``category``; UnknownResourceType when none supports it."""
        return self.choice(category, links, preferred)[0]

    def choice(
        self, category: Category, links: Mapping[str, str], preferred: str | None = None
    ) -> tuple[SourceClient, str]:
        """The client and why it was chosen (``preferred``, ``global``, ``link`` or ``any``)."""
        candidates: list[tuple[str | None, str]] = [
            (preferred or None, "preferred"),
            (self.global_preferred, "global"),
            *((name, "link") for name in sorted(links)),
            *((name, "any") for name in self.clients),
        ]
        for name, reason in candidates:
            client = self.clients.get(name) if name else None
            if client is not None and client.supports(category):
                return client, reason
        raise UnknownResourceType(f"no client can fetch category {category.name!r}")

    # --- links ----------------------------------------------------------------------------------

    def extract_uuid(self, category: Category, links: Mapping[str, str]) -> str | None:
        """The record uuid named by ``links`` (spec §5.3)."""
        return extract_uuid(category, links)

    def owner_ref(
        self, category: Category, links: Mapping[str, str]
    ) -> tuple[Category, str] | None:
        """For a sub-resource entry: the owning category and its record uuid."""
        return owner_ref(category, links)


class _Contexts:
    """One ClientContext per distinct (base URL, credentials), so clients share connections."""

    def __init__(self, config: NodeConfig) -> None:
        parent = config.parent_url
        if parent is None:
            raise ConfigurationError(
                "parentFeedLocation is not set", field="general.parentFeedLocation"
            )
        self._config = config
        self._parent = parent
        self._made: dict[tuple[str, tuple[str, str] | None], ClientContext] = {}

    def __call__(self, name: str) -> ClientContext:
        settings = self._config.settings
        override = self._config.sync2.general.clients.get(name)
        base = override.host_address if override and override.host_address else self._parent
        auth = self._config.parent_auth
        if override and override.login and override.password is not None:
            secret = override.password.get_secret_value()
            if override.login.strip() and secret.strip():
                auth = (override.login, secret)
        key = (base.rstrip("/"), auth)
        if key not in self._made:
            self._made[key] = ClientContext(
                base_url=key[0],
                auth=auth,
                connect_timeout=settings.http_connect_timeout,
                read_timeout=settings.http_read_timeout,
                batch_size=settings.fetch_batch_size,
                ca_file=self._config.parent_ca_path,
            )
        return self._made[key]

    def close(self) -> None:
        for ctx in self._made.values():
            ctx.close()


def parent_contexts(config: NodeConfig) -> _Contexts:
    """Per-client contexts for the parent of ``config`` (ConfigurationError without a parent)."""
    return _Contexts(config)


# --- uuid extraction (spec §5.3) ----------------------------------------------------------------


def extract_uuid(category: Category, links: Mapping[str, str]) -> str | None:
    """The record uuid of an entry of ``category``: template based, then the last uuid."""
    for link in _ordered_links(links):
        for template in _templates(category):
            found = _match(template, link, "{uuid}")
            if found:
                return found
    for link in _ordered_links(links):
        matches = _UUID.findall(link)
        if matches:
            return str(matches[-1])
    return None


def owner_ref(category: Category, links: Mapping[str, str]) -> tuple[Category, str] | None:
    """The owner (category, uuid) of a sub-resource entry, from its ``{parent-uuid}`` segment."""
    if category.owner is None:
        return None
    owner = categories.get(category.owner)
    for link in _ordered_links(links):
        for template in _templates(category):
            if "{parent-uuid}" in template:
                found = _match(template, link, "{parent-uuid}")
                if found:
                    return owner, found
    for link in _ordered_links(links):
        matches = _UUID.findall(link)
        if len(matches) >= 2:  # owner first, the sub-resource last
            return owner, str(matches[0])
    return None


def _ordered_links(links: Mapping[str, str]) -> list[str]:
    # rest first: its templates are the most specific (sub-resources only have rest links).
    names = sorted(links, key=lambda n: (n != "rest", n != "fhir", n))
    return [links[n] for n in names if isinstance(links[n], str) and links[n]]


def _templates(category: Category) -> list[str]:
    out = list(category.link_templates().values())
    out.append(_JAVA_FHIR_TEMPLATE)
    if category.rest_resource is None and category.java_rest_template is None:
        out.append(f"{REST_BASE}/{{type}}/{{uuid}}?v=full")
    return out


def _match(template: str, link: str, placeholder: str) -> str | None:
    """The text of ``placeholder`` in ``link`` when ``link`` has ``template``'s shape."""
    t_parts = _path(template).split("/")
    l_parts = _path(link).split("/")
    if len(t_parts) != len(l_parts):
        return None
    value: str | None = None
    for t_seg, l_seg in zip(t_parts, l_parts, strict=True):
        if placeholder in t_seg:
            prefix, _, suffix = t_seg.partition(placeholder)
            if not (l_seg.startswith(prefix) and l_seg.endswith(suffix)):
                return None
            value = (
                l_seg[len(prefix) : len(l_seg) - len(suffix)] if suffix else l_seg[len(prefix) :]
            )
        elif "{" in t_seg:
            continue  # another placeholder: any value
        elif t_seg != l_seg:
            return None
    return value or None


def _path(link: str) -> str:
    """The path of a link (absolute or relative), without query or fragment."""
    return urlsplit(link).path.rstrip("/")
