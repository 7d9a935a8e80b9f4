"""A kill of the service mid-request leaves nothing behind: it only reads.

``python -m keras_hash.serve`` runs in a subprocess over copies of the inputs;
it is killed (SIGKILL) while uploads are in flight, and every file under its
inputs and its working folder is as before: none added, changed or removed.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx


def snapshot(folder):
    return {
        os.path.relpath(os.path.join(root, name), folder): (
            os.stat(os.path.join(root, name)).st_size,
            os.stat(os.path.join(root, name)).st_mtime_ns,
        )
        for root, dirs, files in os.walk(folder)
        for name in files + dirs
    }


def test_kill_mid_request_leaves_nothing(world, tmp_path):
    for name in ("models", "images"):
        shutil.copytree(world["root"] / name, tmp_path / name)
    shutil.copy(world["index_path"], tmp_path / "db.khi")
    before = snapshot(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "keras_hash.serve", "--model=models/tiny",
               "--index=db.khi", "--images=images", f"--port={port}",
               "--log_level=warning"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    server = subprocess.Popen(command, cwd=tmp_path, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline
            try:
                if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        answers = []

        def upload():
            try:
                reply = httpx.post(
                    url + "/api/search/image?k=5",
                    content=world["queries"][0],
                    timeout=10,
                )
                answers.append(reply.status_code)
            except httpx.HTTPError as error:
                answers.append(type(error).__name__)

        threads = [threading.Thread(target=upload) for _ in range(16)]
        for thread in threads:
            thread.start()
        time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        for thread in threads:
            thread.join(20)
    finally:
        server.kill()
        server.wait(30)
    assert server.returncode == -signal.SIGKILL
    assert len(answers) == 16
    assert any(answer != 200 for answer in answers)  # killed mid-request
    assert snapshot(tmp_path) == before
