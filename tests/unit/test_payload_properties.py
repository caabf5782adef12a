"""
Property-based tests of the payload parser: whatever
a client sends, in whatever pieces, the parser gives a CrashReport or one of
the refusals of docs/intake.rst, never anything else.
"""

import gzip
import hashlib
import re
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from antenna_tw.intake.payload import RESERVED_DUMP_NAMES, MalformedCrashReport, UploadReader
from antenna_tw.send_crash import build_multipart
from antenna_tw.answers import STATUS_FOR_REASON
from tests.strategies import NAME_CHARS, uploads

LIMITS = dict(max_payload_size=1 << 20, max_decompressed_size=1 << 20, max_parts=16)
BODY_REASONS = {
    "too_large", "malformed_no_content_type", "malformed_wrong_content_type",
    "malformed_no_boundary", "malformed_no_content_length",
    "malformed_unsupported_content_encoding", "malformed_bad_gzip",
    "malformed_invalid_payload_structure", "malformed_invalid_json",
    "malformed_invalid_json_value", "malformed_invalid_dump_name", "malformed_no_annotations",
}
DUMP_NAME = re.compile(r"^[A-Za-z0-9_]{0,30}$")


def outcome(content_type, encoding, body, pieces):
    """Feed ``body`` cut at ``pieces``; the report or the refusal's reason."""
    reader = UploadReader(content_type, encoding, len(body), **LIMITS)
    start = 0
    for end in sorted(pieces) + [len(body)]:
        reader.feed(body[start:end])
        start = max(start, end)
    try:
        return reader.finish()
    except MalformedCrashReport as error:
        return error.reason


def cut_points():
    return st.lists(st.integers(0, 4000), max_size=8)


def no_nul(value):
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, dict):
        return all(no_nul(k) and no_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return all(no_nul(v) for v in value)
    return True


@settings(max_examples=600)
@given(uploads(), cut_points())
def test_any_upload_gives_a_report_or_a_known_refusal(upload, pieces):
    result = outcome(*upload, pieces)
    if isinstance(result, str):
        assert result in BODY_REASONS
        assert STATUS_FOR_REASON.get(result, 400) in (400, 413)
        return
    assert result.annotations
    assert no_nul(result.annotations)
    assert set(result.dumps) == set(result.dump_checksums)
    for name, data in result.dumps.items():
        assert DUMP_NAME.match(name) and name not in RESERVED_DUMP_NAMES
        assert result.dump_checksums[name] == hashlib.sha256(data).hexdigest()
    assert result.payload_size == len(upload[2])


@settings(max_examples=300)
@given(uploads(), cut_points())
def test_how_the_body_is_cut_never_changes_the_outcome(upload, pieces):
    whole = outcome(*upload, [])
    cut = outcome(*upload, pieces)
    assert cut == whole


names = st.text(NAME_CHARS, min_size=1, max_size=30).filter(
    lambda name: name not in RESERVED_DUMP_NAMES)


@settings(max_examples=150)
@given(
    annotations=st.dictionaries(names, st.text(max_size=40), min_size=1, max_size=6),
    dumps=st.dictionaries(names, st.binary(max_size=2000), max_size=5),
    use_json=st.booleans(),
    encoding=st.sampled_from([None, "gzip", "x-gzip", "deflate"]),
    pieces=cut_points(),
)
def test_well_formed_uploads_come_back_exactly(annotations, dumps, use_json, encoding, pieces):
    body, content_type = build_multipart(annotations, dumps, use_json=use_json)
    wire = {None: body, "deflate": zlib.compress(body)}.get(encoding) or gzip.compress(body)
    report = outcome(content_type, encoding, wire, pieces)
    expected = {key: value.replace("\x00", "") for key, value in annotations.items()}
    assert report.annotations == expected
    assert report.dumps == dumps
    assert report.payload == ("json" if use_json else "multipart")
    assert report.payload_compressed == (encoding is not None)
