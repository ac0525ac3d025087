"""Dependency aliases for routers: the node, its database and the current user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from fhirsync.server.auth import Authenticator, require_role
from fhirsync.settings import NodeConfig
from fhirsync.store.engine import Database
from fhirsync.store.users import User


@dataclass
class NodeContext:
    """What every request handler may need, built once in ``create_app``."""

    config: NodeConfig
    db: Database
    authenticator: Authenticator


def get_node(request: Request) -> NodeContext:
    """The node context stored on the app."""
    node: NodeContext = request.app.state.node
    return node


async def get_user(request: Request, node: Annotated[NodeContext, Depends(get_node)]) -> User:
    """The authenticated user (HTTP Basic); Unauthenticated if missing or wrong.

    Credentials verified within the last minute are answered on the event loop; anything else
    (argon2, a database read) goes to a worker thread, as a plain ``def`` dependency would.
    """
    header = request.headers.get("authorization")
    user = node.authenticator.remembered(header)
    if user is not None:
        return user
    return await run_in_threadpool(node.authenticator.authenticate_header, header)


def get_admin(user: Annotated[User, Depends(get_user)]) -> User:
    """The current user if it is an admin."""
    return require_role(user, "admin")


def get_writer(user: Annotated[User, Depends(get_user)]) -> User:
    """The current user if it may write records (admins and child nodes)."""
    return require_role(user, "admin", "child")


NodeDep = Annotated[NodeContext, Depends(get_node)]
CurrentUser = Annotated[User, Depends(get_user)]
AdminUser = Annotated[User, Depends(get_admin)]
WriterUser = Annotated[User, Depends(get_writer)]
