"""`image advise DOCKERFILE`: findings from a Dockerfile's lines and its build
context, each asserted where it applies and where it does not."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.errors import InvalidArgument, NotFound
from engine.images.advise import is_dockerfile_target, render_text
from engine.images.advise_dockerfile import LARGE_CONTEXT, advise_dockerfile
from tests.unit.test_advise_image import (
    MESSY_CONFIG,
    MESSY_HISTORY,
    MESSY_LAYERS,
    advisor,
    docker_archive,
    layer_tar,
    load,
)

KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n"

MESSY = """\
ARG BASE=python:3.11
FROM ${BASE}
ARG NPM_TOKEN
ENV DB_PASSWORD=hunter2hunter2 \\
    GPG_KEY=A035C8C1
LABEL api-token="xyz123456789" maintainer=me
RUN apt-get update && apt-get install -y build-essential libpq-dev curl
RUN pip install -r requirements.txt
COPY big.tar.gz /tmp/
ADD app.py /app/
COPY . /src
RUN tar xzf /tmp/big.tar.gz -C /opt
RUN rm -f /tmp/big.tar.gz
"""

TIDY = """\
# syntax=docker/dockerfile:1
FROM gcc:13 AS build
RUN apt-get update && apt-get install -y --no-install-recommends make
COPY src/ /src/
RUN make -C /src
FROM debian:bookworm-slim
ENV PASSWORD_FILE=/run/secrets/pw
COPY --from=build /src/app /usr/local/bin/app
ADD vendor.tar.gz /opt/
RUN pip install --no-cache-dir flask
USER 1000
"""


def write(root: Path, files: dict[str, str | bytes | int]) -> Path:
    """Files under root: text, bytes, or an int (a sparse file of that size)."""
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, int):
            with open(p, "wb") as f:
                f.truncate(data)
        elif isinstance(data, bytes):
            p.write_bytes(data)
        else:
            p.write_text(data)
    return root


@pytest.fixture
def messy(tmp_path):
    ctx = write(tmp_path / "messy", {
        "Dockerfile": MESSY, "requirements.txt": "flask\n", "app.py": "print(1)\n",
        "big.tar.gz": 1_000_000, "keys/id_rsa": KEY, ".git/objects/pack/p.pack": LARGE_CONTEXT,
    })  # fmt: skip
    return advise_dockerfile(str(ctx / "Dockerfile"))


@pytest.fixture
def tidy(tmp_path):
    ctx = write(tmp_path / "tidy", {
        "Dockerfile": TIDY, ".dockerignore": ".git\n", "src/main.c": "int main(){}\n",
        "vendor.tar.gz": 3000, ".git/objects/pack/p.pack": LARGE_CONTEXT,
    })  # fmt: skip
    return advise_dockerfile(str(ctx))  # a directory holding a Dockerfile


def only(report: dict, fid: str) -> list[dict]:
    return [f for f in report["findings"] if f["id"] == fid]


def test_layers_sizes_and_largest_copied_files(messy):
    assert messy["kind"] == "dockerfile" and messy["context"]["dockerignore"] is None
    assert messy["stages"] == [
        {"index": 0, "name": "", "base": "${BASE}", "image": "python:3.11", "line": 2}
    ]
    rows = {r["line"]: r for r in messy["layers"]}
    assert sorted(rows) == [7, 8, 9, 10, 11, 12, 13]  # RUN/COPY/ADD of the image
    assert rows[9]["size"] == 1_000_000 and rows[7]["size"] is None
    assert rows[10]["size"] == len("print(1)\n")
    assert rows[11]["size"] == messy["context"]["size"]  # COPY . sends all of it
    top = messy["largest_files"][0]
    assert top == {"path": "/src/.git/objects/pack/p.pack", "size": LARGE_CONTEXT, "line": 11}
    assert {"path": "/tmp/big.tar.gz", "size": 1_000_000, "line": 9} in messy["largest_files"]


def test_full_base(messy, tidy, tmp_path):
    (f,) = only(messy, "full-base")
    assert f["lines"] == [2] and "python:3.11-slim" in f["fix"]  # ARG default expanded
    assert not only(tidy, "full-base")  # gcc:13 is only a build stage
    # The final stage built FROM an earlier stage: judged by that stage's base.
    ctx = write(tmp_path / "chain", {"Dockerfile": "FROM node:20 AS base\nUSER 1\n"
                                     "FROM base AS final\nCMD [\"node\"]\n"})  # fmt: skip
    (f,) = only(advise_dockerfile(str(ctx / "Dockerfile")), "full-base")
    assert f["lines"] == [1] and "node:20-slim" in f["fix"]


def test_package_caches(messy, tidy):
    found = {f["title"]: f["lines"] for f in only(messy, "package-cache")}
    assert found == {"apt lists left in this RUN's layer": [7],
                     "pip cache left in this RUN's layer": [8]}  # fmt: skip
    assert not only(tidy, "package-cache")  # --no-cache-dir; the apt RUN is a build stage


def test_pip_cache_off_by_env_and_apt_lists_removed_in_the_same_run(tmp_path):
    ctx = write(tmp_path / "c", {"Dockerfile": "FROM debian:bookworm-slim\n"
                                 "ENV PIP_NO_CACHE_DIR=1\nUSER 1\n"
                                 "RUN apt-get update && apt-get install -y python3-pip"
                                 " && rm -rf /var/lib/apt/lists/* && pip install flask\n"})  # fmt: skip
    assert advise_dockerfile(str(ctx / "Dockerfile"))["findings"] == []


def test_added_then_deleted_in_a_later_step(messy, tidy, tmp_path):
    (f,) = only(messy, "deleted-in-later-layer")
    assert f["lines"] == [9, 13] and f["bytes"] == 1_000_000
    assert f["paths"] == [{"path": "/tmp/big.tar.gz", "size": 1_000_000, "line": 9}]
    assert not only(tidy, "deleted-in-later-layer")
    ctx = write(tmp_path / "apt", {"Dockerfile": "FROM debian:bookworm-slim\nUSER 1\n"
                                   "RUN apt-get update\nWORKDIR /w\nRUN rm -rf /var/lib/apt/lists/*\n"})  # fmt: skip
    (f,) = only(advise_dockerfile(str(ctx / "Dockerfile")), "deleted-in-later-layer")
    assert f["lines"] == [3, 5] and f["bytes"] is None


def test_relative_paths_follow_workdir(tmp_path):
    ctx = write(tmp_path / "w", {"data.bin": 5000, "Dockerfile": "FROM scratch\nUSER 1\n"
                                 "WORKDIR /app\nCOPY data.bin .\nCOPY data.bin ./\nENV X=1\n"
                                 "RUN rm data.bin\n"})  # fmt: skip
    (f,) = only(advise_dockerfile(str(ctx / "Dockerfile")), "deleted-in-later-layer")
    assert f["lines"] == [5, 7] and f["paths"][0]["path"] == "/app/data.bin"


def test_merge_runs(messy, tidy):
    assert [f["lines"] for f in only(messy, "merge-runs")] == [[7, 8], [12, 13]]
    assert not only(tidy, "merge-runs")


def test_no_dockerignore_with_a_large_context(messy, tidy, tmp_path):
    (f,) = only(messy, "no-dockerignore")
    assert f["lines"] == [11] and f["bytes"] == LARGE_CONTEXT  # the .git directory
    assert f["paths"] == [{"path": ".git", "size": LARGE_CONTEXT, "line": None}]
    assert not only(tidy, "no-dockerignore")
    assert tidy["context"]["ignored_bytes"] == LARGE_CONTEXT
    small = write(tmp_path / "s", {"Dockerfile": "FROM scratch\nCOPY . /\n", "a": 100})
    assert not only(advise_dockerfile(str(small / "Dockerfile")), "no-dockerignore")


def test_context_dockerignore_is_read_inside_the_context(tmp_path):
    # As the builder reads it: a .dockerignore symlinked out of the context is resolved
    # inside it (here: nothing), never the host file it points at; a FIFO is no file.
    outside = write(tmp_path / "outside", {"ignore": "*\n"})
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nCOPY . /\n", "a": 100})
    os.symlink(str(outside / "ignore"), ctx / ".dockerignore")
    report = advise_dockerfile(str(ctx / "Dockerfile"))
    assert report["context"]["dockerignore"] is None
    assert report["context"]["ignored_bytes"] == 0
    os.unlink(ctx / ".dockerignore")
    os.mkfifo(ctx / "Dockerfile.dockerignore")
    assert advise_dockerfile(str(ctx / "Dockerfile"))["context"]["dockerignore"] is None
    os.unlink(ctx / "Dockerfile.dockerignore")
    (ctx / "Dockerfile.dockerignore").write_text("a\n")
    report = advise_dockerfile(str(ctx / "Dockerfile"))
    assert report["context"]["dockerignore"] == str(ctx / "Dockerfile.dockerignore")
    assert report["context"]["ignored_bytes"] == 100


def test_build_tools(messy, tidy, tmp_path):
    (f,) = only(messy, "build-tools")
    assert f["lines"] == [7] and "a single-stage image" in f["title"]
    assert "build-essential, libpq-dev" in f["detail"] and "curl" not in f["detail"]
    assert not only(tidy, "build-tools")
    virt = ("FROM alpine:3.19\nUSER 1\nRUN apk add --no-cache --virtual .deps gcc musl-dev"
            " && make && apk del .deps\n")  # fmt: skip
    ctx = write(tmp_path / "v", {"Dockerfile": virt})
    assert not only(advise_dockerfile(str(ctx / "Dockerfile")), "build-tools")
    (ctx / "Dockerfile").write_text(virt.replace(" && apk del .deps", ""))
    (f,) = only(advise_dockerfile(str(ctx / "Dockerfile")), "build-tools")
    assert "gcc, musl-dev" in f["detail"]


def test_runs_as_root(messy, tidy, tmp_path):
    (f,) = only(messy, "runs-as-root")
    assert f["lines"] == [2]  # no USER: the final FROM
    assert not only(tidy, "runs-as-root")
    ctx = write(tmp_path / "r", {"Dockerfile": "FROM scratch\nUSER 1000\nUSER root:root\n"})
    (f,) = only(advise_dockerfile(str(ctx / "Dockerfile")), "runs-as-root")
    assert f["lines"] == [3]


def test_base_image_user_counts_when_the_image_is_local(eng_env, tmp_path):
    eng = advisor(eng_env)
    load(
        eng, docker_archive([layer_tar({"a": b"a"})], ["COPY a /"], ["app-base:1"], {"User": "app"})
    )
    ctx = write(tmp_path / "b", {"Dockerfile": "FROM app-base:1\nCOPY x /x\n", "x": 700})
    r = eng.advise_dockerfile(str(ctx / "Dockerfile"))
    assert not only(r, "runs-as-root")
    assert r["layers"][0] == {"line": 1, "instruction": "FROM app-base:1", "size": 1}
    (ctx / "Dockerfile").write_text("FROM busyboxy:1\nCOPY x /x\n")  # not in the store
    assert only(eng.advise_dockerfile(str(ctx / "Dockerfile")), "runs-as-root")


def test_secrets_in_arg_env_label_masked(messy, tidy):
    found = {f["lines"][0]: f for f in only(messy, "secret-in-config")}
    assert sorted(found) == [3, 4, 6]
    assert "NPM_TOKEN" in found[3]["title"] and "DB_PASSWORD" in found[4]["title"]
    assert "api-token" in found[6]["title"]
    text = json.dumps(messy)
    assert "hunter2hunter2" not in text and "xyz123456789" not in text
    assert all("GPG_KEY" not in f["title"] + f["detail"] for f in found.values())
    assert "A035C8C1" in found[4]["text"][0]  # a public key ID is shown as written
    assert not only(tidy, "secret-in-config")


def test_private_key_copied_from_the_context(messy, tmp_path):
    (f,) = only(messy, "secret-in-file")
    assert f["lines"] == [11] and f["paths"][0]["path"] == "keys/id_rsa"
    assert KEY not in json.dumps(messy)
    ctx = write(tmp_path / "k", {"Dockerfile": "FROM scratch\nUSER 1\nCOPY . /\n",
                                 "keys/id_rsa": KEY, "keys/public.pem": "-----BEGIN PUBLIC KEY-----\n",
                                 ".dockerignore": "keys/\n!keys/public.pem\n"})  # fmt: skip
    r = advise_dockerfile(str(ctx / "Dockerfile"))
    assert not only(r, "secret-in-file")  # ignored; the public key is no secret
    assert "/keys/public.pem" in {p["path"] for p in r["largest_files"]}
    assert "/keys/id_rsa" not in {p["path"] for p in r["largest_files"]}


def test_add_where_copy_suffices(messy, tidy, tmp_path):
    (f,) = only(messy, "add-instead-of-copy")
    assert f["lines"] == [10] and f["text"] == ["ADD app.py /app/"]
    assert not only(tidy, "add-instead-of-copy")  # a tar: ADD extracts it
    ctx = write(tmp_path / "u", {"Dockerfile": "FROM scratch\nUSER 1\n"
                                 "ADD https://example.com/x.bin /x\n"})  # fmt: skip
    assert not only(advise_dockerfile(str(ctx / "Dockerfile")), "add-instead-of-copy")


def test_tidy_has_no_findings_and_text_renders(tidy, messy):
    assert tidy["findings"] == [] and tidy["savings"] == 0
    text = render_text(messy)
    assert "line 9: COPY big.tar.gz /tmp/" in text and "line 13: RUN rm -f /tmp/big.tar.gz" in text
    assert "No findings" in render_text(tidy)


def test_target_kind_and_errors(tmp_path):
    ctx = write(tmp_path / "e", {"Dockerfile": "FROM scratch\n", "bad.Dockerfile": "FROM\n"})
    assert is_dockerfile_target(str(ctx)) and is_dockerfile_target(str(ctx / "Dockerfile"))
    assert not is_dockerfile_target("busybox:latest")
    assert not is_dockerfile_target(str(ctx), "image")
    with pytest.raises(NotFound, match="no Dockerfile at"):
        advise_dockerfile(str(tmp_path / "nope"))
    assert is_dockerfile_target(str(tmp_path))  # a path, even without a Dockerfile in it
    assert not is_dockerfile_target("nope")
    with pytest.raises(InvalidArgument, match=r"bad.Dockerfile:1"):
        advise_dockerfile(str(ctx / "bad.Dockerfile"))
    with pytest.raises(InvalidArgument, match="is not a directory"):
        advise_dockerfile(str(ctx / "Dockerfile"), context=str(tmp_path / "nodir"))
    os.chmod(ctx, 0o755)


def test_cache_mount_leaves_no_cache_in_the_layer(tmp_path):
    ctx = write(tmp_path / "m", {"Dockerfile": "FROM python:3.12-slim\nUSER 1\n"
                                 "RUN --mount=type=cache,target=/root/.cache/pip pip install x\n"})  # fmt: skip
    assert advise_dockerfile(str(ctx / "Dockerfile"))["findings"] == []
    (ctx / "Dockerfile").write_text("FROM python:3.12-slim\nUSER 1\nRUN pip install x\n")
    assert [f["id"] for f in advise_dockerfile(str(ctx / "Dockerfile"))["findings"]] == [
        "package-cache"
    ]


def test_a_local_base_image_is_judged_by_its_layers(eng_env, tmp_path):
    eng = advisor(eng_env)
    load(eng, docker_archive(MESSY_LAYERS, MESSY_HISTORY, ["python:3.11"], MESSY_CONFIG))
    ctx = write(tmp_path / "p", {"Dockerfile": "FROM python:3.11\nUSER 1\n"})
    found = {f["id"]: f for f in eng.advise_dockerfile(str(ctx / "Dockerfile"))["findings"]}
    assert set(found) == {"full-base", "build-tools"}
    assert found["full-base"]["bytes"] == 1_800_000 and found["full-base"]["lines"] == [1]
    assert "python:3.11-slim" in found["full-base"]["fix"]  # the name's advice, the layers' bytes
    assert found["build-tools"]["lines"] == [1]
    assert found["build-tools"]["bytes"] == (70000 + 1500 + 9000) * 1024
    assert found["build-tools"]["title"].startswith("base image python:3.11: ")
    # Only the final image's base counts: a build stage FROM it ships nothing of it.
    (ctx / "Dockerfile").write_text("FROM python:3.11 AS build\nRUN true\n"
                                    "FROM scratch\nUSER 1\nCOPY --from=build /x /x\n")  # fmt: skip
    assert eng.advise_dockerfile(str(ctx / "Dockerfile"))["findings"] == []


def test_variables_of_the_stage_place_copies_and_deletes(tmp_path):
    ctx = write(tmp_path / "v", {"big.bin": 8000, "Dockerfile": (
        "ARG HOME_DIR=/srv\nFROM scratch\nARG HOME_DIR\nENV APP=${HOME_DIR}/app\nUSER 1\n"
        "COPY big.bin $APP/\nRUN rm -f $APP/big.bin\nCOPY big.bin $UNKNOWN/x\n")})  # fmt: skip
    r = advise_dockerfile(str(ctx / "Dockerfile"))
    (f,) = only(r, "deleted-in-later-layer")
    assert f["lines"] == [6, 7] and f["paths"][0]["path"] == "/srv/app/big.bin"
    # An unknown variable (from the base image or --build-arg) is left as written.
    assert {"path": "/$UNKNOWN/x", "size": 8000, "line": 8} in r["largest_files"]
