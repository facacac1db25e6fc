"""Go text/template subset used for docker-style ``--format`` output."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from engine.cli.gotemplate import is_table, render, render_table, table_header, tabwrite
from engine.errors import EngineError, InvalidArgument

CONTAINER = {
    "Id": "4f66ad9a0b2e7c1d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9012345678901",
    "Created": "2024-05-01T10:00:00.123456789Z",
    "Path": "/docker-entrypoint.sh",
    "Args": ["nginx", "-g", "daemon off;"],
    "State": {
        "Status": "running",
        "Running": True,
        "Paused": False,
        "Pid": 4242,
        "ExitCode": 0,
        "Health": None,
    },
    "Name": "/web",
    "RestartCount": 0,
    "Config": {
        "Hostname": "4f66ad9a0b2e",
        "Env": ["PATH=/usr/local/sbin:/usr/bin", "NGINX_VERSION=1.25.4"],
        "Cmd": ["nginx", "-g", "daemon off;"],
        "Image": "nginx:latest",
        "Labels": {"maintainer": "NGINX <docker-maint@nginx.com>", "com.example.tier": "frontend"},
    },
    "NetworkSettings": {
        "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
        "Networks": {
            "bridge": {"IPAddress": "172.17.0.2", "Gateway": "172.17.0.1"},
            "backend": {"IPAddress": "10.89.0.5", "Gateway": "10.89.0.1"},
        },
    },
    "Mounts": [
        {"Type": "volume", "Name": "data", "Destination": "/data", "RW": True},
        {"Type": "bind", "Source": "/srv/conf", "Destination": "/etc/nginx/conf.d", "RW": False},
    ],
    "Memory": 0.5,
}


def r(template: str, data: object = CONTAINER) -> str:
    return render(template, data)


# --------------------------------------------------------------------------- fields and values


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{.Name}}", "/web"),
        ("{{.State.Status}}", "running"),
        ("{{ .State.Pid }}", "4242"),
        ("{{.State.Running}} {{.State.Paused}}", "true false"),
        ("{{.State.Health}}", "<nil>"),
        ("{{.NoSuchKey}}", "<no value>"),
        ("{{.NoSuchKey.Deeper}}", "<no value>"),
        ("{{.Args}}", "[nginx -g daemon off;]"),
        (
            "{{.Config.Labels}}",
            "map[com.example.tier:frontend maintainer:NGINX <docker-maint@nginx.com>]",
        ),
        ("{{.NetworkSettings.Ports}}", "map[80/tcp:[map[HostIp:0.0.0.0 HostPort:8080]]]"),
        ("{{.Memory}}", "0.5"),
        ("{{$.Name}}", "/web"),
        ("id={{.Config.Hostname}}!", "id=4f66ad9a0b2e!"),
    ],
)
def test_fields_and_go_printing(template: str, expected: str) -> None:
    assert r(template) == expected


def test_dot_is_the_data() -> None:
    assert r("{{.}}", "plain") == "plain"
    assert r("{{.}}", [1, "a", None, True]) == "[1 a <nil> true]"
    assert r("{{.}}", {"b": 2, "a": {"c": []}}) == "map[a:map[c:[]] b:2]"
    assert r("{{.}}", None) == "<nil>"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "1"),
        (100.0, "100"),
        (123456.0, "123456"),
        (1e6, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2.5, "-2.5"),
        (0.1 + 0.2, "0.30000000000000004"),
    ],
)
def test_floats_print_like_go_percent_v(value: float, expected: str) -> None:
    assert r("{{.}}", value) == expected


def test_attributes_of_objects_and_dict_keys_first() -> None:
    @dataclass
    class Port:
        PrivatePort: int
        Type: str

        def Text(self) -> str:  # noqa: N802 - Go-style exported method
            return f"{self.PrivatePort}/{self.Type}"

    port = Port(80, "tcp")
    assert r("{{.PrivatePort}}/{{.Type}} {{.Text}}", port) == "80/tcp 80/tcp"
    assert r("{{.}}", port) == "{80 tcp}"
    assert r("{{json .}}", port) == '{"PrivatePort":80,"Type":"tcp"}'
    assert r("{{.P.Type}}", {"P": port}) == "tcp"


# --------------------------------------------------------------------------- json


def test_json_of_everything_is_compact_and_keeps_key_order() -> None:
    expected = json.dumps(CONTAINER, separators=(",", ":"), ensure_ascii=False)
    assert r("{{json .}}") == expected
    assert json.loads(r("{{json .}}")) == CONTAINER


def test_json_of_parts_and_pipelines() -> None:
    labels = '{"maintainer":"NGINX <docker-maint@nginx.com>","com.example.tier":"frontend"}'
    assert r("{{json .Config.Labels}}") == labels  # no HTML escaping, like docker
    assert r("{{.Config.Labels | json}}") == labels
    assert r("{{json .Args}}") == '["nginx","-g","daemon off;"]'
    assert r("{{json .State.Health}}") == "null"
    assert r("{{json .Missing}}") == "null"
    assert r("{{json .Name}}") == '"/web"'


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.0, "1"), (1e6, "1000000"), (1e21, "1e+21"), (1e-7, "1e-7"), (0.25, "0.25"), (3, "3")],
)
def test_json_numbers_like_go(value: float, expected: str) -> None:
    assert r("{{json .}}", value) == expected


def test_json_escapes() -> None:
    assert r("{{json .}}", 'a"b\\c\n\u2028é') == '"a\\"b\\\\c\\n\\u2028é"'


# --------------------------------------------------------------------------- range / if / with


def test_range_over_map_visits_sorted_keys_with_dot_as_value() -> None:
    assert r("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}") == "10.89.0.5 172.17.0.2 "
    one = {"NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}}}}
    assert r("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", one) == "172.17.0.2"


def test_range_with_variables() -> None:
    tpl = "{{range $name, $net := .NetworkSettings.Networks}}{{$name}}={{$net.IPAddress}};{{end}}"
    assert r(tpl) == "backend=10.89.0.5;bridge=172.17.0.2;"
    assert r("{{range $i, $m := .Mounts}}{{$i}}:{{$m.Destination}} {{end}}") == (
        "0:/data 1:/etc/nginx/conf.d "
    )
    assert r("{{range $e := .Config.Env}}[{{$e}}]{{end}}") == (
        "[PATH=/usr/local/sbin:/usr/bin][NGINX_VERSION=1.25.4]"
    )
    # $ stays the top-level data inside range.
    assert r("{{range .Mounts}}{{$.Name}}:{{.Destination}} {{end}}") == (
        "/web:/data /web:/etc/nginx/conf.d "
    )


def test_range_else_break_continue_and_int() -> None:
    assert r("{{range .Missing}}x{{else}}none{{end}}") == "none"
    assert r("{{range .Config.Labels}}x{{else}}none{{end}}", {"Config": {"Labels": {}}}) == "none"
    assert r("{{range .State.Health}}x{{end}}") == ""
    tpl = '{{range .Args}}{{if eq . "-g"}}{{continue}}{{end}}{{if eq . "stop"}}{{break}}{{end}}{{.}},{{end}}'
    assert r(tpl, {"Args": ["a", "-g", "b", "stop", "c"]}) == "a,b,"
    assert r("{{range 3}}{{.}}{{end}}") == "012"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"X": True}, "x"),
        ({"X": 0, "Y": "y"}, "y"),
        ({"X": [], "Y": {}}, "neither"),
        ({"X": None, "Y": 0.0}, "neither"),
        ({}, "neither"),
        ({"X": [0]}, "x"),
        ({"X": {"k": None}}, "x"),
    ],
)
def test_if_else_if_else_with_go_truthiness(data: dict, expected: str) -> None:
    assert r("{{if .X}}x{{else if .Y}}y{{else}}neither{{end}}", data) == expected


def test_with() -> None:
    assert r("{{with .State}}{{.Status}}/{{.Pid}}{{end}}") == "running/4242"
    assert r("{{with .State.Health}}{{.Status}}{{else}}no healthcheck{{end}}") == "no healthcheck"
    assert r("{{with .A}}a{{else with .B}}{{.}}{{end}}", {"B": "b"}) == "b"


# --------------------------------------------------------------------------- variables


def test_variables() -> None:
    assert r("{{$n := .Name}}{{$n}}") == "/web"
    assert r("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}") == "2"
    assert r("{{if true}}{{$y := 1}}{{end}}ok") == "ok"
    assert r("{{with $s := .State}}{{$s.Status}}{{end}}") == "running"
    # Declaring prints nothing.
    assert r("{{$a := .Args}}") == ""


# --------------------------------------------------------------------------- functions


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('{{join .Args " "}}', "nginx -g daemon off;"),
        ('{{join .Config.Env ","}}', "PATH=/usr/local/sbin:/usr/bin,NGINX_VERSION=1.25.4"),
        ('{{split .Config.Image ":"}}', "[nginx latest]"),
        ('{{index (split .Config.Image ":") 1}}', "latest"),
        ("{{lower .State.Status}} {{upper .State.Status}}", "running RUNNING"),
        ('{{title "hello wORLD foo-bar"}}', "Hello WORLD Foo-Bar"),
        ('{{pad .State.Status 2 1}}|{{pad "" 2 1}}|', "  running ||"),
        ("{{truncate .Id 12}} {{truncate .Name 99}}", "4f66ad9a0b2e /web"),
        ("{{println .Name .State.Pid}}", "/web 4242\n"),
        ('{{print .Name 1 2 "a" 3}}', "/web1 2a3"),
        ('{{printf "%s has pid %d" .Name .State.Pid}}', "/web has pid 4242"),
        ('{{printf "%v %q" .Args .Name}}', '[nginx -g daemon off;] "/web"'),
        (
            '{{printf "%-8s|%5d|%05d|%x|%.2f|%t|%%" "ab" 42 42 255 .Memory true}}',
            "ab      |   42|00042|ff|0.50|true|%",
        ),
        ('{{printf "%d %s" "x"}}', "%!d(string=x) %!s(MISSING)"),
        ('{{index .Config.Labels "com.example.tier"}}', "frontend"),
        ('[{{index .Config.Labels "missing"}}]', "[]"),  # string maps: zero value ""
        ('{{index .NetworkSettings.Networks "none"}}', "<no value>"),
        ("{{index .Args 2}}", "daemon off;"),
        ('{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}', "8080"),
        ('{{index .NetworkSettings.Ports "80/tcp" 0 "HostIp"}}', "0.0.0.0"),
        ("{{len .Args}} {{len .Name}} {{len .Config.Labels}}", "3 4 2"),
        ("{{slice .Args 1}} {{slice .Name 1 3}}", "[-g daemon off;] we"),
        ("{{(index .Args 0) | upper}}", "NGINX"),
        ('{{.Name | printf "%s!"}}', "/web!"),
        ('{{.Args | len | printf "%d args"}}', "3 args"),
    ],
)
def test_functions(template: str, expected: str) -> None:
    assert r(template) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('{{eq .State.Status "running"}}', "true"),
        ("{{eq .State.Pid 1 2 4242}}", "true"),
        ("{{ne .State.ExitCode 0}}", "false"),
        ('{{eq .Missing "x"}}', "false"),
        ("{{eq .State.Health nil}}", "true"),
        ("{{lt 1 2}} {{le 2 2}} {{gt 3 2}} {{ge 1 2}}", "true true true false"),
        ('{{lt "a" "b"}} {{gt 1.5 2.5}}', "true false"),
        ('{{and 1 0}} {{and 1 2}} {{or 0 ""}} {{or 0 "x"}}', "0 2  x"),
        ("{{not .State.Running}} {{not .Missing}}", "false true"),
        ("{{if and .State.Running (eq .State.ExitCode 0)}}healthy{{end}}", "healthy"),
        # and/or short-circuit: the failing index is never evaluated.
        ("{{or .State.Running (index .Args 99)}}", "true"),
        ("{{and .Missing (index .Args 99)}}", "<no value>"),
    ],
)
def test_comparisons_and_logic(template: str, expected: str) -> None:
    assert r(template) == expected


# --------------------------------------------------------------------------- literals, trimming, comments, escapes


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('{{"a\\tb\\"c"}}', 'a\tb"c'),
        ("{{`raw \\d {{ }}`}}", "raw \\d {{ }}"),
        ("{{42}} {{-7}} {{0x1F}} {{1_000}} {{1.5}} {{1e3}}", "42 -7 31 1000 1.5 1000"),
        ("{{'a'}}", "97"),
        ("{{true}} {{false}}", "true false"),
        ("a  {{- .Name -}}  b", "a/webb"),
        ("line1\n  {{- .Name}}\n{{.State.Status -}}\n  end", "line1/web\nrunningend"),
        ("{{/* a comment */}}x{{- /* trimmed */ -}} y", "xy"),
        ("{{/* multi\nline */}}ok", "ok"),
        ("{{ .Name }}{{\t.State.Status\n}}", "/webrunning"),
    ],
)
def test_literals_trimming_comments(template: str, expected: str) -> None:
    assert r(template) == expected


def test_backslash_escapes_become_tab_and_newline() -> None:
    # What a shell passes for --format '{{.Name}}\t{{.State.Status}}\n'.
    assert r(r"{{.Name}}\t{{.State.Status}}\n") == "/web\trunning\n"


# --------------------------------------------------------------------------- table


ROWS = [
    {"ID": "4f66ad9a0b2e", "Names": "web", "Status": "Up 2 hours", "State": {"Status": "running"}},
    {
        "ID": "9c1d2e3f4a5b",
        "Names": "database-primary",
        "Status": "Exited (0) 3 days ago",
        "State": {"Status": "exited"},
    },
]


def test_is_table() -> None:
    assert is_table(r"table {{.ID}}\t{{.Names}}")
    assert not is_table("{{.ID}}")
    assert not is_table(" table {{.ID}}")


def test_table_header() -> None:
    assert table_header(r"table {{.ID}}\t{{.Names}}") == "ID\tNAMES"
    assert table_header(r"table {{.ID}}\t{{.State.Status}}", {"ID": "CONTAINER ID"}) == (
        "CONTAINER ID\tSTATE STATUS"
    )
    assert table_header(r"table {{.Names | upper}}\t{{json .Config}}") == "NAMES\tCONFIG"
    assert table_header("table {{range .Mounts}}{{.Source}} {{end}}") == "MOUNTS"
    assert table_header("table name: {{.Names}}") == "name: NAMES"


def test_render_table_aligns_like_docker() -> None:
    out = render_table(
        r"table {{.ID}}\t{{.Names}}\t{{.Status}}", ROWS, headers={"ID": "CONTAINER ID"}
    )
    assert out == (
        "CONTAINER ID   NAMES              STATUS\n"
        "4f66ad9a0b2e   web                Up 2 hours\n"
        "9c1d2e3f4a5b   database-primary   Exited (0) 3 days ago\n"
    )


def test_render_table_min_width_and_no_rows() -> None:
    # Docker's tabwriter has a minimum cell width of 10 (padding included).
    assert render_table(r"table {{.Names}}\t{{.State.Status}}", ROWS[:1]) == (
        "NAMES     STATE STATUS\nweb       running\n"
    )
    assert render_table(r"table {{.ID}}\t{{.Names}}", []) == "ID        NAMES\n"


def test_tabwrite_column_blocks() -> None:
    # Lines without a cell in a column end that column's block (Go tabwriter semantics).
    text = "a\tbb\tc\nlonger-cell-here\td\nsingle\nx\ty\n"
    assert tabwrite(text) == (
        "a                  bb        c\nlonger-cell-here   d\nsingle\nx         y\n"
    )
    assert tabwrite("a\tb\n", minwidth=0, padding=1) == "a b\n"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{.Name", "template parsing error: template: :1: unclosed action"),
        ("{{end}}", "template parsing error: template: :1: unexpected {{end}}"),
        ("{{if .X}}x", "template parsing error: template: :1: unexpected EOF"),
        ("{{else}}", "template parsing error: template: :1: unexpected {{else}}"),
        ("{{nosuch .X}}", 'template parsing error: template: :1: function "nosuch" not defined'),
        ("{{$x}}", 'template parsing error: template: :1: undefined variable "$x"'),
        ('{{"abc}}', "template parsing error: template: :1: unterminated quoted string"),
        ("{{(.A}}", "template parsing error: template: :1: unclosed left paren"),
        ("{{.A)}}", "template parsing error: template: :1: unexpected right paren"),
        ("{{}}", "template parsing error: template: :1: missing value for command"),
        ("{{.A | 3}}", "non executable command in pipeline stage 2"),
        ("{{break}}", "{{break}} outside {{range}}"),
        ('{{define "x"}}{{end}}', "{{define}} is not supported"),
        ("a\nb\n{{.X #}}", "template parsing error: template: :3: unrecognized character"),
        ("{{/* x */ }}", "comment ends before closing delimiter"),
        ("{{if .X}}{{else}}{{else}}{{end}}", "expected end; found {{else}}"),
    ],
)
def test_parse_errors(template: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        r(template)
    assert str(exc.value).startswith("template parsing error: ")
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{{.State.Health.Status}}",
            'template: :1:2: executing "" at <.State.Health.Status>: '
            "nil pointer evaluating interface {}.Status",
        ),
        (
            "{{.Name.Foo}}",
            'template: :1:2: executing "" at <.Name.Foo>: can\'t evaluate field Foo in type string',
        ),
        (
            "x\n  {{index .Args 5}}",
            'template: :2:4: executing "" at <index .Args 5>: error calling index: index out of range: 5',
        ),
        (
            '{{lt .State.Pid "a"}}',
            'executing "" at <lt .State.Pid "a">: error calling lt: incompatible types for comparison',
        ),
        ("{{upper .State.Pid}}", "wrong type for value; expected string; got int"),
        ("{{len}}", "wrong number of args for len: want 1 got 0"),
        ("{{range .Name}}{{end}}", "range can't iterate over /web"),
        ("{{.Name 1}}", "can't give argument to non-function .Name"),
        ("{{nil}}", "nil is not a command"),
        ("{{len .Missing}}", "error calling len: len of nil pointer"),
        ("{{json .Bad}}", "error calling json: json: unsupported value: NaN"),
    ],
)
def test_execution_errors(template: str, message: str) -> None:
    data = dict(CONTAINER, Bad=float("nan"))
    with pytest.raises(InvalidArgument) as exc:
        render(template, data)
    assert message in str(exc.value)
    assert str(exc.value).startswith("template: :")


def test_errors_are_engine_errors() -> None:
    with pytest.raises(EngineError):
        render("{{", {})
    with pytest.raises(EngineError):
        render_table("table {{.X", [])
