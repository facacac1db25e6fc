"""The resolver's wire format and answer logic, without sockets or a kernel."""

from __future__ import annotations

import ipaddress
import struct
import types

from engine.network import dns
from engine.network.resolver import resolv_conf_for


def _zone() -> dns.Zone:
    z = dns.Zone("n1", "app", "10.77.0.1", ipaddress.IPv4Network("10.77.0.0/24"))
    z.add("10.77.0.2", "a", ["a", "0123456789ab", "web"])
    z.add("10.77.0.3", "b", ["b", "ba9876543210", "web"])
    return z


def test_a_query_gets_an_authoritative_answer_with_its_id_and_question():
    raw = dns.build_query("B", qid=0x1234)  # case differs: names are case-insensitive
    q = dns.parse_query(raw)
    assert q is not None and q.id == 0x1234 and q.name == "b" and q.qtype == dns.QTYPE_A
    resp = dns.answer(_zone(), q, can_forward=True)
    assert resp is not None
    r = dns.parse_response(resp)
    assert r.id == 0x1234 and r.rcode == dns.NOERROR and r.addrs == ["10.77.0.3"]
    assert r.flags & dns.QR and r.flags & dns.AA and r.flags & dns.RD and r.flags & dns.RA
    # The question is echoed byte for byte (0x20 case randomisation survives).
    assert resp[12 : 12 + len(q.question)] == raw[12:]
    qd, an = struct.unpack_from("!HH", resp, 4)
    assert (qd, an) == (1, 1)


def test_aliases_short_ids_and_network_qualified_names():
    z = _zone()
    for name, want in (
        ("web", ["10.77.0.2", "10.77.0.3"]),
        ("0123456789ab", ["10.77.0.2"]),
        ("a.app", ["10.77.0.2"]),
        ("a.app.", ["10.77.0.2"]),
    ):
        resp = dns.answer(z, dns.parse_query(dns.build_query(name)), can_forward=False)
        assert dns.parse_response(resp).addrs == want, name


def test_unknown_name_is_forwarded_or_nxdomain_without_upstream():
    z = _zone()
    q = dns.parse_query(dns.build_query("example.org"))
    assert dns.answer(z, q, can_forward=True) is None  # the caller forwards it
    r = dns.parse_response(dns.answer(z, q, can_forward=False))
    assert r.rcode == dns.NXDOMAIN and r.addrs == [] and r.id == q.id


def test_known_name_of_another_type_is_nodata_not_forwarded():
    q = dns.parse_query(dns.build_query("a", dns.QTYPE_AAAA))
    r = dns.parse_response(dns.answer(_zone(), q, can_forward=True))
    assert r.rcode == dns.NOERROR and r.addrs == []


def test_reverse_lookups_of_the_network_are_answered_here():
    z = _zone()
    q = dns.parse_query(dns.build_query("2.0.77.10.in-addr.arpa", dns.QTYPE_PTR))
    assert dns.parse_response(dns.answer(z, q, True)).names == ["a.app"]
    q = dns.parse_query(dns.build_query("99.0.77.10.in-addr.arpa", dns.QTYPE_PTR))
    assert dns.parse_response(dns.answer(z, q, True)).rcode == dns.NXDOMAIN
    q = dns.parse_query(dns.build_query("1.1.168.192.in-addr.arpa", dns.QTYPE_PTR))
    assert dns.answer(z, q, True) is None  # not ours: forwarded


def test_malformed_packets_are_ignored():
    good = dns.build_query("a", qid=7)
    assert dns.parse_query(b"") is None
    assert dns.parse_query(good[:11]) is None  # short header
    assert dns.parse_query(good[:-2]) is None  # question cut short
    assert dns.parse_query(good[:12] + b"\x05ab") is None  # label runs past the end
    assert dns.parse_query(good[:12] + b"\xc0\x0c\x00\x01\x00\x01") is None  # pointer loop
    assert dns.parse_query(good[:12] + b"\x03a.b\x00\x00\x01\x00\x01") is None  # dot in label
    resp = bytearray(good)
    resp[2] |= 0x80  # a response, not a query: never answered (no loops)
    assert dns.parse_query(bytes(resp)) is None
    two = bytearray(good)
    two[5] = 2  # qdcount 2
    assert dns.parse_query(bytes(two)) is None
    long = good[:12] + (b"\x3f" + b"x" * 63) * 5 + b"\x00\x00\x01\x00\x01"
    assert dns.parse_query(long) is None  # name over 255 bytes


def test_other_opcodes_and_classes():
    raw = bytearray(dns.build_query("a"))
    raw[2] |= 2 << 3  # opcode 2 (STATUS)
    q = dns.parse_query(bytes(raw))
    assert dns.parse_response(dns.answer(_zone(), q, True)).rcode == dns.NOTIMP
    chaos = dns.build_query("version.bind")[:-2] + b"\x00\x03"
    q = dns.parse_query(chaos)
    assert dns.parse_response(dns.answer(_zone(), q, True)).rcode == dns.REFUSED


def test_too_many_answers_for_udp_set_tc():
    z = dns.Zone("n", "big", "10.9.0.1", ipaddress.IPv4Network("10.9.0.0/16"))
    for i in range(100):
        z.add(f"10.9.{i // 250}.{i % 250 + 2}", f"c{i}", ["svc"])
    q = dns.parse_query(dns.build_query("svc"))
    udp = dns.answer(z, q, True, limit=dns.UDP_MAX)
    assert len(udp) <= 512 and dns.parse_response(udp).flags & dns.TC
    tcp = dns.answer(z, q, True, limit=dns.TCP_MAX)
    assert len(dns.parse_response(tcp).addrs) == 100


def test_admits_only_the_networks_own_subnet():
    z = _zone()
    assert z.admits("10.77.0.9") and not z.admits("10.78.0.9") and not z.admits("junk")


def test_upstreams():
    conf = "search corp.example\nnameserver 127.0.0.53\nnameserver 10.1.1.1\nnameserver ::1\n"
    assert dns.upstreams_from_resolv_conf(conf, allow_loopback=False) == [("10.1.1.1", 53)]
    assert len(dns.upstreams_from_resolv_conf(conf, allow_loopback=True)) == 3
    assert dns.parse_upstreams("none") == []
    assert dns.parse_upstreams("10.0.0.1:5353,[fd00::1]:54, 10.0.0.2") == [
        ("10.0.0.1", 5353),
        ("fd00::1", 54),
        ("10.0.0.2", 53),
    ]


def test_resolv_conf_for_user_and_default_networks(monkeypatch):
    nets = {
        "app": types.SimpleNamespace(driver="bridge", name="app", gateway="10.77.0.1"),
        "bridge": types.SimpleNamespace(driver="bridge", name="bridge", gateway="172.17.0.1"),
    }
    monkeypatch.setattr("engine.network.store.lookup", lambda db, ref: nets[ref])
    eng = types.SimpleNamespace(db=None)

    def on(net: str):
        return types.SimpleNamespace(id="c" * 64, opts=types.SimpleNamespace(network=net))

    text = resolv_conf_for(eng, on("app"), "search corp.example\nnameserver 10.1.1.1\n")
    assert "nameserver 10.77.0.1\n" in text and "10.1.1.1" not in text
    assert "search corp.example\n" in text and "options ndots:0\n" in text
    # The host's own ndots wins, as on Docker.
    assert "options ndots:2 timeout:1\n" in resolv_conf_for(
        eng, on("app"), "options ndots:2 timeout:1\n"
    )
    for net in ("bridge", "host", "none", "container:x"):
        assert resolv_conf_for(eng, on(net), "") is None
