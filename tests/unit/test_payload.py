"""The sans-IO payload parser: fed bytes, returns a CrashReport or a reason."""

import gc
import gzip
import random
import time
import tracemalloc
import zlib

import pytest

from antenna_tw.intake import payload
from antenna_tw.intake.payload import (
    BOTH_KINDS_NOTE,
    MalformedCrashReport,
    UploadReader,
    parse_content_type,
    sanitize_dump_name,
)
from antenna_tw.send_crash import build_multipart

LIMITS = dict(max_payload_size=25 << 20, max_decompressed_size=100 << 20, max_parts=256)


def part(name, data, ctype="text/plain; charset=utf-8", filename=None):
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = disposition + "\r\n" + (f"Content-Type: {ctype}\r\n" if ctype else "")
    return head.encode() + b"\r\n" + data


def body_of(*parts, boundary="xyz"):
    marker = b"--" + boundary.encode()
    return b"".join(marker + b"\r\n" + p + b"\r\n" for p in parts) + marker + b"--\r\n"


def read(body, content_type="multipart/form-data; boundary=xyz", encoding=None,
         chunk=65536, **limits):
    reader = UploadReader(content_type, encoding, len(body), **{**LIMITS, **limits})
    for start in range(0, len(body), chunk):
        reader.feed(body[start:start + chunk])
    return reader.finish()


def reason_of(*args, **kwargs):
    with pytest.raises(MalformedCrashReport) as caught:
        read(*args, **kwargs)
    return caught.value.reason


@pytest.mark.parametrize("chunk", [1, 7, 100, 65536])
def test_any_chunking_gives_same_report(chunk):
    dump = bytes(random.Random(1).randrange(256) for _ in range(5000))
    body, ctype = build_multipart({"ProductName": "Test", "Version": "1"},
                                  {"upload_file_minidump": dump, "memory_report": b"x"})
    report = read(body, ctype, chunk=chunk)
    assert report.annotations == {"ProductName": "Test", "Version": "1"}
    assert report.dumps == {"upload_file_minidump": dump, "memory_report": b"x"}
    assert report.payload == "multipart"
    assert report.payload_size == len(body)


@pytest.mark.parametrize("header,boundary", [
    ("multipart/form-data; boundary=abc", "abc"),
    ('multipart/form-data; boundary="a b:c"', "a b:c"),
    ("Multipart/Form-Data; charset=utf-8; boundary=abc", "abc"),
    ("multipart/mixed; boundary=abc; foo=bar", "abc"),
])
def test_content_types_accepted(header, boundary):
    assert parse_content_type(header) == boundary


@pytest.mark.parametrize("header,reason", [
    (None, "malformed_no_content_type"),
    ("  ", "malformed_no_content_type"),
    ("application/json", "malformed_wrong_content_type"),
    ("text/plain; boundary=abc", "malformed_wrong_content_type"),
    ("multipart/form-data", "malformed_no_boundary"),
    ("multipart/form-data; boundary=", "malformed_no_boundary"),
    ("multipart/form-data; boundary=" + "a" * 71, "malformed_no_boundary"),
])
def test_content_types_refused(header, reason):
    with pytest.raises(MalformedCrashReport) as caught:
        parse_content_type(header)
    assert caught.value.reason == reason


def test_json_extra_replaces_earlier_fields_keeps_types_and_notes_both_kinds():
    body = body_of(
        part("Lost", b"before json"),
        part("extra", b'{"ProductName": "Firefox", "Count": 3, "Flag": true, "N": null}',
             "application/json", "extra.json"),
        part("After", b"kept"),
    )
    report = read(body)
    assert report.annotations == {"ProductName": "Firefox", "Count": 3, "Flag": True,
                                  "N": None, "After": "kept"}
    assert report.payload == "json"
    assert report.notes == [BOTH_KINDS_NOTE]


def test_last_json_part_wins():
    body = body_of(part("extra", b'{"A": "1"}', "application/json"),
                   part("extra", b'{"B": "2"}', "application/json"))
    assert read(body).annotations == {"B": "2"}


@pytest.mark.parametrize("data,reason", [
    (b"{not json", "malformed_invalid_json"),
    (b'["a list"]', "malformed_invalid_json_value"),
    (b"null", "malformed_invalid_json_value"),
    (b"\xff\xfe\xfd", "malformed_invalid_json"),
])
def test_bad_json(data, reason):
    assert reason_of(body_of(part("extra", data, "application/json"))) == reason


def test_charset_decoding_and_undecodable_field_dropped_with_note():
    body = body_of(
        part("Latin", "café".encode("latin-1"), "text/plain; charset=latin-1"),
        part("Broken", b"\xff\xfe bad", "text/plain; charset=utf-8"),
        part("Plain", b"no type at all", None),
    )
    report = read(body)
    assert report.annotations == {"Latin": "café", "Plain": "no type at all"}
    assert report.notes == ["extract payload text part exception: invalid text or charset: utf-8"]


