"""Which feed entries a pull applies (spec §3.6, §5.1 step 1, §5.13).

An entry passes when every filter accepts it:

1. it did not start on this node (its ``origin`` is not our instance id: no echo), unless a
   recovery run after a restore asks for those too;
2. every location filter tag matches the node's ``location_filter`` setting (spec §3.6; a tag of a
   filter bean this node does not know is accepted, as in OpenMRS);
3. every plug-in filter (entry-point group ``fhirsync.filters``) accepts it.

Whether a category is enabled at all is decided by the runner from ``pull.classes``. The
settings that decide acceptance are hashed into each marker key (``FilterChain.settings_hash``),
so changing them reads the feed again from the start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Protocol, runtime_checkable

from lxml import etree

from fhirsync.errors import ConfigurationError
from fhirsync.records import FeedEntry

LOCATION_BEAN = "atomfeed.locationFeedFilterStrategy"
PLUGIN_GROUP = "fhirsync.filters"


@runtime_checkable
class EntryFilter(Protocol):
    """A plug-in filter: ``accepts`` returns False to skip an entry silently."""

    name: str

    def accepts(self, entry: FeedEntry, instance_id: str) -> bool:
        """True when the entry is to be applied on the node ``instance_id``."""
        ...


def location_matches(value: str, setting: str) -> bool:
    """Spec §3.6: same number of ``%`` parts; each setting part is ``*`` or equal ignoring case."""
    have, want = value.split("%"), setting.split("%")
    if len(have) != len(want):
        return False
    return all(w == "*" or w.lower() == h.lower() for h, w in zip(have, want, strict=True))


def parse_filter_tag(term: str) -> tuple[str, str] | None:
    """``(beanName, filter)`` of a ``<feedFilter>`` tag term; None when it is not one."""
    try:
        root = etree.fromstring(term.strip().encode())
    except etree.XMLSyntaxError:
        return None
    if root.tag != "feedFilter":
        return None
    return (root.findtext("beanName") or "").strip(), (root.findtext("filter") or "").strip()


def load_plugins() -> list[EntryFilter]:
    """Instances of every filter registered in the ``fhirsync.filters`` entry-point group."""
    found: list[EntryFilter] = []
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        factory = ep.load()
        plugin = factory() if isinstance(factory, type) or callable(factory) else factory
        if not isinstance(plugin, EntryFilter):
            raise ConfigurationError(
                f"entry point {ep.name!r} of {PLUGIN_GROUP} is not a filter (needs name, accepts)"
            )
        found.append(plugin)
    return found


@dataclass(frozen=True)
class FilterChain:
    """The filters of one pull run."""

    instance_id: str
    location_filter: str = "*%*%*%*%*"
    plugins: Sequence[EntryFilter] = field(default_factory=tuple)
    skip_own: bool = True
    """False for one recovery run after a restore: changes that began on this node and reached
    the parent after the backup come back. Not part of :meth:`settings_hash`: the run continues
    from the markers it has."""

    def accepts(self, entry: FeedEntry) -> bool:
        """True when ``entry`` is to be applied."""
        if self.skip_own and entry.origin is not None and entry.origin == self.instance_id:
            return False
        for term in entry.filter_tags:
            parsed = parse_filter_tag(term)
            if parsed is None:
                continue
            bean, value = parsed
            if bean != LOCATION_BEAN:
                break  # unknown bean: synced, remaining filters not checked (spec §3.6)
            if not location_matches(value, self.location_filter):
                return False
        return all(p.accepts(entry, self.instance_id) for p in self.plugins)

    def settings_hash(self, category: str) -> str:
        """A short hash of the settings that decide what this chain accepts for ``category``."""
        parts = [self.instance_id, self.location_filter, *sorted(p.name for p in self.plugins)]
        raw = "|".join([category, *parts])
        return hashlib.sha256(raw.encode()).hexdigest()[:16]
