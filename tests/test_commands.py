"""Every ``python -m mmkd_utils …`` command that the course shows a reader parses with the real command line.

A learner copies commands from the README, results/README.md, INSTRUCTORS.md, CONTRIBUTING.md and the
notebooks (their prose, code and printed output); a command that names a subcommand or an option the CLI
does not have fails for them. This test finds each one and parses it exactly as the CLI would (for ``run``,
also building its configuration, which validates the values), without running anything. Placeholders
(``NAME``, ``FOLDER``, ``[--jobs J]``) are filled with sample values first.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "INSTRUCTORS.md", "CONTRIBUTING.md", "results/README.md"]
# the command, then its arguments up to the end of the line, a code span, a quote, a table cell, a comment or prose
COMMAND = re.compile(r"python -m (mmkd_utils(?:\.\w+)?)((?:[ \t]+[^\s`\"'|#;<>()]+)*)")
SAMPLE = {"--config": "cpu", "--jobs": "2", "--repo": "owner/name"}  # a placeholder after these options


def sources() -> list[tuple[str, str]]:
    """(where, text) for every document and every notebook cell's source and printed output."""
    out = [(name, (ROOT / name).read_text(encoding="utf8")) for name in DOCS]
    out += [(str(p.relative_to(ROOT)), p.read_text(encoding="utf8")) for p in sorted(ROOT.glob("results/*/results.md"))]
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf8"))["cells"]):
            texts = ["".join(cell["source"])]
            for output in cell.get("outputs", []):
                texts.append("".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", "")))
            out += [(f"{path.name} cell {i}", t.replace("\\n", "\n")) for t in texts]
    return out


def fill(args: str) -> list[str] | None:
    """The argument list with placeholders filled; None for a template that is not a command (an f-string)."""
    if "{" in args:
        return None
    args = re.sub(r"\[[^\]]*\]", " ", args).rstrip(".,:")  # optional parts, and the sentence's punctuation
    tokens = [t for t in args.split() if t not in ("...", "…")]
    for i, token in enumerate(tokens):
        if re.fullmatch(r"[A-Z][A-Z_/]*", token):  # NAME, FOLDER, J, OWNER/NAME
            tokens[i] = SAMPLE.get(tokens[i - 1], "x") if i else "x"
    return tokens


def commands() -> list[tuple[str, str, list[str]]]:
    found = {}
    for where, text in sources():
        for match in COMMAND.finditer(text):
            module, argv = match.group(1), fill(match.group(2))
            if argv is not None and (module != "mmkd_utils" or argv):  # a bare "python -m mmkd_utils" is a name
                found.setdefault((module, tuple(argv)), where)
    return [(where, module, list(argv)) for (module, argv), where in found.items()]


class Parsed(Exception):
    """Raised instead of running: the arguments parsed."""


def parse_only(monkeypatch) -> None:
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)


def check(module: str, argv: list[str], monkeypatch) -> None:
    if module == "mmkd_utils":
        from mmkd_utils.__main__ import build_parser, config_from_args

        args = build_parser().parse_args(argv)
        if args.command == "run":
            config_from_args(args)  # the values are valid, not only the option names
        return
    if module == "mmkd_utils.notebooks":
        from mmkd_utils import notebooks

        for name, value in (("execute", 0.0), ("retarget", []), ("clean_file", False)):  # parse, change nothing
            monkeypatch.setattr(notebooks, name, lambda *a, value=value, **k: value)
        notebooks.main(argv)
        return
    if module == "mmkd_utils.noto":
        from mmkd_utils import noto

        monkeypatch.setattr(noto, "build", lambda: (_ for _ in ()).throw(Parsed()))
        with pytest.raises(Parsed):
            noto.main(argv)
        return
    import importlib

    parse_only(monkeypatch)
    with pytest.raises(Parsed):
        importlib.import_module(module).main(argv)


ALL = commands()


def test_the_course_shows_commands():
    modules = {module for _, module, _ in ALL}
    assert len(ALL) > 30 and {"mmkd_utils", "mmkd_utils.classic", "mmkd_utils.notebooks"} <= modules


@pytest.mark.parametrize("where,module,argv", ALL, ids=[f"{w}: {m} {' '.join(a)}"[:90] for w, m, a in ALL])
def test_every_printed_command_parses(where, module, argv, monkeypatch, capsys):
    try:
        check(module, argv, monkeypatch)
    except SystemExit as exc:  # argparse's way of refusing (and of ending --help, with code 0)
        if exc.code not in (0, None):
            pytest.fail(f"{where} prints `python -m {module} {shlex.join(argv)}`, which the CLI refuses "
                        f"({exc}): {capsys.readouterr().err.strip()}")


def test_a_wrong_command_is_caught(monkeypatch):
    """The check can fail: a subcommand or an option that does not exist is refused."""
    for argv in (["tune", "--config", "cpu"], ["run", "--temperature", "4"], ["run", "--config", "gpu9"]):
        with pytest.raises(SystemExit):
            check("mmkd_utils", argv, monkeypatch)
    with pytest.raises(SystemExit):
        check("mmkd_utils.classic", ["--seeds", "3"], monkeypatch)
