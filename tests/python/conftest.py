"""Starts the real `logbook` binary for the Python client tests.

LOGBOOK_BIN names the binary (scripts/test.sh sets it). Each test module gets a fresh
server on a free port and a temporary data directory.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import threading

import pytest
from kubernetes import client, config

READY_TIMEOUT_SECONDS = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="logbook-py-")
        self.data_dir = os.path.join(self.tmp, "data")
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        binary = os.environ.get("LOGBOOK_BIN", "target/debug/logbook")
        self.proc = subprocess.Popen(
            [binary, "serve", "--data-dir", self.data_dir, "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = threading.Event()
        line = {}

        def read():
            line["first"] = self.proc.stdout.readline()
            ready.set()
            for _ in self.proc.stdout:
                pass

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(READY_TIMEOUT_SECONDS) or "logbook serving on" not in line.get("first", ""):
            self.proc.kill()
            raise RuntimeError(f"logbook did not start: {line.get('first')!r}")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def restart(self):
        self.kill9()
        self.start()

    def api_client(self):
        cfg = client.Configuration()
        config.load_kube_config(config_file=os.path.join(self.data_dir, "kubeconfig"), client_configuration=cfg)
        return client.ApiClient(cfg)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.kill9()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture()
def core(server):
    return client.CoreV1Api(server.api_client())
