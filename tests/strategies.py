"""
Hypothesis strategies for uploads: well-formed multipart bodies and the ways
real and hostile clients break them (truncation, boundary damage, stray and
random bytes, odd headers, gzip that is random, cut or padded).
"""

from __future__ import annotations

import gzip
import json
import zlib

from hypothesis import strategies as st

BOUNDARY_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'()+_,-./:=?"
NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
TEXT_TYPES = [None, "text/plain", "text/plain; charset=utf-8", "text/plain; charset=latin-1",
              "text/plain; charset=utf-16", "text/plain; charset=punycode",
              "text/plain; charset=nonsense", "text/plain; charset=undefined",
              "text/plain; charset=idna", "TEXT/PLAIN"]
FILE_TYPES = [None, "application/octet-stream", "image/png", "text/plain",
              "application/octet-stream; x=y"]
JSON_TYPES = ["application/json", "application/json; charset=utf-8"]

boundaries = st.text(BOUNDARY_CHARS, min_size=1, max_size=70).filter(
    lambda b: not b.endswith(" "))
field_names = st.text(NAME_CHARS, min_size=1, max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10)


@st.composite
def parts(draw):
    """One part: (header lines, data)."""
    kind = draw(st.sampled_from(["text", "text", "dump", "dump", "json", "nameless", "random"]))
    name = draw(field_names) if draw(st.integers(0, 3)) else draw(st.text(max_size=20))
    if kind == "text":
        ctype = draw(st.sampled_from(TEXT_TYPES))
        data = draw(st.text(max_size=50)).encode("utf-8") if draw(st.booleans()) else draw(
            st.binary(max_size=50))
        headers = [f'Content-Disposition: form-data; name="{name}"']
    elif kind == "dump":
        ctype = draw(st.sampled_from(FILE_TYPES))
        data = draw(st.binary(max_size=300))
        filename = draw(st.text(NAME_CHARS + ".", min_size=1, max_size=20))
        headers = [f'Content-Disposition: form-data; name="{name}"; filename="{filename}"']
    elif kind == "json":
        ctype = draw(st.sampled_from(JSON_TYPES))
        value = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=5) | json_values)
        data = json.dumps(value).encode("utf-8")
        if draw(st.booleans()):
            data = draw(st.binary(max_size=30)) + data[: draw(st.integers(0, len(data)))]
        headers = [f'Content-Disposition: form-data; name="{name}"']
    elif kind == "nameless":
        ctype = None
        data = draw(st.binary(max_size=30))
        headers = ["Content-Disposition: form-data"]
    else:
        ctype = None
        data = draw(st.binary(max_size=60))
        headers = draw(st.lists(header_lines(), max_size=3))
    if ctype:
        headers.append(f"Content-Type: {ctype}")
    return headers, data


def header_lines():
    """Header lines a part (or a request) might carry: sane, odd and broken."""
    token = st.text("abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1,
                    max_size=20)
    value = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
    return st.builds(lambda n, v: f"{n}: {v}", token, value) | st.text(max_size=40).map(
        lambda t: t.replace("\r", "").replace("\n", ""))


def assemble(part_list, boundary, preamble=b"", epilogue=b"", close=True):
    marker = b"--" + boundary.encode("latin-1")
    pieces = [preamble]
    for headers, data in part_list:
        head = b"".join(line.encode("utf-8", "surrogatepass") + b"\r\n" for line in headers)
        pieces.append(marker + b"\r\n" + head + b"\r\n" + data + b"\r\n")
    if close:
        pieces.append(marker + b"--\r\n")
    pieces.append(epilogue)
    return b"".join(pieces)


@st.composite
def mutated(draw, body, boundary):
    """``body`` damaged in zero or more ways (none half the time)."""
    count = draw(st.integers(0, 5))
    for _ in range(max(0, count - 2)):
        how = draw(st.sampled_from(
            ["truncate", "insert", "delete", "flip", "boundary", "lf", "duplicate"]))
        if not body:
            body = draw(st.binary(max_size=50))
            continue
        at = draw(st.integers(1, len(body)))
        if how == "truncate":
            body = body[:at]
        elif how == "insert":
            body = body[:at] + draw(st.binary(min_size=1, max_size=20)) + body[at:]
        elif how == "delete":
            body = body[:at] + body[at + draw(st.integers(1, 20)):]
        elif how == "flip" and at < len(body):
            body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1:]
        elif how == "boundary":
            marker = boundary.encode("latin-1")
            body = body.replace(marker, marker[: draw(st.integers(0, len(marker)))] + b"X",
                                draw(st.integers(1, 3)))
        elif how == "lf":
            body = body.replace(b"\r\n", b"\n", draw(st.integers(1, 4)))
        elif how == "duplicate":
            body = body[:at] + body[at:at + 200] + body[at:]
    return body


CONTENT_ENCODINGS = [None, "gzip", "GZip", "x-gzip", "deflate", "identity", "br", ""]


def encode(body, encoding, damage):
    """``body`` compressed for ``encoding``, perhaps cut, padded or replaced."""
    name = (encoding or "identity").strip().lower()
    if name in ("gzip", "x-gzip"):
        data = gzip.compress(body)
    elif name == "deflate":
        data = zlib.compress(body)
    else:
        return body
    kind, amount = damage
    if kind == "cut":
        return data[: max(0, len(data) - amount)]
    if kind == "pad":
        return data + b"\x00" * amount
    if kind == "raw":
        return body
    return data


@st.composite
def uploads(draw):
    """(content_type, content_encoding, body bytes): anything a client might send."""
    boundary = draw(boundaries)
    part_list = draw(st.lists(parts(), max_size=6))
    body = assemble(
        part_list, boundary,
        preamble=draw(st.sampled_from([b"", b"preamble\r\n", b"x"])),
        epilogue=draw(st.sampled_from([b"", b"epilogue", b"\r\n--" + boundary.encode() + b"--"])),
        close=draw(st.booleans()) or draw(st.booleans()))
    if draw(st.integers(0, 9)) == 5:
        body = draw(st.binary(min_size=1, max_size=400))  # random bytes
    body = draw(mutated(body, boundary))
    plain = all(c in NAME_CHARS + "'+-." for c in boundary)
    quoted = boundary if plain and draw(st.booleans()) else f'"{boundary}"'
    if draw(st.integers(0, 9)) < 8:
        content_type = draw(st.sampled_from([
            f"multipart/form-data; boundary={quoted}",
            f"multipart/mixed; boundary={quoted}",
            f"Multipart/Form-Data; charset=utf-8; boundary={quoted}",
        ]))
    else:
        content_type = draw(st.sampled_from(
            ["multipart/form-data", "application/json", None]) | st.text(max_size=60))
    encoding = None
    if draw(st.booleans()):
        encoding = draw(st.sampled_from(CONTENT_ENCODINGS))
    damage = draw(st.tuples(st.sampled_from(["none", "none", "cut", "pad", "raw"]),
                             st.integers(1, 30)))
    if draw(st.integers(0, 9)) == 5 and encoding:
        return content_type, encoding, draw(st.binary(min_size=1, max_size=200))  # random "gzip"
    return content_type, encoding, encode(body, encoding, damage)