def test_nuls_removed_from_annotations_never_from_dumps():
    dump = b"MDMP\x00\x00\x01"
    body = body_of(part("extra", b'{"K\\u0000": "v\\u0000", "Nested": {"a": ["b\\u0000"]}}',
                        "application/json"),
                   part("Prod\x00uct", b"Fire\x00fox"),
                   part("upload_file_minidump", dump, "application/octet-stream", "x.dmp"))
    report = read(body)
    assert report.annotations == {"K": "v", "Nested": {"a": ["b"]}, "Product": "Firefox"}
    assert report.dumps["upload_file_minidump"] == dump


def test_part_classification_and_dump_names():
    body = body_of(
        part("ProductName", b"Test"),
        part("", b"nameless part is skipped"),
        part("upload_file_minidump-browser.dmp", b"d1", "application/octet-stream", "a"),
        part("weird-name.with/chars", b"d2", "image/png"),
        part("crashpad", b"d3", None, "uuid.dmp"),  # Crashpad: no type, a filename
        part("a" * 40, b"d4", "application/octet-stream", "f"),
        part("dup", b"first", "application/octet-stream", "f"),
        part("dup", b"second", "application/octet-stream", "f"),
    )
    report = read(body)
    assert report.annotations == {"ProductName": "Test"}
    assert report.dumps == {"upload_file_minidumpbrowserdmp": b"d1",
                            "weirdnamewithchars": b"d2", "crashpad": b"d3",
                            "a" * 30: b"d4", "dup": b"second"}
    assert report.notes == ["unknown content type: weirdnamewithchars image/png"]
    assert set(report.dump_checksums) == set(report.dumps)


@pytest.mark.parametrize("name", ["dump_names", "raw_crash", "raw_crash!", "processed_crash"])
def test_reserved_dump_names(name):
    body = body_of(part("ProductName", b"T"),
                   part(name, b"d", "application/octet-stream", "f"))
    assert reason_of(body) == "malformed_invalid_dump_name"


def test_sanitize_dump_name():
    assert sanitize_dump_name("upload_file_minidump-browser.dmp") == "upload_file_minidumpbrowserdmp"
    assert sanitize_dump_name("\x00ab") == "ab"


@pytest.mark.parametrize("body", [
    b"",
    body_of(part("upload_file_minidump", b"d", "application/octet-stream", "f")),
    body_of(part("extra", b"{}", "application/json")),
])
def test_no_annotations(body):
    if not body:
        body = b"--xyz--\r\n"
    assert reason_of(body) == "malformed_no_annotations"


@pytest.mark.parametrize("body", [
    b"junk that is not multipart at all",
    body_of(part("ProductName", b"T"))[:-9],  # no closing delimiter
    body_of(part("ProductName", b"T")).replace(b"\r\n", b"\n"),
    b"--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Big: "
    + b"h" * 9000 + b"\r\n\r\nv\r\n--xyz--\r\n",
])
def test_broken_structure(body):
    assert reason_of(body) == "malformed_invalid_payload_structure"


def test_too_many_parts():
    body = body_of(*[part(f"k{i}", b"v") for i in range(5)])
    assert read(body, max_parts=5).annotations
    assert reason_of(body, max_parts=4) == "malformed_invalid_payload_structure"


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "x-gzip", "deflate"])
def test_compressed_bodies(encoding):
    body, ctype = build_multipart({"ProductName": "T"}, {"upload_file_minidump": b"MDMP" * 100})
    data = zlib.compress(body) if encoding == "deflate" else gzip.compress(body)
    report = read(data, ctype, encoding=encoding, chunk=10)
    assert report.dumps["upload_file_minidump"] == b"MDMP" * 100
    assert report.payload_compressed
    assert report.payload_size == len(data)


def test_raw_deflate_accepted():
    body, ctype = build_multipart({"ProductName": "T"}, {})
    squeezer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    data = squeezer.compress(body) + squeezer.flush()
    assert read(data, ctype, encoding="deflate").annotations == {"ProductName": "T"}


def test_trailing_bytes_after_gzip_are_ignored():
    body, ctype = build_multipart({"ProductName": "T"}, {})
    assert read(gzip.compress(body) + b"junk", ctype, encoding="gzip").annotations


# Named ids: gzip's header holds the time, and pytest-xdist needs the same ids in every worker.
@pytest.mark.parametrize("data", [b"plain, not gzip", gzip.compress(b"x" * 1000)[:-10]],
                         ids=["not-gzip", "truncated-gzip"])
def test_bad_gzip(data):
    assert reason_of(data, encoding="gzip") == "malformed_bad_gzip"


def test_unsupported_encoding_after_empty_check():
    assert reason_of(b"abc", encoding="br") == "malformed_unsupported_content_encoding"
    assert reason_of(b"", encoding="br") == "malformed_no_content_length"


def test_uncompressed_body_counts_against_decompressed_cap_too():
    body, ctype = build_multipart({"ProductName": "T"}, {"d": b"x" * 5000})
    assert reason_of(body, ctype, max_decompressed_size=1000) == "too_large"


