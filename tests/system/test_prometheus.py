"""
METRICS_CLASS=prometheus on the real ``twistd antenna``: ``GET /metrics``
answers for the whole node, every worker's counts added up by
``prometheus_client``'s multi-process mode.
"""

import os
import signal
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

from antenna_tw.send_crash import post
from tests.s3server import free_port
from tests.system.collector_process import both_listening, children_of, listening, wait_for
from tests.system.test_workers import answered_by, send

CRASHES = 40


def scrape(collector):
    """``{(sample name, sorted labels): value}`` of the node's /metrics, and its content type."""
    with urllib.request.urlopen(collector.url + "/metrics", timeout=10) as answer:
        text, content_type = answer.read().decode(), answer.headers["Content-Type"]
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    return samples, content_type


INCOMING = ("antenna_breakpad_resource_incoming_crash_total", ())


def test_metrics_add_up_every_workers_counts(tmp_path, collectors):
    # Beside statsd (to a port nobody reads): both backends get every metric.
    collector = collectors.start(tmp_path, {
        "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes"),
        "METRICS_CLASS": "statsd,Prometheus", "STATSD_HOST": "127.0.0.1",
        "STATSD_PORT": str(free_port())}, args=["--workers", "2"])
    workers = both_listening(collector)
    before, content_type = scrape(collector)
    assert content_type.startswith("text/plain; version=")
    assert before[INCOMING] == 0
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: send(collector, timeout=30), range(CRASHES)))
    status, _ = post(collector.submit_url, b"not a form", "text/plain", timeout=10)
    assert status == 400
    by = answered_by(collector)
    counts = {pid: sum(1 for crash_id in ids if by[crash_id] == pid) for pid in workers}
    assert min(counts.values()) > 0, counts  # both workers took some
    # Whichever worker answers, it answers for the node.
    for _ in range(4):
        samples, _ = scrape(collector)
        assert samples[INCOMING] == CRASHES
        assert samples["antenna_breakpad_resource_malformed_total",
                       (("reason", "wrong_content_type"),)] == 1
        assert samples["antenna_breakpad_resource_throttle_total",
                       (("result", "accept"),)] == CRASHES
    # every /submit answered, the refused one too
    assert samples["antenna_breakpad_resource_on_post_time_seconds_count", ()] == CRASHES + 1
    # A worker that dies leaves its counts in the node's totals.
    os.kill(workers[0], signal.SIGKILL)
    replaced = wait_for(lambda: (lambda now: len(now) == 2 and workers[0] not in now and now)(
        children_of(collector.process.pid)))
    wait_for(lambda: all(listening(collector, pid) for pid in replaced))
    send(collector)
    assert scrape(collector)[0][INCOMING] == CRASHES + 1
    metrics_dirs = {line.split("=", 1)[1] for line in open(
        f"/proc/{replaced[0]}/environ").read().split("\0") if line.startswith(
        "PROMETHEUS_MULTIPROC_DIR=")}
    collector.stop()
    [metrics_dir] = metrics_dirs
    assert not os.path.exists(metrics_dir)  # the parent removed its private directory


def test_one_process_serves_metrics_too(tmp_path, collectors):
    collector = collectors.start(tmp_path, {
        "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes"), "METRICS_CLASS": "prometheus"},
        args=["--workers", "0"])
    for _ in range(3):
        send(collector)
    samples, _ = scrape(collector)
    assert samples[INCOMING] == 3
    assert samples["antenna_breakpad_resource_save_queue_size", ()] >= 0


def test_a_sigkilled_nodes_directory_is_removed_by_the_next_start(tmp_path, collectors):
    temp = tmp_path / "tmp"
    temp.mkdir()
    environ = {"CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes"), "METRICS_CLASS": "prometheus",
               "TMPDIR": str(temp)}
    (tmp_path / "a").mkdir()
    first = collectors.start(tmp_path / "a", environ, args=["--workers", "1"])
    workers = children_of(first.process.pid)
    [left] = os.listdir(temp)
    assert left.startswith(f"antenna-tw-metrics-{first.process.pid}-")
    os.kill(first.process.pid, signal.SIGKILL)  # no shutdown: the directory stays
    first.process.wait(10)
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in workers))
    assert os.listdir(temp) == [left]
    (tmp_path / "b").mkdir()
    second = collectors.start(tmp_path / "b", environ, args=["--workers", "1"])
    [now] = os.listdir(temp)
    assert now != left and now.startswith(f"antenna-tw-metrics-{second.process.pid}-")
    second.stop()
    assert os.listdir(temp) == []
