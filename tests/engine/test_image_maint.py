"""Image maintenance as Docker does it, through the real CLI: `history` (size
per layer and the instruction that made it), `image prune [-a]` (dangling vs
unused), `rmi` of a tag vs an ID (and Docker's rules for images of running
containers), `system df [-v]` with shared layers counted once."""

from __future__ import annotations

import json
import re

import pytest

from tests.unit.test_advise_image import docker_archive, layer_tar

LONG_RUN = "/bin/sh -c echo " + "x" * 60


def load(env, tmp_path, name: str, layers: list[bytes], created_by: list[str], tags: list[str],
         empty: list[str] = ()) -> str:  # fmt: skip
    """Load a crafted image through `berth load`; returns its full ID."""
    path = tmp_path / f"{name}.tar"
    path.write_bytes(docker_archive(layers, created_by, tags, {"User": "1"}, list(empty)))
    out = env.berth("load", "-i", str(path), check=True).stdout
    if tags:
        return env.berth("image", "inspect", "-f", "{{.Id}}", tags[0], check=True).stdout.strip()
    return re.search(r"sha256:[0-9a-f]{64}", out).group(0)


def image_ids(env, *flags: str) -> set[str]:
    out = env.berth("images", "--no-trunc", "-q", *flags, check=True).stdout
    return set(out.split())


# -- history --------------------------------------------------------------------------------


