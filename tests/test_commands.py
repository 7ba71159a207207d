"""Every command line the README, the docs and the docstrings show parses with the command it names.

The lines are collected from README.md, docs/**/*.md and every docstring under flowvla/, examples/
and benchmarks/; each is handed to its command's own argument parser (nothing runs: parsing stops
at ``parse_args``). Abbreviated options fail here even where a parser would accept them, so every
usage line spells its options in full.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# pyproject.toml's [project.scripts] (read by hand: tomllib is Python 3.11+).
_SCRIPTS_TABLE = (ROOT / "pyproject.toml").read_text().split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
SCRIPTS = dict(re.findall(r'^([\w-]+) = "([\w.:]+)"$', _SCRIPTS_TABLE, re.M))
# What starts one of flowvla's command lines.
COMMAND = re.compile(
    r"(?:python -m flowvla(?:\.\w+)+|python (?:examples|benchmarks)/(?:\w+/)?\w+\.py|"
    + "|".join(map(re.escape, sorted(SCRIPTS, key=len, reverse=True)))
    + r")(?![\w.-])"
)
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}


def _join_continuations(text: str) -> str:
    return re.sub(r"\\\n\s*", " ", text)


def _from_line(line: str) -> str | None:
    """The command in one shell line, without prompt, trailing comment or chained commands."""
    m = COMMAND.search(line)
    if m is None:
        return None
    cmd = line[m.start() :]
    cmd = re.split(r"\s#\s|\s#$|\s(?:&&|\|\||[|;>])\s", cmd)[0]
    return " ".join(cmd.split())


def _from_text(text: str, shell_lines: bool) -> list[str]:
    """Commands in inline code spans of ``text`` and, with ``shell_lines``, in its plain lines."""
    text = _join_continuations(text)
    found = []
    spans = re.compile(r"``(.+?)``|(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)", re.S)
    for m in spans.finditer(text):
        span = (m.group(1) or m.group(2)).replace("\n", " ")
        if COMMAND.match(span):
            found.append(_from_line(span))
    if shell_lines:
        for line in spans.sub("", text).splitlines():
            cmd = _from_line(line)
            if cmd is not None and COMMAND.match(line.strip().removeprefix("$ ")):
                found.append(cmd)
    return [c for c in found if c]


def _markdown_commands(path: Path) -> list[str]:
    text = path.read_text()
    found = []
    fence = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
    for m in fence.finditer(text):
        if m.group(1) in SHELL_FENCES:
            found += _from_text(m.group(2), shell_lines=True)
    return found + _from_text(fence.sub("", text), shell_lines=False)


def _docstring_commands(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                found += _from_text(doc, shell_lines=True)
    return found


def collect() -> list[tuple[str, str]]:
    """``(where, command line)`` for every command shown to users."""
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        out += [(str(path.relative_to(ROOT)), c) for c in _markdown_commands(path)]
    for folder in ("flowvla", "examples", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            out += [(str(path.relative_to(ROOT)), c) for c in _docstring_commands(path)]
    # A bare script name is the tool mentioned by name ("the `flowvla-diagnose` command"), not a line.
    return [(w, c) for w, c in dict.fromkeys(out) if c not in SCRIPTS]


COMMANDS = collect()


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def _parse_only(monkeypatch) -> None:
    """Stop every command at its parse_args, and let no parser accept abbreviated options."""
    real_init, real_parse = argparse.ArgumentParser.__init__, argparse.ArgumentParser.parse_args

    def init(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        real_init(self, *args, **kwargs)

    def parse(self, args=None, namespace=None):
        real_parse(self, args, namespace)
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "__init__", init)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse)


def _run(argv: list[str]) -> None:
    """Run the command ``argv`` names up to its argument parsing (raises _Parsed or SystemExit)."""
    if argv[:2] == ["python", "-m"]:
        module = importlib.import_module(argv[2])
        assert 'if __name__ == "__main__":' in Path(module.__file__).read_text(), f"{argv[2]} has no __main__"
        sys.argv = [argv[2], *argv[3:]]
        module.main()
    elif argv[0] == "python":
        sys.argv = argv[1:]
        runpy.run_path(str(ROOT / argv[1]), run_name="__main__")
    else:
        module, _, func = SCRIPTS[argv[0]].partition(":")
        sys.argv = argv
        getattr(importlib.import_module(module), func)()


def test_the_docs_show_commands():
    # The collector must find the lines the README and docs are known to show.
    shown = {c.split(" --")[0] for _, c in COMMANDS}
    assert {
        "python -m flowvla.recipes.generate",
        "python -m flowvla.envs.libero_check",
        "flowvla-diagnose",
        "python examples/libero_eval.py",
        "python benchmarks/libero/expert.py",
    } <= shown
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}: {c}" for w, c in COMMANDS])
def test_command_line_parses(where, command, monkeypatch, capsys):
    # A usage synopsis: "[--opt VALUE]" groups are optional (their values may be placeholders), so the
    # line parses without them and each option they name must exist under its full name.
    optional = [
        t for group in re.findall(r"\[([^]]*)\]", command) for t in group.split() if t.startswith("-")
    ]
    required = re.sub(r"\s*\[[^]]*\]", "", command)
    argv = [t for t in shlex.split(required) if t not in ("...", "…")]  # "..." elides further options
    _parse_only(monkeypatch)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(_Parsed) as parsed:
        try:
            _run(argv)
        except SystemExit as e:
            raise AssertionError(
                f"{where}: `{command}` does not parse: {capsys.readouterr().err.strip()}"
            ) from e
    unknown = [o for o in optional if o not in parsed.value.parser._option_string_actions]
    assert not unknown, f"{where}: `{command}` shows options {unknown} that the command does not have"
