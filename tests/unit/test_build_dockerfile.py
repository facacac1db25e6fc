"""engine.build.dockerfile (the parser) and engine.build.shell (variable substitution)."""

from __future__ import annotations

import pytest

from engine.build.dockerfile import DockerfileError, parse, parse_words
from engine.build.shell import ShellLex, SubstitutionError
from engine.errors import InvalidArgument

EVERY = """\
# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM $BASE AS base
RUN echo hi
CMD ["sh", "-c", "echo x"]
LABEL a=b "c d"="e f"
MAINTAINER someone
EXPOSE 80 443/udp
ENV A=1 B="two words"
ADD --chown=1:2 a.tar /opt/
COPY --from=base --chmod=0755 /bin/sh /x
ENTRYPOINT ["/entry"]
VOLUME ["/data", "/logs"]
USER nobody:nogroup
WORKDIR /srv/my app
ARG V
ONBUILD RUN echo triggered
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost
SHELL ["/bin/bash", "-c"]
"""


def test_every_instruction_with_lines_and_text():
    df = parse(EVERY)
    kws = [i.keyword for i in df.instructions]
    assert kws == [
        "ARG", "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
        "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
        "HEALTHCHECK", "SHELL",
    ]  # fmt: skip
    assert [i.line for i in df.instructions] == list(range(2, 21))
    assert df.directives == {"syntax": "docker/dockerfile:1"}
    assert [a.text for a in df.meta_args] == ["ARG BASE=busybox"]
    (stage,) = df.stages
    assert (stage.base, stage.name, stage.index) == ("$BASE", "base", 0)
    assert stage.instructions[0].keyword == "RUN"
    by = {i.keyword: i for i in df.instructions}
    assert by["RUN"].args == ("echo hi",) and not by["RUN"].json
    assert by["CMD"].args == ("sh", "-c", "echo x") and by["CMD"].json
    assert by["LABEL"].pairs == [("a", "b"), ('"c d"', '"e f"')]
    assert by["EXPOSE"].args == ("80", "443/udp")
    assert by["ENV"].pairs == [("A", "1"), ("B", '"two words"')]
    assert by["ADD"].flag("chown") == "1:2" and by["ADD"].args == ("a.tar", "/opt/")
    assert by["COPY"].flags == (("from", "base"), ("chmod", "0755"))
    assert by["COPY"].text == "COPY --from=base --chmod=0755 /bin/sh /x"
    assert by["VOLUME"].args == ("/data", "/logs") and by["VOLUME"].json
    assert by["WORKDIR"].args == ("/srv/my app",)
    assert by["ONBUILD"].sub.keyword == "RUN" and by["ONBUILD"].sub.args == ("echo triggered",)
    hc = by["HEALTHCHECK"]
    assert hc.args == ("CMD", "wget -q localhost") and hc.flag("interval") == "5s"
    assert by["SHELL"].args == ("/bin/bash", "-c")
    assert by["STOPSIGNAL"].original == "STOPSIGNAL SIGINT"


def test_continuations_comments_and_original_text():
    text = (
        "FROM busybox\n"
        "RUN echo a \\\n"
        "  # a comment inside is skipped\n"
        "\n"
        "    && echo b \\   \n"
        "    && echo c\n"
        "  # indented comment\n"
        '   cmd ["x"]\n'
    )
    df = parse(text)
    run = df.instructions[1]
    assert run.args == ("echo a     && echo b     && echo c",)
    assert (run.line, run.end_line) == (2, 6)
    assert run.original.splitlines()[0] == "RUN echo a \\" and len(run.original.splitlines()) == 5
    assert df.instructions[2].keyword == "CMD" and df.instructions[2].line == 8


def test_escape_directive_backtick():
    df = parse("# escape=`\nFROM busybox\nCOPY a\\b `\n  c:\\d\\\nRUN echo \\\n")
    assert df.escape == "`"
    copy = df.instructions[1]
    assert copy.args == ("a\\b", "c:\\d\\") and copy.end_line == 4
    assert df.instructions[2].args == ("echo \\",)


def test_directives_only_at_top_and_once():
    df = parse("FROM busybox\n# escape=`\nRUN a \\\n b\n")
    assert df.escape == "\\" and df.instructions[1].args == ("a  b",)
    # An unknown directive ends the directive block (it is a comment).
    assert parse("# foo=bar\n# escape=`\nFROM x\n").escape == "\\"
    with pytest.raises(DockerfileError, match="only one escape parser directive"):
        parse("# escape=`\n# escape=\\\nFROM x\n")
    with pytest.raises(DockerfileError, match="invalid escape token"):
        parse("# escape=!\nFROM x\n")


