"""engine.network.ports without the kernel: Docker's -p/-P syntax and the views
(ps PORTS column, inspect's NetworkSettings.Ports, `berth port`)."""

from __future__ import annotations

import pytest

from engine.errors import InvalidArgument, NotFound, Unsupported
from engine.network import ports
from engine.network.ports import PortBinding, Reserved, parse_publish


def B(proto, ip, hp, cp, end=0):  # noqa: N802 - reads like the dataclass
    return PortBinding(proto, ip, hp, cp, end)


@pytest.mark.parametrize(
    "spec, want",
    [
        ("80", [B("tcp", "", 0, 80)]),
        ("80/udp", [B("udp", "", 0, 80)]),
        ("80/TCP", [B("tcp", "", 0, 80)]),
        ("8080:80", [B("tcp", "", 8080, 80)]),
        ("0:80", [B("tcp", "", 0, 80)]),
        ("127.0.0.1:8080:80", [B("tcp", "127.0.0.1", 8080, 80)]),
        ("127.0.0.1::80", [B("tcp", "127.0.0.1", 0, 80)]),
        ("127.0.0.1::53/udp", [B("udp", "127.0.0.1", 0, 53)]),
        ("0.0.0.0:80:80", [B("tcp", "0.0.0.0", 80, 80)]),
        (
            "8000-8002:80-82",
            [B("tcp", "", 8000, 80), B("tcp", "", 8001, 81), B("tcp", "", 8002, 82)],
        ),
        ("80-81", [B("tcp", "", 0, 80), B("tcp", "", 0, 81)]),
        (
            "10.0.0.1:9000-9001:90-91/udp",
            [B("udp", "10.0.0.1", 9000, 90), B("udp", "10.0.0.1", 9001, 91)],
        ),
        # A host range for one container port: the first free one (as Docker).
        ("8000-8010:80", [B("tcp", "", 8000, 80, 8010)]),
        ("80-80", [B("tcp", "", 0, 80)]),
        ("65535:65535", [B("tcp", "", 65535, 65535)]),
    ],
)
def test_parse_publish(spec, want):
    assert parse_publish(spec) == want


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "invalid port format"),
        ("   ", "invalid port format"),
        ("8080:", "no port specified: 8080:<empty>"),
        ("/tcp", "no port specified"),
        ("80/sctx", "invalid proto: sctx"),
        ("abc", "invalid containerPort: abc (invalid port format)"),
        ("8080:abc", "invalid containerPort: abc"),
        ("x:80", "invalid hostPort: x"),
        ("0", "invalid containerPort: 0 (ports are 1-65535)"),
        ("70000", "invalid containerPort: 70000 (ports are 1-65535)"),
        ("70000:80", "invalid hostPort: 70000"),
        ("0-5:80-85", "invalid hostPort: 0-5"),
        ("85-80", "invalid containerPort: 85-80 (invalid range: 80 is below 85)"),
        ("9000-8000:80", "invalid hostPort: 9000-8000 (invalid range"),
        ("80-:80", "invalid hostPort: 80-"),
        ("-80", "invalid containerPort: -80"),
        ("+80", "invalid containerPort: +80"),
        (
            "8000-8001:80-85",
            "invalid ranges specified for container and host Ports: 80-85 and 8000-8001 "
            "(hostPort and containerPort ranges must be the same length)",
        ),
        ("0:80-85", "must be the same length"),
        ("999.1.1.1:80:80", "invalid IP address: 999.1.1.1"),
        ("localhost:80:80", "invalid IP address: localhost"),
        ("[::1]:80:80", "IPv6 host addresses (::1) are not supported"),
        ("::1:80:80", "IPv6 host addresses (::1) are not supported"),
        ("[::]::80", "IPv6 host addresses (::) are not supported"),
        ("[::1]:80", "invalid port format: [::1]:80"),
        ("[::1:80:80", "invalid port format"),
    ],
)
def test_parse_publish_errors(spec, message):
    with pytest.raises(InvalidArgument) as e:
        parse_publish(spec)
    assert message in str(e.value)


def test_sctp_is_unsupported():
    with pytest.raises(Unsupported, match="sctp"):
        parse_publish("80/sctp")


def test_binding_round_trip():
    for b in parse_publish("127.0.0.1:8000-8010:80/udp") + parse_publish("80"):
        assert PortBinding.from_dict(b.to_dict()) == b
    r = Reserved("tcp", "0.0.0.0", 8080, 80)
    assert Reserved.from_dict(r.to_dict()) == r
    assert r.label == "0.0.0.0:8080/tcp" and r.key == "80/tcp"


