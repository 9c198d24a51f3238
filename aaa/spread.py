"""Access-Requests spread over worker processes datagram by datagram (Linux SO_ATTACH_REUSEPORT_CBPF).

Without a program the kernel hashes each datagram's addresses and ports to one socket of the SO_REUSEPORT
group, so every packet of a NAS (one source port, often) lands on the same worker: a single busy BRAS
keeps one worker busy and leaves the others idle. The classic-BPF program attached here picks the socket
from the first four octets of the Request Authenticator instead, modulo the number of workers: random for
each new Access-Request, and the same for a retransmission, which therefore meets the duplicate cache
that holds its answer. Only the authentication port gets it: accounting stays with the NAS's hash, so
that the worker which saw a session's Start (its session control) also sees its Stop.

The program reads the UDP payload (the kernel passes it with the UDP header pulled). A datagram shorter
than 8 octets makes the load fail, which returns socket 0; an index beyond the sockets the group holds at
that moment (a worker restarting) makes the kernel fall back to its hash.
"""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51  # asm-generic/socket.h

# classic BPF opcodes (linux/bpf_common.h)
_BPF_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_BPF_ALU_MOD_K = 0x04 | 0x90 | 0x00  # BPF_ALU | BPF_MOD | BPF_K
_BPF_RET_A = 0x06 | 0x10  # BPF_RET | BPF_A
_INSTRUCTION = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
_PROGRAM = struct.Struct("=HxxxxxxQ")  # struct sock_fprog: len, (padding), filter pointer (64-bit)
AUTHENTICATOR_WORD = 4  # offset of the Request Authenticator in a RADIUS packet


def program(sockets: int) -> bytes:
    """The filter instructions: A = payload[4:8] (big-endian); A %= sockets; return A."""
    return b"".join(
        (
            _INSTRUCTION.pack(_BPF_LD_W_ABS, 0, 0, AUTHENTICATOR_WORD),
            _INSTRUCTION.pack(_BPF_ALU_MOD_K, 0, 0, sockets),
            _INSTRUCTION.pack(_BPF_RET_A, 0, 0, 0),
        )
    )


def socket_index(datagram: bytes, sockets: int) -> int:
    """What :func:`program` returns for ``datagram`` (tests check the kernel against it)."""
    if len(datagram) < AUTHENTICATOR_WORD + 4:
        return 0
    return int.from_bytes(datagram[AUTHENTICATOR_WORD : AUTHENTICATOR_WORD + 4]) % sockets


def spread_by_authenticator(sock: socket.socket, sockets: int) -> None:
    """Attach the program to ``sock``'s SO_REUSEPORT group (OSError where the kernel cannot)."""
    if sockets < 2:
        return
    code = program(sockets)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = _PROGRAM.pack(len(code) // _INSTRUCTION.size, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
