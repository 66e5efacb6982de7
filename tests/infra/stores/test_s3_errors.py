"""translate_error: the S3/transport → talkfactory error table, checked without a server."""

from __future__ import annotations

import http.client

import pytest
import urllib3
from minio.error import InvalidResponseError, S3Error, ServerError

from talkfactory.errors import (
    ObjectNotFoundError,
    StoreAccessError,
    StorePermanentError,
    StoreUnavailableError,
    TalkfactoryError,
    is_transient,
)
from talkfactory.infra.stores.s3 import translate_error


def s3_error(code: str, status: int) -> S3Error:
    return S3Error(urllib3.HTTPResponse(status=status), code, f"{code} happened", "/b/k", "req-1", "host-1")


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("NoSuchKey", 404, ObjectNotFoundError),
        ("NoSuchBucket", 404, ObjectNotFoundError),
        ("AccessDenied", 403, StoreAccessError),
        ("InvalidAccessKeyId", 403, StoreAccessError),
        ("SignatureDoesNotMatch", 403, StoreAccessError),
        ("SlowDown", 503, StoreUnavailableError),
        ("InternalError", 500, StoreUnavailableError),
        ("ServiceUnavailable", 503, StoreUnavailableError),
        ("RequestTimeout", 400, StoreUnavailableError),
        ("SomethingNew", 502, StoreUnavailableError),  # unknown code, but a 5xx
        ("TooManyRequests", 429, StoreUnavailableError),
        ("InvalidArgument", 400, StorePermanentError),
        ("EntityTooLarge", 400, StorePermanentError),
    ],
)
def test_s3_error_codes(code: str, status: int, kind: type[TalkfactoryError]) -> None:
    error = translate_error(s3_error(code, status), "s3://b/k")
    assert type(error) is kind
    assert isinstance(error, TalkfactoryError) and error.subject == "s3://b/k"
    assert code in str(error)
    assert is_transient(error) == (kind is StoreUnavailableError)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (urllib3.exceptions.NewConnectionError(None, "refused"), True),  # type: ignore[arg-type]
        (urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")), True),
        (urllib3.exceptions.ReadTimeoutError(None, "/b/k", "Read timed out."), True),  # type: ignore[arg-type]
        (urllib3.exceptions.ConnectTimeoutError("timed out"), True),
        (urllib3.exceptions.MaxRetryError(None, "/b/k", ConnectionRefusedError(111, "refused")), True),  # type: ignore[arg-type]
        (http.client.RemoteDisconnected("closed"), True),
        (ConnectionResetError(104, "reset"), True),
        (TimeoutError("timed out"), True),
        (ServerError("server failed with HTTP status code 502", 502), True),
        (InvalidResponseError(503, "text/html", "<html>busy</html>"), True),
        (InvalidResponseError(404, "text/html", None), False),
        (urllib3.exceptions.SSLError("certificate verify failed"), False),
    ],
)
def test_transport_errors(exc: BaseException, transient: bool) -> None:
    error = translate_error(exc, "s3://b/k")
    assert isinstance(error, TalkfactoryError)
    assert is_transient(error) is transient


def test_unknown_errors_pass_through_unchanged() -> None:
    bug = KeyError("not ours to classify")
    assert translate_error(bug, "s3://b/k") is bug
    ours = ObjectNotFoundError("gone", subject="x")
    assert translate_error(ours, "s3://b/k") is ours
