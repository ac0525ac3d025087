"""Preparing and sending one batch of a push; ``sync/push_settle.py`` settles the answer.

The feed loop (``sync/push_feed.py``) overlaps the steps of consecutive batches:

1. :func:`prepare` reads what the batch needs locally (bases, open conflicts, open failures) and
   builds the outgoing changes; FHIR bodies go out as stored (``RawBody``: spliced into the
   Bundle, never parsed and serialised again). Records agreed with a former parent
   (``move-parent --from-start``) are first looked up at the new one;
2. :func:`send` sends them, one request per origin (on the sender thread when pipelined); the
   edit before a void goes just before that void, never ahead of the batch;
3. ``push_settle.settle`` turns the parent's answer into the page to commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from operator import itemgetter
from typing import Any

from fhirsync.categories import Category
from fhirsync.clients.base import OutgoingChange, SendResult
from fhirsync.clients.push_http import RawBody, absorb, is_stale, stops
from fhirsync.errors import RecordError, RecordNotFound, RemoteRejected
from fhirsync.records import Action, Record
from fhirsync.service import rest as rest_service
from fhirsync.store import agreed as agreed_repo
from fhirsync.store.agreed import Agreed
from fhirsync.store.failures import Failure
from fhirsync.sync.push_context import ABSENT, OPERATION, PushContext

STATE_ACTIONS: Mapping[str, Action] = {
    "voided": "VOIDED",
    "retired": "RETIRED",
    "deleted": "DELETED",
}
"""The action a record's state sends (anything else is an update)."""
_RESTORES: Mapping[str, Action] = {"voided": "UNVOIDED", "retired": "UNRETIRED"}
"""The action an active record sends when the parent holds it voided or retired."""


@dataclass(frozen=True, slots=True)
class Item:
    """One record to send, with the event that asked for it."""

    uuid: str
    entry_id: str
    seq: int
    record: Record | None


@dataclass
class Prepared:
    """A batch ready to send (records held by an open conflict already left out)."""

    category: Category
    preferred: str | None
    items: list[Item]
    bases: dict[str, Agreed]
    failures: Mapping[str, Failure]
    errors: dict[str, RecordError]
    """Records that failed before the batch was sent (gone locally), or that a new parent holds
    too (a 412 to decide, ``_held_by_new_parent``)."""
    outgoing: list[tuple[str, OutgoingChange]]
    """The changes to send with their origins, in the order of the items."""
    edited: dict[str, Record] = field(default_factory=dict)
    """Voided/retired records whose content the parent has not seen: :func:`send` sends the
    content first (``If-Match`` the base), in the record's place, then the void naming the
    version it made (the void in ``outgoing`` is a placeholder until then)."""

    @property
    def uuids(self) -> frozenset[str]:
        """The records of the batch."""
        return frozenset(i.uuid for i in self.items)


def prepare(
    ctx: PushContext, category: Category, preferred: str | None, items: Sequence[Item]
) -> Prepared:
    """Read the batch's local state and build its changes (a void after a local edit is marked
    to send the edit first, so the void can name the version it made)."""
    bases: dict[str, Agreed] = {}
    kept = list(items)
    if ctx.reconciler is not None:
        bases, held = ctx.local.sync_state(category, [i.uuid for i in items])
        # An open conflict keeps both versions where they are until a person resolves it.
        kept = [i for i in items if i.uuid not in held and not _held_as_agreed(i, bases)]
    failures = ctx.local.open_failures(OPERATION, category.name, [i.uuid for i in kept])
    out = Prepared(category, preferred, kept, bases, failures, {}, [])
    held_there = _held_by_new_parent(ctx, category, kept, bases)
    for item in kept:
        if item.record is None:
            out.errors[item.uuid] = RecordNotFound(
                "the record is no longer in the local store", category=category.name, uuid=item.uuid
            )
            continue
        if item.uuid in held_there:
            out.errors[item.uuid] = held_there[item.uuid]
            continue
        base = bases.get(item.uuid)
        if ctx.reconciler is not None and _edited_then_voided(item.record, base):
            out.edited[item.uuid] = item.record
        out.outgoing.append((item.record.origin, _outgoing(category, item.record, base)))
    return out


def _held_as_agreed(item: Item, bases: Mapping[str, Agreed]) -> bool:
    """True when the parent already holds this very version: the record is as last agreed with
    it, and nothing asks for it to go up again.

    A change made here that the parent made too (both voided it) converges on pull to the
    parent's copy, labelled as the parent's; the event made here, read in an earlier batch than
    the pulled one, then sent that copy as the parent's own change, which the parent refuses
    (403, "a child may not act as this node"), and the push stopped there for good.
    """
    base = bases.get(item.uuid)
    record = item.record
    return (
        record is not None
        and base is not None
        and not base.pending_push
        and base.parent_version != agreed_repo.UNCHECKED
        and (record.content_hash, record.state) == (base.content_hash, base.state)
    )


