"""berth build of Dockerfiles shaped like common real ones, run afterwards."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.engine.build.conftest import DEBIAN_REF, berth_binary, write_tree

pytestmark = pytest.mark.root

HELLO_C = r"""
#include <stdio.h>
int main(int argc, char **argv) {
    printf("hello from a static binary, %d args\n", argc - 1);
    return 0;
}
"""


def _inspect(env, ref: str) -> dict:
    return json.loads(env.berth("image", "inspect", ref, check=True).stdout)[0]


def _layers(env, ref: str) -> list[str]:
    return _inspect(env, ref)["RootFS"]["Layers"]


@pytest.mark.timeout(1200)  # the first run on a host debootstraps the base (minutes)
def test_multistage_c_program_into_scratch(debian_env, tmp_path):
    ctx = write_tree(
        tmp_path / "ctx",
        {
            "src/hello.c": HELLO_C,
            "src/hello.h": "/* a header, copied by the second wildcard */\n",
            "src/README.md": "not copied\n",
            "Dockerfile": f"""\
FROM {DEBIAN_REF} AS build
WORKDIR /src
COPY src/*.c src/*.h ./
RUN gcc -static -O2 -o /hello hello.c && strip /hello

FROM scratch
COPY --from=build /hello /hello
ENTRYPOINT ["/hello"]
CMD ["a", "b"]
""",
        },
    )
    p = debian_env.berth("build", "-t", "hello:static", str(ctx), timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Step 1/8 : FROM " + DEBIAN_REF in p.stdout
    assert "Successfully tagged hello:static" in p.stdout
    # Docker names the tag in its familiar, normalized form.
    p = debian_env.berth("build", "-t", "docker.io/library/hello", str(ctx))
    assert p.returncode == 0 and "Successfully tagged hello:latest\n" in p.stdout
    # Only the final stage's layers: one, holding the binary.
    assert len(_layers(debian_env, "hello:static")) == 1
    run = debian_env.berth("run", "--rm", "hello:static", check=True)
    assert run.stdout == "hello from a static binary, 2 args\n"
    run = debian_env.berth("run", "--rm", "hello:static", "x", check=True)
    assert run.stdout == "hello from a static binary, 1 args\n"


def test_three_stage_base_build_final_skips_unneeded(busybox_env, tmp_path):
    ctx = write_tree(
        tmp_path / "ctx",
        {
            "app.sh": '#!/bin/sh\necho "app says $(cat /opt/app/artifact)"\n',
            "Dockerfile": """\
FROM busybox AS base
RUN mkdir -p /opt/app && echo "app:x:1000:1000::/opt/app:/bin/sh" >> /etc/passwd \\
    && echo "app:x:1000:" >> /etc/group
ENV APP_HOME=/opt/app

FROM base AS build
WORKDIR $APP_HOME
RUN echo built-in-build-stage > artifact && echo compiling

FROM base AS never-needed
RUN echo this stage must not run && exit 7

FROM base AS final
COPY --from=build /opt/app/artifact /opt/app/
COPY --chown=app:app --chmod=0755 app.sh /opt/app/app.sh
USER app
CMD ["/opt/app/app.sh"]
""",
        },
    )
    p = busybox_env.berth("build", "-t", "three:1", str(ctx))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "must not run" not in p.stdout and "compiling" in p.stdout
    run = busybox_env.berth("run", "--rm", "three:1", check=True)
    assert run.stdout == "app says built-in-build-stage\n"
    # final = busybox + base's RUN + the two COPYs (nothing from the build stage's layers)
    base_layers = _layers(busybox_env, "busybox:latest")
    final_layers = _layers(busybox_env, "three:1")
    assert final_layers[: len(base_layers)] == base_layers
    assert len(final_layers) == len(base_layers) + 3
    stat = busybox_env.berth(
        "run", "--rm", "three:1", "stat", "-c", "%u:%g %a", "/opt/app/app.sh", check=True
    )
    assert stat.stdout.strip() == "1000:1000 755"
    # --target builds the named stage (and what it needs) only.
    p = busybox_env.berth("build", "-q", "--target", "build", "-t", "three:build", str(ctx))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == _inspect(busybox_env, "three:build")["Id"]
    assert busybox_env.berth(
        "run", "--rm", "three:build", "cat", "artifact", check=True
    ).stdout == ("built-in-build-stage\n")


def test_build_args_dockerignore_workdir_env_expose_exec_cmd(busybox_env, tmp_path):
    ctx = write_tree(
        tmp_path / "ctx",
        {
            ".dockerignore": "# local junk\n*.log\nsecrets/\n**/__pycache__\n!keep.log\n",
            "app/main.sh": "echo main\n",
            "app/__pycache__/x.pyc": "bytecode",
            "debug.log": "noise",
            "keep.log": "kept",
            "secrets/key": "s3cret",
            "Dockerfile": """\
ARG BASE=busybox
FROM ${BASE}:latest
ARG VERSION=0.0.1
ARG UNUSED_DEFAULT
LABEL org.opencontainers.image.version=$VERSION maintainer="Dev Team"
ENV APP_HOME=/srv/app \\
    APP_VERSION=${VERSION}
WORKDIR $APP_HOME
COPY . .
RUN echo "version=$VERSION" > build-info && find . -type f | sort > files.txt
EXPOSE 8080 9000-9001/udp
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --timeout=3s --retries=2 CMD test -f build-info
CMD ["sh", "-c", "cat build-info; echo $APP_VERSION"]
""",
        },
    )
    p = busybox_env.berth(
        "build", "--build-arg", "VERSION=2.1", "--build-arg", "NOT_DECLARED=1",
        "--label", "built.by=test", "-t", "web:2.1", "-t", "registry.local/web:latest", str(ctx),
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert "[Warning] One or more build-args [NOT_DECLARED] were not consumed" in p.stdout
    run = busybox_env.berth("run", "--rm", "web:2.1", check=True)
    assert run.stdout == "version=2.1\n2.1\n"
    assert (
        _inspect(busybox_env, "registry.local/web")["Id"] == _inspect(busybox_env, "web:2.1")["Id"]
    )
    files = busybox_env.berth("run", "--rm", "web:2.1", "cat", "files.txt", check=True).stdout
    # (files.txt itself may or may not be listed: sort opens it while find runs)
    assert [f for f in files.split() if f != "./files.txt"] == [
        "./.dockerignore", "./Dockerfile", "./app/main.sh", "./build-info", "./keep.log",
    ]  # fmt: skip
    info = _inspect(busybox_env, "web:2.1")
    cfg = info["Config"]
    assert cfg["WorkingDir"] == "/srv/app"
    assert "APP_HOME=/srv/app" in cfg["Env"] and "APP_VERSION=2.1" in cfg["Env"]
    assert not any(e.startswith("VERSION=") for e in cfg["Env"])  # ARGs are not kept
    assert cfg["Cmd"] == ["sh", "-c", "cat build-info; echo $APP_VERSION"]
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "9000/udp": {}, "9001/udp": {}}
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["StopSignal"] == "SIGINT"
    assert cfg["Labels"] == {
        "org.opencontainers.image.version": "2.1", "maintainer": "Dev Team", "built.by": "test",
    }  # fmt: skip
    assert cfg["Healthcheck"] == {
        "Test": ["CMD-SHELL", "test -f build-info"],
        "Interval": 30_000_000_000, "Timeout": 3_000_000_000, "Retries": 2,
    }  # fmt: skip
    hist = busybox_env.engine().image_history("web:2.1")
    created_by = [h["CreatedBy"] for h in reversed(hist)]
    assert "ENV APP_HOME=/srv/app APP_VERSION=2.1" in created_by
    run_entry = next(c for c in created_by if c.startswith("RUN "))
    assert run_entry.startswith("RUN |1 VERSION=2.1 /bin/sh -c echo")  # ARGs in RUN's env
    empties = {h["CreatedBy"].split()[0]: h["EmptyLayer"] for h in hist if h["CreatedBy"]}
    assert empties["ENV"] and empties["EXPOSE"] and empties["CMD"]
    assert not empties["COPY"] and not empties["RUN"]


