"""Forms for volumes and networks. Engine errors are clear one-liners: field_for()
puts each next to the field it is about."""

from __future__ import annotations

import ipaddress
import re

from django import forms

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
DRIVERS = [("bridge", "bridge"), ("macvlan", "macvlan"), ("ipvlan", "ipvlan")]


class VolumeForm(forms.Form):
    name = forms.CharField(max_length=255)
    labels = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="KEY=VALUE per line"
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if len(name) < 2 or not NAME_RE.match(name):
            raise forms.ValidationError(
                f"{name!r}: a volume name is 2 or more of a-z A-Z 0-9 _ . - "
                "and starts with a letter or digit"
            )
        return name


class NetworkForm(forms.Form):
    name = forms.CharField(max_length=255)
    driver = forms.ChoiceField(choices=DRIVERS, initial="bridge")
    subnet = forms.CharField(required=False, help_text="e.g. 10.89.0.0/24; empty: chosen for you")
    gateway = forms.CharField(required=False, help_text="empty: the subnet's first address")
    internal = forms.BooleanField(required=False, help_text="no route out of the network")

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not NAME_RE.match(name):
            raise forms.ValidationError(
                f"{name!r}: a network name is a-z A-Z 0-9 _ . - and starts with a letter or digit"
            )
        return name

    def clean_subnet(self) -> str:
        s = self.cleaned_data["subnet"].strip()
        if s:
            try:
                ipaddress.IPv4Network(s, strict=False)
            except ValueError as e:
                raise forms.ValidationError(f"{s!r} is not an IPv4 subnet (CIDR): {e}") from None
        return s

    def clean_gateway(self) -> str:
        g = self.cleaned_data["gateway"].strip()
        if g:
            try:
                ipaddress.IPv4Address(g)
            except ValueError:
                raise forms.ValidationError(f"{g!r} is not an IPv4 address") from None
        return g

    def clean(self):
        data = super().clean()
        if data.get("gateway") and not data.get("subnet"):
            self.add_error("gateway", "a gateway needs a subnet to belong to")
        return data


class ConnectForm(forms.Form):
    container = forms.CharField(max_length=255)
    ip = forms.CharField(required=False, label="IPv4 address (optional)")

    def clean_ip(self) -> str:
        ip = self.cleaned_data["ip"].strip()
        if ip:
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                raise forms.ValidationError(f"{ip!r} is not an IPv4 address") from None
        return ip


# Words in an engine error that name the field it is about (first match wins).
_FIELD_WORDS = [
    ("gateway", "gateway"),
    ("subnet", "subnet"),
    ("pool", "subnet"),
    ("overlap", "subnet"),
    ("driver", "driver"),
    ("ip address", "ip"),
    ("address", "ip"),
    ("container", "container"),
    ("label", "labels"),
    ("name", "name"),
]


def field_for(form: forms.Form, message: str) -> str | None:
    """The form field an engine error is about, or None (shown above the form)."""
    low = message.lower()
    for word, field in _FIELD_WORDS:
        if word in low and field in form.fields:
            return field
    return None


def add_engine_error(form: forms.Form, err: Exception) -> None:
    msg = str(err)
    form.add_error(field_for(form, msg), msg)
