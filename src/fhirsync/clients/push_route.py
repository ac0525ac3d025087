"""Push's sender with plug-in clients: the batches of a category that prefers a plug-in go
through that plug-in's ``send``, all others through the HTTP sender (FHIR Bundles or REST).

The choice follows pull's (:meth:`~fhirsync.clients.facade.ClientFacade.choice`): the class's
``preferredClient``, else the node's global preference, and only a client that supports the
category; a preferred plug-in that cannot send it leaves it to the built-in clients. A plug-in
receives the changes' first origin as ``origin``, so the parent can keep the change from
travelling back down (DESIGN §5.4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fhirsync.categories import Category
from fhirsync.clients.base import OutgoingChange, SendResult, SourceClient
from fhirsync.clients.push_http import HttpPushSender, absorb, stops
from fhirsync.clients.registry import BUILT_INS


class PluginRoutedSender:
    """Sends through a preferred plug-in client when there is one for the category."""

    def __init__(
        self,
        http: HttpPushSender,
        clients: Mapping[str, SourceClient],
        global_preferred: str | None = None,
    ) -> None:
        self._http = http
        self._plugins = {name: c for name, c in clients.items() if name not in BUILT_INS}
        # Where a batch goes when its preferred client is a plug-in that cannot send it: the
        # node's global preference if that is a built-in, else the built-in default.
        self._fallback = global_preferred if global_preferred in BUILT_INS else None

    def send(
        self,
        category: Category,
        changes: Sequence[OutgoingChange],
        *,
        origin: str,
        preferred: str | None = None,
        in_order: bool = False,
    ) -> SendResult:
        """Write ``changes`` through the preferred plug-in, else through the HTTP sender."""
        if preferred is not None and preferred not in BUILT_INS:
            plugin = self._plugins.get(preferred)
            if plugin is not None and plugin.supports(category):
                if in_order:
                    return _one_by_one(plugin, category, changes, origin)
                return plugin.send(category, changes, origin=origin)
            preferred = self._fallback
        return self._http.send(
            category, changes, origin=origin, preferred=preferred, in_order=in_order
        )


def _one_by_one(
    plugin: SourceClient, category: Category, changes: Sequence[OutgoingChange], origin: str
) -> SendResult:
    """Send ``changes`` one at a time until one is refused (other than a 412): a plug-in's
    ``send`` promises nothing about the changes after a refused one, which must stay unsent."""
    result = SendResult()
    for change in changes:
        part = plugin.send(category, [change], origin=origin)
        absorb(result, part)
        if stops(part, [change]):
            break
    return result
