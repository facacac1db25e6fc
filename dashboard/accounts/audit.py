"""The audit log: record() for every state-changing dashboard action.

CLI actions reach the log from the engine's events (each carries its actor): see
dashboard/services/accounts.py, import_engine_events(). This module holds what
needs no engine: masking, recording, and the filters the audit page and CSV share.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

SECRET_KEY_RE = re.compile(r"pass|secret|token|key|credential|auth|pwd", re.I)
MASK = "****"
# scheme://userinfo@host: the userinfo runs to the authority's last "@" (a password
# may hold an "@"); a userinfo without ":" is a token used as the user name.
URL_USERINFO_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)([^/?#\s]*)@")
# Keys whose values are environment variables or build arguments: every value is
# masked, whatever its name (MYSQL_ROOT_PW, GH, ...): names say too little.
ENV_KEYS = {"env", "environment", "buildargs", "buildarg", "envs"}


def _is_env_key(key: Any) -> bool:
    return re.sub(r"[^a-z]", "", str(key).lower()) in ENV_KEYS


def _mask_userinfo(m: re.Match) -> str:
    user, colon, _password = m.group(2).partition(":")
    return f"{m.group(1)}{user}:{MASK}@" if colon else f"{m.group(1)}{MASK}@"


def _mask_env(value: Any) -> Any:
    """Every value of environment-like parameters: K=V strings, lines, dicts, lists."""
    if isinstance(value, dict):
        return {k: (MASK if v not in (None, "") else v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_env(v) for v in value]
    if isinstance(value, str):
        if "\n" in value:
            return "\n".join(_mask_env(line) for line in value.split("\n"))
        k, eq, v = value.partition("=")
        return f"{k}={MASK}" if eq and v else value
    return MASK if value not in (None, "") else value


def mask(params: Any) -> Any:
    """Secrets masked: values of keys that look secret, and K=V entries likewise
    (``DB_PASSWORD=x`` in a list or a string); every value of environment variables
    and build arguments; passwords and tokens in URLs (``https://user:pw@host``)."""
    if isinstance(params, dict):
        out = {}
        for k, v in params.items():
            if SECRET_KEY_RE.search(str(k)) and v not in (None, ""):
                out[k] = MASK
            elif _is_env_key(k):
                out[k] = _mask_env(mask(v))
            else:
                out[k] = mask(v)
        return out
    if isinstance(params, list | tuple):
        return [mask(v) for v in params]
    if isinstance(params, str) and "://" in params and "@" in params:
        params = URL_USERINFO_RE.sub(_mask_userinfo, params)
    if isinstance(params, str) and "=" in params:
        if "\n" in params:  # a pasted block of K=V lines (env, labels)
            return "\n".join(mask(line) for line in params.split("\n"))
        k, _, v = params.partition("=")
        if SECRET_KEY_RE.search(k) and v:
            return f"{k}={MASK}"
    return params


def client_address(request: Any) -> str:
    return request.META.get("REMOTE_ADDR", "") if request is not None else ""


def record(
    request: Any,
    action: str,
    target: str = "",
    params: dict | None = None,
    result: str = "ok",
    host_changes: list | None = None,
    *,
    user: Any = None,
    source: str = "web",
    address: str | None = None,
) -> None:
    """Append an entry. ``request`` gives the user and address (or pass ``user`` and
    ``address``: a Celery task finishing an action the page started has no request)."""
    from dashboard.accounts.models import AuditEntry

    u = user if user is not None else getattr(request, "user", None)
    AuditEntry.objects.create(
        ts=timezone.now(),
        actor=getattr(u, "username", "") or "anonymous",
        source=source,
        address=address if address is not None else client_address(request),
        action=action,
        target=mask(str(target))[:255],
        params=mask(params or {}),
        result=mask(str(result))[:255],
        host_changes=mask(host_changes or []),
    )


def record_invalid(request: Any, action: str, target: str, form: Any) -> None:
    """A change refused because its form did not validate: on the record too, with what
    was asked (the form's own fields, masked) and the errors."""
    asked = {k: form.data.get(k) for k in form.fields if form.data.get(k) not in (None, "")}
    errors = "; ".join(
        " ".join(msgs) if field == "__all__" else f"{field}: {' '.join(msgs)}"
        for field, msgs in form.errors.items()
    )
    record(request, action, target, asked, result=f"refused: {errors}")


# -- the page's filters ----------------------------------------------------------------

FILTERS = ("actor", "action", "target", "source", "since", "until", "q")


def _day(value: str, field: str, errors: dict[str, str]) -> datetime | None:
    if not value:
        return None
    try:
        day = datetime.strptime(value.strip(), "%Y-%m-%d").date()
    except ValueError:
        errors[field] = f"{value!r} is not a date (YYYY-MM-DD)"
        return None
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_default_timezone())


def filter_entries(qs: QuerySet, args: Any) -> tuple[QuerySet, dict[str, str]]:
    """Apply the audit page's filters (a QueryDict or dict); returns (queryset, errors by
    field). actor/action/target match a substring (case-insensitive); since/until are
    days, both included; q searches every text column, parameters and host changes."""
    errors: dict[str, str] = {}
    get = {k: (args.get(k) or "").strip() for k in FILTERS}
    if get["actor"]:
        qs = qs.filter(actor__icontains=get["actor"])
    if get["action"]:
        qs = qs.filter(action__icontains=get["action"])
    if get["target"]:
        qs = qs.filter(target__icontains=get["target"])
    if get["source"]:
        qs = qs.filter(source=get["source"])
    since = _day(get["since"], "since", errors)
    until = _day(get["until"], "until", errors)
    if since:
        qs = qs.filter(ts__gte=since)
    if until:
        qs = qs.filter(ts__lt=until + timedelta(days=1))
    if since and until and until < since:
        errors["until"] = "the end date is before the start date"
    if get["q"]:
        q = get["q"]
        # JSON columns are stored as text in SQLite: a substring search reaches the
        # parameters and host changes too (masked values are never stored).
        qs = qs.filter(
            Q(actor__icontains=q)
            | Q(action__icontains=q)
            | Q(target__icontains=q)
            | Q(result__icontains=q)
            | Q(address__icontains=q)
            | Q(params__icontains=q)
            | Q(host_changes__icontains=q)
        )
    return qs, errors


CSV_HEADER = ["time", "actor", "source", "address", "action", "target", "params", "result",
              "host_changes", "event_seq"]  # fmt: skip


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """A cell a spreadsheet would run as a formula (``=HYPERLINK(...)`` typed as a
    username at the log-in page lands in the log) is quoted with a leading '."""
    return "'" + value if value.startswith(FORMULA_START) else value


def csv_row(e: Any) -> list[str]:
    return [csv_cell(v) for v in _csv_values(e)]


def _csv_values(e: Any) -> list[str]:
    import json

    return [
        e.ts.isoformat(),
        e.actor,
        e.source,
        e.address,
        e.action,
        e.target,
        json.dumps(e.params, sort_keys=True),
        e.result,
        json.dumps(e.host_changes, sort_keys=True),
        "" if e.event_seq is None else str(e.event_seq),
    ]


def describe_change(change: Any) -> str:
    """One host change as a line for the page: ``bridge btxx1 up 10.1.0.1/24``..."""
    if not isinstance(change, dict):
        return str(change)
    what = change.get("change") or change.get("action") or ""
    rest = ", ".join(f"{k}={v}" for k, v in change.items() if k not in ("change", "action") and v)
    return f"{what}: {rest}" if what else rest