def test_arg_before_from_and_stages():
    df = parse("ARG V=1\nARG IMG\nFROM busybox AS Build\nFROM build\nFROM scratch as final\n")
    assert [a.args for a in df.meta_args] == [("V=1",), ("IMG",)]
    assert [(s.index, s.name, s.base) for s in df.stages] == [
        (0, "build", "busybox"), (1, "", "build"), (2, "final", "scratch"),
    ]  # fmt: skip
    assert df.stage("BUILD").index == 0 and df.stage("1").index == 1 and df.stage("x") is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no instructions"),
        ("# only a comment\n", "no instructions"),
        ("RUN x\n", "only ARG may come before FROM"),
        ("FROM a\nFOO bar\n", "unknown instruction: FOO"),
        ("FROM a b\n", "FROM requires either one argument, or three"),
        ("FROM a AS 1x\n", "invalid name for build stage"),
        ("FROM a AS x\nFROM b AS x\n", "duplicate stage name"),
        ("FROM a\nCOPY onlyone\n", "COPY requires at least two arguments"),
        ("FROM a\nCOPY --bogus=1 a b\n", "unknown flag: --bogus"),
        ("FROM a\nENV A\n", "ENV must have two arguments"),
        ("FROM a\nENV A=1 B\n", "can't find = in 'B'"),
        ("FROM a\nLABEL =x\n", "names can not be blank"),
        ("FROM a\nSHELL /bin/bash -c\n", "SHELL requires the arguments to be in JSON form"),
        ('FROM a\nCMD ["a", 1]\n', "arrays must be comprised of strings only"),
        ('FROM a\nCOPY ["a", 2] \n', "arrays must be comprised of strings only"),
        ("FROM a\nWORKDIR\n", "WORKDIR requires exactly one argument"),
        ("FROM a\nONBUILD ONBUILD RUN x\n", "isn't allowed as an ONBUILD trigger"),
        ("FROM a\nONBUILD FROM x\n", "FROM isn't allowed as an ONBUILD trigger"),
        ("FROM a\nHEALTHCHECK BOGUS x\n", "expected CMD or NONE"),
        ("FROM a\nRUN <<EOF\necho\nEOF\n", "heredocs"),
        ("FROM a\nRUN\n", "RUN requires at least one argument"),
    ],
)
def test_errors_name_the_problem_and_line(text, message):
    with pytest.raises(DockerfileError, match=message) as e:
        parse(text)
    assert isinstance(e.value, InvalidArgument)
    if "FROM a\n" in text:
        assert e.value.line == 2 and "Dockerfile:2:" in str(e.value)


def test_exec_and_shell_forms_and_json_warning():
    df = parse('FROM a\nRUN ["echo", "hi"]\nRUN echo "hi"\nCMD ["bad", json]\nENTRYPOINT []\n')
    run1, run2, cmd, ep = df.instructions[1:]
    assert run1.json and run1.args == ("echo", "hi")
    assert not run2.json and run2.args == ('echo "hi"',)
    # Docker runs invalid JSON as a shell command; we say so.
    assert not cmd.json and cmd.args == ('["bad", json]',)
    assert df.warnings and df.warnings[0][0] == 4 and "not valid JSON" in df.warnings[0][1]
    assert ep.json and ep.args == ()


def test_flags_end_at_double_dash_and_quotes():
    df = parse('FROM a\nCOPY --chown="1 2" -- --weird /x\n')
    copy = df.instructions[1]
    assert copy.flag("chown") == "1 2" and copy.args == ("--weird", "/x")
    assert parse("FROM a\nCOPY --link a b\n").instructions[1].flag("link") == ""


def test_crlf_and_bom():
    df = parse("\ufeffFROM a\r\nRUN x \\\r\n y\r\n")
    assert df.instructions[1].args == ("x  y",)


def test_parse_words_keeps_quotes():
    assert parse_words("a=\"b c\" d='e\\ f' g\\ h") == ['a="b c"', "d='e\\ f'", "g\\ h"]
    assert parse_words('x="" ""') == ['x=""', '""']


# -- variable substitution ---------------------------------------------------------------


ENV = {"A": "alpha", "EMPTY": "", "P": "/usr/local/bin/tool.tar.gz"}


@pytest.mark.parametrize(
    "word, expected",
    [
        ("$A", "alpha"),
        ("${A}x", "alphax"),
        ("$UNSET-x", "-x"),
        ("${UNSET:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${EMPTY-dflt}", ""),
        ("${A:-dflt}", "alpha"),
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${UNSET:-${A}2}", "alpha2"),
        ("\\$A", "$A"),
        ("'$A'", "$A"),
        ('"$A b"', "alpha b"),
        ('"\\$A \\"q\\""', '$A "q"'),
        ("a\\ b", "a b"),
        ("$", "$"),
        ("a$", "a$"),
        ("$1x", "x"),
        ("${P#*/}", "usr/local/bin/tool.tar.gz"),
        ("${P##*/}", "tool.tar.gz"),
        ("${P%.*}", "/usr/local/bin/tool.tar"),
        ("${P%%.*}", "/usr/local/bin/tool"),
    ],
)
def test_substitution(word, expected):
    assert ShellLex().word(word, ENV) == expected


def test_substitution_errors_and_used_names():
    lex = ShellLex()
    with pytest.raises(SubstitutionError, match="UNSET: need it"):
        lex.word("${UNSET:?need it}", ENV)
    with pytest.raises(SubstitutionError, match="EMPTY: parameter null or not set"):
        lex.word("${EMPTY:?}", ENV)
    assert lex.word("${EMPTY?}", ENV) == ""
    with pytest.raises(SubstitutionError, match="missing '}'"):
        lex.word("${A", ENV)
    with pytest.raises(SubstitutionError, match="unsupported modifier"):
        lex.word("${A:x}", ENV)
    with pytest.raises(SubstitutionError, match="single-quote"):
        lex.word("'abc", ENV)
    used: set[str] = set()
    lex.word("$A ${B:-$C} '$D'", ENV, used)
    assert used == {"A", "B", "C"}


def test_words_split_and_backtick_escape():
    assert ShellLex().words("a \"b c\" $A ''", ENV) == ["a", "b c", "alpha", ""]
    lex = ShellLex("`")
    assert lex.word("c:\\dir`$A", ENV) == "c:\\dir$A"
