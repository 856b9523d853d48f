"""The documentation stays true: a short README, links that resolve, a current docs/CONFIG.md.

Each check is a function that returns the problems it finds, and each has a test that plants a
problem and sees it reported, so none of them can pass by seeing nothing.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from pipeline.knobs import KNOBS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
README_MAX_LINES = 200
README_TOP = 40  # the two commands that work on a fresh machine come first
# Source citations may stay as plain text in these (never as markdown links).
CITING = {"PROVIDERS.md", "PROTOCOL.md"}

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_INLINE = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]*)>")
_BARE_URL = re.compile(r"\bhttps?://\S+")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def _prose(text: str, *, code: bool = False) -> list[tuple[int, str]]:
    """Return (line number, line) outside fenced code; inline code spans blanked unless `code`."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line if code else _CODE_SPAN.sub(" ", line)))
    return lines


def slug(heading: str) -> str:
    """Return GitHub's anchor for a heading's text (before duplicates get -1, -2, ...)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Return every anchor the headings of a markdown file get on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose(path.read_text(encoding="utf-8"), code=True):
        if match := _HEADING.match(line):
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def link_problems(path: Path, root: Path = REPO) -> list[str]:
    """Return one line per link in a markdown file that does not resolve inside `root`."""
    problems = []
    where = path.relative_to(root)
    for number, line in _prose(path.read_text(encoding="utf-8")):
        targets = _INLINE.findall(line) + _REFERENCE.findall(line)
        targets += _AUTOLINK.findall(line)
        for target in filter(None, targets):  # `[x]()` links to the page itself
            if _SCHEME.match(target):
                problems.append(f"{where}:{number}: {target} points outside the repository")
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.is_relative_to(root.resolve()):
                problems.append(f"{where}:{number}: {target} points outside the repository")
            elif not dest.exists():
                problems.append(f"{where}:{number}: {target}: no such file")
            elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                problems.append(f"{where}:{number}: {target}: no heading #{anchor}")
        if path.name not in CITING:
            rest = _AUTOLINK.sub("", _REFERENCE.sub("", _INLINE.sub("", line)))
            bare = _BARE_URL.findall(rest)
            problems += [f"{where}:{number}: {url} points outside the repository" for url in bare]
    return problems


def readme_problems(text: str) -> list[str]:
    """Return what is wrong with the README's length and its first lines."""
    lines = text.splitlines()
    problems = []
    if len(lines) > README_MAX_LINES:
        problems.append(f"README.md has {len(lines)} lines; keep it to {README_MAX_LINES}")
    top = "\n".join(lines[:README_TOP])
    for command in ("make demo", "make test"):
        if command not in top:
            problems.append(f"README.md: `{command}` is not in its first {README_TOP} lines")
    return problems


def _config_doc() -> ModuleType:
    """Import scripts/config_doc.py (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("config_doc", REPO / "scripts" / "config_doc.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["config_doc"] = module
    spec.loader.exec_module(module)
    return module


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    assert readme_problems(README.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves_inside_the_repository(path: Path) -> None:
    assert link_problems(path) == []


def test_config_doc_is_current() -> None:
    config_doc = _config_doc()
    current = config_doc.TARGET.read_text(encoding="utf-8")
    assert current == config_doc.render(), "run `python scripts/config_doc.py`"


# The checks above can fail.


def test_readme_check_sees_a_long_readme_and_missing_commands() -> None:
    good = "make demo\nmake test\n"
    assert readme_problems(good) == []
    assert readme_problems(good + "x\n" * 199) == ["README.md has 201 lines; keep it to 200"]
    late = "\n" * README_TOP + good
    assert [p.split(":")[1] for p in readme_problems(late)] == [
        " `make demo` is not in its first 40 lines",
        " `make test` is not in its first 40 lines",
    ]


def test_link_check_sees_every_kind_of_bad_link(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "OTHER.md").write_text("# Other\n\n## The §2 part: `a_b` (c)\n")
    page = tmp_path / "docs" / "PAGE.md"
    page.write_text(
        "# Page\n"
        "[ok](OTHER.md) [ok](OTHER.md#the-2-part-a_b-c) [ok](#page) [ok](../docs/OTHER.md)\n"
        "[gone](MISSING.md) [no heading](OTHER.md#nowhere) [here](#nowhere)\n"
        "[web](https://example.com) <https://example.com/a> see https://example.com/b\n"
        "[up](../../outside.md)\n"
        "[ref]: http://example.com/c\n"
        "`https://example.com/in-code` and [code](`x`)\n"
        "```\n[fenced](MISSING.md) https://example.com/fenced\n```\n"
    )
    found = [p.split(": ", 1)[1] for p in link_problems(page, tmp_path)]
    assert found == [
        "MISSING.md: no such file",
        "OTHER.md#nowhere: no heading #nowhere",
        "#nowhere: no heading #nowhere",
        "https://example.com points outside the repository",
        "https://example.com/a points outside the repository",
        "https://example.com/b points outside the repository",
        "../../outside.md points outside the repository",
        "http://example.com/c points outside the repository",
    ]
    cited = page.with_name("PROVIDERS.md")
    cited.write_text("source: https://example.com/plain\n[linked](https://example.com/d)\n")
    assert [p.split(": ", 1)[1] for p in link_problems(cited, tmp_path)] == [
        "https://example.com/d points outside the repository"
    ]


def test_config_check_sees_a_knob_added_without_regenerating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config_doc = _config_doc()
    extra = replace(KNOBS[0], name="warp", env="DRVD_WARP", help="a knob nobody documented")
    assert "DRVD_WARP" in config_doc.render((*KNOBS, extra))
    assert config_doc.render((*KNOBS, extra)) != config_doc.render()
    target = tmp_path / "CONFIG.md"
    monkeypatch.setattr(config_doc, "TARGET", target)
    monkeypatch.setattr(config_doc, "REPO", tmp_path)
    target.write_text(config_doc.render((*KNOBS, extra)), encoding="utf-8")
    assert config_doc.main(["--check"]) == 1
    assert capsys.readouterr().err.count("\n") == 1  # one line
    assert config_doc.main([]) == 0
    assert config_doc.main(["--check"]) == 0
    assert target.read_text(encoding="utf-8") == config_doc.render()
