"""The attributes the server reads and writes, resolved by name from the loaded dictionaries.

Resolving every name at start (and at reload) turns a dictionary that lacks one into a one-line error then,
not into a failure on the first packet that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from aaa.codec import Framing
from aaa.dictionary import Dictionary


@dataclass(frozen=True, slots=True)
class Attrs:
    framing: Framing
    user_name: int
    user_password: int
    chap_password: int
    chap_challenge: int
    nas_ip_address: int
    nas_ipv6_address: int
    nas_identifier: int
    framed_ip_address: int
    framed_pool: int
    reply_message: int
    class_: int
    session_timeout: int
    idle_timeout: int
    error_cause: int
    acct_status_type: int
    acct_delay_time: int
    acct_input_octets: int
    acct_output_octets: int
    acct_input_gigawords: int
    acct_output_gigawords: int
    acct_session_id: int
    acct_session_time: int
    acct_interim_interval: int
    acct_terminate_cause: int
    ms_chap_challenge: int
    ms_chap2_response: int
    ms_chap2_success: int
    ms_chap_error: int
    ms_mppe_send_key: int
    ms_mppe_recv_key: int
    ms_mppe_encryption_policy: int
    ms_mppe_encryption_types: int
    # Acct-Status-Type values
    status_start: int
    status_stop: int
    status_interim: int
    status_accounting_on: int
    status_accounting_off: int


def resolve(d: Dictionary) -> Attrs:
    """Every key the server uses; DictionaryError names the first one the dictionaries lack."""
    k = d.key
    return Attrs(
        framing=Framing(
            vendor_specific=k("Vendor-Specific"),
            message_authenticator=k("Message-Authenticator"),
            proxy_state=k("Proxy-State"),
        ),
        user_name=k("User-Name"),
        user_password=k("User-Password"),
        chap_password=k("CHAP-Password"),
        chap_challenge=k("CHAP-Challenge"),
        nas_ip_address=k("NAS-IP-Address"),
        nas_ipv6_address=k("NAS-IPv6-Address"),
        nas_identifier=k("NAS-Identifier"),
        framed_ip_address=k("Framed-IP-Address"),
        framed_pool=k("Framed-Pool"),
        reply_message=k("Reply-Message"),
        class_=k("Class"),
        session_timeout=k("Session-Timeout"),
        idle_timeout=k("Idle-Timeout"),
        error_cause=k("Error-Cause"),
        acct_status_type=k("Acct-Status-Type"),
        acct_delay_time=k("Acct-Delay-Time"),
        acct_input_octets=k("Acct-Input-Octets"),
        acct_output_octets=k("Acct-Output-Octets"),
        acct_input_gigawords=k("Acct-Input-Gigawords"),
        acct_output_gigawords=k("Acct-Output-Gigawords"),
        acct_session_id=k("Acct-Session-Id"),
        acct_session_time=k("Acct-Session-Time"),
        acct_interim_interval=k("Acct-Interim-Interval"),
        acct_terminate_cause=k("Acct-Terminate-Cause"),
        ms_chap_challenge=k("MS-CHAP-Challenge"),
        ms_chap2_response=k("MS-CHAP2-Response"),
        ms_chap2_success=k("MS-CHAP2-Success"),
        ms_chap_error=k("MS-CHAP-Error"),
        ms_mppe_send_key=k("MS-MPPE-Send-Key"),
        ms_mppe_recv_key=k("MS-MPPE-Recv-Key"),
        ms_mppe_encryption_policy=k("MS-MPPE-Encryption-Policy"),
        ms_mppe_encryption_types=k("MS-MPPE-Encryption-Types"),
        status_start=d.value("Acct-Status-Type", "Start"),
        status_stop=d.value("Acct-Status-Type", "Stop"),
        status_interim=d.value("Acct-Status-Type", "Interim-Update"),
        status_accounting_on=d.value("Acct-Status-Type", "Accounting-On"),
        status_accounting_off=d.value("Acct-Status-Type", "Accounting-Off"),
    )
