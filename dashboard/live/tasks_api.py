"""Long operations as Celery tasks with progress a page can follow, leave, and rejoin.

Starting one (views)::

    task_id = tasks_api.start(request.user, "image.pull", "long.image_pull",
                              {"ref": "busybox:latest"}, target="busybox:latest")
    return redirect("live:task", task_id)

Writing one (an app's tasks.py)::

    @tasks_api.tracked("long.image_pull")
    def image_pull(ctx, ref):              # ctx: TaskContext
        ctx.progress({"status": "Downloading", "id": layer, "current": n, "total": t})
        return {"image": ...}              # JSON: the record's result

Progress goes to a Redis stream per task (``berth:task:<id>``): the stream's entry IDs
are the sequence a page snapshots and resumes from (XRANGE after an ID gives exactly
what came later: no gap, no duplicate), and each entry is announced to the channel
group ``task.<id>`` ({"type": "task.progress", "task": id, "sid": entry id}) so open
pages read it at once. The stream's first entry is "pending"; a "state" entry marks
running/success/failure; the last one is always a final "state" entry.

Crashes: tasks are acks_late, so a worker that dies with a task leaves its message in
the broker; a pool process that dies is reported by Celery's main process
(task_failure with WorkerLostError) and the record fails at once. A whole worker that
dies stops refreshing the task's heartbeat key; ``reap_stale()`` (called by the tasks
pages, their websocket and the events relay) fails RUNNING records whose heartbeat
expired. The audit entry a view recorded when it started the task (result "started",
params["task"] = the id) gets the outcome when the task ends. A redelivered message finds its record final (or alive elsewhere) and does
nothing: a task never runs twice at once, and never after it was reported failed.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

log = logging.getLogger(__name__)

STREAM = "berth:task:{}"
ALIVE = "berth:task:{}:alive"
HEARTBEAT_EVERY = 3.0  # seconds between heartbeat refreshes
HEARTBEAT_TTL = 15  # seconds without a refresh before a RUNNING task counts as lost
STREAM_TTL = 7 * 24 * 3600  # a task's progress is kept a week after its last entry
STREAM_MAXLEN = 50_000  # entries (a long build log); older ones are trimmed
GROUP = "task.{}"


class TaskError(Exception):
    """A bad request to start a task (unknown kind, bad arguments)."""


# -- Redis ------------------------------------------------------------------------------------

_redis_lock = threading.Lock()
_redis: dict[tuple[int, str], Any] = {}


def redis_client():
    """A redis-py client for settings.REDIS_URL, one per process (fork-safe)."""
    import redis

    key = (os.getpid(), settings.REDIS_URL)
    with _redis_lock:
        client = _redis.get(key)
        if client is None:
            client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
            _redis[key] = client
        return client


def _notify(task_id: str, sid: str) -> None:
    """Tell open pages that entry ``sid`` exists. Best effort: a page that misses it reads
    the stream on its next poll, so a full or absent channel layer loses nothing."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            GROUP.format(task_id), {"type": "task.progress", "task": task_id, "sid": sid}
        )
    except Exception as e:  # the entry is stored; pages poll for it
        log.warning("task %s: progress notification failed: %s", task_id, e)


def _append(task_id: str, data: dict) -> str:
    r = redis_client()
    key = STREAM.format(task_id)
    sid = r.xadd(key, {"d": json.dumps(data)}, maxlen=STREAM_MAXLEN, approximate=True)
    r.expire(key, STREAM_TTL)
    _notify(task_id, sid)
    return sid


def entries(task_id: str, after: str = "") -> list[tuple[str, dict]]:
    """Progress entries (sid, data) after entry ID ``after`` (all when empty), in order."""
    lo = f"({after}" if after else "-"
    rows = redis_client().xrange(STREAM.format(task_id), min=lo, max="+")
    return [(sid, json.loads(f["d"])) for sid, f in rows]


def valid_sid(text: str) -> bool:
    """A stream entry ID as the pages send it back ("1700000000000-0")."""
    ms, dash, n = text.partition("-")
    return bool(dash) and ms.isdigit() and n.isdigit()


# -- starting ------------------------------------------------------------------------------


def start(user: Any, kind: str, task_name: str, kwargs: dict, target: str = "") -> str:
    """Record and send a task; returns its id (the record's primary key and Celery's id).

    ``kwargs`` must be JSON; they are stored with secrets masked (the message itself
    carries them in full). Tasks named ``long.*`` go to the long queue.
    """
    from dashboard.accounts.audit import mask
    from dashboard.celery import app
    from dashboard.live.models import PENDING, TaskRecord

    if not kind or not task_name:
        raise TaskError("a task needs a kind and a Celery task name")
    try:
        json.dumps(kwargs)
    except TypeError as e:
        raise TaskError(f"task {kind}: arguments are not JSON: {e}") from None
    task_id = uuid.uuid4().hex
    rec = TaskRecord.objects.create(
        id=task_id,
        kind=kind,
        task_name=task_name,
        target=target[:255],
        user=user if getattr(user, "pk", None) else None,
        username=getattr(user, "username", "") or "",
        params=mask(kwargs),
        state=PENDING,
    )
    _append(task_id, {"event": "state", "state": PENDING, "kind": kind, "target": rec.target})

    def send() -> None:
        try:
            app.send_task(task_name, kwargs=kwargs, task_id=task_id)
        except Exception as e:  # broker unreachable: say so rather than stay pending
            log.error("task %s (%s) could not be queued: %s", task_id, task_name, e)
            fail(task_id, f"could not queue the task: {e}")

    # After the commit: a worker fast enough to start before it would not find the row.
    transaction.on_commit(send)
    return task_id


