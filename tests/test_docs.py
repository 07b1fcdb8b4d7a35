"""The README's promises that a machine can check."""

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