def test_publish_all():
    exposed = {"80/tcp": {}, "53/udp": {}, "443": {}, "9000-9001/tcp": {}, "132/sctp": {}}
    got = ports.publish_all(exposed, already=parse_publish("8443:443"))
    assert got == [
        B("udp", "", 0, 53),
        B("tcp", "", 0, 80),
        B("tcp", "", 0, 9000),
        B("tcp", "", 0, 9001),
    ]
    assert ports.publish_all([]) == []
    with pytest.raises(InvalidArgument):
        ports.publish_all(["x/tcp"])


def R(proto, ip, hp, cp):  # noqa: N802
    return Reserved(proto, ip, hp, cp)


def test_format_ports_like_docker_ps():
    rs = [R("tcp", "127.0.0.1", 18080, 80), R("tcp", "0.0.0.0", 8080, 80)]
    assert ports.format_ports(rs) == "0.0.0.0:8080->80/tcp, 127.0.0.1:18080->80/tcp"
    # identity mappings group into ranges; other mappings come last
    rs = [R("tcp", "0.0.0.0", p, p) for p in (8000, 8001, 8002, 8005)]
    rs.append(R("udp", "0.0.0.0", 5353, 53))
    assert ports.format_ports(rs) == (
        "0.0.0.0:8000-8002->8000-8002/tcp, 0.0.0.0:8005->8005/tcp, 0.0.0.0:5353->53/udp"
    )
    # exposed but unpublished ports show bare
    rs = [R("tcp", "0.0.0.0", 32768, 80)]
    assert ports.format_ports(rs, ["80/tcp", "443/tcp", "444/tcp"]) == (
        "443-444/tcp, 0.0.0.0:32768->80/tcp"
    )
    assert ports.format_ports([]) == ""
    assert ports.format_ports([], ["53/udp"]) == "53/udp"


def test_inspect_ports_and_host_config():
    rs = [
        R("tcp", "0.0.0.0", 8080, 80),
        R("tcp", "127.0.0.1", 18080, 80),
        R("udp", "0.0.0.0", 53, 53),
    ]
    assert ports.inspect_ports(rs, ["80/tcp", "443/tcp"]) == {
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "53"}],
        "80/tcp": [
            {"HostIp": "0.0.0.0", "HostPort": "8080"},
            {"HostIp": "127.0.0.1", "HostPort": "18080"},
        ],
        "443/tcp": None,
    }
    bs = parse_publish("8080:80") + parse_publish("127.0.0.1::80") + parse_publish("9000-9005:90")
    assert ports.port_bindings_config(bs) == {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": ""}],
        "90/tcp": [{"HostIp": "", "HostPort": "9000-9005"}],
    }


def test_port_lines():
    rs = [
        R("udp", "0.0.0.0", 5353, 53),
        R("tcp", "127.0.0.1", 18080, 80),
        R("tcp", "0.0.0.0", 8080, 80),
    ]
    assert ports.port_lines(rs) == [
        "53/udp -> 0.0.0.0:5353",
        "80/tcp -> 0.0.0.0:8080",
        "80/tcp -> 127.0.0.1:18080",
    ]
    assert ports.port_lines(rs, "80") == ["0.0.0.0:8080", "127.0.0.1:18080"]
    assert ports.port_lines(rs, "53/udp") == ["0.0.0.0:5353"]
    with pytest.raises(NotFound, match="No public port '53/tcp' published for web"):
        ports.port_lines(rs, "53", name="web")
    with pytest.raises(InvalidArgument):
        ports.port_lines(rs, "http")
    assert ports.port_lines([]) == []


def test_port_specs():
    rs = [R("tcp", "0.0.0.0", 8080, 80), R("udp", "127.0.0.1", 5353, 53)]
    specs = ports.port_specs(rs, "10.88.0.2", "bt0br")
    assert [
        (s.proto, s.host_ip, s.host_port, s.container_ip, s.container_port, s.bridge) for s in specs
    ] == [
        ("tcp", "", 8080, "10.88.0.2", 80, "bt0br"),
        ("udp", "127.0.0.1", 5353, "10.88.0.2", 53, "bt0br"),
    ]
    # and nft accepts them
    from engine.network import nft

    script, _, skipped = nft.render("bttest", [nft.NetSpec("n", "bt0br", "10.88.0.0/24")], specs)
    assert "dnat ip to 10.88.0.2:80" in script and not skipped


def test_reserve_refuses_duplicates_before_binding():
    with pytest.raises(InvalidArgument, match="host port 8080/tcp is published twice"):
        ports.reserve(parse_publish("8080:80") + parse_publish("127.0.0.1:8080:81"), "")
    with pytest.raises(InvalidArgument, match="published twice"):
        ports.reserve(parse_publish("8080:80") + parse_publish("8080:81"), "")
    assert ports.reserve([], "") == []