def test_wire_size_limit_counted_without_content_length():
    body, ctype = build_multipart({"ProductName": "T"}, {"d": b"x" * 5000})
    reader = UploadReader(ctype, None, None, **{**LIMITS, "max_payload_size": 1000})
    reader.feed(body)
    assert reader.too_large
    with pytest.raises(MalformedCrashReport, match="too_large"):
        reader.finish()


def test_size_limit_wins_over_earlier_checks():
    reader = UploadReader(None, None, None, **{**LIMITS, "max_payload_size": 10})
    reader.feed(b"x" * 11)
    with pytest.raises(MalformedCrashReport, match="too_large"):
        reader.finish()


def test_json_nested_too_deep_is_invalid_json():
    deep = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert reason_of(body_of(part("extra", deep, "application/json"))) == "malformed_invalid_json"


def test_json_with_too_many_values_is_refused_before_decoding():
    # ~25 bytes of Python objects per byte: refused without building them
    crowded = b'{"a": [' + b"[]," * payload.MAX_JSON_TOKENS + b"0]}"
    assert reason_of(body_of(part("extra", crowded, "application/json"))) == (
        "malformed_invalid_json")
    roomy = b'{"a": [' + b"[]," * 1000 + b'0], "ProductName": "Firefox"}'
    assert read(body_of(part("extra", roomy, "application/json"))).annotations["ProductName"] == (
        "Firefox")


@pytest.mark.parametrize("charset", ["punycode", "idna", "undefined", "rot13", "no-such"])
def test_unusable_or_slow_charsets_drop_the_field_with_a_note(charset):
    # punycode decodes in quadratic time: 1 MB would block for a minute
    body = body_of(part("ProductName", b"Test"),
                   part("Slow", b"a-" + b"b" * 1_000_000, f"text/plain; charset={charset}"))
    started = time.perf_counter()
    report = read(body)
    assert time.perf_counter() - started < 1.0
    assert report.annotations == {"ProductName": "Test"}
    assert report.notes == [
        f"extract payload text part exception: invalid text or charset: {charset}"]


def test_text_part_over_the_cap_is_dropped_with_antennas_note(monkeypatch):
    monkeypatch.setattr(payload, "MAX_TEXT_PART_SIZE", 1000)
    body = body_of(part("ProductName", b"Test"), part("Big", b"x" * 1001),
                   part("Fits", b"y" * 1000),
                   part("extra", b'{"Json": "' + b"z" * 2000 + b'"}', "application/json"),
                   part("upload_file_minidump", b"d" * 5000, "application/octet-stream", "f"))
    report = read(body, chunk=100)
    assert report.annotations == {"Json": "z" * 2000}  # JSON has no cap, as in Antenna
    assert report.dumps == {"upload_file_minidump": b"d" * 5000}
    assert report.notes == [payload.TEXT_PART_TOO_LARGE_NOTE, BOTH_KINDS_NOTE]


def test_one_byte_pieces_hold_no_more_memory_than_the_dump():
    dump = bytes(random.Random(2).randrange(256) for _ in range(64 * 1024))
    body, ctype = build_multipart({"ProductName": "Test"}, {"upload_file_minidump": dump})
    reader = UploadReader(ctype, None, None, **LIMITS)
    tracemalloc.start()
    try:
        for index in range(len(body)):
            reader.feed(body[index:index + 1])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a bytes object per piece would cost ~40 bytes per dump byte
    assert peak < 3 * len(dump)
    assert reader.finish().dumps["upload_file_minidump"] == dump


def test_a_refused_upload_lets_go_of_what_it_held_at_once():
    head = (b'--xyz\r\nContent-Disposition: form-data; name="upload_file_minidump"; '
            b'filename="f"\r\n\r\n')
    bomb = gzip.compress(head + b"\x00" * (16 << 20))
    reader = UploadReader("multipart/form-data; boundary=xyz", "gzip", len(bomb),
                          **{**LIMITS, "max_decompressed_size": 8 << 20})
    gc.disable()  # no cycle collection: references must go by themselves
    tracemalloc.start()
    try:
        reader.feed(bomb)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    assert reader.too_large
    assert peak > 8 << 20  # it did hold the dump up to the cap...
    assert current < 1 << 20  # ...and holds nothing now
    with pytest.raises(MalformedCrashReport) as caught:
        reader.finish()
    assert caught.value.__context__ is None


def test_body_cut_short_is_a_broken_structure_after_earlier_checks():
    body, ctype = build_multipart({"ProductName": "T"}, {})

    def cut_short(content_type, data, encoding=None, declared=len(body) + 10):
        reader = UploadReader(content_type, encoding, declared, **LIMITS)
        reader.feed(data)
        with pytest.raises(MalformedCrashReport) as caught:
            reader.finish(complete=False)
        return caught.value.reason

    # even a body that parses whole is refused when its declared end never came
    assert cut_short(ctype, body) == "malformed_invalid_payload_structure"
    assert cut_short(ctype, b"") == "malformed_invalid_payload_structure"
    assert cut_short(ctype, b"", declared=None) == "malformed_no_content_length"
    assert cut_short(None, body) == "malformed_no_content_type"
    assert cut_short(ctype, b"not gzip", "gzip") == "malformed_bad_gzip"