def test_history_size_per_layer_and_instruction(eng_env, tmp_path):
    layers = [
        layer_tar({"a": 100_000, "b": 20_000}),
        layer_tar({"c": 5_000}),
        layer_tar({".wh.a": b""}),
    ]
    image_id = load(eng_env, tmp_path, "h", layers,
                    ["ADD rootfs.tar / # buildkit", LONG_RUN, "RUN /bin/sh -c rm /a # buildkit"],
                    ["hist:1"], empty=["ENV X=1"])  # fmt: skip
    p = eng_env.berth("history", "--no-trunc", "-H=false", "--format", "{{json .}}", "hist:1")
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    # Newest first; the metadata-only ENV step has no layer; the rm only whiteouts.
    assert [(r["CreatedBy"], r["Size"]) for r in rows] == [
        ("ENV X=1", "0"),
        ("RUN /bin/sh -c rm /a # buildkit", "0"),
        (LONG_RUN, "5000"),
        ("ADD rootfs.tar / # buildkit", "120000"),
    ]
    assert rows[0]["ID"] == image_id and {r["ID"] for r in rows[1:]} == {"<missing>"}
    table = eng_env.berth("history", "hist:1", check=True).stdout.splitlines()
    assert table[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert table[1].startswith(image_id[7:19])
    long_row = table[3]
    assert (LONG_RUN[:44] + "…") in long_row and "5kB" in long_row  # docker's 45-char cut
    assert "120kB" in table[4]


# -- prune ----------------------------------------------------------------------------------


def test_prune_removes_dangling_then_unused_never_used(busybox_env, tmp_path):
    env = busybox_env
    dangling = load(env, tmp_path, "d", [layer_tar({"d": 3000})], ["COPY d /"], [])
    unused = load(env, tmp_path, "u", [layer_tar({"u": 5000})], ["COPY u /"], ["unused:1"])
    busybox = env.berth("image", "inspect", "-f", "{{.Id}}", "busybox", check=True).stdout.strip()
    env.berth("create", "--name", "holder", "busybox", "true", check=True)  # stopped user
    p = env.berth("image", "prune", "-f", check=True)
    assert f"deleted: {dangling}" in p.stdout and "untagged" not in p.stdout
    assert p.stdout.rstrip().endswith("Total reclaimed space: 3kB")
    assert image_ids(env, "-a") == {unused, busybox}
    p = env.berth("image", "prune", "-f", check=True)  # nothing dangling left
    assert p.stdout.strip() == "Total reclaimed space: 0B"
    p = env.berth("image", "prune", "-a", "-f", check=True)
    assert f"untagged: unused:1\ndeleted: {unused}" in p.stdout
    assert "busybox" not in p.stdout and "Total reclaimed space: 5kB" in p.stdout
    assert image_ids(env, "-a") == {busybox}  # used by a container, even a stopped one


# -- rmi ------------------------------------------------------------------------------------


def test_rmi_tag_vs_id(eng_env, tmp_path):
    env = eng_env
    image_id = load(env, tmp_path, "r", [layer_tar({"r": 700})], ["COPY r /"], ["app:1"])
    short = image_id[7:19]
    env.berth("tag", "app:1", "app:2", check=True)
    env.berth("tag", "app:1", "other:1", check=True)
    # A tag: only that name goes, the image stays.
    p = env.berth("rmi", "app:2", check=True)
    assert p.stdout == "Untagged: app:2\n" and image_ids(env) == {image_id}
    # The ID while two repositories name it: refused without -f.
    p = env.berth("rmi", short)
    assert p.returncode == 1
    assert (f"conflict: unable to delete {short} (must be forced) - image is referenced in "
            "multiple repositories") in p.stderr  # fmt: skip
    p = env.berth("rmi", "-f", short, check=True)
    lines = p.stdout.splitlines()
    assert lines[:3] == ["Untagged: app:1", "Untagged: other:1", f"Deleted: {image_id}"]
    assert len(lines) == 4 and lines[3].startswith("Deleted: sha256:")  # its layer
    assert image_ids(env, "-a") == set()
    # One repository with several tags: the ID untags them all without -f.
    image_id = load(env, tmp_path, "r", [layer_tar({"r": 700})], ["COPY r /"], ["app:1"])
    env.berth("tag", "app:1", "app:2", check=True)
    p = env.berth("rmi", image_id[7:19], check=True)
    assert p.stdout.splitlines()[:3] == [
        "Untagged: app:1",
        "Untagged: app:2",
        f"Deleted: {image_id}",
    ]


def test_rmi_of_an_image_a_stopped_container_uses(busybox_env):
    env = busybox_env
    env.berth("create", "--name", "user1", "busybox", "true", check=True)
    p = env.berth("rmi", "busybox")
    assert p.returncode == 1
    assert 'unable to remove repository reference "busybox" (must force) - container' in p.stderr
    p = env.berth("rmi", "-f", "busybox", check=True)
    assert p.stdout.startswith("Untagged: busybox:latest\nDeleted: sha256:")
    # The container still runs from it.
    p = env.berth("start", "-a", "user1")
    assert p.returncode == 0, p.stderr


def test_rmi_conflict_names_the_stopped_container_like_docker(busybox_env):
    env = busybox_env
    cid = env.berth("create", "--name", "user2", "busybox", "true", check=True).stdout.strip()
    image = env.berth("image", "inspect", "-f", "{{.Id}}", "busybox", check=True).stdout.strip()
    p = env.berth("rmi", image[7:19])
    assert f"image is being used by stopped container {cid[:12]}" in p.stderr


def test_rmi_force_by_id_refused_while_a_container_runs(busybox_env):
    env = busybox_env
    cid = env.berth("run", "-d", "busybox", "sleep", "300", check=True).stdout.strip()
    image = env.berth("image", "inspect", "-f", "{{.Id}}", "busybox", check=True).stdout.strip()
    p = env.berth("rmi", "-f", image[7:19])
    assert p.returncode == 1
    assert (f"unable to delete {image[7:19]} (cannot be forced) - image is being used by "
            f"running container {cid[:12]}") in p.stderr  # fmt: skip


def test_rmi_force_by_tag_only_untags_while_a_container_runs(busybox_env):
    env = busybox_env
    env.berth("run", "-d", "busybox", "sleep", "300", check=True)
    image = env.berth("image", "inspect", "-f", "{{.Id}}", "busybox", check=True).stdout.strip()
    p = env.berth("rmi", "-f", "busybox", check=True)
    assert p.stdout == "Untagged: busybox:latest\n"
    assert image in image_ids(env, "-a")


def test_prune_after_forced_rmi_reclaims_the_layer_size(busybox_env):
    env = busybox_env
    size = int(env.berth("image", "inspect", "-f", "{{.Size}}", "busybox", check=True).stdout)
    env.berth("create", "--name", "u3", "busybox", "true", check=True)
    env.berth("rmi", "-f", "busybox", check=True)
    env.berth("rm", "u3", check=True)
    p = env.berth("image", "prune", "-f", check=True)
    from engine.units import human_size

    assert f"Total reclaimed space: {human_size(size)}" in p.stdout


# -- system df --------------------------------------------------------------------------------


@pytest.fixture
def shared_images(eng_env, tmp_path):
    """x and y share a 100 kB base layer, z and w a 300 kB one; each has its own layer."""
    b1, b2 = layer_tar({"base1": 100_000}), layer_tar({"base2": 300_000})
    for i, (base, tag) in enumerate([(b1, "x:1"), (b1, "y:1"), (b2, "z:1"), (b2, "w:1")]):
        own = layer_tar({f"own{i}": 1000 * (i + 1)})
        load(eng_env, tmp_path, f"df{i}", [base, own], ["COPY a /", "COPY b /"], [tag])
    eng_env.berth("create", "--name", "dfc", "x:1", "true", check=True)
    return eng_env


def test_system_df_shared_and_unique_per_image(shared_images):
    d = json.loads(shared_images.berth("system", "df", "--format", "json", check=True).stdout)
    got = {i["RepoTags"][0]: (i["Size"], i["SharedSize"], i["UniqueSize"], i["Containers"])
           for i in d["Images"]}  # fmt: skip
    assert got == {
        "x:1": (101_000, 100_000, 1_000, 1),
        "y:1": (102_000, 100_000, 2_000, 0),
        "z:1": (303_000, 300_000, 3_000, 0),
        "w:1": (304_000, 300_000, 4_000, 0),
    }
    p = shared_images.berth("system", "df", "-v", check=True).stdout
    row = next(line for line in p.splitlines() if line.startswith("x "))
    # REPOSITORY TAG IMAGE-ID CREATED(3 words) SIZE SHARED UNIQUE CONTAINERS
    assert row.split()[-4:] == ["101kB", "100kB", "1kB", "1"]


def test_system_df_total_counts_every_shared_layer_once(shared_images):
    p = shared_images.berth("system", "df", check=True).stdout
    row = next(line for line in p.splitlines() if line.startswith("Images"))
    assert row.split()[1:] == ["4", "1", "410kB", "409kB", "(99%)"]


def test_system_df_verbose_images_table_like_docker(shared_images):
    env = shared_images
    long_repo = "registry.example.com/team/a-rather-long-repository-name"
    env.berth("tag", "x:1", f"{long_repo}:v1", check=True)
    out = env.berth("system", "df", "-v", check=True).stdout.splitlines()
    header = next(line for line in out if line.startswith("REPOSITORY"))
    assert header.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE", "SHARED",
                              "SIZE", "UNIQUE", "SIZE", "CONTAINERS"]  # fmt: skip
    image_id = env.berth("image", "inspect", "-f", "{{.Id}}", "y:1", check=True).stdout.strip()
    row = next(line for line in out if line.startswith("y "))
    assert row.split()[:3] == ["y", "1", image_id[7:19]]
    assert any(line.split()[:2] == [long_repo, "v1"] for line in out)