# -- inside a task ---------------------------------------------------------------------------


_summary_at: dict[str, float] = {}
SUMMARY_EVERY = 1.0  # seconds between summary writes from output lines (a build's many)


def progress(task_id: str, data: dict) -> str:
    """Append one progress entry (any JSON dict); returns its entry ID. Also keeps the
    record's one-line summary: every "summary", and a "line" at most once a second."""
    sid = _append(task_id, data)
    text = data.get("summary")
    if not text and data.get("line"):
        now = time.monotonic()
        if now - _summary_at.get(task_id, -1e9) >= SUMMARY_EVERY:
            _summary_at[task_id] = now
            text = data["line"]
    if text:
        from dashboard.live.models import TaskRecord

        TaskRecord.objects.filter(pk=task_id).update(summary=str(text)[:255])
    return sid


def _end(task_id: str, state: str, **fields: Any) -> bool:
    """Move a record to a final state once; False when it already was final."""
    from dashboard.live.models import FINAL, TaskRecord

    with transaction.atomic():
        n = (
            TaskRecord.objects.filter(pk=task_id)
            .exclude(state__in=FINAL)
            .update(state=state, finished=timezone.now(), **fields)
        )
    if n:
        _audit_outcome(task_id, "ok" if state == "success" else fields.get("error", state))
        data = {"event": "state", "state": state}
        if "error" in fields:
            data["error"] = fields["error"]
        if "result" in fields:
            data["result"] = fields["result"]
        _append(task_id, data)
        redis_client().delete(ALIVE.format(task_id))
    return bool(n)


def _audit_outcome(task_id: str, outcome: str) -> None:
    """The audit entries that started this task (params["task"], see the views) get the
    task's outcome as their result: "started" becomes "ok" or the error."""
    from dashboard.accounts.models import AuditEntry

    try:
        AuditEntry.objects.filter(params__task=task_id, result="started").update(
            result=outcome[:255]
        )
    except Exception as e:  # the audit keeps "started"; the task page has the outcome
        log.warning("task %s: audit outcome not recorded: %s", task_id, e)


def finish(task_id: str, result: dict | None = None) -> bool:
    from dashboard.live.models import SUCCESS

    return _end(task_id, SUCCESS, result=result or {})


def fail(task_id: str, error: str) -> bool:
    from dashboard.live.models import FAILURE

    return _end(task_id, FAILURE, error=error[:4000] or "failed")


def begin(task_id: str) -> bool:
    """Claim the record for this worker process: False when the task must not run
    (already final, or alive in another worker: a redelivered message)."""
    from dashboard.live.models import FINAL, RUNNING, TaskRecord

    r = redis_client()
    me = f"{socket.gethostname()}:{os.getpid()}"
    # SET NX: exactly one process holds a task's heartbeat; a lost worker's key expires.
    if not r.set(ALIVE.format(task_id), me, nx=True, ex=HEARTBEAT_TTL):
        return False
    with transaction.atomic():
        rec = TaskRecord.objects.select_for_update().filter(pk=task_id).first()
        if rec is None or rec.state in FINAL:
            r.delete(ALIVE.format(task_id))
            return False
        rec.state = RUNNING
        rec.started = timezone.now()
        rec.worker = me
        rec.attempts += 1
        rec.save(update_fields=["state", "started", "worker", "attempts"])
    _append(task_id, {"event": "state", "state": RUNNING, "worker": me, "attempt": rec.attempts})
    return True


class _Heartbeat(threading.Thread):
    """Refreshes the task's ALIVE key while it runs (the reaper's sign of life)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(name=f"heartbeat-{task_id}", daemon=True)
        self.task_id = task_id
        self.stopped = threading.Event()

    def run(self) -> None:
        key = ALIVE.format(self.task_id)
        me = f"{socket.gethostname()}:{os.getpid()}"
        while not self.stopped.wait(HEARTBEAT_EVERY):
            try:
                # SET rather than EXPIRE: a beat that came late still marks us alive.
                redis_client().set(key, me, ex=HEARTBEAT_TTL)
            except Exception as e:  # Redis gone for a moment: the next beat retries
                log.warning("task %s: heartbeat failed: %s", self.task_id, e)


@dataclass
class TaskContext:
    """What a tracked task's function gets: its id, the starting user, progress()."""

    task_id: str
    user: Any = None
    _last: dict[str, float] = field(default_factory=dict)

    def progress(self, data: dict, *, every: float = 0.0, key: str = "") -> str | None:
        """Append progress; with ``every``, at most one entry per ``every`` seconds per
        ``key`` (e.g. per layer) so a fast download does not flood the stream."""
        if every:
            now = time.monotonic()
            if now - self._last.get(key, -1e9) < every:
                return None
            self._last[key] = now
        return progress(self.task_id, data)

    def line(self, text: str) -> str:
        return progress(self.task_id, {"line": text})


