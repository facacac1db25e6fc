"""Network and endpoint records in the engine's state database.

Two tables, created on first use by ``ensure_schema`` (the engine's core schema
in engine/state.py does not know about networks, so this module owns them):

- ``networks``: one row per network, predefined ones (``bridge``, ``host``,
  ``none``) included so that they have stable IDs like on Docker.
- ``endpoints``: one row per (network, container) with the container's address.
  ``UNIQUE(network_id, ip)`` is what makes concurrent allocations distinct: two
  writers can never commit the same address (engine/network/ipam.py).

Lookups follow Docker's order: full ID, then exact name, then a unique ID prefix.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidArgument, NotFound
from engine.state import StateDB, dumps

SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY,            -- 64 hex
    name TEXT NOT NULL UNIQUE,
    driver TEXT NOT NULL,           -- bridge | host | null | macvlan | ipvlan
    subnet TEXT NOT NULL DEFAULT '',
    gateway TEXT NOT NULL DEFAULT '',
    ip_range TEXT NOT NULL DEFAULT '',
    internal INTEGER NOT NULL DEFAULT 0,
    labels TEXT NOT NULL DEFAULT '{}',
    options TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    bridge TEXT NOT NULL DEFAULT '' -- bridge device name ('' for non-bridge drivers)
);
CREATE TABLE IF NOT EXISTS endpoints (
    network_id TEXT NOT NULL,
    container_id TEXT NOT NULL,
    ip TEXT,                        -- NULL on networks without addresses (host, none)
    mac TEXT NOT NULL DEFAULT '',
    ifname TEXT NOT NULL DEFAULT '',       -- inside the container: eth0, eth1, ...
    host_ifname TEXT NOT NULL DEFAULT '',  -- host end of the veth ('' if none)
    aliases TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (network_id, container_id),
    UNIQUE (network_id, ip)
);
CREATE INDEX IF NOT EXISTS endpoints_by_container ON endpoints(container_id);
"""

# Networks every engine has, as on Docker; they can be neither created nor removed.
PREDEFINED = ("bridge", "host", "none")

_ready: set[tuple[str, int]] = set()


def ensure_schema(db: StateDB) -> None:
    """Create the tables once per database file per process (a stat after that).

    Keyed by inode too, so a database deleted and made again at the same path (tests)
    gets its tables. Never call it inside a write transaction: executescript commits.
    """
    try:
        key = (str(db.path), os.stat(db.path).st_ino)
    except OSError:
        key = (str(db.path), 0)
    if key in _ready:
        return
    db.conn.executescript(SCHEMA)
    _ready.add(key)


@dataclass(frozen=True)
class NetworkRecord:
    id: str
    name: str
    driver: str
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    bridge: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    @property
    def mtu(self) -> int:
        """The MTU asked for with ``-o com.docker.network.driver.mtu`` (0: the kernel's)."""
        return int(self.options.get("com.docker.network.driver.mtu", "0") or 0)

    @property
    def parent(self) -> str:
        """macvlan/ipvlan parent interface ('' for other drivers)."""
        return self.options.get("parent", "")


@dataclass(frozen=True)
class Endpoint:
    network_id: str
    container_id: str
    ip: str
    mac: str = ""
    ifname: str = ""
    host_ifname: str = ""
    aliases: list[str] = field(default_factory=list)


def network_from_row(row: sqlite3.Row) -> NetworkRecord:
    return NetworkRecord(
        id=row["id"],
        name=row["name"],
        driver=row["driver"],
        subnet=row["subnet"],
        gateway=row["gateway"],
        ip_range=row["ip_range"],
        internal=bool(row["internal"]),
        labels=json.loads(row["labels"]),
        options=json.loads(row["options"]),
        created=row["created"],
        bridge=row["bridge"],
    )


def endpoint_from_row(row: sqlite3.Row) -> Endpoint:
    return Endpoint(
        network_id=row["network_id"],
        container_id=row["container_id"],
        ip=row["ip"] or "",
        mac=row["mac"],
        ifname=row["ifname"],
        host_ifname=row["host_ifname"],
        aliases=json.loads(row["aliases"]),
    )


# -- networks --------------------------------------------------------------------------


