"""The CLI's words where Docker's are known: push's default tag line and
its error for an image that is not here."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.root


def test_push_default_tag_and_missing_image(registry_plain, busybox_env):
    name = f"{registry_plain.host}/cli/busybox"
    busybox_env.berth("tag", "busybox", name, check=True)
    push = busybox_env.berth("push", name, check=True)
    lines = push.stdout.splitlines()
    assert lines[:2] == ["Using default tag: latest", f"The push refers to repository [{name}]"]
    assert lines[-1].startswith("latest: digest: sha256:")
    quiet = busybox_env.berth("push", "-q", name, check=True)
    assert quiet.stdout == f"{name}:latest\n"

    missing = busybox_env.berth("push", f"{registry_plain.host}/cli/absent:v1")
    assert missing.returncode == 125
    assert missing.stderr == (
        f"Error: An image does not exist locally with the tag: {registry_plain.host}/cli/absent\n"
    )
