"""Files that go between the web process and the workers: uploaded build contexts and
archives, and exported archives waiting to be downloaded.

They live under <engine root>/dashboard/transfers (mode 0700), named by random hex
only, so a name from a request or a task's arguments can never point elsewhere.
Exports older than EXPORT_TTL are removed when the next one is made.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from dashboard.live.tasks_api import TaskError
from dashboard.services import engine_for

NAME_RE = re.compile(r"^[0-9a-f]{32}$")
EXPORT_TTL = 24 * 3600
CHUNK = 1 << 20


class TransferError(TaskError):
    """A transfer name that is not one of ours, or a file that is gone."""


def root() -> Path:
    d = Path(engine_for(None).config.root) / "dashboard" / "transfers"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def _checked(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise TransferError(f"not a transfer name: {name!r}")
    return name


def save_upload(f: Any) -> str:
    """Store an uploaded file (Django's UploadedFile, read in chunks); returns its name."""
    name = uuid.uuid4().hex
    path = root() / f"{name}.upload"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for chunk in f.chunks(CHUNK):
            out.write(chunk)
    return name


def save_text(text: str) -> str:
    """Store a pasted Dockerfile like an upload."""
    name = uuid.uuid4().hex
    path = root() / f"{name}.upload"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return name


def upload_path(name: str) -> Path:
    path = root() / f"{_checked(name)}.upload"
    if not path.exists():
        raise TransferError(f"the uploaded file {name} is gone (already used?)")
    return path


def size(name: str) -> int:
    return upload_path(name).stat().st_size


def discard(name: str) -> None:
    (root() / f"{_checked(name)}.upload").unlink(missing_ok=True)


def export_path(task_id: str) -> Path:
    """Where an export task writes its archive (old exports are cleared first)."""
    d = root()
    now = time.time()
    for old in d.glob("*.tar"):
        try:
            if now - old.stat().st_mtime > EXPORT_TTL:
                old.unlink()
        except FileNotFoundError:
            pass
    return d / f"{_checked(task_id)}.tar"


def export_file(task_id: str) -> Path:
    path = root() / f"{_checked(task_id)}.tar"
    if not path.exists():
        raise TransferError(f"the export of task {task_id} is not available (expired?)")
    return path
