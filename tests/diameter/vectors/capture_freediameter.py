"""How ``freediameter.txt`` was produced: messages a real freeDiameterd (Debian package ``freediameterd``)
wrote on a loopback TCP connection, captured byte for byte.

    apt-get install -y freediameterd freediameter-extensions
    .venv/bin/python tests/diameter/vectors/capture_freediameter.py    # rewrite freediameter.txt

Two connections, both on 127.0.0.1 only:

1. freeDiameterd dials us (ConnectPeer): we keep its CER, answer with our CEA, keep its DWR (Tw = 6 s),
   answer DWA, then stop freeDiameterd with SIGTERM and keep its DPR.
2. we dial freeDiameterd: we send our CER and keep its CEA, send a DWR and keep its DWA, send a CCR and keep
   its answer (freeDiameterd has no credit-control handler: an error answer it makes itself).

The capture is not part of the test run (it takes ~15 s and needs the daemon); the stored hex is what
``test_codec_vectors.py`` checks.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from occ.diameter import dictionary as d
from occ.diameter.codec import (
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    Framer,
    avp_address,
    avp_grouped,
    avp_i32,
    avp_octets,
    avp_u32,
    avp_utf8,
    decode_message,
    encode_message,
)

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "freediameter.txt"
FD_PORT, OUR_PORT = 3871, 3872
IDENTITY = avp_octets(d.AVP_ORIGIN_HOST, b"ocs.example.net") + avp_octets(d.AVP_ORIGIN_REALM, b"example.net")
# the second connection is another peer (one connection per peer pair): known to freeDiameterd through a
# ConnectPeer entry whose port nobody listens on, so that it accepts this peer's incoming CER
CLIENT = avp_octets(d.AVP_ORIGIN_HOST, b"client.example.net") + avp_octets(d.AVP_ORIGIN_REALM, b"example.net")
CONFIG = """
Identity = "fd.example.net";
Realm = "example.net";
Port = {fd_port};
SecPort = {sec_port};
ListenOn = "127.0.0.1";
No_SCTP;
No_IPv6;
TwTimer = 6;
TcTimer = 30;
TLS_Cred = "{dir}/cert.pem", "{dir}/key.pem";
TLS_CA = "{dir}/cert.pem";
LoadExtension = "/usr/lib/freeDiameter/dict_nasreq.fdx";
LoadExtension = "/usr/lib/freeDiameter/dict_dcca.fdx";
LoadExtension = "/usr/lib/freeDiameter/dict_dcca_3gpp.fdx";
ConnectPeer = "ocs.example.net" {{ ConnectTo = "127.0.0.1"; Port = {our_port}; No_TLS; }};
ConnectPeer = "client.example.net" {{ ConnectTo = "127.0.0.1"; Port = {unused_port}; No_TLS; }};
"""


def read_message(conn: socket.socket, framer: Framer, timeout: float) -> bytes:
    conn.settimeout(timeout)
    while True:
        data = conn.recv(65536)
        if not data:
            raise ConnectionError("freeDiameterd closed the connection")
        messages = framer.feed(data)
        if messages:
            assert len(messages) == 1, messages
            return messages[0]


def cea_for(cer: bytes) -> bytes:
    request = decode_message(cer)
    avps = avp_u32(d.AVP_RESULT_CODE, d.DIAMETER_SUCCESS) + IDENTITY
    avps += avp_address(d.AVP_HOST_IP_ADDRESS, "127.0.0.1") + avp_u32(d.AVP_VENDOR_ID, 0)
    avps += avp_utf8(d.AVP_PRODUCT_NAME, "occ", mandatory=False)
    avps += avp_u32(d.AVP_AUTH_APPLICATION_ID, d.APP_CREDIT_CONTROL)
    return encode_message(0, request.code, 0, request.hop_by_hop, request.end_to_end, avps)


def answer_for(request_wire: bytes) -> bytes:
    request = decode_message(request_wire)
    avps = avp_u32(d.AVP_RESULT_CODE, d.DIAMETER_SUCCESS) + IDENTITY
    return encode_message(0, request.code, 0, request.hop_by_hop, request.end_to_end, avps)


def our_cer() -> bytes:
    avps = CLIENT + avp_address(d.AVP_HOST_IP_ADDRESS, "127.0.0.1") + avp_u32(d.AVP_VENDOR_ID, 0)
    avps += avp_utf8(d.AVP_PRODUCT_NAME, "occ", mandatory=False)
    avps += avp_u32(d.AVP_AUTH_APPLICATION_ID, d.APP_CREDIT_CONTROL)
    return encode_message(FLAG_REQUEST, d.CMD_CAPABILITIES_EXCHANGE, 0, 0x51, 0x51, avps)


def our_ccr() -> bytes:
    avps = avp_utf8(d.AVP_SESSION_ID, "client.example.net;1;1") + CLIENT
    avps += avp_octets(d.AVP_DESTINATION_REALM, b"nowhere.example.org")
    avps += avp_u32(d.AVP_AUTH_APPLICATION_ID, d.APP_CREDIT_CONTROL)
    avps += avp_utf8(d.AVP_SERVICE_CONTEXT_ID, "32251@3gpp.org")
    avps += avp_i32(d.AVP_CC_REQUEST_TYPE, d.CC_REQUEST_TYPE_INITIAL_REQUEST) + avp_u32(
        d.AVP_CC_REQUEST_NUMBER, 0
    )
    avps += avp_grouped(d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, avp_grouped(d.AVP_REQUESTED_SERVICE_UNIT))
    flags = FLAG_REQUEST | FLAG_PROXIABLE
    return encode_message(flags, d.CMD_CREDIT_CONTROL, d.APP_CREDIT_CONTROL, 0x53, 0x53, avps)


def capture() -> list[tuple[str, str, bytes]]:
    version = subprocess.run(["freeDiameterd", "--version"], capture_output=True, text=True).stdout.split()[2]
    vectors: list[tuple[str, str, bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=fd.example.net", "-keyout", f"{tmp}/key.pem", "-out", f"{tmp}/cert.pem"],
            check=True, capture_output=True,
        )  # fmt: skip
        conf = Path(tmp) / "freeDiameter.conf"
        conf.write_text(
            CONFIG.format(
                fd_port=FD_PORT, sec_port=FD_PORT + 10, our_port=OUR_PORT, unused_port=OUR_PORT + 1, dir=tmp
            )
        )
        listener = socket.create_server(("127.0.0.1", OUR_PORT))
        daemon = subprocess.Popen(
            ["freeDiameterd", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            listener.settimeout(30)
            inbound, _ = listener.accept()
            framer = Framer()
            cer = read_message(inbound, framer, 10)
            vectors.append(("fd-cer", f"CER freeDiameterd {version} sends when it dials a peer", cer))
            inbound.sendall(cea_for(cer))

            outbound = socket.create_connection(("127.0.0.1", FD_PORT), timeout=10)
            out_framer = Framer()
            outbound.sendall(our_cer())
            cea = read_message(outbound, out_framer, 10)
            vectors.append(("fd-cea", f"CEA freeDiameterd {version} answers to our CER", cea))
            outbound.sendall(encode_message(FLAG_REQUEST, d.CMD_DEVICE_WATCHDOG, 0, 0x52, 0x52, CLIENT))
            dwa = read_message(outbound, out_framer, 10)
            vectors.append(("fd-dwa", f"DWA freeDiameterd {version} answers to our DWR", dwa))
            outbound.sendall(our_ccr())
            error = read_message(outbound, out_framer, 10)
            vectors.append(
                ("fd-cca-error", f"freeDiameterd {version} answer to a CCR it cannot route", error)
            )

            dwr = read_message(inbound, framer, 20)
            vectors.append(("fd-dwr", f"DWR freeDiameterd {version} sends after Tw", dwr))
            inbound.sendall(answer_for(dwr))
            daemon.send_signal(signal.SIGTERM)
            dpr = read_message(inbound, framer, 10)
            vectors.append(("fd-dpr", f"DPR freeDiameterd {version} sends on SIGTERM", dpr))
            inbound.sendall(answer_for(dpr))
            time.sleep(0.5)
        finally:
            with contextlib.suppress(ProcessLookupError):
                daemon.kill()
            daemon.wait()
            listener.close()
    return vectors


def render(vectors: list[tuple[str, str, bytes]]) -> str:
    lines = [
        "# Diameter messages written by a real freeDiameterd: tests/diameter/vectors/capture_freediameter.py",
        "# Format: 'vector NAME DESCRIPTION', then the message hex (16 bytes a line), then a blank line.",
        "",
    ]
    for name, description, data in vectors:
        lines.append(f"vector {name} {description}")
        lines += [data[i : i + 16].hex(" ") for i in range(0, len(data), 16)]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    OUTPUT.write_text(render(capture()), encoding="utf-8")
    print(f"wrote {OUTPUT}")
