"""The tick decoder: every rejection reason, timestamp forms, dead-letter records."""

from __future__ import annotations

import contextlib
import doctest
import json
from datetime import UTC, datetime
from types import ModuleType

import numpy as np
import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from streamcast.core import codec, records
from streamcast.core.codec import (
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
    HEADER_VALUE_NULL,
    TickDecoder,
    dead_letter_record,
    epoch_to_ms,
    parse_timestamp_ms,
)
from streamcast.errors import ConfigurationError, RejectReason

NOW = 1_800_000_000.0
JAN_2024_MS = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()) * 1000


def decoder(**kwargs: object) -> TickDecoder:
    return TickDecoder(clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]


def body(**fields: object) -> bytes:
    return orjson.dumps(fields)


CASES: list[tuple[bytes | None, bytes | None, RejectReason]] = [
    (None, b"{not json", RejectReason.NOT_JSON),
    (None, b"\xff\xfe{}", RejectReason.INVALID_UTF8),
    (None, b'{"key": "a", "ts": 1704067200, "value": "\xc3\x28"}', RejectReason.INVALID_UTF8),
    (None, b"[1, 2]", RejectReason.NOT_AN_OBJECT),
    (None, b'"text"', RejectReason.NOT_AN_OBJECT),
    (None, None, RejectReason.EMPTY),
    (None, b"", RejectReason.EMPTY),
    (None, b'{"key": "a", "ts": 1704067200, "value": 1, "pad": "' + b"x" * 300 + b'"}',
     RejectReason.OVERSIZED),
    (None, body(ts=1704067200, value=1.0), RejectReason.MISSING_KEY),
    (None, body(key="", ts=1704067200, value=1.0), RejectReason.MISSING_KEY),
    (b"\xff", body(ts=1704067200, value=1.0), RejectReason.MISSING_KEY),
    (None, body(key=7, ts=1704067200, value=1.0), RejectReason.WRONG_TYPE),
    (None, body(key="a", value=1.0), RejectReason.MISSING_TS),
    (None, body(key="a", ts=None, value=1.0), RejectReason.MISSING_TS),
    (None, body(key="a", ts=1704067200), RejectReason.MISSING_VALUE),
    (None, body(key="a", ts=1704067200, value="1.0"), RejectReason.WRONG_TYPE),
    (None, body(key="a", ts=1704067200, value=True), RejectReason.WRONG_TYPE),
    (None, body(key="a", ts=1704067200, value=[1.0]), RejectReason.WRONG_TYPE),
    (None, b'{"key": "a", "ts": 1704067200, "value": NaN}', RejectReason.NON_FINITE),
    (None, b'{"key": "a", "ts": 1704067200, "value": -Infinity}', RejectReason.NON_FINITE),
    (None, b'{"key": "a", "ts": 1704067200, "value": 1e400}', RejectReason.NON_FINITE),
    (None, b'{"key": "a", "ts": NaN, "value": 1}', RejectReason.NON_FINITE),
    (None, body(key="a", ts="yesterday", value=1.0), RejectReason.BAD_TIMESTAMP),
    (None, body(key="a", ts="2024-13-45T00:00:00Z", value=1.0), RejectReason.BAD_TIMESTAMP),
    (None, body(key="a", ts=[2024], value=1.0), RejectReason.BAD_TIMESTAMP),
    (None, body(key="a", ts=True, value=1.0), RejectReason.BAD_TIMESTAMP),
    # digits of another script: \d and int() read them, an epoch needs ASCII
    (None, body(key="a", ts="\u0661\u0667" + "\u0660" * 8, value=1.0), RejectReason.BAD_TIMESTAMP),
    (None, body(key="a", ts="1969-07-20T20:17:00Z", value=1.0), RejectReason.ABSURD_TIMESTAMP),
    (None, body(key="a", ts=5, value=1.0), RejectReason.ABSURD_TIMESTAMP),
    (None, body(key="a", ts="2999-01-01T00:00:00Z", value=1.0), RejectReason.ABSURD_TIMESTAMP),
    (None, body(key="a", ts=1704067200, value=1.0, temp="hot"), RejectReason.WRONG_TYPE),
    (None, body(key="a", ts=1704067200, value=1.0), RejectReason.MISSING_FEATURE),
    # valid JSON, but a lone surrogate has no UTF-8 form: every output keyed by it would
    # fail to encode (it crashed serve on every restart before it was rejected here)
    (None, b'{"key": "\\ud800", "ts": 1704067200, "value": 1}', RejectReason.INVALID_KEY),
    (None, b'{"key": "a\\udfffb", "ts": 1704067200, "value": 1}', RejectReason.INVALID_KEY),
    (None, body(key="k" * 65, ts=1704067200, value=1.0), RejectReason.KEY_TOO_LONG),
    (b"k" * 65, body(ts=1704067200, value=1.0), RejectReason.KEY_TOO_LONG),
    (None, body(key="a", ts=1704067200, value=1e308), RejectReason.OUT_OF_RANGE),
    (None, body(key="a", ts=1704067200, value=1.0, temp=-3e38), RejectReason.OUT_OF_RANGE),
]  # fmt: skip


