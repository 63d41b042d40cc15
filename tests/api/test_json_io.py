"""The API reads and writes JSON with orjson, exactly as the standard library would.

orjson is the fast path only: any body reads to the value ``json.loads`` gives (NaN and
Infinity refused, as before), and any response body reads back to the value it was made
from, however orjson and ``json`` differ (integers beyond 64 bits, UTF-16, surrogates).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.api.common import parse_json
from services.api.errors import BadRequest, json_response
from tests.support.json_values import same_value

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**200,
           max_value=2**200) | st.floats(allow_nan=False, allow_infinity=False) | st.text())
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def standard(raw: bytes) -> Any:
    """What the API read before orjson: json.loads with NaN and Infinity refused."""
    def refuse(name: str) -> Any:
        raise ValueError(name)
    return json.loads(raw, parse_constant=refuse)


@given(documents, st.booleans())
def test_every_document_reads_as_the_standard_library_reads_it(value: Any, ascii: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii).encode()
    assert same_value(parse_json(raw), standard(raw))


@given(st.binary(max_size=64) | documents.map(lambda v: json.dumps(v).encode()[:-1]))
@example(b'{"a": NaN}')
@example(b"[Infinity]")
@example(b'{"a": 1e999}')
@example(b'[18446744073709551616, -9223372036854775809]')
@example(b'{"a": "\\ud800"}')
@example('{"a": 1}'.encode("utf-16"))
@example(b"\xef\xbb\xbf{}")
def test_any_bytes_are_refused_or_read_as_the_standard_library_does(raw: bytes) -> None:
    try:
        expected = standard(raw)
    except (ValueError, RecursionError):
        with pytest.raises(BadRequest):
            parse_json(raw)
        return
    assert same_value(parse_json(raw), expected)


@given(documents)
def test_a_response_body_reads_back_to_its_value(value: Any) -> None:
    response = json_response({"message": "m", "value": value}, 202)
    assert response.status == 202
    assert response.content_type == "application/json" and response.charset == "utf-8"
    assert isinstance(response.body, bytes)
    assert same_value(json.loads(response.body), {"message": "m", "value": value})
