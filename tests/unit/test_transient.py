import pytest

from petavox.tasks.core.errors import ChunkDataError, InputError
from petavox.tasks.core.transient import is_transient
from petavox.workflows.runner import call_with_retries


class ClientError(Exception):
    """Shaped like botocore's ClientError."""

    def __init__(self, code):
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}}


class ServiceUnavailable(Exception):
    code = 503


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError("reset"),
        TimeoutError("timed out"),
        TimeoutError("read"),
        ClientError("SlowDown"),
        ClientError("503"),
        ServiceUnavailable("backend"),
        ValueError("Error reading chunk: UNAVAILABLE: HTTP response code: 503"),
        RuntimeError("Connection reset by peer"),
    ],
)
def test_transient(exc):
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("cannot reshape array of size 500 into shape (16,16,8,1)"),
        ClientError("AccessDenied"),
        ClientError("NoSuchBucket"),
        PermissionError("denied"),
        FileNotFoundError("gone"),
        KeyError("x"),
        ChunkDataError("file:///x", "8_8_40/0-1_0-1_0-1", "is missing"),
        InputError("HTTP 503 in a user message"),
    ],
)
def test_not_transient(exc):
    assert not is_transient(exc)


def test_cause_chain_is_searched():
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError as inner:
            raise RuntimeError("download failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


def test_retries_transient_errors_with_growing_delays():
    calls, delays = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    assert call_with_retries(flaky, 5, base_delay=1.0, sleep=delays.append) == "ok"
    assert len(calls) == 3
    assert len(delays) == 2 and delays[1] > delays[0] * 0.99


def test_gives_up_after_the_allowed_attempts():
    calls = []

    def down():
        calls.append(1)
        raise ConnectionResetError("reset")

    with pytest.raises(ConnectionResetError):
        call_with_retries(down, 3, sleep=lambda s: None)
    assert len(calls) == 4


def test_bugs_fail_at_once():
    calls = []

    def bug():
        calls.append(1)
        raise KeyError("oops")

    with pytest.raises(KeyError):
        call_with_retries(bug, 5, sleep=lambda s: None)
    assert len(calls) == 1


def body_errors() -> list[BaseException]:
    """What the storage clients really raise for a body cut short or failing its checksum."""
    import http.client

    from botocore.exceptions import (
        FlexibleChecksumError,
        IncompleteReadError,
        ResponseStreamingError,
    )
    from cloudfiles.exceptions import CRC32CIntegrityError, MD5IntegrityError
    from google.resumable_media.common import DataCorruption
    from urllib3.exceptions import ProtocolError

    cut = http.client.IncompleteRead(b"x" * 100, 924)
    return [
        ResponseStreamingError(error=ProtocolError("Connection broken: IncompleteRead", cut)),
        IncompleteReadError(actual_bytes=100, expected_bytes=1024),
        FlexibleChecksumError(error_msg="Expected checksum x did not match calculated checksum"),
        MD5IntegrityError("8_8_40/0-64_0-64_0-64 failed its md5 check. server md5: a computed: b"),
        CRC32CIntegrityError("crc32c mismatch for 8_8_40/0-64_0-64_0-64: server 1 ; client 2"),
        DataCorruption(None, "Checksum mismatch while downloading"),
        cut,
        ValueError(
            "ABORTED: All 32 retry attempts failed: CURL error Transferred a partial file: "
            "end of response with 924 bytes missing [curl_code='18']"
        ),
        ValueError("DATA_LOSS: Object crc32c 0000abcd does not match expected crc32c 12345678"),
    ]


@pytest.mark.parametrize("exc", body_errors(), ids=lambda e: type(e).__name__)
def test_bodies_cut_short_or_failing_their_checksum_are_transient(exc):
    from petavox.tasks.core.transient import is_body_error

    assert is_transient(exc) and is_body_error(exc)
    try:
        raise RuntimeError("chunk download failed") from exc
    except RuntimeError as wrapped:
        assert is_transient(wrapped) and is_body_error(wrapped)


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError("reset"),  # transient, but not a body error
        ChunkDataError("s3://b/l", "8_8_40/0-1_0-1_0-1", "is truncated/corrupt: 3 bytes"),
        ValueError("FAILED_PRECONDITION: Corrupted Neuroglancer compressed segmentation"),
    ],
)
def test_other_errors_are_not_body_errors(exc):
    from petavox.tasks.core.transient import is_body_error

    assert not is_body_error(exc)


def test_database_integrity_errors_are_not_transient():
    import sqlite3

    assert not is_transient(sqlite3.IntegrityError("UNIQUE constraint failed"))


def test_a_body_that_never_arrives_whole_is_retried_a_bounded_number_of_times():
    from cloudfiles.exceptions import MD5IntegrityError

    calls = []

    def stored_wrong():
        calls.append(1)
        raise MD5IntegrityError("k failed its md5 check. server md5: a computed md5: b")

    with pytest.raises(MD5IntegrityError):
        call_with_retries(stored_wrong, 3, sleep=lambda s: None)
    assert len(calls) == 4