def _held_by_new_parent(
    ctx: PushContext, category: Category, items: Sequence[Item], bases: Mapping[str, Agreed]
) -> dict[str, RecordError]:
    """FHIR records agreed with a former parent (``move-parent --from-start``) that the parent
    holds too, each with the 412 its answer would have been: ``push_settle`` reads its copy and
    decides against the base, as for any stale base. The others go up as new.

    Sent without ``If-Match`` (the former parent's versions mean nothing here), such a record
    overwrote the new parent's copy and every change made there; a FHIR parent has no tag for
    the agreed content, so its copy is read first. Without a way to read it, nothing is sent:
    the 412 stays a failure, retried and visible, never a silent overwrite.
    """
    unchecked = [
        i.uuid
        for i in items
        if category.is_fhir
        and i.record is not None
        and (base := bases.get(i.uuid)) is not None
        and base.parent_version == agreed_repo.UNCHECKED
    ]
    if not unchecked:
        return {}
    copies = ctx.fetch(category, unchecked) if ctx.fetch is not None else {}
    return {
        uuid: RemoteRejected(
            "the parent holds this record too, at a version not agreed with it yet "
            "(move-parent --from-start)",
            status=412,
            category=category.name,
            uuid=uuid,
        )
        for uuid in unchecked
        if copies.get(uuid) is not ABSENT
    }


def send(ctx: PushContext, prepared: Prepared, *, in_order: bool = False) -> SendResult:
    """Send the prepared changes: one request per origin (TransientError escapes).

    ``in_order`` (``continue_on_failure`` off): one request per run of changes of one origin, in
    the order of the items, and nothing after the first record refused (other than a 412), or
    failed before sending, is sent; those records are in neither ``sent`` nor ``failed``. The
    edit sent before a void (``Prepared.edited``) goes in its record's place: sent ahead of the
    batch, it reached the parent although a record before it was refused.
    """
    result = SendResult()
    if not in_order:
        groups: dict[str, list[OutgoingChange]] = {}
        for origin, change in prepared.outgoing:
            ready: OutgoingChange | None = change
            if change.uuid in prepared.edited:
                ready = _edit_first(ctx, prepared, change.uuid, result, in_order=False)
            if ready is not None:
                groups.setdefault(origin, []).append(ready)
        for origin, changes in groups.items():
            absorb(result, _send(ctx, prepared.category, prepared.preferred, origin, changes))
        return result
    waiting: list[tuple[str, OutgoingChange]] = []
    for origin, change in _before_first_error(prepared):
        if change.uuid not in prepared.edited:
            waiting.append((origin, change))
            continue
        # What comes before it goes first: nothing after a refused record may go up.
        if _send_in_order(ctx, prepared, waiting, result):
            return result
        waiting = []
        void = _edit_first(ctx, prepared, change.uuid, result, in_order=True)
        if void is not None:
            waiting.append((origin, void))
        elif not is_stale(result.failed[change.uuid]):
            return result
        # A 412 is decided at settle, like any stale base: the log goes on.
    _send_in_order(ctx, prepared, waiting, result)
    return result


def _send_in_order(
    ctx: PushContext,
    prepared: Prepared,
    outgoing: Sequence[tuple[str, OutgoingChange]],
    result: SendResult,
) -> bool:
    """Send ``outgoing`` in order, one request per run of one origin, into ``result``; True
    when one was refused (other than a 412): nothing after it may be sent."""
    for origin, run in groupby(outgoing, key=itemgetter(0)):
        changes = [change for _origin, change in run]
        part = _send(ctx, prepared.category, prepared.preferred, origin, changes, in_order=True)
        absorb(result, part)
        if stops(part, changes):
            return True
    return False


def _before_first_error(prepared: Prepared) -> list[tuple[str, OutgoingChange]]:
    """The outgoing changes of the items before the first one that failed before sending (a
    stale base, 412, is no failure: ``push_settle`` decides it, and the items after it go up)."""
    errors = prepared.errors
    bad = next(
        (
            i
            for i, item in enumerate(prepared.items)
            if item.uuid in errors and not is_stale(errors[item.uuid])
        ),
        None,
    )
    if bad is None:
        return prepared.outgoing
    before = {item.uuid for item in prepared.items[:bad]}
    return [(origin, change) for origin, change in prepared.outgoing if change.uuid in before]


def _edited_then_voided(record: Record, base: Agreed | None) -> bool:
    """True for a voided/retired record whose content the parent has not seen: a void carries
    no body, so the content goes up first (else the parent voids its older body). A record the
    parent never had stays off it (spec §5.10), as pull skips a void of a record it never had."""
    if record.state not in ("voided", "retired") or base is None:
        return False
    return base.content_hash != record.content_hash


