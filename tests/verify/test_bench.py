"""bench/verifier.py runs and prints its table (tiny sizes: a smoke test, not a benchmark)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "verifier.py"


def test_measure_returns_a_markdown_table() -> None:
    """measure() gives one row per series, floor first at 1.00x."""
    spec = importlib.util.spec_from_file_location("bench_verifier", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    table = module.measure(tokens=20, rounds=3)
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 5  # header and four series
    assert rows[1].startswith("| floor") and rows[1].endswith("| 1.00x |")
    assert "Verifier`, static key" in table and "JWKS (warm)" in table
