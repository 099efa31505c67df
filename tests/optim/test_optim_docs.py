"""docs/optim.md prints what it says, and the digits example runs in under 30 s."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch
from test_docs import parse_snippets, run_snippets  # the project's doc-snippet convention

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_threads():
    """The doc and the example pin torch to one thread; give the session its setting back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_optim_doc_snippets_print_their_output():
    pytest.importorskip("sklearn")
    doc = "docs/optim.md"
    snippets = parse_snippets((ROOT / doc).read_text(encoding="utf-8"), doc)
    assert len(snippets) >= 8
    outputs = run_snippets(snippets, doc)
    for k, (s, got) in enumerate(zip(snippets, outputs, strict=True)):
        assert s.expected.strip(), f"{doc}:{s.line}: snippet {k + 1} prints nothing"
        assert got == s.expected, f"{doc}:{s.line}: snippet {k + 1} printed\n{got}"


def test_digits_example_runs_quickly(capsys):
    pytest.importorskip("sklearn")
    path = ROOT / "examples" / "digits_natural_gradient.py"
    spec = importlib.util.spec_from_file_location("digits_natural_gradient", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    start = time.perf_counter()
    results = module.main()
    assert time.perf_counter() - start < 30
    assert set(results) == {"ggn", "kfac", "adam"}
    assert max(results["ggn"]) > 0.94 and max(results["kfac"]) > 0.94
    assert "kfac  test accuracy by epoch" in capsys.readouterr().out
