"""Sync 2.0 audit message endpoints, ``/ws/rest/sync2/messages`` (spec §10), in OpenMRS's JSON.

JSON field names and the ``yyyy-MM-dd HH:mm:ss`` date format are those of
``reference/openmrs/sync2/sampleAuditMessage.json``; times are UTC. Children push their audit
messages here (create and update); administrators and viewers read them.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from fhirsync import categories
from fhirsync.errors import Forbidden, RecordNotFound, RequestError
from fhirsync.server.auth import require_role
from fhirsync.server.deps import CurrentUser, NodeContext, NodeDep
from fhirsync.store import audit_query
from fhirsync.store.audit_query import AuditFilter, AuditMessage
from fhirsync.store.tables import audit as audit_table
from fhirsync.store.users import User

router = APIRouter(prefix="/ws/rest/sync2/messages", tags=["sync2"])

DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

# The Resources enum of spec §7.4 (name -> category), plus every category this node knows.
RESOURCE_NAMES: dict[str, str] = {
    "PATIENT_PROGRAM": "patient_program",
    "VISIT_TYPE": "visittype",
    "AUDIT_MESSAGE": "audit_message",
    **{c.name.upper(): c.name for c in categories.all_categories()},
}

# JSON key -> AuditMessage field, in the order of the sample.
_JSON_FIELDS = (
    ("id", "id"),
    ("uuid", "uuid"),
    ("success", "success"),
    ("timestamp", "timestamp"),
    ("resourceName", "resource_name"),
    ("usedResourceUrl", "used_resource_url"),
    ("availableResourceUrls", "available_resource_urls"),
    ("parentUrl", "parent_url"),
    ("localUrl", "local_url"),
    ("action", "action"),
    ("operation", "operation"),
    ("details", "details"),
    ("linkType", "link_type"),
    ("nextMessageUuid", "next_message_uuid"),
    ("creatorInstanceId", "creator_instance_id"),
    ("voided", "voided"),
    ("mergeConflictUuid", "merge_conflict_uuid"),
)

_UUIDISH = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
"""A message uuid: OpenMRS's own samples hold names such as ``next_message_uuid``; no ``/``,
``#``, ``?`` or leading dot."""
_UUID_FIELDS = (
    ("uuid", "uuid"),
    ("nextMessageUuid", "next_message_uuid"),
    ("mergeConflictUuid", "merge_conflict_uuid"),
)


def to_json(message: AuditMessage) -> dict[str, Any]:
    """The OpenMRS JSON of one message (all keys present, nulls included)."""
    data: dict[str, Any] = {}
    for key, name in _JSON_FIELDS:
        value = getattr(message, name)
        data[key] = value.strftime(DATE_FORMAT) if isinstance(value, datetime) else value
    return data


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise RequestError("timestamp: expected a 'yyyy-MM-dd HH:mm:ss' string")
    try:
        return datetime.strptime(value, DATE_FORMAT)
    except ValueError:
        try:
            return audit_query.naive_utc(datetime.fromisoformat(value))
        except ValueError as exc:
            raise RequestError(f"timestamp: {value!r} is not 'yyyy-MM-dd HH:mm:ss'") from exc
        except OverflowError as exc:  # its time zone moves it before year 1 or after 9999
            raise RequestError(f"timestamp: {value!r} is out of range") from exc


def _optional_text(data: dict[str, Any], key: str, name: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"{key}: expected a string")
    # PostgreSQL refuses a value longer than its column (SQLite would store it): say so.
    limit = getattr(audit_table.c[name].type, "length", None)
    if limit is not None and len(value) > limit:
        raise RequestError(f"{key}: at most {limit} characters")
    return value


