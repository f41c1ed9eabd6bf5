"""The API's JSON body parser: bounded in size and in nesting, with a message for each.

DRF's own parser streams the body past ``DATA_UPLOAD_MAX_MEMORY_SIZE`` and lets a deeply
nested document raise ``RecursionError`` (a 500). The token submission path (fast_submit)
applies the same two limits with the same messages, and Django's 400 handler answers a
form over the size limit the same way (bad_requests).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils import json as drf_json

from executor_core import bounded_json
from hivemind_web.bad_requests import too_large_message

ERR_JSON = "JSON parse error - {error}"


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"

    def __init__(self) -> None:
        super().__init__(too_large_message())


def decode(raw: bytes) -> Any:
    """The JSON value of a request body; ValueError with the client's message otherwise."""
    try:
        return bounded_json.loads(raw, parse_constant=drf_json.strict_constant)
    except ValueError as exc:
        raise ValueError(ERR_JSON.format(error=exc)) from None


class BoundedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise RequestTooLarge()
        try:
            return decode(raw)
        except ValueError as exc:
            raise ParseError(str(exc)) from None
