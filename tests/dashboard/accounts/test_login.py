"""Log in, log out, password change and login throttling, through the real views."""

from __future__ import annotations

import pytest
from django.test import Client

from dashboard.accounts.models import AuditEntry, LoginFailures
from dashboard.accounts.throttle import MAX_ADDR, MAX_USER
from tests.dashboard.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def login(c: Client, username: str, password: str, addr: str = "10.0.0.1"):
    return c.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=addr)


def test_every_page_needs_login(client, engine_root):
    for url in ("/", "/volumes/", "/networks/", "/system/", "/audit/", "/users/", "/password/"):
        r = client.get(url)
        assert r.status_code == 302 and r.url.startswith("/login/"), url


def test_login_then_logout(users, engine_root):
    c = Client()
    r = login(c, "viewer", PASSWORD)
    assert r.status_code == 302 and r.url == "/"
    assert c.session.get_expiry_age() == 12 * 3600  # a working day, not two weeks
    assert c.get("/").status_code == 200
    r = c.post("/logout/")
    assert r.status_code == 302
    assert c.get("/").status_code == 302  # logged out: back to the log-in page
    actions = list(AuditEntry.objects.values_list("action", "actor", "result"))
    assert ("auth.login", "viewer", "ok") in actions
    assert ("auth.logout", "viewer", "ok") in actions


def test_logout_needs_post(client_as):
    assert client_as("viewer").get("/logout/").status_code == 405


def test_login_redirects_only_to_this_site(users):
    c = Client()
    r = c.post("/login/?next=https://evil.example/", {"username": "viewer", "password": PASSWORD})
    assert r.status_code == 302 and r.url == "/"
    c = Client()
    r = c.post("/login/", {"username": "viewer", "password": PASSWORD, "next": "/volumes/"})
    assert r.url == "/volumes/"
    # Logged in already: the log-in page sends you on, never back to itself.
    assert c.get("/login/?next=/login/").url == "/"


def test_bad_password_is_refused_and_audited(users):
    r = login(Client(), "viewer", "wrong")
    assert r.status_code == 400
    assert b"Please enter a correct username and password" in r.content
    e = AuditEntry.objects.get(action="auth.login")
    assert e.target == "viewer" and e.result.startswith("failed") and e.address == "10.0.0.1"
    assert "wrong" not in str(e.params)


def test_username_locked_after_repeated_failures(users):
    c = Client()
    for _ in range(MAX_USER - 1):
        assert login(c, "viewer", "wrong").status_code == 400
    r = login(c, "viewer", "wrong")
    assert r.status_code == 429
    assert b"Too many failed log-ins" in r.content and b"15 minutes" in r.content
    # Now even the right password is refused, from any address...
    r = login(Client(), "viewer", PASSWORD, addr="10.0.0.2")
    assert r.status_code == 429 and b"locked" in r.content
    assert "_auth_user_id" not in r.wsgi_request.session
    # ...but another user can still log in from the same address.
    assert login(Client(), "operator", PASSWORD).status_code == 302


def test_lock_holds_across_processes_because_it_is_in_the_database(users):
    for _ in range(MAX_USER):
        login(Client(), "Viewer", "wrong")  # usernames counted case-insensitively
    row = LoginFailures.objects.get(kind="user", key="viewer")
    assert row.count == MAX_USER and row.locked_until is not None


def test_lock_expires(users):
    from datetime import timedelta

    from django.utils import timezone

    for _ in range(MAX_USER):
        login(Client(), "viewer", "wrong")
    LoginFailures.objects.filter(kind="user").update(
        locked_until=timezone.now() - timedelta(seconds=1)
    )
    assert login(Client(), "viewer", PASSWORD).status_code == 302
    assert not LoginFailures.objects.filter(kind="user", key="viewer").exists()


def test_client_address_locked_after_many_failures(users):
    c = Client()
    for i in range(MAX_ADDR):
        login(c, f"nobody{i}", "wrong", addr="10.9.9.9")
    r = login(c, "viewer", PASSWORD, addr="10.9.9.9")
    assert r.status_code == 429
    assert login(Client(), "viewer", PASSWORD, addr="10.9.9.8").status_code == 302


