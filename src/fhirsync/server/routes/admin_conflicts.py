"""Conflicts page: open conflicts, each shown side by side (base, local, remote), and Resolve.

Per conflicting field the administrator takes this node's value, the parent's value or types
one; the other fields merge as the sync engine merges them (a change on one side only is kept).
Resolving goes through ``sync.resolve`` (as the CLI and ``/ws/rest/sync2/conflict/resolve`` do):
the record is written here, queued for the parent with the parent's version as the base, the
conflict is closed and the audit names the administrator. A push is then tried at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from fhirsync.errors import FhirsyncError, InvalidResource
from fhirsync.server.deps import NodeContext, NodeDep
from fhirsync.server.routes import admin_actions
from fhirsync.server.routes.admin_common import AdminFormSession, PageSession, page, redirect
from fhirsync.store import conflicts as conflict_repo
from fhirsync.store.conflicts import Conflict
from fhirsync.sync import resolve as resolving
from fhirsync.sync.merge import MISSING, STATE_PATH, FieldConflict, Side, flatten, merge
from fhirsync.sync.reconcile import reconciler_for

router = APIRouter(prefix="/sync2/conflicts", include_in_schema=False)

_LIST = "/sync2/conflicts"
_CHOICES = ("local", "remote", "edit")
_STATES = ("active", "voided", "retired", "deleted")
SHOWN = 200
"""Rows on the list at most (a restored node or a bulk edit can leave thousands); the page
says how many more are open."""


@dataclass(frozen=True, slots=True)
class FieldRow:
    """One leaf field of the side-by-side view."""

    path: str
    base: str
    local: str
    remote: str
    differs: bool
    conflicting: bool


@dataclass(frozen=True, slots=True)
class ChoiceRow:
    """One conflicting field the administrator decides."""

    index: int
    path: str
    base: str
    local: str
    remote: str
    edit_default: str
    """The value the edit box starts with (the local one, as JSON)."""


def shown(value: Any) -> str:
    """A value as compact JSON, ``(absent)`` for a missing field."""
    if value is MISSING:
        return "(absent)"
    return orjson.dumps(value).decode()


def _sides(conflict: Conflict) -> tuple[Side | None, Side, Side]:
    base = conflict.base()
    return (
        Side(base, conflict.base_state or "active") if base is not None else None,
        Side(conflict.local(), conflict.local_state),
        Side(conflict.remote(), conflict.remote_state),
    )


def field_conflicts(conflict: Conflict) -> tuple[FieldConflict, ...]:
    """The fields both sides changed differently, with the three values (as the merge sees them)."""
    base, local, remote = _sides(conflict)
    return merge(base, local, remote).conflicts


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(
        path == p or path.startswith(f"{p}.") or path.startswith(f"{p}[") or p == "(body)"
        for p in prefixes
    )


def field_rows(conflict: Conflict) -> list[FieldRow]:
    """Every leaf field of the three versions, the differing and conflicting ones marked."""
    base_body = conflict.base()
    base = flatten(base_body) if base_body is not None else {}
    local = flatten(conflict.local())
    remote = flatten(conflict.remote())
    base[STATE_PATH] = conflict.base_state or MISSING
    local[STATE_PATH] = conflict.local_state
    remote[STATE_PATH] = conflict.remote_state
    paths = tuple(conflict.paths)
    rows: list[FieldRow] = []
    for path in sorted({*base, *local, *remote}, key=lambda p: (p == STATE_PATH, p)):
        values = [side.get(path, MISSING) for side in (base, local, remote)]
        base_text, local_text, remote_text = (shown(v) for v in values)
        rows.append(
            FieldRow(
                path,
                base_text,
                local_text,
                remote_text,
                differs=len({base_text, local_text, remote_text}) > 1,
                conflicting=_under(path, paths),
            )
        )
    return rows


def choice_rows(conflict: Conflict) -> list[ChoiceRow]:
    """The per-field decisions of the detail page's form."""
    return [
        ChoiceRow(
            i,
            fc.path,
            shown(fc.base),
            shown(fc.local),
            shown(fc.remote),
            "" if fc.local is MISSING else shown(fc.local),
        )
        for i, fc in enumerate(field_conflicts(conflict))
    ]


