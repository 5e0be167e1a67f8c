"""Read a built book as a reviewer would and list its reader defects.

``python -m reprolib.audit _build/html`` (or :func:`audit`) checks every page for: visible code
cells longer than :data:`MAX_CODE_LINES` lines (cells hidden with ``hide-input`` or
``remove-input`` do not count), a cell's bare return value shown as plain text (a ``repr`` such as
``PosixPath(...)`` instead of a table, figure or sentence) or as an uncaptioned DataFrame, a Python traceback, an absolute path of the build machine, a
table cell that reads ``nan``/``None``, the same table shown twice on one page, a table captioned
as a figure; and it counts the claims ledger's rows that carry a verdict. Exit status 0 only when
there is no defect and the ledger has at least ``--ledger-min`` rows (default 40).
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

MAX_CODE_LINES = 15
PATH_RE = re.compile(r"(?<![\w.])(/tmp/|/work/|/home/|/root/|/Users/|/var/folders/|[A-Z]:\\)")
VERDICT_RE = re.compile(r"\b(reproduced|consistent|differs|not reproducible offline|phantoms only|"
                        r"not learned at this n|not addressed)\b")
MISSING_CELLS = {"nan", "NaN", "None", "<NA>", "NaT"}
SKIP_PAGES = {"genindex.html", "search.html", "py-modindex.html"}


@dataclass
class Report:
    """Defects found, by kind, each as ``"page: detail"``; ledger rows with a verdict."""

    defects: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in (
        "long_code", "raw_value", "traceback", "machine_path", "missing_cells", "duplicate_tables", "table_as_figure")})
    ledger_rows: int = 0
    pages: int = 0

    @property
    def n_defects(self) -> int:
        return sum(len(v) for v in self.defects.values())

    def summary(self) -> str:
        lines = [f"{kind}: {len(found)}" + (f"  e.g. {found[:3]}" if found else "")
                 for kind, found in self.defects.items()]
        lines.append(f"pages {self.pages}; reader defects {self.n_defects}; ledger rows {self.ledger_rows}")
        return "\n".join(lines)


def _pages(html_dir: Path) -> list[Path]:
    return sorted(p for p in html_dir.rglob("*.html")
                  if not ({"_static", "_sources", "_images"} & set(p.relative_to(html_dir).parts))
                  and p.name not in SKIP_PAGES)


def audit_page(html: str, name: str, report: Report) -> None:
    """Add the defects of one page (its HTML text) to ``report``."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    main = soup.find("main") or soup.find("article") or soup
    for cell in main.select("div.cell"):
        classes = set(cell.get("class", []))
        if classes & {"tag_hide-input", "tag_remove-input", "hide-input", "remove-input"}:
            continue
        source = cell.select_one("div.cell_input")
        if source is None or source.find_parent("details") is not None:
            continue
        n = sum(1 for line in source.get_text().splitlines() if line.strip())  # the <pre>'s own lines
        if n > MAX_CODE_LINES:
            report.defects["long_code"].append(f"{name}: {n} lines")
    for out in main.select("div.output.text_plain"):
        report.defects["raw_value"].append(f"{name}: {out.get_text(' ', strip=True)[:60]!r}")
    for out in main.select("div.output.text_html"):
        if out.find("table", class_="dataframe") is not None:  # a DataFrame returned by a cell, uncaptioned
            report.defects["raw_value"].append(f"{name}: a DataFrame shown as a cell's return value")
    text = main.get_text(" ")
    if "Traceback (most recent call last)" in text:
        report.defects["traceback"].append(name)
    m = PATH_RE.search(text)
    if m:
        report.defects["machine_path"].append(f"{name}: …{text[max(0, m.start() - 25):m.end() + 25]!r}")
    seen = set()
    for table in main.find_all("table"):
        if any(td.get_text(strip=True) in MISSING_CELLS for td in table.find_all("td")):
            report.defects["missing_cells"].append(name)
        signature = re.sub(r"\s+", " ", table.get_text(" ", strip=True))
        if len(signature) > 40 and signature in seen:
            report.defects["duplicate_tables"].append(name)
        seen.add(signature)
        caption = table.find("caption")
        if caption is not None and caption.get_text(strip=True).startswith("Fig"):
            report.defects["table_as_figure"].append(name)
    if re.search(r"ledger|claims", name, re.I):
        rows = sum(1 for t in main.find_all("table") for tr in t.find_all("tr") if VERDICT_RE.search(tr.get_text(" ")))
        report.ledger_rows = max(report.ledger_rows, rows)


def audit(html_dir: str | Path) -> Report:
    """Audit every page of a built book (``_build/html``)."""
    html_dir = Path(html_dir)
    report = Report()
    for page in _pages(html_dir):
        report.pages += 1
        audit_page(page.read_text(encoding="utf-8", errors="replace"), str(page.relative_to(html_dir)), report)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("html_dir", type=Path)
    ap.add_argument("--ledger-min", type=int, default=40)
    args = ap.parse_args(argv)
    report = audit(args.html_dir)
    print(report.summary())
    return 0 if report.n_defects == 0 and report.ledger_rows >= args.ledger_min else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
