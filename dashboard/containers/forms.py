"""The run/create form: text fields as a user types them, parsed by the service layer
(the engine's own parsers), each error shown next to its field."""

from __future__ import annotations

from django import forms

from dashboard.services import containers as svc

LINES = {"rows": 3, "cols": 40}
ADMIN_FIELDS = ("privileged", "cap_add", "pid_host")


class RunForm(forms.Form):
    image = forms.CharField(max_length=512, help_text="e.g. busybox or busybox:latest")
    name = forms.CharField(max_length=128, required=False)
    command = forms.CharField(
        max_length=4096, required=False, help_text="split like a shell does: sh -c 'echo hi'"
    )
    env = forms.CharField(
        widget=forms.Textarea(attrs=LINES), required=False, help_text="NAME=value, one a line"
    )
    ports = forms.CharField(
        widget=forms.Textarea(attrs=LINES), required=False, help_text="8080:80, one a line"
    )
    volumes = forms.CharField(
        widget=forms.Textarea(attrs=LINES),
        required=False,
        help_text="volume:/path or /host/path:/path[:ro], one a line",
    )
    network = forms.CharField(max_length=128, required=False, help_text="bridge, none, a name")
    restart = forms.CharField(
        max_length=64, required=False, help_text="no, on-failure[:N], always, unless-stopped"
    )
    memory = forms.CharField(max_length=32, required=False, help_text="e.g. 256m")
    cpus = forms.CharField(max_length=32, required=False, help_text="e.g. 0.5")
    pids_limit = forms.CharField(max_length=16, required=False)
    user = forms.CharField(max_length=128, required=False, help_text="uid[:gid] or a name")
    workdir = forms.CharField(max_length=1024, required=False)
    labels = forms.CharField(
        widget=forms.Textarea(attrs=LINES), required=False, help_text="key=value, one a line"
    )
    auto_remove = forms.BooleanField(required=False, label="Remove when it exits")
    start = forms.BooleanField(required=False, label="Start it now")
    # Admin only: each amounts to root on the host.
    privileged = forms.BooleanField(required=False)
    cap_add = forms.CharField(max_length=512, required=False, label="Add capabilities")
    pid_host = forms.BooleanField(required=False, label="Host PID namespace")

    def __init__(self, *args, is_admin: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.is_admin = is_admin
        self.cleaned_options = None
        self.refused: set[str] = set()

    def admin_fields(self):
        return [self[f] for f in ADMIN_FIELDS]

    def plain_fields(self):
        return [self[f] for f in self.fields if f not in ADMIN_FIELDS]

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        req = svc.RunRequest(
            **{k: data.get(k) or ("" if k not in BOOLS else False) for k in FIELDS}
        )
        try:
            self.cleaned_options = svc.parse_run(req, is_admin=self.is_admin)
        except svc.FormErrors as e:
            for k, v in e.errors.items():
                self.add_error(k if k in self.fields else None, v)
                if not self.is_admin and (k in ADMIN_FIELDS or "admin role" in v):
                    self.refused.add(k)
        return data


BOOLS = {"auto_remove", "start", "privileged", "pid_host"}
FIELDS = [f for f in RunForm.base_fields]