def _get(node: NodeContext, uuid: str) -> Conflict | None:
    with node.db.read() as conn:
        return conflict_repo.get(conn, uuid)


@router.get("")
def conflicts_page(request: Request, node: NodeDep, session: PageSession) -> Response:
    """Open conflicts, newest first."""
    with node.db.read() as conn:
        rows = conflict_repo.list_conflicts(conn, limit=SHOWN)
        total = conflict_repo.count_open(conn)
    return page(
        request,
        "conflicts.html",
        {"nav": "conflicts", "rows": rows, "total": total},
        session=session,
    )


@router.get("/{uuid}")
def conflict_page(request: Request, node: NodeDep, session: PageSession, uuid: str) -> Response:
    """One conflict side by side, with the per-field choices and Resolve."""
    found = _get(node, uuid)
    if found is None:
        return redirect(request, _LIST, f"No conflict {uuid}.", kind="error")
    is_open = found.status == conflict_repo.OPEN
    return page(
        request,
        "conflict_detail.html",
        {
            "nav": "conflicts",
            "c": found,
            "is_open": is_open,
            "fields": field_rows(found),
            "choices": choice_rows(found) if is_open else [],
        },
        session=session,
    )


class _Stale(Exception):
    """The form was made for an earlier state of the conflict (a newer detection updated it)."""


def _form_choices(conflict: Conflict, form: Any) -> dict[str, Any]:
    """The posted choices as path → value; _Stale when they no longer match the conflict."""
    fields = field_conflicts(conflict)
    out: dict[str, Any] = {}
    for i, fc in enumerate(fields):
        if form.get(f"path-{i}") != fc.path:
            raise _Stale(fc.path)
        choice = form.get(f"choice-{i}", "local")
        if choice not in _CHOICES:
            choice = "local"
        if choice == "local":
            out[fc.path] = fc.local
        elif choice == "remote":
            out[fc.path] = fc.remote
        else:
            raw = form.get(f"value-{i}", "")
            out[fc.path] = resolving.parse_choice(raw if isinstance(raw, str) else "")
            if fc.path == STATE_PATH and out[fc.path] not in _STATES:
                # The engine takes any other value as "active": a typo would undelete the record.
                raise InvalidResource(
                    f"the record's state ({STATE_PATH}) must be active, voided, retired or "
                    f"deleted, not {raw!r}"
                )
    if form.get(f"path-{len(fields)}") is not None:
        raise _Stale("extra field")
    return out


@router.post("/{uuid}/resolve")
async def resolve(
    request: Request, node: NodeDep, session: AdminFormSession, uuid: str
) -> Response:
    """Resolve with the posted per-field choices, then try to push the result to the parent."""
    from starlette.concurrency import run_in_threadpool

    here = f"{_LIST}/{uuid}"
    form = await request.form()
    found = _get(node, uuid)
    if found is None or found.status != conflict_repo.OPEN:
        return redirect(request, _LIST, "This conflict is no longer open.", kind="error")
    try:
        choices = _form_choices(found, form)
    except InvalidResource as exc:
        return redirect(request, here, f"Not resolved: {exc.message}", kind="error")
    except _Stale:
        return redirect(
            request,
            here,
            "The conflict changed since the page was shown (a sync or a change made here "
            "updated it). Review it again; nothing was changed.",
            kind="error",
        )
    try:
        done = await run_in_threadpool(
            resolving.resolve,
            node.db,
            reconciler_for(node.config),
            found.uuid,
            resolved_by=session.user,
            choices=choices,
        )
    except FhirsyncError as exc:
        return redirect(request, here, f"Not resolved: {exc.message}", kind="error")
    message = f"Conflict on {done.category} {done.record_uuid} resolved"
    if admin_actions.push_unavailable_reason(node) is not None:
        return redirect(request, _LIST, f"{message}; the next push sends it to the parent.")
    try:
        outcome = await run_in_threadpool(admin_actions.push_now, node)
    except FhirsyncError as exc:
        return redirect(
            request,
            _LIST,
            f"{message}, but pushing failed ({exc.message}); the next push sends it.",
            kind="error",
        )
    return redirect(request, _LIST, f"{message}. {outcome.message}")
