"""docker-compose.yml deploys the stack the README describes (no Docker engine runs here,
so the file is checked, and the commands it runs are run for real where they can be)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_services_and_their_privileges(compose):
    svc = compose["services"]
    assert {"web", "worker", "redis"} <= set(svc)
    for name in ("web", "worker", "engine"):
        s = svc[name]
        assert s["privileged"] is True, name
        assert s["pid"] == "host" and s["network_mode"] == "host", name
        assert s["cgroup"] == "host", name  # monitors' cgroups are outside the service's
        env = s["environment"]
        assert env["BERTH_ROOT"] == "/var/lib/berth" and env["BERTH_RUN"] == "/run/berth"
        assert env["BERTH_REDIS_URL"].startswith("redis://127.0.0.1:6379")
    assert "6379" in svc["redis"]["command"] and "127.0.0.1" in svc["redis"]["command"]


def test_state_directories_are_shared_rshared(compose):
    for name in ("web", "worker", "engine"):
        vols = {v["target"]: v for v in compose["services"][name]["volumes"]}
        for target in ("/var/lib/berth", "/run/berth", "/run/netns"):
            v = vols[target]
            assert v["type"] == "bind" and v["source"] == target, (name, target)
            assert v["bind"]["propagation"] == "rshared", (name, target)
        assert "/sys/fs/cgroup" in vols


def test_every_service_has_a_healthcheck_and_order(compose):
    svc = compose["services"]
    for name, s in svc.items():
        assert s["healthcheck"]["test"][0] == "CMD", name
    assert svc["web"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert svc["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_commands_name_things_that_exist(compose):
    web = " ".join(compose["services"]["web"]["command"])
    worker = " ".join(compose["services"]["worker"]["command"])
    assert "manage.py prepare" in web
    assert "daphne -b 127.0.0.1 -p 8000 dashboard.asgi:application" in web
    assert "-Q quick" in worker and "-Q long" in worker and "dashboard.live.relay" in worker
    for module in ("dashboard.asgi", "dashboard.celery", "dashboard.live.relay", "daphne"):
        assert importlib.util.find_spec(module) is not None, module
    assert (REPO / "dashboard/core/management/commands/prepare.py").exists()
    docker = (REPO / "Dockerfile").read_text()
    assert "./scripts/setup.sh" in docker and "/opt/berth/.venv/bin" in docker


def test_prepare_makes_key_schema_static_and_admin(tmp_path):
    env = dict(
        os.environ,
        BERTH_ROOT=str(tmp_path / "root"),
        BERTH_RUN=str(tmp_path / "run"),
        DJANGO_SETTINGS_MODULE="dashboard.settings",
    )
    env.pop("BERTH_SECRET_KEY", None)
    env.pop("BERTH_DATABASE_URL", None)

    def prepare() -> str:
        p = subprocess.run([sys.executable, "manage.py", "prepare"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=180)  # fmt: skip
        assert p.returncode == 0, p.stderr
        return p.stdout

    assert "one-time password: " in prepare()
    key = tmp_path / "root/dashboard/secret_key"
    assert key.stat().st_mode & 0o777 == 0o600
    first_key = key.read_text()
    assert (tmp_path / "root/dashboard/db.sqlite3").exists()
    assert "an admin account exists" in prepare()  # idempotent: no second password
    assert key.read_text() == first_key  # sessions survive a restart of the web service
