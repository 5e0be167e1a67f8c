"""The reader-defect audit of a built book, on hand-written pages."""
from __future__ import annotations

from reprolib import audit

# an absolute path as a build machine would print it (assembled, so that no such path is in the source)
BUILD_MACHINE_PATH = "/".join(["", "home", "builder", "covid-repro", "results"])
LONG = "\n".join(f"x{i} = {i}" for i in range(16))


def page(body: str) -> str:
    return f"<html><body><main>{body}</main></body></html>"


def cell(source: str, tags: str = "") -> str:
    return (f'<div class="cell docutils container {tags}"><div class="cell_input docutils container">'
            f"<pre>{source}</pre></div></div>")


def table(rows: list[list[str]], caption: str | None = None) -> str:
    cap = f"<caption>{caption}</caption>" if caption else ""
    return "<table>" + cap + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</table>"


def run(html: str, name: str = "generated/04.html") -> audit.Report:
    report = audit.Report()
    audit.audit_page(html, name, report)
    return report


def test_a_clean_page_has_no_defect():
    r = run(page(cell("x = 1") + cell(LONG, "tag_hide-input") + cell(LONG, "tag_remove-input")
                 + table([["a", "1.000"], ["b", "–"]], "Table 1 A caption")))
    assert r.n_defects == 0, r.summary()


def test_each_defect_is_found():
    long_table = [["alpha beta gamma delta", "epsilon zeta eta theta iota"]]
    raw = '<div class="cell_output docutils container"><div class="output text_plain highlight-myst-ansi">' \
          "<pre>[0.5, 0.25]</pre></div></div>" \
          '<div class="cell_output docutils container"><div class="output text_html"><div>' \
          '<table border="1" class="dataframe"><tr><td>1</td></tr></table></div></div></div>'
    r = run(page(cell(LONG) + raw + "<p>Traceback (most recent call last):</p>"
                 + f"<p>data in {BUILD_MACHINE_PATH}</p>"
                 + table([["a", "nan"]]) + table(long_table) + table(long_table) + table([["x", "1"]], "Fig. 3 t")))
    assert {k: len(v) for k, v in r.defects.items()} == {
        "long_code": 1, "raw_value": 2, "traceback": 1, "machine_path": 1, "missing_cells": 1, "duplicate_tables": 1,
        "table_as_figure": 1}


def test_ledger_rows_are_counted_on_the_ledger_page_only(tmp_path):
    rows = [["ct-auc", "reproduced"], ["ct-acc", "not learned at this n"], ["x", "something else"]]
    assert run(page(table(rows)), "generated/10_claims_ledger.html").ledger_rows == 2
    assert run(page(table(rows)), "generated/04_decovnet.html").ledger_rows == 0
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "x.html").write_text(page("<p>/tmp/ignored</p>"))
    (tmp_path / "10_claims_ledger.html").write_text(page(table(rows)))
    report = audit.audit(tmp_path)
    assert report.pages == 1 and report.ledger_rows == 2 and report.n_defects == 0
    assert audit.main([str(tmp_path), "--ledger-min", "3"]) == 1
    assert audit.main([str(tmp_path), "--ledger-min", "2"]) == 0