def test_context_from_stdin_tar_and_dockerfile_from_stdin(busybox_env, tmp_path):
    ctx = write_tree(
        tmp_path / "ctx",
        {"data/a.txt": "from the tar\n", "build.Dockerfile": "FROM busybox\nCOPY data /d\n"},
    )
    tarpath = tmp_path / "ctx.tar.gz"
    with tarfile.open(tarpath, "w:gz") as t:
        t.add(ctx, arcname=".")
    p = berth_binary(
        busybox_env, "build", "-q", "-f", "build.Dockerfile", "-t", "fromtar", "-",
        input=tarpath.read_bytes(),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert busybox_env.berth("run", "--rm", "fromtar", "cat", "/d/a.txt", check=True).stdout == (
        "from the tar\n"
    )
    # A plain Dockerfile on stdin: no context at all.
    p = busybox_env.berth("build", "-q", "-t", "nocontext", "-", input=b"FROM busybox\nENV X=1\n")
    assert p.returncode == 0, p.stderr
    assert "X=1" in _inspect(busybox_env, "nocontext")["Config"]["Env"]
    # -f naming a Dockerfile outside the context directory.
    other = write_tree(
        tmp_path / "elsewhere", {"Dockerfile.prod": "FROM busybox\nCOPY data/a.txt /p\n"}
    )
    p = busybox_env.berth(
        "build", "-q", "-f", str(other / "Dockerfile.prod"), "-t", "outside-df", str(ctx)
    )
    assert p.returncode == 0, p.stderr
    # -f - with a directory context.
    p = busybox_env.berth(
        "build", "-q", "-f", "-", "-t", "dfstdin", str(ctx),
        input=b"FROM busybox\nCOPY data/a.txt /a\n",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr


def test_onbuild_triggers_and_build_context(busybox_env, tmp_path):
    base = write_tree(
        tmp_path / "base",
        {"Dockerfile": "FROM busybox\nONBUILD COPY marker /marker\nONBUILD RUN echo triggered\n"},
    )
    busybox_env.berth("build", "-q", "-t", "onbuild-base", str(base), check=True)
    assert _inspect(busybox_env, "onbuild-base")["Config"]["OnBuild"] == [
        "COPY marker /marker", "RUN echo triggered",
    ]  # fmt: skip
    extra = write_tree(tmp_path / "extra", {"tool.sh": "echo tool\n"})
    child = write_tree(
        tmp_path / "child",
        {
            "marker": "child's marker\n",
            "Dockerfile": "FROM onbuild-base\nCOPY --from=tools tool.sh /\n"
            "COPY --from=busybox:latest /etc/group /group-from-image\n",
        },
    )
    p = busybox_env.berth(
        "build", "--build-context", f"tools={extra}", "-t", "onbuild-child", str(child)
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "# Executing 2 build triggers" in p.stdout and "triggered" in p.stdout
    out = busybox_env.berth(
        "run", "--rm", "onbuild-child", "cat", "/marker", "/tool.sh", "/group-from-image",
        check=True,
    )  # fmt: skip
    assert out.stdout.startswith("child's marker\necho tool\nroot:x:0:\n")
    assert not _inspect(busybox_env, "onbuild-child")["Config"].get("OnBuild")


def test_missing_base_image_is_named(busybox_env, tmp_path):
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM nosuch/image:1.0\nRUN true\n"})
    p = busybox_env.berth("build", str(ctx))
    assert p.returncode != 0
    assert "nosuch/image:1.0" in p.stderr and "not found locally" in p.stderr


def test_a_failing_step_exits_1_and_names_its_step_and_line(busybox_env, tmp_path):
    # docker build exits 1 whatever step fails (125 is for bad flags), and says which one.
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nENV A=1\nCOPY missing /x\n"})
    p = busybox_env.berth("build", str(ctx))
    assert p.returncode == 1
    assert p.stderr.startswith("Error: step 3/3 (line 3): COPY: file not found")
    p = busybox_env.berth("build", str(tmp_path / "nosuch"))
    assert p.returncode == 1 and "unable to prepare context" in p.stderr


def test_saved_image_is_accepted_by_skopeo_and_podman(busybox_env, tmp_path):
    if not shutil.which("skopeo") or not shutil.which("podman"):
        pytest.skip("skopeo/podman not installed")
    ctx = write_tree(
        tmp_path / "ctx",
        {
            "f.txt": "payload\n",
            "Dockerfile": 'FROM busybox\nCOPY f.txt /f.txt\nRUN cat /f.txt\nCMD ["cat", "/f.txt"]\n',
        },
    )
    busybox_env.berth("build", "-q", "-t", "exported:1", str(ctx), check=True)
    archive = tmp_path / "img.tar"
    busybox_env.berth("save", "-o", str(archive), "exported:1", check=True)
    sk = subprocess.run(
        ["skopeo", "inspect", f"docker-archive:{archive}"], capture_output=True, text=True
    )
    assert sk.returncode == 0, sk.stderr
    meta = json.loads(sk.stdout)
    assert len(meta["Layers"]) == 3
    cfg = subprocess.run(
        ["skopeo", "inspect", "--config", f"docker-archive:{archive}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    config = json.loads(cfg)
    assert config["config"]["Cmd"] == ["cat", "/f.txt"]
    assert [h.get("empty_layer", False) for h in config["history"]][-3:] == [False, False, True]
    root = tmp_path / "podman-root"
    runroot = Path(tempfile.mkdtemp(prefix="btpod-", dir="/tmp"))  # podman wants <= 50 chars
    conf = tmp_path / "containers.conf"
    conf.write_text('[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    env = {"CONTAINERS_CONF": str(conf), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    base = ["podman", "--root", str(root), "--runroot", str(runroot), "--storage-driver", "vfs"]
    try:
        load = subprocess.run(
            [*base, "load", "-i", str(archive)], capture_output=True, text=True, env=env
        )
        assert load.returncode == 0, load.stderr
        assert "exported:1" in load.stdout
        images = subprocess.run([*base, "images", "--format", "{{.Repository}}:{{.Tag}}"],
                                capture_output=True, text=True, env=env, check=True)  # fmt: skip
        assert (
            "localhost/exported:1" in images.stdout
            or "docker.io/library/exported:1" in images.stdout
        )
    finally:
        subprocess.run([*base, "system", "reset", "-f"], capture_output=True, env=env)
        for d in (root, runroot):
            subprocess.run(["umount", "-R", str(d)], capture_output=True)
            shutil.rmtree(d, ignore_errors=True)
    assert not root.exists() and not runroot.exists()


def test_shell_user_entrypoint_and_other_instructions(busybox_env, tmp_path):
    ctx = write_tree(
        tmp_path / "ctx",
        {
            "Dockerfile": """\
# escape=`
FROM busybox
MAINTAINER Someone <someone@example.com>
SHELL ["/bin/sh", "-ec"]
RUN echo "nobody-owned" > /tmp/by-root `
    && chown 65534:65534 /tmp/by-root
USER nobody
RUN ["sh", "-c", "id -u > /tmp/uid-in-run"]
USER root
RUN cat /tmp/uid-in-run
CMD echo from-cmd
ENTRYPOINT echo "entry $0"
VOLUME ["/var/lib/data"]
HEALTHCHECK NONE
STOPSIGNAL SIGQUIT
""",
        },
    )
    p = busybox_env.berth("build", "-t", "forms", str(ctx))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "\n65534\n" in p.stdout  # the RUN as USER nobody ran as nobody
    info = _inspect(busybox_env, "forms")
    cfg = info["Config"]
    # Shell forms use the SHELL in force; CMD from this stage survives ENTRYPOINT.
    assert cfg["Cmd"] == ["/bin/sh", "-ec", "echo from-cmd"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-ec", 'echo "entry $0"']
    assert cfg["User"] == "root"
    assert cfg["Volumes"] == {"/var/lib/data": {}}
    assert cfg["Healthcheck"] == {"Test": ["NONE"]}
    assert cfg["StopSignal"] == "SIGQUIT"
    assert info["Author"] == "Someone <someone@example.com>"
    out = busybox_env.berth("run", "--rm", "forms", check=True).stdout
    assert (
        out == "entry /bin/sh\n"
    )  # the CMD words follow the shell-form ENTRYPOINT ($0), as in Docker
    # An ENTRYPOINT in a child drops the CMD it inherited (Docker).
    child = write_tree(
        tmp_path / "child", {"Dockerfile": 'FROM forms\nENTRYPOINT ["echo", "child"]\n'}
    )
    busybox_env.berth("build", "-q", "-t", "forms-child", str(child), check=True)
    assert _inspect(busybox_env, "forms-child")["Config"].get("Cmd") in (None, [])
    assert busybox_env.berth("run", "--rm", "forms-child", check=True).stdout == "child\n"


def test_copy_from_names_a_stage_through_a_global_arg(busybox_env, tmp_path):
    # As in BuildKit, --from is expanded with the ARGs declared before the first FROM.
    ctx = write_tree(
        tmp_path / "ctx",
        {
            "Dockerfile": "ARG SRC=one\nFROM busybox AS one\nRUN echo from-one > /made\n"
            "FROM busybox AS two\nRUN echo from-two > /made\n"
            'FROM busybox\nCOPY --from=$SRC /made /made\nCMD ["cat", "/made"]\n',
        },
    )
    p = busybox_env.berth("build", "-q", "-t", "fromarg", "--build-arg", "SRC=two", str(ctx))
    assert p.returncode == 0, p.stderr
    assert busybox_env.berth("run", "--rm", "fromarg", check=True).stdout == "from-two\n"
    # A stage's own ARG is not seen there: a clear error, not a crash on a stage never built.
    (ctx / "Dockerfile").write_text(
        "FROM busybox AS one\nRUN true\nFROM busybox\nARG SRC=one\nCOPY --from=$SRC /bin/sh /x\n"
    )
    p = busybox_env.berth("build", str(ctx))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "--from=$SRC expands to an empty name" in p.stderr


def test_an_ignored_dockerfile_is_read_but_never_copied(busybox_env, tmp_path):
    # Docker: excluding the Dockerfile and .dockerignore keeps them out of COPY/ADD,
    # though the build still reads them.
    ctx = write_tree(
        tmp_path / "ctx",
        {
            ".dockerignore": "Dockerfile\n.dockerignore\n",
            "Dockerfile": 'FROM busybox\nCOPY . /app/\nCMD ["ls", "-A", "/app"]\n',
            "a.txt": "a\n",
        },
    )
    p = busybox_env.berth("build", "-q", "-t", "ignored-df", str(ctx))
    assert p.returncode == 0, p.stderr
    assert busybox_env.berth("run", "--rm", "ignored-df", check=True).stdout == "a.txt\n"


def test_a_bad_tag_fails_before_any_step(busybox_env, tmp_path):
    # docker build checks -t first: nothing is built for a name it cannot tag.
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo ran\n"})
    p = busybox_env.berth("build", "-t", "Bad:Name", str(ctx))
    assert p.returncode == 125, p.stdout + p.stderr
    assert "Bad:Name" in p.stderr and "Step 1/" not in p.stdout
