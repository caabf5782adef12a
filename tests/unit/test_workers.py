import os

import pytest

from antenna_tw.reuseport import parse_tcp_description
from antenna_tw.workers import adopt_orphan_shards, shard_directory


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("x")


def test_orphans_go_to_live_workers(tmp_path):
    spool = str(tmp_path)
    touch(os.path.join(spool, "1-top.crash"))
    touch(os.path.join(spool, "worker-0", "2-own.crash"))
    touch(os.path.join(spool, "worker-2", "3-two.crash"))
    touch(os.path.join(spool, "worker-3", "4-three.crash"))
    touch(os.path.join(spool, "worker-3", ".tmp-5-half.crash"))

    assert adopt_orphan_shards(spool, 0, 2) == 2  # top level and worker-2
    assert adopt_orphan_shards(spool, 1, 2) == 1  # worker-3
    assert sorted(os.listdir(shard_directory(spool, 0))) == ["1-top.crash", "2-own.crash",
                                                              "3-two.crash"]
    assert os.listdir(shard_directory(spool, 1)) == ["4-three.crash"]
    # half-written files stay where they are, for that shard's own start-up check
    assert os.listdir(shard_directory(spool, 3)) == [".tmp-5-half.crash"]


def test_live_shards_are_left_alone(tmp_path):
    spool = str(tmp_path)
    touch(os.path.join(spool, "worker-1", "1-a.crash"))
    assert adopt_orphan_shards(spool, 0, 2) == 0
    assert os.listdir(shard_directory(spool, 1)) == ["1-a.crash"]


@pytest.mark.parametrize("description,parsed", [
    ("tcp:8000", (8000, "", 50)),
    ("tcp:8000:interface=127.0.0.1", (8000, "127.0.0.1", 50)),
    ("tcp:port=9000:backlog=1024:interface=0.0.0.0", (9000, "0.0.0.0", 1024)),
])
def test_parse_tcp(description, parsed):
    assert parse_tcp_description(description) == parsed


@pytest.mark.parametrize("description", ["unix:/tmp/x", "ssl:443", "tcp:", "tcp:80:x=1"])
def test_parse_tcp_refuses(description):
    with pytest.raises(ValueError):
        parse_tcp_description(description)
