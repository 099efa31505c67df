"""The example in docs/vi.md runs and prints what the document says it prints."""

import contextlib
import io
import math
import re
from pathlib import Path

import pytest
import torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "vi.md"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def doc_example() -> tuple[str, str]:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"```python\n(.*?)```\s*\nprints\s*\n+```text\n(.*?)```", text, re.S)
    assert match, "docs/vi.md must contain a ```python block followed by 'prints' and ```text"
    return match.group(1), match.group(2)


def test_doc_example_output_matches() -> None:
    code, expected = doc_example()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, str(DOC), "exec"), {"__name__": "__vi_doc__"})
    got_lines = buf.getvalue().strip().splitlines()
    want_lines = expected.strip().splitlines()
    assert len(got_lines) == len(want_lines), buf.getvalue()
    for got, want in zip(got_lines, want_lines, strict=True):
        # text must match exactly; numbers to 1% (BLAS differences may move Adam's count)
        assert NUMBER.sub("#", got) == NUMBER.sub("#", want), (got, want)
        for a, b in zip(NUMBER.findall(got), NUMBER.findall(want), strict=True):
            assert math.isclose(float(a), float(b), rel_tol=1e-2, abs_tol=1e-3), (got, want)
