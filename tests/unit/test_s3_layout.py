"""S3 key layout (docs/s3.rst, *Bucket layout*) and bucket URLs."""

import pytest

from antenna_tw.ext.s3.client import BucketLocation, quote_key
from antenna_tw.ext.s3.storage import dump_key, dump_names_key, raw_crash_key

CRASH_ID = "de0e4a4e-0d1c-4f2a-9d7e-3c5b1a260504"


def test_antenna_key_layout():
    assert raw_crash_key(CRASH_ID) == f"v2/raw_crash/de0/20260504/{CRASH_ID}"
    assert dump_names_key(CRASH_ID) == f"v1/dump_names/{CRASH_ID}"
    assert dump_key(CRASH_ID, "upload_file_minidump") == f"v1/dump/{CRASH_ID}"
    assert dump_key(CRASH_ID, "") == f"v1/dump/{CRASH_ID}"
    assert dump_key(CRASH_ID, "memory_report") == f"v1/memory_report/{CRASH_ID}"
    assert dump_key(CRASH_ID, "upload_file_minidump_browser") == \
        f"v1/upload_file_minidump_browser/{CRASH_ID}"


def test_the_v1_raw_crash_layout_of_antenna_2022_to_2024():
    assert raw_crash_key(CRASH_ID, "v1") == f"v1/raw_crash/20260504/{CRASH_ID}"
    assert raw_crash_key(CRASH_ID, "v2") == raw_crash_key(CRASH_ID)


def test_path_style_with_an_endpoint():
    location = BucketLocation("crashes", "us-west-2", "http://127.0.0.1:9000/")
    assert location.path_style
    assert location.bucket_url() == "http://127.0.0.1:9000/crashes"
    assert location.object_url("v1/dump/x") == "http://127.0.0.1:9000/crashes/v1/dump/x"
    assert location.describe() == "bucket 'crashes' at http://127.0.0.1:9000"


def test_virtual_hosted_style_on_aws():
    location = BucketLocation("crashes", "eu-central-1")
    assert not location.path_style
    assert location.bucket_url() == "https://crashes.s3.eu-central-1.amazonaws.com/"
    assert location.object_url("v1/dump/x") == \
        "https://crashes.s3.eu-central-1.amazonaws.com/v1/dump/x"


def test_dotted_bucket_names_use_path_style_on_aws():
    location = BucketLocation("crashes.example.com", "us-west-2")
    assert location.object_url("k") == "https://s3.us-west-2.amazonaws.com/crashes.example.com/k"


def test_keys_are_quoted():
    assert quote_key("a b/ü+=&?~") == "a%20b/%C3%BC%2B%3D%26%3F~"
    location = BucketLocation("b", "us-west-2", "http://127.0.0.1:1")
    assert location.object_url("a b") == "http://127.0.0.1:1/b/a%20b"


@pytest.mark.parametrize("bucket, endpoint", [
    ("", ""), ("a/b", ""), ("b", "ftp://x"), ("b", "127.0.0.1:9000"),
])
def test_bad_locations_are_refused(bucket, endpoint):
    with pytest.raises(ValueError):
        BucketLocation(bucket, "us-west-2", endpoint)
