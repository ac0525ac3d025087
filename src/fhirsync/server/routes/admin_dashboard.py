"""The dashboard: this node, its parent's reachability, recent outcomes, and Pull/Push now."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime, timedelta

import pygal
from fastapi import APIRouter, Request
from pygal.style import Style
from starlette.responses import Response

from fhirsync.errors import FhirsyncError
from fhirsync.server.deps import NodeContext, NodeDep
from fhirsync.server.routes import admin_actions
from fhirsync.server.routes.admin_common import AdminFormSession, PageSession, page, redirect
from fhirsync.store import audit_query, conflicts, failures, locks, runs
from fhirsync.store.audit_query import AuditMessage
from fhirsync.store.runs import RunState
from fhirsync.sync import lag
from fhirsync.sync.lag import Lag, ParentStatus
from fhirsync.sync.scheduler import is_scheduled, overdue_since

# pygal appends a legacy import hook (for its optional map plug-ins, unused here) to sys.meta_path.
# Python 3.11 warns about it on every later failed import (ImportWarning), which breaks libraries
# that probe for optional modules under warnings-as-errors. Remove it.
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "PluginImportFixer"]

router = APIRouter(prefix="/sync2", include_in_schema=False)

_PARENT_TIMEOUT = 2.0
_CHART_STYLE = Style(
    background="transparent",
    plot_background="transparent",
    colors=("#2e7d32", "#c62828"),
    font_family="system-ui, sans-serif",
    label_font_size=11,
    legend_font_size=12,
)


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the dashboard shows (also what ``/sync2/live`` refreshes)."""

    parent: ParentStatus
    last_pull: AuditMessage | None
    last_push: AuditMessage | None
    pull_run: RunState
    push_run: RunState
    overdue: dict[str, datetime]
    """Per direction ("pull", "push"): when its overdue scheduled run was due."""
    parked: int
    waiting: int
    failed_by_category: dict[str, int]
    """Failed messages that still need someone, per category: not retried since, not a
    dismissal, not a conflict (those are open conflicts), not resolved since."""
    pull_blocked: str | None
    push_blocked: str | None
    open_conflicts: int
    lag: Lag
    restored: bool
    """Restored from a backup and its recovery pull (own changes included) still to come."""


def gather(node: NodeContext) -> Facts:
    """Collect the dashboard's facts (the parent check takes at most a couple of seconds)."""
    parent = lag.check_parent(node.config, timeout=_PARENT_TIMEOUT)
    # A parent that did not answer /health is not asked again for its feeds (no second wait).
    behind = lag.gather(node.config, node.db, ask_parent=parent.reachable is True)
    with node.db.read() as conn:
        last_pull = audit_query.latest(conn, "PULL")
        last_push = audit_query.latest(conn, "PUSH")
        failed = audit_query.open_failures_by_category(conn)
        pull_run, push_run = runs.get(conn, "pull"), runs.get(conn, "push")
        open_failures = failures.open_counts(conn)
        open_conflicts = conflicts.count_open(conn)
    return Facts(
        parent=parent,
        last_pull=last_pull,
        last_push=last_push,
        pull_run=pull_run,
        push_run=push_run,
        parked=sum(n for (_op, status), n in open_failures.items() if status == "parked"),
        waiting=sum(n for (_op, status), n in open_failures.items() if status != "parked"),
        failed_by_category=failed,
        pull_blocked=admin_actions.pull_unavailable_reason(node),
        push_blocked=admin_actions.push_unavailable_reason(node),
        open_conflicts=open_conflicts,
        lag=behind,
        restored=node.config.recovery_file.exists(),
        overdue=_overdue(node, {"pull": pull_run, "push": push_run}),
    )


def _overdue(node: NodeContext, states: dict[str, RunState]) -> dict[str, datetime]:
    out: dict[str, datetime] = {}
    for operation, state in states.items():
        running = locks.holder(node.db, operation) is not None
        due = overdue_since(state, scheduled=is_scheduled(node.config, operation), running=running)
        if due is not None:
            out[operation] = due
    return out


def whole_ticks(highest: int, *, most: int = 8) -> list[int]:
    """Scale labels for counts up to ``highest``: whole numbers 1, 2 or 5 times a power of ten
    apart, from 0 to at least ``highest``, at most ``most`` steps (pygal's own scale shows
    tenths of a record when the counts are small)."""
    step = 1
    while -(-highest // step) > most:
        lead = int(str(step)[0])
        step = {1: 2, 2: 5, 5: 10}[lead] * (step // lead)
    top = max(1, -(-highest // step)) * step
    return list(range(0, top + 1, step))


def activity_chart(node: NodeContext, *, hours: int = 24) -> str:
    """An SVG bar chart of records synced and failed per hour over the last ``hours`` hours."""
    now = audit_query.now_utc().replace(minute=0, second=0)
    since = now - timedelta(hours=hours - 1)
    with node.db.read() as conn:
        buckets = audit_query.activity(conn, since=since, step=timedelta(hours=1), until=now)
    chart = pygal.StackedBar(
        height=240,
        width=860,
        js=[],
        disable_xml_declaration=True,
        style=_CHART_STYLE,
        legend_at_bottom=True,
        show_minor_x_labels=False,
        x_label_rotation=0,
        print_values=False,
        no_data_text="No sync activity yet",
        truncate_label=-1,
    )
    chart.x_labels = [b.start.strftime("%H:00") for b in buckets]
    chart.x_labels_major = chart.x_labels[::3]
    chart.y_labels = whole_ticks(max((b.succeeded + b.failed for b in buckets), default=0))
    chart.add("Records synced", [b.succeeded for b in buckets])
    chart.add("Failures", [b.failed for b in buckets])
    svg: str = chart.render(is_unicode=True)
    return svg


@router.get("/")
def dashboard(request: Request, node: NodeDep, session: PageSession) -> Response:
    """The dashboard page."""
    return page(
        request,
        "dashboard.html",
        {
            "facts": gather(node),
            "chart": activity_chart(node),
            "parent_url": node.config.parent_url,
            "base_url": node.config.base_url,
            "sync2": node.config.sync2,
        },
        session=session,
    )


@router.get("/live")
def live(request: Request, node: NodeDep, session: PageSession) -> Response:
    """The part of the dashboard that htmx refreshes."""
    return page(request, "_live.html", {"facts": gather(node)}, session=session)


def _manual(request: Request, node: NodeContext, direction: str) -> Response:
    try:
        outcome = (
            admin_actions.pull_now(node) if direction == "pull" else admin_actions.push_now(node)
        )
    except admin_actions.Unavailable as exc:
        return redirect(request, "/sync2/", exc.message, kind="error")
    except FhirsyncError as exc:
        what = "Pulling" if direction == "pull" else "Pushing"
        return redirect(request, "/sync2/", f"{what} failed: {exc.message}", kind="error")
    return redirect(request, "/sync2/", outcome.message, kind="ok" if outcome.ok else "error")


@router.post("/pull")
def pull_now(request: Request, node: NodeDep, _session: AdminFormSession) -> Response:
    """Manual pull from the parent (spec §8.2), then back to the dashboard with the outcome."""
    return _manual(request, node, "pull")


@router.post("/push")
def push_now(request: Request, node: NodeDep, _session: AdminFormSession) -> Response:
    """Manual push to the parent (spec §8.2), then back to the dashboard with the outcome."""
    return _manual(request, node, "push")
