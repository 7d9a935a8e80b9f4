"""Fixtures of the index tests: one Milvus 2.3.5 test server per session.

The embedded server of the ``milvus`` package (test extra) starts on first
use and serves every test of the session that asks for ``server_uri``
(tests/index/test_milvus_server.py and the conformance suite), so it starts
once. Its embedded etcd always listens on 127.0.0.1 ports 2379 and 2380: one
such server per machine at a time.
"""

import shutil
import socket
import time
import urllib.request

import pytest

try:
    from milvus import MilvusServer
except ImportError:  # the test extra installs it
    MilvusServer = None

START_TIMEOUT = 120  # seconds; the server starts in about 7 s on 2 cores


@pytest.fixture(scope="session")
def server_uri(tmp_path_factory):
    """The URI of the session's Milvus 2.3.5 server (fails without the package)."""
    if MilvusServer is None:
        pytest.fail(
            "the embedded Milvus server package is missing: pip install "
            "milvus==2.3.5 (or pip install -e '.[test]')"
        )
    _check_etcd_ports()
    base = tmp_path_factory.mktemp("milvus_server")
    server = MilvusServer(wait_for_started=False)
    server.set_base_dir(str(base))
    try:
        server.start()
        _wait_healthy(server, base)
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()
        # About 500 MB of binaries and data; the logs stay with pytest's tmp.
        for folder in ("bin", "data"):
            shutil.rmtree(base / folder, ignore_errors=True)


def _check_etcd_ports():
    """The server's embedded etcd always listens on 2379 and 2380 (measured)."""
    for port in (2379, 2380):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as e:
                pytest.fail(
                    f"127.0.0.1:{port} is taken ({e}): the embedded Milvus 2.3.5 "
                    "server's etcd always listens on 2379 and 2380, so one such "
                    "server runs per machine; is another Milvus or etcd running?"
                )


def _wait_healthy(server, base):
    """MilvusServer.wait_started waits 180 s even for a dead server: not here."""
    url = f"http://127.0.0.1:{server.webservice_port}/healthz"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.server_proc.poll() is not None:
            log = (base / "logs" / "milvus-stdout.log").read_text(errors="replace")
            errors = [line[:300] for line in log.splitlines() if "[ERROR]" in line]
            pytest.fail(
                f"the Milvus server exited ({server.server_proc.returncode}); "
                f"first errors: {errors[:3]}; logs in {base / 'logs'}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if b"OK" in response.read():
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the Milvus server did not become healthy in {START_TIMEOUT} s")
