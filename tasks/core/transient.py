"""The short table of errors that are worth retrying: storage hiccups, not bugs or bad input.

Matched by class name (through the MRO and the cause chain) so that the table does not import
every storage client, by the error code of S3 / GCS responses, and by a few status phrases that
tensorstore and HTTP clients put in their messages.
"""

from __future__ import annotations

import re

# A response body cut short or failing its checksum: a transfer that went wrong, worth another
# try. What each client raises (checked against a server that cuts the body short or sends a
# wrong ETag): botocore `ResponseStreamingError` (urllib3's IncompleteRead while reading the
# body) and `IncompleteReadError` (fewer bytes than Content-Length), flexible-checksum
# mismatches; cloud-files `MD5IntegrityError` / `CRC32CIntegrityError` (not their base
# `IntegrityError`: databases use that name for constraint violations);
# google-resumable-media / google-cloud-storage `DataCorruption`; http.client `IncompleteRead`;
# tensorstore a ValueError saying "Transferred a partial file" (curl code 18) or that a crc32c
# does not match. A stored object that fails the same way every time is retried only as often
# as the caller allows (`Layer.read` then names the chunk as truncated/corrupt).
BODY_ERROR_TYPES: frozenset[str] = frozenset(
    {
        "ResponseStreamingError",
        "IncompleteReadError",
        "IncompleteRead",
        "ChecksumError",
        "FlexibleChecksumError",
        "MD5IntegrityError",
        "CRC32CIntegrityError",
        "DataCorruption",
    }
)

BODY_ERROR_MESSAGE = re.compile(
    r"Transferred a partial file|curl_code='18'|crc32c \w+ does not match expected crc32c"
    r"|failed its (multipart )?md5 check|crc32c mismatch",
    re.IGNORECASE,
)

TRANSIENT_TYPES: frozenset[str] = BODY_ERROR_TYPES | frozenset(
    {
        # builtins and sockets
        "ConnectionError",
        "ConnectionResetError",
        "ConnectionAbortedError",
        "ConnectionRefusedError",
        "BrokenPipeError",
        "TimeoutError",
        # requests / urllib3 / http.client
        "ReadTimeout",
        "ConnectTimeout",
        "ChunkedEncodingError",
        "ProtocolError",
        "ReadTimeoutError",
        "NewConnectionError",
        "RemoteDisconnected",
        # botocore
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ConnectTimeoutError",
        # google.api_core
        "ServiceUnavailable",
        "TooManyRequests",
        "InternalServerError",
        "GatewayTimeout",
        "DeadlineExceeded",
        "BadGateway",
    }
)

TRANSIENT_CODES: frozenset[str] = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "500",
        "502",
        "503",
        "504",
        "429",
    }
)

TRANSIENT_MESSAGE = re.compile(
    r"(\b(HTTP|status|code)[ :=]*(429|500|502|503|504)\b)"
    r"|\bUNAVAILABLE\b|\bDEADLINE_EXCEEDED\b|\bRESOURCE_EXHAUSTED\b"
    r"|Connection reset by peer|Connection aborted|Temporary failure in name resolution"
    r"|\bSlowDown\b|Please reduce your request rate",
    re.IGNORECASE,
)

NEVER_TRANSIENT_TYPES: frozenset[str] = frozenset(
    {"PermissionError", "FileNotFoundError", "InputError", "PetavoxError", "MemoryError"}
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 10:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    code = getattr(exc, "code", None)  # google.api_core
    return str(int(code)) if isinstance(code, int) else None


def is_transient(exc: BaseException) -> bool:
    """True if `exc` (or what caused it) is a passing storage or network failure."""
    for err in _chain(exc):
        names = {cls.__name__ for cls in type(err).__mro__}
        if names & NEVER_TRANSIENT_TYPES:
            return False
        if names & TRANSIENT_TYPES:
            return True
        code = _error_code(err)
        if code is not None and code in TRANSIENT_CODES:
            return True
        if TRANSIENT_MESSAGE.search(str(err)) or BODY_ERROR_MESSAGE.search(str(err)):
            return True
    return False


def is_body_error(exc: BaseException) -> bool:
    """True if `exc` (or what caused it) is a response body cut short or failing its checksum."""
    for err in _chain(exc):
        names = {cls.__name__ for cls in type(err).__mro__}
        if names & NEVER_TRANSIENT_TYPES:
            return False
        if names & BODY_ERROR_TYPES or BODY_ERROR_MESSAGE.search(str(err)):
            return True
    return False
