"""The socket `fhirsync serve` listens on: named errors, and connections without Nagle delays."""

from __future__ import annotations

import asyncio
import socket

import pytest

from fhirsync.cli.node import _listening_socket
from fhirsync.errors import ConfigurationError


def test_accepted_connections_send_without_waiting_for_acks() -> None:
    async def accept_one() -> int:
        listening = _listening_socket("127.0.0.1", 0)
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted: socket.socket = writer.get_extra_info("socket")
            seen.set_result(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=listening)
        async with server:
            _reader, writer = await asyncio.open_connection(*listening.getsockname())
            nodelay = await asyncio.wait_for(seen, 10)
            writer.close()
        return nodelay

    # Without TCP_NODELAY each HTTP answer waited ~40 ms for a delayed ACK (measured: 1.6 ms a
    # request became 44 ms, and an incremental pull of 2,000 records 0.6 s became 1.9 s).
    assert asyncio.run(accept_one()) != 0


def test_a_port_in_use_is_a_configuration_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError) as info:
            _listening_socket("127.0.0.1", port)
    assert info.value.field == "port" and f"127.0.0.1:{port}" in str(info.value)


def test_a_host_that_does_not_resolve_is_named_without_blaming_the_port() -> None:
    with pytest.raises(ConfigurationError) as info:
        _listening_socket("no-such-host.invalid", 8080)
    assert info.value.field == "host" and "no-such-host.invalid" in str(info.value)
    assert "using the port" not in str(info.value)
