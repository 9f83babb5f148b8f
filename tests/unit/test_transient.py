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
