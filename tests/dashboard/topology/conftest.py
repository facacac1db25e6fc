"""Topology dashboard fixtures: the dashboard's engine is a net_env engine (its "host" is
a test-made netns), with networks and containers made through the real CLI; a private
Redis for the channel layer."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest


def use_engine(monkeypatch, env) -> None:
    """Point engine_for() (EngineConfig.from_env) at the test's engine."""
    for k, v in env.env.items():
        if k.startswith("BERTH_"):
            monkeypatch.setenv(k, v)


@pytest.fixture
def wired(net_env, monkeypatch):
    """Networks front (a, b) and back (x), all running busybox."""
    b = net_env.berth
    b("network", "create", "--subnet", "10.95.0.0/24", "front", check=True)
    b("network", "create", "--subnet", "10.96.0.0/24", "back", check=True)
    for name, net in (("a", "front"), ("b", "front"), ("x", "back")):
        b("run", "-d", "--name", name, "--network", net, "busybox", "sleep", "300", check=True)
    use_engine(monkeypatch, net_env)
    return net_env


@pytest.fixture
def redis_layer(tmp_path, settings):
    """A private redis-server on a unix socket, used as the channel layer."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    sock = Path(tmp_path) / "redis.sock"
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "redis did not start"
            time.sleep(0.05)
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [f"unix://{sock}"]},
            }
        }
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
