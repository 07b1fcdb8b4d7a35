"""The README's promises that a machine can check."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    blocks = [lines[i + 1] for i, line in enumerate(lines[:40]) if line.strip() == "```sh"]
    return blocks[:2]


def test_readme_starts_with_the_two_setup_commands() -> None:
    run, test = _commands()
    assert run.endswith("sensorlake up")
    assert "pytest" in test
    assert "ruff check" in test
    assert "mypy" in test


def test_ci_runs_exactly_the_readme_test_command() -> None:
    _, test = _commands()
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_docs_linked_from_the_readme_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for doc in ("docs/configuration.md", "docs/operations.md", "BENCHMARKS.md"):
        assert f"({doc})" in readme
        assert (ROOT / doc).exists(), doc


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_every_relative_link_in_the_docs_resolves_inside_the_repository() -> None:
    pages = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.is_relative_to(ROOT.resolve()):
                broken.append(f"{page.name}: {target} points outside the repository")
            elif not resolved.exists():
                broken.append(f"{page.name}: {target} does not exist")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(
                    resolved.read_text()):
                broken.append(f"{page.name}: {target} names no heading of {resolved.name}")
    assert not broken, broken
