"""Own changes echoed back in the parent's feed: skipped, unless that leaves the record behind.

A pull leaves out the entries of changes that began on this node (``FilterChain.skip_own``): the
local copy already holds them. Not so when another node's change of the same record, older in the
parent's feed, comes in after it was made: the parent's void, read after this node had taken it
(resolving a conflict) and undone it. Such an own change is applied like any other: the parent's
current version is fetched, instead of the record staying on the older change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from fhirsync import categories as cats
from fhirsync.categories import Category
from fhirsync.clients.base import LocalSide
from fhirsync.records import FeedEntry
from fhirsync.sync.filters import FilterChain

Target = Callable[[FeedEntry], "tuple[Category, str] | None"]
"""The record an entry changes (None when this node cannot tell)."""


def own_echoes(filters: FilterChain, entries: Sequence[FeedEntry]) -> list[FeedEntry]:
    """The entries left out only because the change began on this node."""
    if not filters.skip_own:
        return []
    anyone = replace(filters, skip_own=False)
    return [e for e in entries if not filters.accepts(e) and anyone.accepts(e)]


def in_page_order(
    entries: Sequence[FeedEntry], accepted: Sequence[FeedEntry], more: Sequence[FeedEntry]
) -> list[FeedEntry]:
    """``accepted`` and ``more``, in page order."""
    keep = {id(e) for e in (*accepted, *more)}
    return [e for e in entries if id(e) in keep]


def after_others(
    entries: Sequence[FeedEntry],
    accepted: Sequence[FeedEntry],
    echoes: Sequence[FeedEntry],
    target: Target,
) -> list[FeedEntry]:
    """The own changes that follow another node's change of the same record on the page: left
    out, the record would end on that older change (collapsed, it ends on the newest)."""
    taken, own = {id(e) for e in accepted}, {id(e) for e in echoes}
    seen: set[tuple[str, str]] = set()
    out: list[FeedEntry] = []
    for entry in entries:
        if id(entry) not in taken and id(entry) not in own:
            continue
        found = target(entry)
        if found is None:
            continue
        key = (found[0].name, found[1])
        if id(entry) in taken:
            seen.add(key)
        elif key in seen:
            out.append(entry)
    return out


def replaced_since(
    local: LocalSide, instance_id: str, echoes: Sequence[FeedEntry], target: Target
) -> list[FeedEntry]:
    """The own changes whose local copy another node's version has replaced since they were
    made (read after the pages before are committed: one of them may have done it)."""
    wanted: dict[str, list[tuple[str, FeedEntry]]] = {}
    for entry in echoes:
        found = target(entry)
        if found is not None:
            wanted.setdefault(found[0].name, []).append((found[1], entry))
    out: list[FeedEntry] = []
    for name, pairs in wanted.items():
        held = local.read_many(cats.get(name), sorted({u for u, _e in pairs}))
        out += [e for u, e in pairs if u in held and held[u].origin != instance_id]
    return out
