"""Configuration page (edit or import sync2.json, node settings read-only) and Children page."""

from __future__ import annotations

import codecs
import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, UploadFile
from pydantic import SecretStr
from starlette.responses import Response

from fhirsync.clients.registry import unknown_preferences
from fhirsync.errors import ConfigurationError
from fhirsync.server.deps import NodeContext, NodeDep
from fhirsync.server.routes.admin_common import AdminFormSession, PageSession, page, redirect
from fhirsync.settings import (
    SYNC2_FILE,
    NodeSettings,
    Sync2Config,
    parse_json_text,
    parse_sync2,
    redacted_url,
    write_sync2,
)
from fhirsync.store import audit_query, users
from fhirsync.store import children as child_store

router = APIRouter(prefix="/sync2", include_in_schema=False)

MASK = "********"
_MAX_IMPORT_BYTES = 1024 * 1024
_SAVING = threading.Lock()
"""Held from the stale-form check to the write, so two saves cannot both pass the check."""
STALE_MESSAGE = (
    "The configuration was changed since this page was shown (in another tab, by another "
    "administrator or from the command line)."
)


def version_of(config: Sync2Config) -> str:
    """A short fingerprint of ``config``: the form carries it, so a save from a page showing an
    older configuration is refused instead of silently undoing the newer one."""
    return hashlib.sha256(config.to_json().encode()).hexdigest()[:32]


def masked_sync2(config: Sync2Config) -> str:
    """``sync2.json`` as the page shows it: client passwords replaced by a mask."""
    data = json.loads(config.to_json())
    for client in data["general"]["clients"].values():
        if client.get("password"):
            client["password"] = MASK
    return json.dumps(data, indent=2)


def _unmask(data: Any, current: Sync2Config) -> Any:
    """Put back the stored passwords where the edited text still shows the mask."""
    clients = data.get("general", {}).get("clients") if isinstance(data, dict) else None
    if not isinstance(clients, dict):
        return data
    for name, client in clients.items():
        if isinstance(client, dict) and client.get("password") == MASK:
            stored = current.general.clients.get(name)
            password = stored.password if stored else None
            client["password"] = password.get_secret_value() if password else None
    return data


def settings_rows(settings: NodeSettings) -> list[tuple[str, str, str]]:
    """(name, shown value, help) of every node setting; secrets are never shown, nor the
    password of a URL (``db_url`` may hold the database's)."""
    rows = []
    for name, field in NodeSettings.model_fields.items():
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            shown = "(set, hidden)" if value.get_secret_value() else "(not set)"
        elif isinstance(value, str):
            shown = redacted_url(value) or '""'
        else:
            shown = json.dumps(value)
        rows.append((name, shown, field.description or ""))
    return rows


def _config_page(
    request: Request,
    node: NodeContext,
    session: Any,
    *,
    text: str | None = None,
    error: ConfigurationError | None = None,
    refused_text: str | None = None,
) -> Response:
    """The page; ``refused_text`` is an edit refused because the configuration changed meanwhile
    (the form then shows the current configuration, and the refused text beside it)."""
    return page(
        request,
        "config.html",
        {
            "nav": "config",
            "text": text if text is not None else masked_sync2(node.config.sync2),
            "version": version_of(node.config.sync2),
            "error": error,
            "refused_text": refused_text,
            "stale_message": STALE_MESSAGE,
            "settings_rows": settings_rows(node.config.settings),
            "node_dir": str(node.config.node_dir),
        },
        session=session,
        status_code=409 if refused_text is not None else 400 if error else 200,
    )


@router.get("/config")
def config_page(request: Request, node: NodeDep, session: PageSession) -> Response:
    """Show sync2.json (editable by administrators) and the node settings."""
    return _config_page(request, node, session)


def _save(node: NodeContext, text: str, source: str) -> Sync2Config:
    """Validate ``text`` completely, then write it; nothing is written when it is invalid."""
    data = _unmask(parse_json_text(text, source), node.config.sync2)
    config = parse_sync2(data, source)
    # OpenMRS's default file may leave the id null (its nodes refuse to sync until it is set),
    # so parse_sync2 allows it; but a serving node without one fails every pull and push.
    if not (config.general.local_instance_id or "").strip():
        raise ConfigurationError(
            f"{source}: field 'general.localInstanceId' must name this node "
            f"(it was {node.config.sync2.general.local_instance_id!r})",
            field="general.localInstanceId",
            source=source,
        )
    write_sync2(node.config.node_dir, config)
    node.config.sync2 = config
    return config