def _user_of(task_id: str) -> Any:
    from dashboard.live.models import TaskRecord

    rec = TaskRecord.objects.select_related("user").filter(pk=task_id).first()
    return rec.user if rec else None


def requeue(task_id: str, reason: str, attempt: int) -> bool:
    """Back to PENDING for a retry (the heartbeat must be stopped already): the retried
    run's begin() claims it again. False when the record is final meanwhile."""
    from dashboard.live.models import FINAL, PENDING, TaskRecord

    n = (
        TaskRecord.objects.filter(pk=task_id)
        .exclude(state__in=FINAL)
        .update(state=PENDING, summary=reason[:255])
    )
    redis_client().delete(ALIVE.format(task_id))
    if n:
        _append(task_id, {"event": "state", "state": PENDING, "retry": attempt, "reason": reason})
    return bool(n)


def tracked(
    name: str,
    *,
    retry_on: tuple[type[BaseException], ...] = (),
    max_retries: int = 3,
    retry_delay: float = 2.0,
    **options: Any,
) -> Callable[[Callable], Any]:
    """Register ``fn(ctx, **kwargs)`` as Celery task ``name`` with the record's life cycle
    around it: begin (or skip), run, finish or fail. Engine errors (a bad reference, a
    conflict) fail the task with their message; anything else fails it and is re-raised
    so the worker logs the traceback. Errors in ``retry_on`` (a registry that cannot be
    reached) retry the task up to ``max_retries`` times, ``retry_delay`` doubling each
    time; the record goes back to pending in between and its page says why."""
    from dashboard.celery import app

    def deco(fn: Callable) -> Any:
        @app.task(
            name=name,
            bind=True,
            acks_late=True,
            reject_on_worker_lost=False,
            max_retries=max_retries,
            **options,
        )
        @functools.wraps(fn)
        def run(self: Any, **kwargs: Any) -> Any:
            task_id = self.request.id
            if not begin(task_id):
                log.info("task %s (%s): not run: final or running elsewhere", task_id, name)
                return None
            beat = _Heartbeat(task_id)
            beat.start()
            try:
                result = fn(TaskContext(task_id, _user_of(task_id)), **kwargs)
            except Exception as e:
                from engine.errors import EngineError

                beat.stopped.set()
                beat.join()  # no beat may land after the key is released below
                tries = self.request.retries
                if retry_on and isinstance(e, retry_on) and tries < max_retries:
                    delay = retry_delay * 2**tries
                    reason = f"{e}; retry {tries + 1}/{max_retries} in {delay:g} s"
                    if requeue(task_id, reason, tries + 1):
                        raise self.retry(countdown=delay, exc=e) from e
                fail(task_id, str(e) or type(e).__name__)
                if isinstance(e, EngineError | TaskError):
                    return None
                raise
            finally:
                beat.stopped.set()
                _summary_at.pop(task_id, None)
            finish(task_id, result if isinstance(result, dict) else {"value": result})
            return result

        return run

    return deco


# -- crashes ---------------------------------------------------------------------------------


def reap_stale() -> list[str]:
    """Fail RUNNING records whose worker stopped beating; returns their ids."""
    from dashboard.live.models import RUNNING, TaskRecord

    grace = timezone.now() - timezone.timedelta(seconds=HEARTBEAT_TTL)
    running = list(
        TaskRecord.objects.filter(state=RUNNING, started__lt=grace).values_list("id", "worker")
    )
    if not running:
        return []
    r = redis_client()
    alive = r.mget([ALIVE.format(tid) for tid, _ in running])
    reaped = []
    for (tid, worker), beat in zip(running, alive, strict=True):
        if beat is None and fail(tid, f"worker lost: {worker or 'unknown'} stopped responding"):
            reaped.append(tid)
    return reaped


def _on_task_failure(sender: Any = None, task_id: str = "", exception: Any = None, **kw: Any):
    """Celery's main process reports a pool process that died mid-task (WorkerLostError)."""
    from billiard.exceptions import WorkerLostError

    if task_id and isinstance(exception, WorkerLostError):
        try:
            fail(task_id, f"worker lost: {exception}")
        except Exception as e:
            log.warning("task %s: could not record the lost worker: %s", task_id, e)


def _connect_signals() -> None:
    from celery.signals import task_failure

    task_failure.connect(_on_task_failure, weak=False, dispatch_uid="berth-task-failure")


_connect_signals()