def test_good_login_resets_the_username_count(users):
    for _ in range(MAX_USER - 1):
        login(Client(), "viewer", "wrong")
    assert login(Client(), "viewer", PASSWORD).status_code == 302
    for _ in range(MAX_USER - 1):
        assert login(Client(), "viewer", "wrong").status_code == 400


def test_inactive_user_cannot_log_in(users):
    users["viewer"].is_active = False
    users["viewer"].save()
    assert login(Client(), "viewer", PASSWORD).status_code == 400


def test_password_change(users, engine_root):
    c = Client()
    login(c, "operator", PASSWORD)
    assert c.get("/password/").status_code == 200
    r = c.post(
        "/password/",
        {"old_password": "nope", "new_password1": "x", "new_password2": "y"},
    )
    assert r.status_code == 400
    body = r.content.decode()
    assert "Your old password was entered incorrectly" in body
    r = c.post(
        "/password/",
        {
            "old_password": PASSWORD,
            "new_password1": "n3w-secret-pw",
            "new_password2": "n3w-secret-pw",
        },
    )
    assert r.status_code == 302
    assert c.get("/").status_code == 200  # this session survives the change
    assert login(Client(), "operator", PASSWORD).status_code == 400
    assert login(Client(), "operator", "n3w-secret-pw").status_code == 302
    e = AuditEntry.objects.filter(action="auth.password_change", result="ok").get()
    assert e.actor == "operator" and "n3w" not in str(e.params)


def test_password_change_htmx_shows_errors_in_place(client_as):
    c = client_as("viewer")
    r = c.post(
        "/password/",
        {"old_password": PASSWORD, "new_password1": "a", "new_password2": "b"},
        HTTP_HX_REQUEST="true",
    )
    assert r.status_code == 200
    body = r.content.decode()
    assert "didn’t match" in body or "didn't match" in body
    assert "<nav>" not in body  # a fragment, not the whole page


def test_old_failure_rows_are_purged(users):
    from datetime import timedelta

    from django.utils import timezone

    login(Client(), "ghost1", "wrong", addr="10.1.1.1")
    LoginFailures.objects.update(first_at=timezone.now() - timedelta(days=2))
    login(Client(), "ghost2", "wrong", addr="10.1.1.2")
    assert set(LoginFailures.objects.values_list("key", flat=True)) == {"ghost2", "10.1.1.2"}


@pytest.mark.parametrize("variant", ["ｖｉｅｗｅｒ", " viewer", "VIEWER"])
def test_lock_holds_for_every_spelling_django_logs_in_with(users, variant):
    """Django's log-in form NFKC-normalizes and strips the username ("ｖｉｅｗｅｒ" in
    full-width letters logs in as viewer): the lock must count and hold for the account
    that is logged in to, or a guesser gets a fresh count with every spelling."""
    c = Client()
    for i in range(MAX_USER):
        login(c, variant, f"wrong{i}", addr=f"10.0.1.{i}")  # spread over addresses
    r = login(c, "viewer", PASSWORD, addr="10.0.2.1")
    assert r.status_code == 429, "the variant's failures count for the viewer account"
    for i in range(MAX_USER):
        login(c, "viewer", f"wrong{i}", addr=f"10.0.3.{i}")
    r = login(c, "ｖｉｅｗｅｒ", PASSWORD, addr="10.0.4.1")
    assert r.status_code == 429 and "_auth_user_id" not in c.session


def test_failed_login_never_records_what_names_no_account(users, client_as):
    """A password typed into the username field must not land in the audit log, which
    every viewer reads: a failed log-in names its account only when there is one."""
    login(Client(), "correct horse battery", "viewer-password?")
    login(Client(), "Viewer", "wrong")  # the account's own spelling is recorded
    entries = AuditEntry.objects.filter(action="auth.login").order_by("id")
    assert [e.target for e in entries] == ["(unknown user)", "viewer"]
    assert "horse" not in client_as("viewer").get("/audit/").content.decode()
