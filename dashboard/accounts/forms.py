"""Forms of the accounts pages; every bad input gets an error naming the problem."""

from __future__ import annotations

import re

from django import forms
from django.contrib.auth import get_user_model

from dashboard.accounts.models import ROLE_CHOICES, Team

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@+-]{1,150}$")
ROLE_OR_NONE = [("", "(no role)"), *ROLE_CHOICES]


class UserCreateForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=ROLE_OR_NONE, required=False, initial="viewer")

    def clean_username(self) -> str:
        name = self.cleaned_data["username"].strip()
        if not USERNAME_RE.match(name):
            raise forms.ValidationError(
                "a username is 1-150 letters, digits and @ . + - _ (no spaces)"
            )
        if get_user_model().objects.filter(username__iexact=name).exists():
            raise forms.ValidationError(f"a user named {name!r} exists already")
        return name


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES)


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100)
    role = forms.ChoiceField(choices=ROLE_OR_NONE, required=False)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("a team needs a name")
        if Team.objects.filter(name__iexact=name).exists():
            raise forms.ValidationError(f"a team named {name!r} exists already")
        return name


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)

    def clean_username(self):
        name = self.cleaned_data["username"].strip()
        try:
            return get_user_model().objects.get(username=name)
        except get_user_model().DoesNotExist:
            raise forms.ValidationError(f"no user named {name!r}") from None
