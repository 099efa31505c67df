"""The documentation runs: its snippets print what it says, and the core docstrings pass.

Docs convention (see ``docs/natural-gradient.md``): every ```` ```python ````
block is followed by a line ``Output:`` and a ```` ```text ```` block holding
exactly what the snippet prints.  The blocks of one file run in order in one
namespace.  Only the files in :data:`DOC_FILES` are checked; add a file there
once it follows the convention.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

DOC_FILES = ["docs/natural-gradient.md", "docs/optim.md", "docs/vi.md"]
"""Markdown files whose python snippets are run and compared with their Output blocks."""

DOCTEST_MODULES = [
    "natgrad.distributions.base",
    "natgrad.distributions.bernoulli",
    "natgrad.distributions.categorical",
    "natgrad.distributions.gaussian",
    "natgrad.linalg.cg",
    "natgrad.params",
    "natgrad.fisher.api",
    "natgrad.utils.checkpoint",
    "natgrad.fisher.base",
    "natgrad.fisher.ggn",
    "natgrad.cli.demo.maths",
    "natgrad.mlp",
    "natgrad.rl",
    "natgrad.rl.algos.trpo",
    "natgrad.rl.config.algo",
    "natgrad.rl.config.policy",
    "natgrad.rl.config.rollout",
    "natgrad.rl.config.run",
]
"""Modules whose ``>>>`` examples are run by doctest."""

KNOWN_DOCTEST_FAILURES: dict[str, str] = {}
"""Doctests that fail in files this test does not own: ``name -> why``, shown as xfail."""


@dataclass(frozen=True)
class Snippet:
    """One python block of a doc and the output written under it."""

    code: str
    expected: str
    line: int  # 1-based line of the ```python fence


def _block(lines: list[str], start: int, path: str) -> tuple[str, int]:
    """The text between the fence at ``start`` and the closing fence; returns (text, next line)."""
    for end in range(start + 1, len(lines)):
        if lines[end].strip() == "```":
            return "".join(lines[start + 1 : end]), end + 1
    raise ValueError(f"{path}:{start + 1}: code block is never closed")


def parse_snippets(text: str, path: str = "<doc>") -> list[Snippet]:
    """Every ```` ```python ```` block with its ``Output:`` ```` ```text ```` block.

    Raises:
        ValueError: a python block without an Output block right after it.
    """
    lines = text.splitlines(keepends=True)
    snippets, i = [], 0
    while i < len(lines):
        if lines[i].strip() != "```python":
            i += 1
            continue
        fence = i
        code, i = _block(lines, i, path)
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines) or lines[i].strip() != "Output:":
            raise ValueError(
                f"{path}:{fence + 1}: python block is not followed by 'Output:' and a "
                "```text block; write what it prints under it"
            )
        i += 1
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines) or lines[i].strip() != "```text":
            raise ValueError(f"{path}:{fence + 1}: 'Output:' must be followed by a ```text block")
        expected, i = _block(lines, i, path)
        snippets.append(Snippet(code, expected, fence + 1))
    return snippets


def run_snippets(snippets: list[Snippet], path: str) -> list[str]:
    """Run the snippets in one namespace; return what each printed."""
    namespace: dict[str, object] = {"__name__": "__doc_snippets__"}
    outputs = []
    dtype = torch.get_default_dtype()
    try:
        for s in snippets:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                # Line numbers in tracebacks point into the markdown file.
                code = compile("\n" * s.line + s.code, path, "exec")
                exec(code, namespace)
            outputs.append(buf.getvalue())
    finally:
        torch.set_default_dtype(dtype)
    return outputs


@pytest.mark.parametrize("doc", DOC_FILES)
def test_doc_snippets_print_their_output(doc: str) -> None:
    path = ROOT / doc
    snippets = parse_snippets(path.read_text(encoding="utf-8"), doc)
    assert snippets, f"{doc} has no python snippets"
    outputs = run_snippets(snippets, doc)
    mismatches = [
        f"{doc}:{s.line}: snippet {k + 1} printed\n{got}--- but the doc says ---\n{s.expected}"
        for k, (s, got) in enumerate(zip(snippets, outputs, strict=True))
        if got != s.expected
    ]
    assert not mismatches, "\n\n".join(mismatches)
    assert all(s.expected.strip() for s in snippets), "every snippet must print something"


def test_parse_snippets_requires_output_blocks() -> None:
    text = "```python\nprint(1)\n```\n\nOutput:\n\n```text\n1\n```\n"
    assert parse_snippets(text) == [Snippet("print(1)\n", "1\n", 1)]
    with pytest.raises(ValueError, match="not followed by 'Output:'"):
        parse_snippets("```python\nprint(1)\n```\n\nsome prose\n")
    with pytest.raises(ValueError, match="never closed"):
        parse_snippets("```python\nprint(1)\n")


def test_snippet_mismatch_is_detected() -> None:
    snippets = parse_snippets("```python\nprint(2)\n```\nOutput:\n```text\n1\n```\n")
    assert run_snippets(snippets, "<doc>") == ["2\n"]
    assert snippets[0].expected == "1\n"


def _doctests() -> list[pytest.param]:
    finder = doctest.DocTestFinder()
    params = []
    for name in DOCTEST_MODULES:
        module = importlib.import_module(name)
        for test in finder.find(module):
            if not test.examples:
                continue
            marks = []
            if test.name in KNOWN_DOCTEST_FAILURES:
                marks.append(pytest.mark.xfail(reason=KNOWN_DOCTEST_FAILURES[test.name]))
            params.append(pytest.param(test, id=test.name, marks=marks))
    return params


DOCTESTS = _doctests()


def test_doctest_modules_have_examples() -> None:
    names = {t.values[0].name for t in DOCTESTS}
    assert names, "no doctest examples found"
    assert set(KNOWN_DOCTEST_FAILURES) <= names, "a known failure no longer exists; remove it"


@pytest.mark.parametrize("test", DOCTESTS)
def test_docstring_examples(test: doctest.DocTest) -> None:
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    out = io.StringIO()
    result = runner.run(test, out=out.write, clear_globs=False)
    assert result.failed == 0, out.getvalue()


def test_readme_python_blocks_run():
    """The README's library example runs as written (it prints nothing to compare)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "the README has a python example"
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["result"].iterations > 0