@router.post("/config")
def save_config(
    request: Request,
    node: NodeDep,
    session: AdminFormSession,
    sync2_json: Annotated[str, Form()] = "",
    version: Annotated[str, Form()] = "",
) -> Response:
    """Save an edited sync2.json after validating it; an error names the field.

    A form made for an older configuration (``version``) is refused; a post without a version
    (a script) is saved as before.
    """
    with _SAVING:
        if version and version != version_of(node.config.sync2):
            return _config_page(request, node, session, refused_text=sync2_json)
        try:
            _save(node, sync2_json, SYNC2_FILE)
        except ConfigurationError as exc:
            return _config_page(request, node, session, text=sync2_json, error=exc)
    return redirect(request, "/sync2/config", _with_warnings(node, "Configuration saved."))


@router.post("/config/import")
async def import_config(
    request: Request, node: NodeDep, session: AdminFormSession, file: UploadFile
) -> Response:
    """Replace sync2.json with an uploaded file, validated the same way."""
    raw = await file.read(_MAX_IMPORT_BYTES + 1)
    name = file.filename or "uploaded file"
    try:
        if len(raw) > _MAX_IMPORT_BYTES:
            raise ConfigurationError(f"{name}: the file is larger than 1 MiB", source=name)
        _save(node, _file_text(raw, name), name)
    except ConfigurationError as exc:
        return _config_page(request, node, session, error=exc)
    saved = f"Configuration imported from {name}."
    return redirect(request, "/sync2/config", _with_warnings(node, saved))


def _file_text(raw: bytes, name: str) -> str:
    """The text of an uploaded file: UTF-8, with or without the byte order mark that Windows
    editors put in front (JSON itself allows none, so it is dropped here)."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigurationError(
            f"{name}: the file is saved as UTF-16 ('Unicode'); "
            "save it as UTF-8 and import it again",
            source=name,
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{name}: not a UTF-8 text file", source=name) from exc


def _with_warnings(node: NodeContext, message: str) -> str:
    """``message`` and what the saved file names that no client answers to (a typo)."""
    warnings = unknown_preferences(node.config)
    return " ".join([message, *(f"Note: {w}." for w in warnings)])


@dataclass(frozen=True, slots=True)
class ChildRow:
    """What this node knows about one child account."""

    account: str
    instance_id: str
    last_push: datetime | None
    records_received: int
    changes_received: int
    failures_reported: int
    """Its failed messages that still need someone (``audit_query.still_failed``)."""
    last_report: datetime | None
    offline: bool

    @property
    def last_seen(self) -> datetime | None:
        """The newest sign of life: a pushed change or an audit message from it."""
        seen = [t for t in (self.last_push, self.last_report) if t is not None]
        return max(seen) if seen else None


def children(node: NodeContext) -> list[ChildRow]:
    """Every child account, with its activity as far as this node's data shows it."""
    limit = timedelta(minutes=node.config.settings.child_offline_after_minutes)
    now = audit_query.now_utc()
    rows = []
    with node.db.read() as conn:
        received = child_store.received_per_child(conn)
        changes = child_store.changes_per_child(conn)
        pushed_at = child_store.last_push_per_child(conn)
        reports = child_store.reports_per_child(conn)
        for user in users.list_all(conn):
            if user.role != "child" or not user.instance_id:
                continue
            report = reports.get(user.instance_id, child_store.ChildReport(None, 0))
            row = ChildRow(
                account=user.name,
                instance_id=user.instance_id,
                last_push=pushed_at.get(user.instance_id),
                records_received=received.get(user.instance_id, 0),
                changes_received=changes.get(user.instance_id, 0),
                failures_reported=report.open_failures,
                last_report=report.last_report,
                offline=False,
            )
            seen = row.last_seen
            rows.append(ChildRow(**{**_fields(row), "offline": seen is None or now - seen > limit}))
    return rows


def _fields(row: ChildRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in ChildRow.__dataclass_fields__}


@router.get("/children")
def children_page(request: Request, node: NodeDep, session: PageSession) -> Response:
    """Each child account: instance id, last seen, records received, failures reported."""
    return page(
        request,
        "children.html",
        {
            "nav": "children",
            "children": children(node),
            "offline_minutes": node.config.settings.child_offline_after_minutes,
        },
        session=session,
    )
