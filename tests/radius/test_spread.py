"""Access-Requests spread over worker sockets by their Request Authenticator (aaa.spread): the kernel,
running the classic-BPF program, delivers each datagram to the socket the pure function predicts, so one
NAS source port reaches every worker and a retransmission reaches the same one again."""

from __future__ import annotations

import os
import select
import socket

import pytest

from aaa.server import AUTH, _bound_socket
from aaa.spread import socket_index

SOCKETS = 3


def test_the_kernel_delivers_each_datagram_to_the_predicted_socket() -> None:
    first = _bound_socket("127.0.0.1", 0, 0, workers=SOCKETS, kind=AUTH)
    port = first.getsockname()[1]
    group = [first] + [_bound_socket("127.0.0.1", port, 0, workers=SOCKETS, kind=AUTH) for _ in range(2)]
    nas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # one source port for everything
    try:
        datagrams = [bytes((1, n, 0, 20)) + os.urandom(16) for n in range(60)]
        datagrams.append(datagrams[0])  # a retransmission
        for datagram in datagrams:
            nas.sendto(datagram, ("127.0.0.1", port))
        received: list[list[bytes]] = [[] for _ in group]
        while sum(map(len, received)) < len(datagrams):
            ready, _, _ = select.select(group, [], [], 2.0)
            assert ready, f"only {sum(map(len, received))} of {len(datagrams)} datagrams arrived"
            for sock in ready:
                received[group.index(sock)].append(sock.recv(100))
        for index, got in enumerate(received):
            assert got, f"socket {index} received nothing"
            assert all(socket_index(d, SOCKETS) == index for d in got)
        assert datagrams[0] in received[socket_index(datagrams[0], SOCKETS)]
    finally:
        nas.close()
        for sock in group:
            sock.close()


def test_accounting_sockets_keep_the_nas_hash() -> None:
    """No program on the accounting port: one source port, one socket."""
    first = _bound_socket("127.0.0.1", 0, 0, workers=2, kind="acct")
    port = first.getsockname()[1]
    second = _bound_socket("127.0.0.1", port, 0, workers=2, kind="acct")
    nas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for n in range(20):
            nas.sendto(bytes((4, n, 0, 20)) + os.urandom(16), ("127.0.0.1", port))
        counts = []
        for sock in (first, second):  # loopback delivers during sendto: everything is queued already
            n = 0
            while True:
                try:
                    sock.recv(100)
                except BlockingIOError:
                    break
                n += 1
            counts.append(n)
        assert sorted(counts) == [0, 20], counts
    finally:
        nas.close()
        first.close()
        second.close()


@pytest.mark.parametrize("length", [0, 7])
def test_a_runt_goes_to_socket_0(length: int) -> None:
    assert socket_index(bytes(length), SOCKETS) == 0