def insert_network(conn: sqlite3.Connection, rec: NetworkRecord) -> None:
    """Insert inside the caller's write transaction (UNIQUE(name) raises IntegrityError)."""
    conn.execute(
        "INSERT INTO networks(id, name, driver, subnet, gateway, ip_range, internal, labels,"
        " options, created, bridge) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            rec.id,
            rec.name,
            rec.driver,
            rec.subnet,
            rec.gateway,
            rec.ip_range,
            int(rec.internal),
            dumps(rec.labels),
            dumps(rec.options),
            rec.created,
            rec.bridge,
        ),
    )


def delete_network(db: StateDB, network_id: str) -> None:
    with db.write() as c:
        c.execute("DELETE FROM endpoints WHERE network_id=?", (network_id,))
        c.execute("DELETE FROM networks WHERE id=?", (network_id,))


def all_networks(db: StateDB) -> list[NetworkRecord]:
    ensure_schema(db)
    return [network_from_row(r) for r in db.query("SELECT * FROM networks ORDER BY created")]


def by_name(db: StateDB, name: str) -> NetworkRecord | None:
    ensure_schema(db)
    row = db.one("SELECT * FROM networks WHERE name=?", (name,))
    return network_from_row(row) if row else None


def by_id(db: StateDB, network_id: str) -> NetworkRecord | None:
    ensure_schema(db)
    row = db.one("SELECT * FROM networks WHERE id=?", (network_id,))
    return network_from_row(row) if row else None


def lookup(db: StateDB, ref: str) -> NetworkRecord:
    """Docker's order: full ID, exact name, then a unique ID prefix."""
    ensure_schema(db)
    if not ref:
        raise NotFound("network  not found", obj=ref)
    rec = by_id(db, ref) or by_name(db, ref)
    if rec is not None:
        return rec
    if all(ch in "0123456789abcdef" for ch in ref):
        # LIKE with an escaped-free hex operand: only [0-9a-f] reach the pattern.
        rows = db.query("SELECT * FROM networks WHERE id LIKE ?", (ref + "%",))
        if len(rows) == 1:
            return network_from_row(rows[0])
        if len(rows) > 1:
            raise InvalidArgument(
                f"network {ref} is ambiguous ({len(rows)} matches found based on ID prefix)",
                obj=ref,
            )
    raise NotFound(f"network {ref} not found", obj=ref)


# -- endpoints -------------------------------------------------------------------------


def endpoints_of_network(db: StateDB, network_id: str) -> list[Endpoint]:
    ensure_schema(db)
    rows = db.query("SELECT * FROM endpoints WHERE network_id=?", (network_id,))
    eps = [endpoint_from_row(r) for r in rows]
    # Numeric order of addresses ("10.0.0.9" before "10.0.0.10"), address-less last.
    return sorted(eps, key=lambda e: tuple(int(x) for x in e.ip.split(".")) if e.ip else (999,))


def endpoints_of_container(db: StateDB, container_id: str) -> list[Endpoint]:
    ensure_schema(db)
    rows = db.query("SELECT * FROM endpoints WHERE container_id=? ORDER BY ifname", (container_id,))
    return [endpoint_from_row(r) for r in rows]


def endpoint(db: StateDB, network_id: str, container_id: str) -> Endpoint | None:
    ensure_schema(db)
    row = db.one(
        "SELECT * FROM endpoints WHERE network_id=? AND container_id=?",
        (network_id, container_id),
    )
    return endpoint_from_row(row) if row else None


def container_names(db: StateDB, ids: list[str]) -> dict[str, str]:
    """Container ID -> name for inspect's ``Containers`` (missing ones are left out)."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = db.query(f"SELECT id, name FROM containers WHERE id IN ({marks})", tuple(ids))
    return {r["id"]: r["name"] for r in rows}


def stale_endpoints(db: StateDB, network_id: str) -> list[Endpoint]:
    """Endpoints whose container row is gone (a crash between the two deletes)."""
    ensure_schema(db)
    rows = db.query(
        "SELECT e.* FROM endpoints e LEFT JOIN containers c ON c.id = e.container_id"
        " WHERE e.network_id=? AND c.id IS NULL",
        (network_id,),
    )
    return [endpoint_from_row(r) for r in rows]


def as_dict(rec: NetworkRecord) -> dict[str, Any]:
    """A plain dict of the record (for hooks and reports that want JSON)."""
    return {
        "id": rec.id,
        "name": rec.name,
        "driver": rec.driver,
        "subnet": rec.subnet,
        "gateway": rec.gateway,
        "ip_range": rec.ip_range,
        "internal": rec.internal,
        "labels": dict(rec.labels),
        "options": dict(rec.options),
        "created": rec.created,
        "bridge": rec.bridge,
    }