@pytest.mark.parametrize(("key", "raw", "reason"), CASES)
def test_each_bad_message_gets_its_reason(
    key: bytes | None, raw: bytes | None, reason: RejectReason
) -> None:
    good = body(key="ok", ts=1704067200, value=2.0, temp=1.0)
    dec = decoder(extra_fields=("temp",), max_bytes=200, max_key_bytes=64)
    if reason is not RejectReason.MISSING_FEATURE and raw is not None and raw.startswith(b"{"):
        # every case except the missing-feature one carries the extra field when it parses
        doc = None
        with contextlib.suppress(orjson.JSONDecodeError):
            doc = orjson.loads(raw)
        if isinstance(doc, dict) and "temp" not in doc:
            doc["temp"] = 1.0
            raw = orjson.dumps(doc)
    batch, rejected = dec.decode([(None, good), (key, raw), (None, good)])
    assert [(r.index, r.reason) for r in rejected] == [(1, reason)]
    assert rejected[0].detail
    assert batch.index.tolist() == [0, 2]
    assert batch.keys == ["ok", "ok"]
    assert batch.values.tolist() == [[2.0, 1.0], [2.0, 1.0]]


def test_an_integer_too_long_for_python_is_non_finite_not_a_json_error() -> None:
    """Valid JSON that Python's ``int`` refuses (past 4,300 digits) is a number too large
    for any float, as a 400-digit one is: ``non_finite``, not ``not_json``."""
    for digits in (400, 5_000):
        raw = b'{"key": "a", "ts": 1704067200, "value": ' + b"9" * digits + b"}"
        _, rejected = decoder(max_bytes=10_000).decode([(None, raw)])
        assert [r.reason for r in rejected] == [RejectReason.NON_FINITE], digits


def test_kafka_key_wins_over_body_key() -> None:
    batch, rejected = decoder().decode([(b"from-kafka", body(key="body", ts=1704067200, value=1))])
    assert not rejected
    assert batch.keys == ["from-kafka"]


@pytest.mark.parametrize(
    ("raw", "expected_ms"),
    [
        ("2024-01-01T00:00:00Z", JAN_2024_MS),
        ("2024-01-01T00:00:00+00:00", JAN_2024_MS),
        ("2024-01-01T02:30:00+02:30", JAN_2024_MS),
        ("2023-12-31T19:00:00-05:00", JAN_2024_MS),
        ("2024-01-01T00:00:00", JAN_2024_MS),  # naive is UTC
        ("2024-01-01t00:00:00z", JAN_2024_MS),
        ("2024-01-01T00:00:00.123456789Z", JAN_2024_MS + 123),
        ("2024-01-01 00:00:00.250Z", JAN_2024_MS + 250),
        ("2024-01-01", JAN_2024_MS),
        (1_704_067_200, JAN_2024_MS),  # epoch seconds
        (1_704_067_200.5, JAN_2024_MS + 500),
        (1_704_067_200_123, JAN_2024_MS + 123),  # epoch milliseconds
        (1_704_067_200_123_000, JAN_2024_MS + 123),  # microseconds
        (1_704_067_200_123_000_000, JAN_2024_MS + 123),  # nanoseconds
        ("1704067200", JAN_2024_MS),  # decimal strings are epoch numbers too
        ("1704067200123", JAN_2024_MS + 123),
    ],
)
def test_timestamp_forms(raw: object, expected_ms: int) -> None:
    assert parse_timestamp_ms(raw) == expected_ms


def test_epoch_unit_boundaries_follow_magnitude() -> None:
    assert epoch_to_ms(99_999_999_999) == 99_999_999_999_000  # still seconds
    assert epoch_to_ms(100_000_000_000) == 100_000_000_000  # now milliseconds


def test_absurd_bounds_are_settings() -> None:
    old = body(key="a", ts="1985-06-01T00:00:00Z", value=1.0)
    assert decoder().decode([(None, old)])[1][0].reason is RejectReason.ABSURD_TIMESTAMP
    lenient = decoder(min_ts_s=0)
    batch, rejected = lenient.decode([(None, old)])
    assert not rejected
    assert len(batch) == 1
    soon = body(key="a", ts=NOW + 3600, value=1.0)
    assert decoder(max_future_s=60).decode([(None, soon)])[1][0].reason == "absurd_timestamp"
    assert not decoder(max_future_s=7200).decode([(None, soon)])[1]


def test_invalid_settings_are_named() -> None:
    with pytest.raises(ConfigurationError, match="distinct"):
        TickDecoder(key_field="v", value_field="v")
    with pytest.raises(ConfigurationError, match="max_bytes"):
        TickDecoder(max_bytes=0)