def from_json(body: bytes) -> AuditMessage:
    """Parse an audit message body; RequestError (400) names what is wrong."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError("The body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise RequestError("The body must be a JSON object")
    known = {key for key, _ in _JSON_FIELDS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RequestError(f"Unknown field(s): {', '.join(unknown)}")
    success = data.get("success", False)
    voided = data.get("voided", False)
    if not isinstance(success, bool) or not isinstance(voided, bool):
        raise RequestError("success and voided must be true or false")
    timestamp = data.get("timestamp")
    values: dict[str, Any] = {
        name: _optional_text(data, key, name)
        for key, name in _JSON_FIELDS
        if key not in ("id", "success", "timestamp", "voided")
    }
    values["uuid"] = values["uuid"] or ""
    for key, name in _UUID_FIELDS:
        # These become paths of the admin pages' links and forms (/sync2/audit/{uuid}/retry):
        # "../pull#" would have made a Retry button start a pull instead.
        if values[name] and _UUIDISH.fullmatch(values[name]) is None:
            raise RequestError(f"{key}: {values[name][:40]!r} is not a uuid")
    return AuditMessage(
        id=None,
        success=success,
        voided=voided,
        timestamp=_parse_time(timestamp) if timestamp is not None else audit_query.now_utc(),
        **values,
    )


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def _reader(user: User) -> User:
    return require_role(user, "admin", "viewer")


def _check_writer(user: User, message: AuditMessage) -> None:
    """Admins write any message; a child only messages it created itself."""
    if user.role == "admin":
        return
    if user.role == "child" and message.creator_instance_id == user.instance_id:
        return
    raise Forbidden(f"user {user.name!r} may not write this audit message")


def _success_filter(value: str) -> bool | None:
    choices = {"ALL": None, "SUCCESS": True, "FAILURE": False}
    if value.upper() not in choices:
        raise RequestError(f"success: {value!r} is not ALL, SUCCESS or FAILURE")
    return choices[value.upper()]


def _resource_filter(value: str) -> str | None:
    if value.upper() == "ALL":
        return None
    found = RESOURCE_NAMES.get(value.upper())
    if found is None:
        raise RequestError(f"resourceName: {value!r} is not a known resource")
    return found


@router.get("")
def list_messages(
    node: NodeDep,
    user: CurrentUser,
    *,
    success: str,
    operation: str,
    resource_name: Annotated[str, Query(alias="resourceName")],
    creator_instance_id: Annotated[str, Query(alias="creatorInstanceId")],
    # Bounded so that the page echoed back fits a JSON (64-bit) integer.
    page_index: Annotated[int, Query(alias="pageIndex", ge=1, le=2**63 - 1)] = 1,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=1000)] = 100,
) -> Response:
    """A page of audit messages, newest first (spec §7.4 filters; voided ones excluded)."""
    _reader(user)
    if not creator_instance_id.strip():
        raise RequestError("creatorInstanceId: must be ALL or an instance id")
    flt = AuditFilter(
        success=_success_filter(success),
        operation=operation if operation.upper() in ("PULL", "PUSH") else None,
        resource_name=_resource_filter(resource_name),
        creator_instance_id=None if creator_instance_id == "ALL" else creator_instance_id,
    )
    with node.db.read() as conn:
        found = audit_query.list_messages(conn, flt, page=page_index, page_size=page_size)
    return _json(
        {
            "itemsCount": found.total,
            "page": found.page,
            "pageSize": found.page_size,
            "data": [to_json(m) for m in found.items],
        }
    )


def _get(node: NodeContext, uuid: str) -> AuditMessage:
    with node.db.read() as conn:
        message = audit_query.get_message(conn, uuid)
    if message is None:
        raise RecordNotFound("The entity doesn't exists", uuid=uuid)
    return message


@router.get("/{uuid}")
def get_message(node: NodeDep, user: CurrentUser, uuid: str) -> Response:
    """One audit message; 404 "The entity doesn't exists" if unknown."""
    _reader(user)
    return _json(to_json(_get(node, uuid)))


def _persisted(node: NodeContext, message: AuditMessage) -> bool:
    general = node.config.sync2.general
    return general.persist_success_audit if message.success else general.persist_failure_audit


@router.post("")
async def create_message(request: Request, node: NodeDep, user: CurrentUser) -> Response:
    """Store an audit message (a child pushing its log); 403 if the uuid already exists.

    It is stored subject to this node's persist flags (spec §7.2); when they drop it the answer
    is the message as received, with a null id.
    """
    message = from_json(await request.body())
    _check_writer(user, message)
    if not _persisted(node, message):
        return _json(to_json(message))
    with node.db.write() as conn:
        if message.uuid and audit_query.get_message(conn, message.uuid) is not None:
            raise Forbidden("The entity already exists")
        stored = audit_query.insert_message(conn, message)
        result = audit_query.get_message(conn, stored.uuid)
    assert result is not None
    return _json(to_json(result))


@router.post("/{uuid}")
async def update_message(request: Request, node: NodeDep, user: CurrentUser, uuid: str) -> Response:
    """Replace a stored message; 400 if the body's uuid differs, 404 if unknown."""
    message = from_json(await request.body())
    if message.uuid and message.uuid != uuid:
        raise RequestError("The uuid of the body does not match the uuid of the path")
    _check_writer(user, message)
    with node.db.write() as conn:
        current = audit_query.get_message(conn, uuid)
        if current is None:
            raise RecordNotFound("The entity doesn't exists", uuid=uuid)
        if user.role != "admin" and current.creator_instance_id != user.instance_id:
            raise Forbidden(f"user {user.name!r} may not change this audit message")
        # Fields the JSON does not carry keep their stored values.
        changed = replace(
            message, uuid=uuid, record_uuid=current.record_uuid, error_class=current.error_class
        )
        stored = audit_query.update_message(conn, changed)
    return _json(to_json(stored))


@router.delete("/{uuid}")
def void_message(node: NodeDep, user: CurrentUser, uuid: str) -> Response:
    """Void (soft-delete) a message; it disappears from lists. 404 if unknown."""
    require_role(user, "admin")
    with node.db.write() as conn:
        voided = audit_query.void_message(conn, uuid)
    if voided is None:
        raise RecordNotFound("The entity doesn't exists", uuid=uuid)
    return _json(to_json(voided))
