"""Baseline of ``occ bench diameter``: a minimal python-diameter node answering every CCR with a fixed CCA.

    python benchmarks/baseline_diameter_node.py --port 3870 --peers 4

It does what python-diameter needs to speak credit control and nothing more: CER/CEA, DWR/DWA and DPR/DPA
by the library's ``Node``; every CCR answered at once, in the node's own thread, with Result-Code 2001 and,
for INITIAL and UPDATE, one Multiple-Services-Credit-Control granting ``--grant`` octets on the request's
Rating-Group. No store, no rating, no state. Known peers are ``bench<i>.test`` (realm ``test``), the
origin hosts the load generator uses for its connections. Prints ``ready <port>`` once listening; stops on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from diameter.message.avp.grouped import GrantedServiceUnit, MultipleServicesCreditControl
from diameter.message.commands import CreditControlRequest
from diameter.message.constants import APP_DIAMETER_CREDIT_CONTROL_APPLICATION
from diameter.node import Node
from diameter.node.application import Application

SUCCESS = 2001
TERMINATION = 3


class FixedAnswers(Application):  # type: ignore[misc]
    """Answers each CCR in the node's thread (no thread per request: the cheapest python-diameter path)."""

    def __init__(self, grant: int) -> None:
        super().__init__(APP_DIAMETER_CREDIT_CONTROL_APPLICATION, is_auth_application=True)
        self.grant = grant

    def handle_request(self, message: Any) -> None:
        if not isinstance(message, CreditControlRequest):
            self.send_answer(self.generate_answer(message, result_code=3001))
            return
        answer = self.generate_answer(message, result_code=SUCCESS)
        answer.cc_request_type = message.cc_request_type
        answer.cc_request_number = message.cc_request_number
        if message.cc_request_type != TERMINATION:
            groups = getattr(message, "multiple_services_credit_control", None) or []
            rating_group = getattr(groups[0], "rating_group", None) if groups else None
            answer.multiple_services_credit_control = [
                MultipleServicesCreditControl(
                    granted_service_unit=GrantedServiceUnit(cc_total_octets=self.grant),
                    rating_group=rating_group,
                    result_code=SUCCESS,
                )
            ]
        self.send_answer(answer)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--peers", type=int, default=4, help="known peers bench0.test .. bench<n-1>.test")
    parser.add_argument("--grant", type=int, default=1_048_576, help="CC-Total-Octets granted")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    node = Node(
        "baseline.localdomain",
        "localdomain",
        ip_addresses=[args.listen],
        tcp_port=args.port,
        vendor_ids=[10415],
    )
    node.idle_timeout = 3600
    peers = [node.add_peer(f"aaa://bench{i}.test", "test") for i in range(args.peers)]
    app = FixedAnswers(args.grant)
    node.add_application(app, peers, realms=["localdomain"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    node.start()
    print(f"ready {args.port}", flush=True)
    stop.wait()
    node.stop(wait_timeout=2, force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