def test_empty_input_gives_empty_batch() -> None:
    batch, rejected = decoder(extra_fields=("a", "b")).decode([])
    assert rejected == []
    assert batch.values.shape == (0, 3)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.binary(max_size=12)),
            st.one_of(
                st.none(),
                st.binary(max_size=80),
                st.builds(
                    lambda d: json.dumps(d).encode(),
                    st.dictionaries(
                        st.sampled_from(["key", "ts", "value", "temp", "x"]),
                        st.one_of(
                            st.none(),
                            st.booleans(),
                            st.integers(),
                            st.floats(),
                            st.text(max_size=30),
                            st.lists(st.integers(), max_size=2),
                        ),
                    ),
                ),
            ),
        ),
        max_size=8,
    )
)
def test_never_raises_and_accounts_for_every_message(
    messages: list[tuple[bytes | None, bytes | None]],
) -> None:
    batch, rejected = decoder(extra_fields=("temp",)).decode(messages)
    seen = sorted([*batch.index.tolist(), *(r.index for r in rejected)])
    assert seen == list(range(len(messages)))
    assert all(isinstance(r.reason, RejectReason) for r in rejected)
    assert batch.values.shape == (len(batch), 2)


_TIMES = st.one_of(
    st.integers(min_value=-10, max_value=2**70),
    st.floats(min_value=1e8, max_value=2e18),
    st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01T01:00+01:00", "2024-01-01 00:00:00",
                     "1704067200", "1704067200.5", "2024-01-01T00:00:00.999999z", "soon"]),
)  # fmt: skip
_NUMBERS = st.one_of(
    st.integers(min_value=-(2**1100), max_value=2**1100),
    st.floats(),
    st.sampled_from([1e37, -1e38]),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.none(), st.just(b""), st.sampled_from([b"k1", b"\xff", "ü".encode(), b"k" * 70])
            ),
            st.builds(
                lambda d, raw: raw if raw is not None else json.dumps(d).encode(),
                st.one_of(
                    st.dictionaries(
                        st.sampled_from(["key", "ts", "value", "temp", "x"]),
                        st.one_of(
                            st.none(),
                            st.booleans(),
                            _NUMBERS,
                            _TIMES,
                            st.text(max_size=70),
                            st.lists(st.integers(), max_size=2),
                        ),
                    ),
                    # mostly well-formed ticks, so the fast path takes many of them
                    st.fixed_dictionaries(
                        {"ts": _TIMES, "value": _NUMBERS, "temp": _NUMBERS},
                        optional={"key": st.text(max_size=70), "x": st.text(max_size=3)},
                    ),
                ),
                st.one_of(
                    st.none(),
                    st.sampled_from(
                        [
                            b'{"key": "a", "ts": 1704067200, "value": NaN, "temp": 1}',
                            b'{"key": "a", "ts": 1704067200, "value": 1, "temp": 2, "x": "\xff"}',
                            b'{"key": "\\ud800", "ts": 1704067200, "value": 1, "temp": 2}',
                            b'{"key": "a", "ts": 1704067200, "value": 1, "temp": 2, "x": 1e999}',
                        ]
                    ),
                ),
            ),
        ),
        max_size=10,
    )
)
def test_the_fast_path_decodes_exactly_as_the_reference_path(
    messages: list[tuple[bytes | None, bytes | None]],
) -> None:
    """Whatever arrives: the same ticks, reasons and details as one check per field."""
    d = TickDecoder(clock=lambda: NOW, extra_fields=("temp",), max_key_bytes=64)
    batch, rejected = d.decode(messages)
    min_ms, max_ms = d.min_ts_s * 1000, int((NOW + d.max_future_s) * 1000)
    ref, ref_rejected = d._decode_reference(  # the reference path is the point
        [(i, k, v) for i, (k, v) in enumerate(messages)], min_ms, max_ms
    )
    assert batch.keys == ref.keys
    assert batch.ts_ms.tolist() == ref.ts_ms.tolist()
    assert batch.index.tolist() == ref.index.tolist()
    np.testing.assert_array_equal(batch.values, ref.values)
    assert rejected == ref_rejected
    event("accepted" if len(batch) else "none accepted")


def test_dead_letter_keeps_original_bytes_and_puts_metadata_in_headers() -> None:
    raw = b"\xff\x00 garbage"
    value, headers = dead_letter_record(
        raw, b"k", RejectReason.INVALID_UTF8, "bad bytes", "ticks", 3, 42, 1_700_000_000_000
    )
    assert value == raw
    h = dict(headers)
    assert h[HEADER_REASON] == b"invalid_utf8"
    assert h[HEADER_TOPIC] == b"ticks"
    assert h[HEADER_PARTITION] == b"3"
    assert h[HEADER_OFFSET] == b"42"
    assert HEADER_VALUE_NULL not in h
    null_value, null_headers = dead_letter_record(
        None, None, RejectReason.EMPTY, "no value", "ticks", 0, 1, 0, now_ms=5
    )
    assert null_value == b""
    assert dict(null_headers)[HEADER_VALUE_NULL] == b"1"


@pytest.mark.parametrize("module", [codec, records])
def test_docstring_examples_hold(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
