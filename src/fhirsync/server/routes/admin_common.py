"""Shared parts of the admin pages: templates, session dependencies, CSRF and flash messages."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from itsdangerous import BadSignature, URLSafeSerializer
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from fhirsync.errors import Forbidden
from fhirsync.server.deps import NodeContext, get_node
from fhirsync.server.error_responses import NO_FRAMING
from fhirsync.server.sessions import (
    SESSION_COOKIE,
    LoginRequired,
    Session,
    SessionManager,
    cookie_options,
    signed_in_account,
)

UI_DIR = Path(__file__).resolve().parents[2] / "ui"
FLASH_COOKIE = "fhirsync_flash"
CSRF_FIELD = "csrf_token"

templates = Jinja2Templates(directory=str(UI_DIR / "templates"))


def _naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _when(value: datetime | None) -> str:
    """A UTC time (naive as stored, or aware) as ``YYYY-MM-DD HH:MM:SS UTC`` (or a dash)."""
    return _naive(value).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _ago(value: datetime | None) -> str:
    """How long ago a stored naive-UTC time was, in plain words."""
    if value is None:
        return "never"
    seconds = int((datetime.now(UTC).replace(tzinfo=None) - _naive(value)).total_seconds())
    if seconds < 60:
        return "just now" if seconds < 5 else f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


templates.env.filters["when"] = _when
templates.env.filters["ago"] = _ago


def sessions(request: Request) -> SessionManager:
    """The app's session manager (built in ``admin.install``)."""
    manager: SessionManager = request.app.state.sessions
    return manager


def get_session(request: Request, node: Annotated[NodeContext, Depends(get_node)]) -> Session:
    """The signed-in user; LoginRequired (a redirect to the login page) if there is none.

    The account is looked up on every request so that a deleted or demoted user, or one whose
    password was changed, loses access at once, and so is the sign-out of the session (a copy
    of its cookie kept from before is refused).
    """
    manager = sessions(request)
    session = manager.read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise LoginRequired("Please sign in")
    account = signed_in_account(node.db, session)
    if account is None or not manager.still_valid(session, account):
        raise LoginRequired("Please sign in")
    role = account.user.role
    if role == "child":
        raise LoginRequired("Please sign in")
    if role != session.role:
        session = Session(session.user, role, session.nonce, session.expires, session.stamp)
    return session


async def get_form_session(
    request: Request, session: Annotated[Session, Depends(get_session)]
) -> Session:
    """The signed-in user of a form POST whose CSRF token is valid; Forbidden otherwise."""
    form = await request.form()
    token = form.get(CSRF_FIELD)
    if not sessions(request).csrf_ok(session.nonce, token if isinstance(token, str) else None):
        raise Forbidden(
            "This form was not accepted: its security token is missing or out of date. "
            "Go back, reload the page and try again. Nothing was changed."
        )
    return session


def get_admin_form_session(
    session: Annotated[Session, Depends(get_form_session)],
) -> Session:
    """A form POST by an administrator (viewers may only look)."""
    if not session.is_admin:
        raise Forbidden(f"User {session.user!r} may only view these pages; nothing was changed.")
    return session


PageSession = Annotated[Session, Depends(get_session)]
FormSession = Annotated[Session, Depends(get_form_session)]
AdminFormSession = Annotated[Session, Depends(get_admin_form_session)]


def _flash_serializer(request: Request) -> URLSafeSerializer:
    return URLSafeSerializer(request.app.state.session_key, salt="fhirsync-flash")


def redirect(
    request: Request, url: str, message: str | None = None, *, kind: str = "ok"
) -> Response:
    """A 303 redirect to ``url``, carrying a one-time message for the next page."""
    response = RedirectResponse(url, status_code=303)
    if message:
        value = _flash_serializer(request).dumps([kind, message])
        response.set_cookie(FLASH_COOKIE, value, **cookie_options(sessions(request)))
    return response


def _pop_flash(request: Request) -> tuple[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        kind, text = _flash_serializer(request).loads(raw)
    except (BadSignature, ValueError):
        return None
    return str(kind), str(text)


def page(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    session: Session | None,
    status_code: int = 200,
) -> Response:
    """Render a page with the common context (user, CSRF token, flash message, node identity)."""
    node: NodeContext = request.app.state.node
    manager = sessions(request)
    flash = _pop_flash(request)
    full = {
        "session": session,
        "csrf_field": CSRF_FIELD,
        "csrf_token": manager.csrf_token(session.nonce) if session else "",
        "flash": flash,
        "instance_id": node.config.sync2.general.local_instance_id or "(not set)",
        **context,
    }
    response = templates.TemplateResponse(request, template, full, status_code=status_code)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/sync2")
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(NO_FRAMING)
    return response
