"""The admin pages at ``/sync2/``: assembly (``install``), sign-in and sign-out.

The pages themselves live in ``admin_dashboard``, ``admin_audit`` and ``admin_config``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from fhirsync.errors import Forbidden, Unauthenticated
from fhirsync.server.deps import NodeDep
from fhirsync.server.routes import (
    admin_audit,
    admin_config,
    admin_conflicts,
    admin_dashboard,
    admin_failures,
    feedstate,
)
from fhirsync.server.routes.admin_common import (
    CSRF_FIELD,
    UI_DIR,
    FormSession,
    page,
    redirect,
    sessions,
)
from fhirsync.server.sessions import (
    PRELOGIN_COOKIE,
    SESSION_COOKIE,
    LoginRequired,
    SessionManager,
    cookie_options,
    current_account,
    load_key,
    sign_out,
)

router = APIRouter(prefix="/sync2", include_in_schema=False)


def install(app: FastAPI) -> None:
    """Add the admin pages, their static files and the sign-in redirect to ``app``."""
    node = app.state.node
    key = load_key(node.config)
    app.state.session_key = key
    app.state.sessions = SessionManager(
        key,
        lifetime_seconds=int(node.config.settings.session_hours * 3600),
        secure=node.config.base_url.startswith("https://"),
    )
    app.add_exception_handler(LoginRequired, _to_login)
    app.mount("/sync2/static", StaticFiles(directory=str(UI_DIR / "static")), name="sync2-static")
    for module_router in (
        router,
        admin_dashboard.router,
        admin_audit.router,
        admin_config.router,
        admin_failures.router,
        admin_conflicts.router,
        # Not a page, but installed with them (app.py stays one line per area): the lag that the
        # dashboards of this node's children show comes from here.
        feedstate.router,
    ):
        app.include_router(module_router)


async def _to_login(request: Request, exc: Exception) -> Response:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    # htmx follows redirects inside a fragment; tell it to load the login page as a whole.
    if request.headers.get("HX-Request"):
        return Response(status_code=204, headers={"HX-Redirect": "/sync2/login"})
    safe_next = target if request.method == "GET" else "/sync2/"
    return RedirectResponse(f"/sync2/login?next={_quote(safe_next)}", status_code=303)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="/")


def _safe_next(value: str | None) -> str:
    """Only same-site paths under /sync2/ (no open redirect)."""
    if value and value.startswith("/sync2/") and not value.startswith("//"):
        return value
    return "/sync2/"


def _login_page(
    request: Request, *, error: str | None = None, next_url: str = "/sync2/", status: int = 200
) -> Response:
    manager = sessions(request)
    cookie, nonce = manager.new_prelogin()
    response = page(
        request,
        "login.html",
        {
            "error": error,
            "next_url": next_url,
            "login_csrf": manager.csrf_token(nonce),
        },
        session=None,
        status_code=status,
    )
    response.set_cookie(PRELOGIN_COOKIE, cookie, **cookie_options(manager))
    return response


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    """The sign-in form."""
    return _login_page(request, next_url=_safe_next(next))


@router.post("/login")
async def login(
    request: Request,
    node: NodeDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/sync2/",
) -> Response:
    """Check the credentials and start a session (child-node accounts are refused)."""
    manager = sessions(request)
    form = await request.form()
    token = form.get(CSRF_FIELD)
    nonce = manager.read_prelogin(request.cookies.get(PRELOGIN_COOKIE))
    if not manager.csrf_ok(nonce, token if isinstance(token, str) else None):
        raise Forbidden(
            "The sign-in form had expired or was not sent from this site. Reload it and try again."
        )
    try:
        # In a worker thread: argon2 (~16 ms of CPU) and the account read would otherwise stall
        # every other request of the node, sign-in attempts after one another most of all.
        user = await run_in_threadpool(node.authenticator.authenticate, username.strip(), password)
    except Unauthenticated:
        return _login_page(
            request, error="Wrong user name or password.", next_url=_safe_next(next), status=401
        )
    if user.role == "child":
        return _login_page(
            request,
            error="This is a child node's account: it syncs data but cannot sign in here.",
            next_url=_safe_next(next),
            status=403,
        )
    # The session is bound to the password it was opened with (see sessions.py); read the hash
    # after authenticate, which may just have replaced an outdated one.
    account = await run_in_threadpool(current_account, node.db, user.name)
    if account is None:
        return _login_page(
            request, error="Wrong user name or password.", next_url=_safe_next(next), status=401
        )
    value, _session = manager.issue(user.name, user.role, account.password_hash)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, value, max_age=manager.lifetime_seconds, **cookie_options(manager)
    )
    response.delete_cookie(PRELOGIN_COOKIE, path="/sync2")
    return response


@router.post("/logout")
def logout(request: Request, node: NodeDep, session: FormSession) -> Response:
    """End the session, also for any copy of its cookie."""
    sign_out(node.db, session)
    response = redirect(request, "/sync2/login", "You are signed out.")
    response.delete_cookie(SESSION_COOKIE, path="/sync2")
    return response
