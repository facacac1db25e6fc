"""`system df`, `system prune`, `system boot` (added under `berth system`)."""

from __future__ import annotations

import json

from engine.cli.common import confirm
from engine.cli.main import engine_from
from engine.units import human_size


def cmd_df(args) -> int:
    d = engine_from(args).system_df()
    if args.format == "json" or args.format == "{{json .}}":
        print(json.dumps(d))
        return 0
    # As the docker CLI computes them: the images' size is every distinct layer once;
    # what images in use hold beyond shared layers is not reclaimable.
    img_total = d["LayersSize"]
    img_active = sum(1 for i in d["Images"] if i["Containers"])
    reclaim_img = img_total - sum(
        i["Size"] - i["SharedSize"] for i in d["Images"] if i["Containers"]
    )
    ctr_total = sum(c["SizeRw"] for c in d["Containers"])
    ctr_active = sum(1 for c in d["Containers"] if c["State"] in ("running", "paused"))
    vol_total = sum(v["Size"] for v in d["Volumes"])
    vol_active = sum(1 for v in d["Volumes"] if v["Links"])
    rows = [
        ("Images", len(d["Images"]), img_active, img_total, reclaim_img),
        ("Containers", len(d["Containers"]), ctr_active, ctr_total,
         sum(c["SizeRw"] for c in d["Containers"] if c["State"] not in ("running", "paused"))),
        ("Local Volumes", len(d["Volumes"]), vol_active, vol_total,
         sum(v["Size"] for v in d["Volumes"] if not v["Links"])),
    ]  # fmt: skip
    print(f"{'TYPE':<16}{'TOTAL':<8}{'ACTIVE':<8}{'SIZE':<12}RECLAIMABLE")
    for name, total, active, size, recl in rows:
        pct = f" ({recl * 100 // size}%)" if size > 0 else ""
        print(f"{name:<16}{total:<8}{active:<8}{human_size(size):<12}{human_size(recl)}{pct}")
    if args.verbose:
        print("\nImages space usage:\n")
        print(_verbose_images(d["Images"]), end="")
    return 0


def _verbose_images(images: list[dict]) -> str:
    """Docker's `system df -v` images table: the first tag split into repository and
    tag, aligned by its tabwriter (long names push the columns, never overlap)."""
    from engine.api_images import since_text
    from engine.cli.gotemplate import render_table
    from engine.images import reference as refs

    rows = []
    for i in images:
        repo = tag = "<none>"
        if i["RepoTags"]:
            ref = refs.parse_reference(i["RepoTags"][0])
            repo, tag = ref.familiar_name, ref.tag or "<none>"
        rows.append(
            {
                "Repository": repo,
                "Tag": tag,
                "ID": i["Id"].removeprefix("sha256:")[:12],
                "CreatedSince": since_text(i["Created"]),
                "Size": human_size(i["Size"], 3),
                "SharedSize": human_size(i["SharedSize"]),
                "UniqueSize": human_size(i["UniqueSize"]),
                "Containers": i["Containers"],
            }
        )
    return render_table(
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t"
        "{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}",
        rows,
        {"ID": "IMAGE ID", "CreatedSince": "CREATED", "SharedSize": "SHARED SIZE",
         "UniqueSize": "UNIQUE SIZE"},
    )  # fmt: skip


def cmd_prune(args) -> int:
    if not args.force:
        what = "all stopped containers, all " + ("unused" if args.all else "dangling") + " images"
        if args.volumes:
            what += ", all anonymous volumes not used by at least one container"
        if not confirm(f"WARNING! This will remove {what}."):
            return 0
    r = engine_from(args).system_prune(all=args.all, volumes=args.volumes)
    deleted = r["Containers"]["ContainersDeleted"]
    if deleted:
        print("Deleted Containers:\n" + "\n".join(deleted) + "\n")
    for line in r["Images"].get("Lines", []) if isinstance(r["Images"], dict) else []:
        print(line)
    if "Volumes" in r and r["Volumes"].get("VolumesDeleted"):
        print("Deleted Volumes:\n" + "\n".join(r["Volumes"]["VolumesDeleted"]) + "\n")
    reclaimed = int(r["Images"].get("SpaceReclaimed", 0)) + int(
        r.get("Volumes", {}).get("SpaceReclaimed", 0)
    )
    print(f"Total reclaimed space: {human_size(reclaimed)}")
    return 0


def cmd_boot(args) -> int:
    r = engine_from(args).system_boot()
    print(json.dumps(r, indent=2) if args.json else _boot_text(r))
    return 0


def _boot_text(r: dict) -> str:
    lines = [f"reboot detected: {'yes' if r.get('reboot') else 'no'}"]
    for k in ("started", "reconciled", "helpers"):
        if r.get(k):
            lines.append(f"{k}: {', '.join(map(str, r[k]))}")
    return "\n".join(lines)


def register(sub) -> None:
    from engine.cli import cmd_system

    ssub = cmd_system.system_subparsers
    p = ssub.add_parser("df", help="show disk usage")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--format", default="")
    p.set_defaults(func=cmd_df)
    p = ssub.add_parser("prune", help="remove unused data")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--volumes", action="store_true")
    p.set_defaults(func=cmd_prune)
    p = ssub.add_parser(
        "boot", help="after a host restart: start restart-policy containers and helpers"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_boot)
