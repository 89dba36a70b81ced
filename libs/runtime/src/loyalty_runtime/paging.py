"""AIP-158 paging: page_size bounds and opaque page tokens carrying the last key seen."""

import base64
import binascii

from loyalty_runtime.errors import InvalidArgument, Reason


def page_size(requested: int, *, default: int, maximum: int) -> int:
    if requested < 0:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "page_size must not be negative", field="page_size")
    return min(requested or default, maximum)


def encode_token(last_key: str) -> str:
    return base64.urlsafe_b64encode(last_key.encode()).decode()


def decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        # validate=True: a character outside the alphabet is an error, not silently skipped.
        return base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "page_token is not one this service issued", field="page_token"
        ) from None
