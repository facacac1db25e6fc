"""engine.build.dockerignore: Docker's .dockerignore rules."""

from __future__ import annotations

import pytest

from engine.build.dockerignore import Matcher, read_patterns


def m(text: str) -> Matcher:
    return Matcher(read_patterns(text))


def test_reading_cleans_and_skips_comments():
    text = "\ufeff# comment\n\n  *.log  \n!  keep.log\n/abs/path/\n./a//b\n#x\n"
    assert read_patterns(text) == ["*.log", "!keep.log", "abs/path", "a/b"]


@pytest.mark.parametrize(
    "patterns, path, excluded",
    [
        ("*.log", "a.log", True),
        ("*.log", "dir/a.log", False),  # * never crosses "/"
        ("**/*.log", "dir/sub/a.log", True),
        ("**/*.log", "a.log", True),  # ** matches no directory too
        ("dir/**/x", "dir/x", True),
        ("dir/**/x", "dir/a/b/x", True),
        ("dir/**", "dir/a/b", True),
        ("**", "anything/at/all", True),
        ("node_modules", "node_modules/pkg/index.js", True),  # a parent matches
        ("build/", "build/out.o", True),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("[a-c]x", "bx", True),
        ("[!a-c]x", "dx", True),
        ("[!a-c]x", "ax", False),
        ("\\*star", "*star", True),
        ("\\*star", "xstar", False),
        ("file.txt", "file_txt", False),  # "." is literal
        ("*\n!keep", "keep", False),
        ("*\n!keep", "other", True),
        ("*\n!keep\nkeep", "keep", True),  # last match wins
        ("secret\n!secret/public\n", "secret/public/x", False),
        ("secret\n!secret/public\n", "secret/private", True),
        ("*\n", "Dockerfile", True),  # read by the build, but never copied then
        ("*\n", ".dockerignore", True),
        ("*.md\n!README*.md\nREADME-secret.md", "README-secret.md", True),
        ("*.md\n!README*.md\nREADME-secret.md", "README.md", False),
    ],
)
def test_matching(patterns, path, excluded):
    assert m(patterns).excluded(path) is excluded


def test_walk_pruning_follows_docker():
    # No exceptions: an excluded directory is skipped whole.
    assert not m("build").may_include_below("build")
    # An exception below it: the walk must go in.
    assert m("build\n!build/keep.txt").may_include_below("build")
    assert not m("build\n!other/keep.txt").may_include_below("build")


def test_empty_matcher():
    assert not m("# nothing\n")
    assert not m("").excluded("x")
