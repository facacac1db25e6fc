"""The advisor's tables: which names are secrets, build tools, full bases,
caches and key files."""

from __future__ import annotations

import pytest

from engine.images import advise_rules as R


@pytest.mark.parametrize(
    "name, secret",
    [
        ("DB_PASSWORD", True), ("API_KEY", True), ("NPM_TOKEN", True), ("apiKey", True),
        ("AWS_SECRET_ACCESS_KEY", True), ("github-token", True), ("SECRET_KEY_BASE", True),
        ("GPG_KEY", False), ("PASSWORD_FILE", False), ("TOKEN_URL", False), ("AUTHOR", False),
        ("PUBLIC_KEY", False), ("PATH", False), ("KEYCLOAK_REALM", False),
    ],
)  # fmt: skip
def test_secret_names(name, secret):
    assert R.secret_name(name) is secret


@pytest.mark.parametrize(
    "pkg, tool",
    [
        ("gcc", True), ("gcc-12", True), ("cpp-12", True), ("clang-16", True), ("make", True),
        ("build-essential", True), ("libssl-dev", True), ("libpq-dev:amd64", True),
        ("musl-dev", True), ("binutils-common", True), ("openssl-devel", True),
        ("gcc-12-base", False), ("libgcc-s1", False), ("libssl3", False), ("curl", False),
        ("devscripts", False), ("python3", False),
    ],
)  # fmt: skip
def test_build_packages(pkg, tool):
    assert R.is_build_package(pkg) is tool


@pytest.mark.parametrize(
    "ref, better",
    [
        ("python:3.11", "python:3.11-slim"), ("python", "python:slim"),
        ("docker.io/library/node:20-bookworm", "docker.io/library/node:20-bookworm-slim"),
        ("debian:bookworm", "debian:bookworm-slim"), ("library/ruby:3", "library/ruby:3-slim"),
        ("python:3.11-slim", None), ("node:20-alpine", None), ("alpine:3.19", None),
        ("ubuntu:22.04", None), ("scratch", None), ("myorg/python:3.11", None),
        ("python:${PY}", None), ("localhost:5000/debian:12", None),
    ],
)  # fmt: skip
def test_slimmer_base(ref, better):
    got = R.slimmer_base(ref)
    assert (got[0] if got else None) == better


def test_build_bases_point_to_a_runtime_stage():
    assert R.slimmer_base("golang:1.22")[0].startswith("a scratch")
    assert R.slimmer_base("buildpack-deps:bookworm")[0] == "debian:<codename>-slim"


def test_cache_paths():
    assert R.cache_of("/var/lib/apt/lists/x_Packages").name == "apt lists"
    assert R.cache_of("/home/app/.cache/pip/http/a").name == "pip cache"
    assert R.cache_of("/root/.npm/_cacache/index").name == "npm cache"
    assert R.cache_of("/var/cache/apk/APKINDEX.tar.gz").name == "apk cache"
    assert R.cache_of("/var/lib/apt/lists") is None  # the directory itself holds no bytes
    assert R.cache_of("/var/lib/apt/extended_states") is None
    assert R.cache_of("/home/app/.cache/other/x") is None


def test_key_file_names():
    assert R.key_file_markers("/root/.ssh/id_ed25519") == (R.KEY_MARKER,)
    assert R.key_file_markers("/etc/ssl/private/site.key") == (R.KEY_MARKER,)
    assert R.key_file_markers("/root/.docker/config.json") == (b'"auth"',)
    assert R.key_file_markers("/app/config.json") is None
    assert R.key_file_markers("/root/.aws/credentials") == (b"aws_secret_access_key",)
    assert R.key_file_markers("/usr/lib/x/tests/certs/server.key") is None
    assert R.key_file_markers("/app/main.py") is None


def test_masked_never_shows_the_value():
    assert R.masked("hunter2hunter2") == "h… (14 characters)"
    assert R.masked("abc") == "***" and R.masked("") == "(empty)"
