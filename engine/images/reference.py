"""Image references, parsed and normalised the way Docker does it.

Internally every reference is fully qualified (``docker.io/library/busybox:latest``)
so that ``busybox``, ``library/busybox`` and ``docker.io/busybox`` name the same
thing; for display we use Docker's "familiar" form (``busybox:latest``), because
that is what users type and what ``docker images`` shows.

The grammar follows github.com/distribution/reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from engine.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_MAX = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}"

_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_DIGEST_RE = re.compile(rf"^{_DIGEST}$")
_SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")
_ID_PREFIX_RE = re.compile(r"^(?:sha256:)?[a-f0-9]{1,64}$")


def _invalid(text: str, why: str = "") -> InvalidArgument:
    detail = f": {why}" if why else ""
    return InvalidArgument(f"invalid reference format{detail}: {text!r}", obj=text)


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised reference. ``tag`` and ``digest`` may both be set."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Fully qualified repository name: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """Repository name as Docker shows it: ``busybox``, ``localhost:5000/a/b``."""
        if self.domain == DEFAULT_DOMAIN:
            if self.path.startswith(OFFICIAL_REPO_PREFIX) and self.path.count("/") == 1:
                return self.path[len(OFFICIAL_REPO_PREFIX) :]
            return self.path
        return self.name

    def _suffix(self) -> str:
        out = ""
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def __str__(self) -> str:
        return self.name + self._suffix()

    def familiar(self) -> str:
        """``busybox:latest``, ``localhost:5000/a/b:tag``, ``busybox@sha256:...``."""
        return self.familiar_name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.match(tag):
            raise _invalid(tag, "invalid tag")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        return replace(self, tag=None, digest=digest)

    def tagged_or_digested(self) -> bool:
        return bool(self.tag or self.digest)


def _split_domain(name: str) -> tuple[str, str]:
    # Docker's rule: the first component is a registry host only if it looks
    # like one (has a dot or a port, or is "localhost", or has uppercase
    # letters, which a repository path may not contain).
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return domain, path


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse ``text`` into a normalised Reference.

    With ``default_tag`` a reference with neither tag nor digest gets ``:latest``,
    as ``docker pull busybox`` does.
    """
    if not isinstance(text, str) or not text:
        raise _invalid(str(text), "empty reference")
    if text != text.strip():
        raise _invalid(text, "leading or trailing whitespace")
    if _HEX64_RE.match(text):
        # Docker refuses a 64-hex "name": it would be confused with an image ID.
        raise _invalid(text, "cannot specify 64-byte hexadecimal strings")

    remainder, digest = text, None
    if "@" in remainder:
        remainder, _, digest = remainder.rpartition("@")
        if not _DIGEST_RE.match(digest):
            raise _invalid(text, "invalid digest")
        algo, _, hexpart = digest.partition(":")
        if algo == "sha256" and not _SHA256_RE.match(digest):
            raise _invalid(text, "invalid sha256 digest")

    tag = None
    # A colon after the last slash separates the tag; a colon before it is a port.
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise _invalid(text, "invalid tag")

    if not remainder:
        raise _invalid(text, "missing repository name")
    domain, path = _split_domain(remainder)
    if not _DOMAIN_RE.match(domain):
        raise _invalid(text, "invalid registry host")
    if path.lower() != path:
        raise _invalid(text, "repository name must be lowercase")
    if not _PATH_RE.match(path):
        raise _invalid(text, "invalid repository name")
    if len(f"{domain}/{path}") > NAME_TOTAL_MAX:
        raise _invalid(text, f"repository name must not be more than {NAME_TOTAL_MAX} characters")

    if default_tag and tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def normalize(text: str) -> str:
    """Fully qualified string form: ``busybox`` -> ``docker.io/library/busybox:latest``."""
    return str(parse_reference(text))


def familiar(text: str) -> str:
    """Docker's display form of a reference given in any form."""
    return parse_reference(text, default_tag=False).familiar()


def is_full_id(text: str) -> bool:
    """``sha256:<64 hex>`` or bare 64 hex."""
    return bool(_SHA256_RE.match(text) or _HEX64_RE.match(text))


def looks_like_id_prefix(text: str) -> bool:
    """Could ``text`` be a (possibly shortened) image ID?"""
    return bool(_ID_PREFIX_RE.match(text))


def id_hex(text: str) -> str:
    """Strip an optional ``sha256:`` from an image ID or prefix."""
    return text[len("sha256:") :] if text.startswith("sha256:") else text


def match_pattern(pattern: str, ref: Reference) -> bool:
    """Docker's ``reference=`` filter: a glob matched against the familiar name
    (``busybox``) or familiar name:tag (``busybox:latest``); ``*`` does not cross ``/``."""
    regex = re.compile("^" + _glob_to_regex(pattern) + "$")
    candidates = {ref.familiar_name, ref.name}
    if ref.tag:
        candidates |= {f"{ref.familiar_name}:{ref.tag}", f"{ref.name}:{ref.tag}"}
    return any(regex.match(c) for c in candidates)


def _glob_to_regex(pattern: str) -> str:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("^"):
                    body = "!" + body[1:]
                if body.startswith("!"):
                    body = "^" + re.escape(body[1:])
                else:
                    body = re.escape(body).replace(r"\-", "-")
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)
