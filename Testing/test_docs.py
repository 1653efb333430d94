"""The documents say what the product does, where a test can check it.

Every ``python -m SAMMed3DLib ...`` / ``sammed3d ...`` command in a fenced block parses with the command line's
own parser, with every option spelt in full; every option named in the text exists, and a default stated as
"`--option` (default X)" is the parser's; every link and every repository path named in code resolves; the
documents speak to their readers (no development history); the README stays a user's document.
"""

import argparse
import importlib
import re
import shlex
import tomllib
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from SAMMed3DLib.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = sorted(
    [README, ROOT / "Resources" / "Screenshots" / "README.md", *(ROOT / "docs").glob("*.md")]
    + [p for p in (ROOT / "CHANGELOG.md",) if p.is_file()]
)

PENDING_COMMANDS: Set[str] = set()
"""Commands the documents describe whose code has not joined the command line yet. Each is skipped while it is
missing and checked as soon as COMMANDS has it; remove it from here then."""

QUICK_START = (
    "bash .ci/install && .venv/bin/python -m SAMMed3DLib bench",
    "bash .ci/install && .venv/bin/python -m pytest",
)
README_LIMIT = 44590 // 3
"""Bytes: the README is for users; design notes, figures and references live in docs/."""

BANNED = {
    r"\bissues?\s*#?\d+": "an issue number",
    r"\bthis stop\b|\bstop's\b|\bstops? \d+\b": "a development stop",
    r"\bthis task\b|\blent\b": "the conditions of the work",
    r"\b(?:last|previous|earlier) release\b": "a release that never happened",
    r"\bCI machine\b|\bthe H100 machine\b|\bwhere the picture was made\b": "the machine it was built on",
    r"\btwice as fast\b|\babout twice\b": "a speed-up that was not measured (bf16: 1.4x on the first click)",
    r"\bTODO\b|\bTBD\b|\bFIXME\b|PLACEHOLDER|\b[A-Z]+_TABLE\b": "a placeholder",
}
"""Pattern → what it is. A figure names the machine it was measured on by its CPU or GPU model."""

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
COMMAND = re.compile(r"(?:(?:^|[\s=;&|(])(?:\S*/)?python[\d.]* -m SAMMed3DLib|(?:^|[;&|(])\s*sammed3d)[ \t]+(\S.*)$")
"""A command of this project in a line: ``python -m SAMMed3DLib`` (any python path) or the ``sammed3d`` script
where a shell command starts."""
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
DEFAULT = re.compile(r"`(--[a-z][a-z0-9-]*)[^`]*`\s*\(default:?\s+([^\s),;:]+)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
REPO_PATH = re.compile(
    r"^(?:\.ci/[\w.-]+|(?:SAMMed3DLib|SAMMed3D|Testing|Resources|docs)/(?:[\w./-]*/|[\w./-]*\.[a-z]+)"
    r"|model_weights[\w.]*\.json)$"
)
"""A repository path in inline code: a file with its extension, a folder with its slash, or a CI script."""


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def prose_of(text: str) -> str:
    """``text`` without its fenced blocks."""
    return FENCE.sub("", text)


def fenced_commands(text: str) -> Iterator[str]:
    """The SAMMed3DLib command lines of the fenced blocks (after ``python -m SAMMed3DLib``), one per line,
    ended at a shell operator or comment."""
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            match = COMMAND.search(line)
            if match:
                yield re.split(r"\s(?:&&|\|\|?|;|#)(?:\s|$)", match.group(1))[0].strip()


def command_parser(name: str) -> argparse.ArgumentParser:
    """A parser with exactly the options of command ``name``."""
    parser = argparse.ArgumentParser(prog=name, add_help=True)
    importlib.import_module(f"SAMMed3DLib.cli.{name.replace('-', '_')}").add_arguments(parser)
    return parser


def command_options() -> Dict[str, Dict[str, object]]:
    """Command → {option string: its default}."""
    return {
        name: {s: action.default for action in command_parser(name)._actions for s in action.option_strings}
        for name in COMMANDS
    }


OPTIONS = command_options()
ALL_OPTIONS = {option for options in OPTIONS.values() for option in options}


def all_commands() -> List[Tuple[str, str]]:
    return [(path.relative_to(ROOT).as_posix(), line) for path in DOCUMENTS for line in fenced_commands(text_of(path))]


def problems_of_command(line: str) -> List[str]:
    """Why ``line`` (after ``python -m SAMMed3DLib``) is not a command this command line accepts; [] if it is."""
    argv = shlex.split(line)
    name = argv[0] if argv else ""
    if name not in COMMANDS:
        return [] if name in PENDING_COMMANDS else [f"unknown command {name!r}"]
    spelt = {token.split("=", 1)[0] for token in argv[1:] if token.startswith("--")}
    problems = [f"{name} has no option {option} (options must be spelt in full)" for option in
                sorted(spelt - set(OPTIONS[name]))]
    try:
        build_parser(name).parse_args(argv)
    except SystemExit as exc:
        problems.append(f"the parser refuses it (exit status {exc.code})")
    return problems


def test_the_documents_exist_and_have_commands():
    assert {p.name for p in DOCUMENTS} >= {"README.md", "DESIGN.md", "BENCHMARKS.md", "SERVER.md", "ANNOTATING.md"}
    assert len(all_commands()) >= 10


@pytest.mark.parametrize(("document", "line"), all_commands())
def test_every_command_in_a_fenced_block_parses(document, line, capsys):
    assert problems_of_command(line) == [], f"{document}: {line}"


def test_pending_commands_are_not_silently_kept():
    """A pending command must still be documented; once it exists it is parsed like any other."""
    documented = {shlex.split(line)[0] for _, line in all_commands()}
    for path in DOCUMENTS:
        documented |= {m.group(1).split()[0] for span in INLINE.findall(text_of(path)) if (m := COMMAND.search(span))}
    assert documented | set(COMMANDS) >= PENDING_COMMANDS


def inline_problems(span: str) -> List[str]:
    """Why an inline code span names a command or an option that does not exist; [] if it does (or names
    none). A span that starts with a command (with or without ``python -m SAMMed3DLib``) is checked against
    that command's options, one that starts with ``--`` against all commands' options."""
    match = COMMAND.search(span)
    words = (match.group(1) if match else span).split()
    if match or words[0] in COMMANDS:
        name = words[0]
        if name in PENDING_COMMANDS - set(COMMANDS) or name == "COMMAND":
            return []
        if name not in COMMANDS:
            return [f"unknown command {name!r}"]
        known = set(OPTIONS[name])
    elif span.startswith("--"):
        known = ALL_OPTIONS
    else:
        return []
    return [f"no such option {option}" for option in OPTION.findall(span) if option not in known]


def test_inline_commands_and_options_exist():
    problems = [
        f"{path.name}: `{span}`: {problem}"
        for path in DOCUMENTS
        for span in INLINE.findall(prose_of(text_of(path)))
        for problem in inline_problems(span)
    ]
    assert not problems, "\n".join(problems)


def test_stated_defaults_are_the_parsers():
    problems = []
    for path in DOCUMENTS:
        for option, stated in DEFAULT.findall(prose_of(text_of(path))):
            defaults = [options[option] for options in OPTIONS.values() if option in options]
            if not defaults:
                problems.append(f"{path.name}: {option} is no option of any command")
            elif not any(same_value(default, stated) for default in defaults):
                problems.append(f"{path.name}: {option} (default {stated}), but the parser's is {defaults}")
    assert not problems, "\n".join(problems)


def same_value(default: object, stated: str) -> bool:
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            return float(stated) == float(default)
        except ValueError:
            return False
    return default is not None and str(default) == stated


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", prose_of(text_of(path)), re.M)}


def test_every_link_and_named_path_resolves():
    problems = []
    for path in DOCUMENTS:
        text = text_of(path)
        for target in LINK.findall(prose_of(text)):
            if re.match(r"[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                problems.append(f"{path.name}: link to missing {target}")
            elif anchor and anchor not in anchors(linked):
                problems.append(f"{path.name}: link to missing heading {target}")
        for span in INLINE.findall(prose_of(text)):
            if REPO_PATH.match(span) and not (ROOT / span).exists():
                problems.append(f"{path.name}: `{span}` does not exist")
    assert not problems, "\n".join(problems)


def test_the_documents_speak_to_their_readers():
    found = [
        f"{path.relative_to(ROOT)}: {what}: {m.group(0)!r}"
        for path in DOCUMENTS
        for pattern, what in BANNED.items()
        for m in re.finditer(pattern, text_of(path), re.I)
    ]
    assert not found, "\n".join(found)


def test_the_readme_is_short_and_keeps_the_quick_start():
    text = text_of(README)
    size = len(text.encode("utf-8"))
    assert size < README_LIMIT, f"README.md is {size} bytes (limit {README_LIMIT}): move details to docs/"
    for command in QUICK_START:
        assert command in text


def test_the_stated_python_is_the_packages():
    project = tomllib.loads(text_of(ROOT / "pyproject.toml"))
    minimum = project["project"]["requires-python"].removeprefix(">=")
    assert project["tool"]["ruff"]["target-version"] == "py" + minimum.replace(".", "")
    assert f"Python {minimum} or later" in text_of(ROOT / "docs" / "COMMAND_LINE.md")
    assert f"{minimum} or later" in text_of(README)


def test_the_weights_section_matches_the_registry_and_the_cache():
    from SAMMed3DLib.weights import load_registry
    from SAMMed3DLib.weights.cache import APP_NAME, SUBDIR

    text = text_of(README)
    section = text[text.index("## Getting the weights"):text.index("## The browser station")]
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M))
    entries = load_registry().values()
    assert listed == {entry.id for entry in entries}
    for entry in entries:
        assert f"`{entry.filename}`" in section and entry.license in section
    assert "SAMMED3D_CACHE_DIR" in section and f"{APP_NAME}/{SUBDIR}" in section


def test_every_settings_key_the_module_writes_is_named_in_uninstall():
    sources = [ROOT / "SAMMed3D" / "SAMMed3D.py", *(ROOT / "SAMMed3DLib" / "slicer").glob("*.py")]
    keys = {key for path in sources for key in re.findall(r"\"(SAMMed3D/[A-Za-z]+)\"", text_of(path))}
    assert keys, "the module's settings keys were not found"
    text = text_of(README)
    uninstall = text[text.index("## Uninstall"):text.index("## Licence")]
    assert {key for key in keys if f"`{key}`" not in uninstall} == set()
