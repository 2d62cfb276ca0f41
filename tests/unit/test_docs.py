"""The docs: docs/configuration.md is what tools/settings_doc.py makes of the settings table,
the README stays short, every relative link resolves, and the README links every doc."""

import re
from pathlib import Path

from tools.settings_doc import OUTPUT, render

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 250

# [text](target) and [text]: target; images too. Code spans are removed first.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|^\s*\[[^\]]+\]:\s*(\S+)", re.M)


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#")]


def test_configuration_doc_is_generated_from_the_settings():
    assert OUTPUT.read_text() == render(), (
        "docs/configuration.md is stale: run `.venv/bin/python tools/settings_doc.py` "
        "(`--check` shows the diff)")


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/ (at most {README_MAX_LINES})"


def test_every_relative_link_points_to_a_file():
    broken = []
    for path in markdown_files():
        for target in relative_links(path):
            file = target.split("#", 1)[0]
            if not (path.parent / file).exists():
                broken.append(f"{path.relative_to(REPO)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_links_every_doc():
    linked = {(REPO / target.split("#", 1)[0]).resolve() for target in relative_links(README)}
    missing = [str(doc.relative_to(REPO)) for doc in sorted(DOCS.glob("*.md")) if doc.resolve() not in linked]
    assert not missing, f"README.md links none of: {', '.join(missing)}"