def _edit_first(
    ctx: PushContext, prepared: Prepared, uuid: str, result: SendResult, *, in_order: bool
) -> OutgoingChange | None:
    """Send the content of edited-then-voided ``uuid`` as an active update (If-Match its base);
    the void to send next, naming the version the update made, or None when the update was not
    written (refused, 412 included: its error is in ``result.failed``)."""
    category, record = prepared.category, prepared.edited[uuid]
    base = prepared.bases.get(uuid)
    update = OutgoingChange(
        category=record.category,
        uuid=uuid,
        action="UPDATED",
        body=record.resource(),
        state="active",
        base_version=_base_tag(category, base),
    )
    part = _send(ctx, category, prepared.preferred, record.origin, [update], in_order=in_order)
    if uuid not in part.sent:
        result.failed[uuid] = part.failed.get(uuid) or RecordError(
            "the parent did not acknowledge this record", category=category.name, uuid=uuid
        )
        return None
    made = agreed_repo.of_body(
        category.name, uuid, record.resource(), "active", part.versions.get(uuid)
    )
    return _outgoing(category, record, made)


def _send(
    ctx: PushContext,
    category: Category,
    preferred: str | None,
    origin: str,
    changes: Sequence[OutgoingChange],
    *,
    in_order: bool = False,
) -> SendResult:
    """One request per batch (of one origin), in slices of ``batch_size``."""
    result = SendResult()
    for start in range(0, len(changes), ctx.batch_size):
        piece = changes[start : start + ctx.batch_size]
        part = ctx.transport.send(
            category, piece, origin=origin, preferred=preferred, in_order=in_order
        )
        _send_absent_again(ctx, category, preferred, origin, piece, part, in_order=in_order)
        absorb(result, part)
        if in_order and stops(part, piece):
            break
    return result


def _send_absent_again(
    ctx: PushContext,
    category: Category,
    preferred: str | None,
    origin: str,
    changes: Sequence[OutgoingChange],
    part: SendResult,
    *,
    in_order: bool,
) -> None:
    """Send again as new (no ``If-Match``) the changes the parent refused as stale (412) for a
    record it does not hold at all (lost in a restore from an older backup, purged, or a new
    parent reached by ``move-parent --from-start``); their answer replaces the 412 in ``part``.

    The 412 only says the base is not the parent's version; taken for a record voided there, it
    became a conflict (local active, parent voided), the run said ok, and the record never
    reached the parent. Records the parent does hold stay 412s: ``push_settle`` decides them.
    """
    named = [c for c in changes if c.base_version is not None and c.uuid in part.failed]
    stale = [c for c in named if is_stale(part.failed[c.uuid])]
    if not stale or ctx.fetch is None:
        return
    copies = ctx.fetch(category, [c.uuid for c in stale])
    again = [replace(c, base_version=None) for c in stale if copies.get(c.uuid) is ABSENT]
    if not again:
        return
    for change in again:
        del part.failed[change.uuid]
    answer = ctx.transport.send(
        category, again, origin=origin, preferred=preferred, in_order=in_order
    )
    absorb(part, answer)


def _outgoing(category: Category, record: Record, base: Agreed | None = None) -> OutgoingChange:
    """The record's current state as a change for the parent, with the base it started from.

    A FHIR body goes as stored (its ``id`` is the uuid): the sender splices the bytes."""
    action: Action = STATE_ACTIONS.get(record.state, "UPDATED")
    if record.state == "active" and base is not None and base.state in _RESTORES:
        action = _RESTORES[base.state]
    base_version = _base_tag(category, base)
    body: Mapping[str, Any]
    if category.fhir_type is not None:
        body = RawBody(record.body)
        if record.state == "active":
            # Made here, on the thread that prepares batches, not on the one that sends them.
            body.entry(category.fhir_type, record.uuid, base_version)
    else:
        body = record.resource()
    return OutgoingChange(
        category=record.category,
        uuid=record.uuid,
        action=action,
        body=body,
        state=record.state,
        base_version=base_version,
    )


def _base_tag(category: Category, base: Agreed | None) -> str | None:
    """What ``If-Match`` names: the parent's version when known, else, for a REST category
    (whose representations carry no version), the entity tag of the agreed content and state."""
    if base is None:
        return None
    if base.parent_version == agreed_repo.UNCHECKED:
        # Agreed with a former parent: here, only a record the parent does not hold is sent
        # (``_held_by_new_parent``), as new; a REST tag names the content, valid anywhere.
        return None if category.is_fhir else rest_service.entity_tag(base.content_hash, base.state)
    if base.parent_version is not None or category.is_fhir:
        return base.parent_version
    return rest_service.entity_tag(base.content_hash, base.state)
