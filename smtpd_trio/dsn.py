"""Delivery Status Notifications (RFC 3461, RFC 6533): the typed values a handler sees, and the
encodings it needs to pass them on.

With ``Config(dsn=True)`` the server offers DSN and checks the parameters; a handler reads them
parsed from the envelope: ``envelope.dsn`` (a :class:`~smtpd_trio.DSNRequest`: ``RET`` and
``ENVID``) and ``envelope.recipients`` (each a :class:`~smtpd_trio.Recipient` with its
``NOTIFY`` and ``ORCPT``). A relay passes them on with
:meth:`~smtpd_trio.OriginalRecipient.to_param` and :func:`xtext_encode`.
"""

from ._smtp.dsn import (
    MAX_ENVID,
    MAX_ORCPT,
    DSNRequest,
    DSNReturn,
    DSNSyntaxError,
    Notify,
    OriginalRecipient,
    Recipient,
    decode_utf8_address,
    encode_utf8_address,
    parse_envid,
    parse_notify,
    parse_orcpt,
    parse_ret,
    xtext_decode,
    xtext_encode,
)

__all__ = [
    "MAX_ENVID",
    "MAX_ORCPT",
    "DSNRequest",
    "DSNReturn",
    "DSNSyntaxError",
    "Notify",
    "OriginalRecipient",
    "Recipient",
    "decode_utf8_address",
    "encode_utf8_address",
    "parse_envid",
    "parse_notify",
    "parse_orcpt",
    "parse_ret",
    "xtext_decode",
    "xtext_encode",
]
