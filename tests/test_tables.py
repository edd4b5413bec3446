"""The one plain-text table renderer behind the summary, the CLI and the failure tables."""

from __future__ import annotations

import pytest

from pytest_llmperf.tables import render_table


def test_a_table_is_a_header_a_rule_and_rows_with_numbers_right_aligned() -> None:
    text = render_table(
        ("test", "engine", "out tok/s", "change", "verdict"),
        [
            ("t.py::test_decode[batch1]", "hf", "1,234", "+12.5%", "improved"),
            ("t.py::test_x", "vllm-server", "5.6", "-", "REGRESSED"),
        ],
    )
    assert text.splitlines() == [
        "test                       engine       out tok/s  change  verdict",
        "-------------------------  -----------  ---------  ------  ---------",
        "t.py::test_decode[batch1]  hf               1,234  +12.5%  improved",
        "t.py::test_x               vllm-server        5.6       -  REGRESSED",
    ]


@pytest.mark.parametrize(
    ("cells", "right"),
    [
        (["1", "-2.5", "3e+12", "+0.0%", "1,024", "-", "inf"], True),
        (["-", "-"], False),  # nothing but "none"
        (["105.7", "not measured"], False),
        (["ok (3)", "MISS"], False),
        (["2024-05-01T10:00:00"], False),
    ],
)
def test_columns_of_numbers_are_right_aligned(cells: list[str], right: bool) -> None:
    width = max(len(c) for c in cells)
    lines = render_table(("n" * width,), [(c,) for c in cells]).splitlines()
    shortest = min(cells, key=len)
    row = lines[2 + cells.index(shortest)]
    assert row == (shortest.rjust(width) if right else shortest)


def test_no_rows_and_no_trailing_spaces() -> None:
    assert render_table(("metric", "value"), []) == "metric  value\n------  -----"
    text = render_table(("a", "b"), [("long cell", "x")])
    assert all(line == line.rstrip() for line in text.splitlines())


def test_a_row_of_the_wrong_length_is_an_error() -> None:
    with pytest.raises(ValueError, match="table row has 1 cells, the header 2"):
        render_table(("a", "b"), [("only one",)])
