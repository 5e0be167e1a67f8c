"""The claims ledger: every numeric claim of the two papers, with a verdict computed from evidence.

The registry (``claims.yml`` beside this module) is data: one row per claim with its source, the
printed value and the results key that holds this build's evidence. :func:`ledger` looks the
evidence up in a build's results (``results/<profile>/<chapter>.json``) and applies the rules
below; nothing in the registry states a verdict.

Verdict rules, by the row's ``check``:

``released``, ``arithmetic``
    The value is re-derived — from the authors' released per-volume outputs (``released``) or from
    the paper's own printed numbers (``arithmetic``, the row's ``formula`` over its ``inputs``).
    **reproduced** when it equals the printed value to the printed precision (within half a unit
    of the last printed digit), else **differs**; **not addressed** when the build has no value.
``model``
    A model trained in this build. **not addressed** without a value; **phantoms only** in the
    synthetic profile; **not learned at this n** when the model's ``learned`` flag is false (its
    held-out AUC interval contains 0.5 or its held-out scores barely spread: see
    :func:`reprolib.evaluate.learned`); otherwise **consistent** when the 95 % interval contains the
    printed value (for a claimed direction, when the interval reaches the claimed side of 0) and
    **differs** when it excludes it.
``setting``
    A constant of the method (size, rate, count of epochs): **reproduced** when this build uses
    the printed value, else **differs** (the row's note says why).
``count``
    Images or volumes of a dataset: **reproduced** when this build holds as many, **not
    reproducible offline** when it holds fewer or none (outside the ``paper`` profile: a public
    subset, the full dataset is not in the offline mirror), **differs** when it holds more.
``requires``
    Needs what this build cannot have: a GPU (``gpu``: none was used), ImageNet weights
    (``imagenet``: the build trained from random initialisation) or data never released
    (``private_data``). **not reproducible offline** while missing; with the resource present the
    value is compared as a setting (or, with ``direction: at_most``, consistent when not larger).
``absent``, ``background``
    **not addressed**: nothing in this build measures it (``absent``), or a figure the paper
    quotes from other work, outside the method (``background``).
"""
from __future__ import annotations

import ast
import json
import math
import operator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import config
from .errors import ConfigError

VERDICTS = ("reproduced", "consistent", "differs", "not reproducible offline", "phantoms only",
            "not learned at this n", "not addressed")
CHECKS = ("released", "arithmetic", "model", "setting", "count", "requires", "absent", "background")
PAPERS = {"ct": "DeCoVNet, chest CT (seed paper 000: Zhang, Chu & Zhao 2020, after Wang et al., IEEE TMI 2020)",
          "cxr": "ResNet-50, chest X-ray (seed paper 003: Gueguim Kana et al. 2020)"}
NEEDS = {"gpu": "a GPU", "imagenet": "ImageNet weights", "private_data": "data that were never released"}
REQUIRED = ("id", "paper", "source", "where", "claim", "quoted", "chapter", "check")


@dataclass(frozen=True)
class Claim:
    """One registry row (see the comments at the top of ``claims.yml``)."""

    id: str
    paper: str
    source: str
    where: str
    claim: str
    quoted: Any
    chapter: str
    check: str
    value: str | None = None
    ci: tuple[str, str] | None = None
    n: str | None = None
    learned: str | None = None
    formula: str | None = None
    inputs: dict[str, float] = field(default_factory=dict)
    needs: str | None = None
    direction: str | None = None
    unit: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Verdict:
    """A claim's evidence in one build and the verdict the rules give it."""

    claim: Claim
    verdict: str
    why: str
    value: Any = None          # re-derived or this build's value
    ci: tuple[float, float] | None = None
    n: int | None = None


def registry_path() -> Path:
    return Path(str(resources.files("reprolib") / "claims.yml"))


def load_registry(path: str | Path | None = None) -> list[Claim]:
    """Read and check the registry; raises :class:`ConfigError` naming the file and the row."""
    path = Path(path) if path else registry_path()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(path, f"cannot read the claims registry: {exc}") from None
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ConfigError(path, "the claims registry needs a non-empty list 'rows'")
    claims, seen = [], set()
    for i, row in enumerate(rows):
        where = f"row {i + 1} ({row.get('id', '?') if isinstance(row, dict) else '?'})"
        if not isinstance(row, dict):
            raise ConfigError(path, f"{where}: a row must be a mapping")
        missing = [k for k in REQUIRED if k not in row]
        unknown = set(row) - set(Claim.__dataclass_fields__)
        if missing or unknown:
            raise ConfigError(path, f"{where}: missing {missing} / unknown fields {sorted(unknown)}")
        if row["id"] in seen:
            raise ConfigError(path, f"{where}: duplicate id")
        seen.add(row["id"])
        if row["check"] not in CHECKS or row["paper"] not in PAPERS:
            raise ConfigError(path, f"{where}: check must be one of {CHECKS}, paper one of {sorted(PAPERS)}")
        if row["check"] in ("released", "model", "setting", "count") and not row.get("value"):
            raise ConfigError(path, f"{where}: check {row['check']!r} needs a results key in 'value'")
        if row["check"] == "arithmetic" and not (row.get("formula") and row.get("inputs")):
            raise ConfigError(path, f"{where}: an arithmetic check needs 'formula' and 'inputs'")
        if row["check"] == "requires" and row.get("needs") not in NEEDS:
            raise ConfigError(path, f"{where}: 'needs' must be one of {sorted(NEEDS)}")
        if row["check"] == "model" and not row.get("learned"):
            raise ConfigError(path, f"{where}: a model check needs the results key of a 'learned' flag")
        ci = tuple(row["ci"]) if row.get("ci") else None
        claims.append(Claim(**{**row, "ci": ci, "inputs": dict(row.get("inputs") or {})}))
    return claims


# --------------------------------------------------------------------------- arithmetic
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate_formula(formula: str, inputs: dict[str, float]) -> float:
    """``formula`` (names, numbers, + - * / and parentheses only) over ``inputs``."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in inputs:
            return float(inputs[node.id])
        raise ValueError(f"formula {formula!r}: {ast.dump(node)[:40]} is not allowed")

    return ev(ast.parse(formula, mode="eval"))


def printed_tolerance(quoted: float) -> float:
    """Half a unit of the last digit ``quoted`` was printed with (0.959 -> 0.0005, 13 -> 0.5)."""
    if isinstance(quoted, int):
        return 0.5
    text = repr(float(quoted))
    if "e" in text:
        mantissa, exp = text.split("e")
        decimals = len(mantissa.split(".")[1].rstrip("0")) if "." in mantissa else 0
        return 0.5 * 10.0 ** (int(exp) - decimals)
    decimals = len(text.split(".")[1].rstrip("0"))
    return 0.5 * 10.0 ** -decimals


# --------------------------------------------------------------------------- evidence
def load_results(results_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``{chapter: values}`` of every results file of one build (timings left out)."""
    out = {}
    for p in sorted(Path(results_dir).glob("*.json")):
        out[p.stem] = json.loads(p.read_text())["values"]
    return out


def _lookup(results: dict[str, dict], chapter: str, key: str | None) -> Any:
    if not key:
        return None
    stem, _, name = key.rpartition(".") if "." in key else (chapter, "", key)
    value = results.get(stem, {}).get(name)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(a: Any, b: Any) -> bool:
    if _num(a) and _num(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a).strip().lower() == str(b).strip().lower()


def fmt(value: Any, unit: str | None = None) -> str:
    """A value as the ledger prints it (percentages as such, large integers with separators)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit == "%" and _num(value):
        return f"{100 * value:.1f} %"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 100):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.3f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.1e}"
    return str(value)


def fmt_printed(value: Any, unit: str | None = None) -> str:
    """A printed (quoted) value with exactly the digits the paper printed."""
    if unit == "%" and _num(value):
        return f"{round(100 * value, 6):g} %"
    if isinstance(value, float) and not value.is_integer():
        return repr(value) if abs(value) >= 1e-3 else f"{value:.0e}"
    return fmt(value, unit)


def judge(c: Claim, results: dict[str, dict], profile: str) -> Verdict:
    """The verdict of claim ``c`` on one build's ``results`` (see the module docstring)."""
    value = _lookup(results, c.chapter, c.value)
    n = _lookup(results, c.chapter, c.n)
    ci = None
    if c.ci:
        lo, hi = (_lookup(results, c.chapter, k) for k in c.ci)
        ci = (lo, hi) if _num(lo) and _num(hi) else None
    V = lambda verdict, why, v=value: Verdict(c, verdict, why, v, ci, n)  # noqa: E731

    if c.check in ("released", "arithmetic"):
        if c.check == "arithmetic":
            value = evaluate_formula(c.formula, c.inputs)
        if not _num(value):
            return V("not addressed", "no re-derived value in this build")
        tol = printed_tolerance(c.quoted)
        gap = abs(float(value) - float(c.quoted))
        rel = "≤" if gap <= tol + 1e-12 else ">"
        what = "from the released outputs" if c.check == "released" else f"as {c.formula}"
        why = (f"re-derived {what}: {float(value):.6g} against the printed {float(c.quoted):.6g}; the gap "
               f"{gap:.2g} is {'within' if rel == '≤' else 'beyond'} the printed precision (±{tol:.2g})")
        return V("reproduced" if rel == "≤" else "differs", why, value)
    if c.check == "model":
        if value is None:
            return V("not addressed", "this build publishes no such value")
        if profile == "synthetic":
            return V("phantoms only", "computed on procedural phantoms (synthetic profile)")
        if config.schedule():
            return V("not learned at this n", f"the {config.schedule()} schedule trains for minutes on a few "
                                              f"items (n = {fmt(n)}): it tests the code path")
        learned = _lookup(results, c.chapter, c.learned)
        if learned is not True:
            reason = _lookup(results, c.chapter, c.learned + "_reason") or "the model did not learn"
            return V("not learned at this n", f"{reason} (n = {fmt(n)})")
        if ci is None:
            return V("not addressed", "no 95 % interval published for this value")
        if c.direction == "positive":
            ok = ci[1] > 0
            return V("consistent" if ok else "differs",
                     f"95 % CI {fmt(ci[0])} to {fmt(ci[1])} {'reaches' if ok else 'stays below'} the claimed side of 0")
        inside = ci[0] - 1e-12 <= float(c.quoted) <= ci[1] + 1e-12
        return V("consistent" if inside else "differs",
                 f"95 % CI {fmt(ci[0], c.unit)}–{fmt(ci[1], c.unit)} {'contains' if inside else 'excludes'} "
                 f"{fmt(c.quoted, c.unit)} (n = {fmt(n)})")
    if c.check == "setting":
        if value is None:
            return V("not addressed", "this build publishes no such setting")
        same = _same(value, c.quoted)
        return V("reproduced" if same else "differs",
                 "this build uses the printed value" if same else
                 f"this build uses {fmt(value, c.unit)}" + (f": {c.note}" if c.note else ""))
    if c.check == "count":
        subset = profile != "paper" or config.schedule() is not None  # a public subset, or a schedule's
        if not _num(value):
            if profile != "paper":
                return V("not reproducible offline", f"the dataset is not part of the {profile} profile")
            return V("not addressed", "this build publishes no such count")
        if int(value) == int(c.quoted):
            return V("reproduced", "this build holds as many")
        if int(value) < int(c.quoted) and subset:
            return V("not reproducible offline", f"this build holds {fmt(value)} of them: the {profile} profile "
                     + (f"under its {config.schedule()} schedule uses a few items" if config.schedule()
                        else "uses a public subset"))
        return V("differs", f"this build holds {fmt(value)}")
    if c.check == "requires":
        present = {"gpu": _num(value) or (isinstance(value, str) and value not in ("", "none")),
                   "imagenet": value == "imagenet", "private_data": False}[c.needs]
        if not present:
            shown = f"; this build: {fmt(value)}" if value is not None and c.needs != "imagenet" else ""
            return V("not reproducible offline", f"needs {NEEDS[c.needs]}{shown}" + (f" ({c.note})" if c.note else ""))
        if c.direction == "at_most" and _num(value):
            ok = float(value) <= float(c.quoted)
            return V("consistent" if ok else "differs", f"this build: {fmt(value)} on its GPU")
        same = _same(value, c.quoted)
        return V("reproduced" if same else "differs", f"this build: {fmt(value)}")
    if c.check == "absent":
        return V("not addressed", c.note or "nothing in this build measures it")
    return V("not addressed", "background figure from other work, outside the reproduced method")


def ledger(results: dict[str, dict], profile: str, claims: list[Claim] | None = None) -> list[Verdict]:
    """Every registry row judged on one build's results."""
    return [judge(c, results, profile) for c in (claims or load_registry())]


def verdict_counts(verdicts: list[Verdict]) -> dict[str, int]:
    """Rows per verdict, in :data:`VERDICTS` order (zeros included)."""
    return {v: sum(1 for x in verdicts if x.verdict == v) for v in VERDICTS}


def as_rows(verdicts: list[Verdict]) -> list[dict[str, str]]:
    """Display rows: claim, source, printed value, re-derived value, this build's value, verdict, why."""
    rows = []
    for v in verdicts:
        c = v.claim
        shown = fmt(v.value, c.unit) if v.value is not None else "–"
        if v.ci is not None:
            shown += f" ({fmt(v.ci[0], c.unit)}–{fmt(v.ci[1], c.unit)})"
        if v.n is not None and c.check in ("model", "released"):
            shown += f", n = {fmt(v.n)}"
        rederived = c.check in ("released", "arithmetic")
        rows.append({"id": c.id, "chapter": c.chapter, "claim": c.claim, "source": f"{c.source}, {c.where}",
                     "printed": fmt_printed(c.quoted, c.unit) if c.quoted is not None else "not in the seed",
                     "re-derived": shown if rederived else "–", "this build": "–" if rederived else shown,
                     "verdict": v.verdict, "why": v.why})
    return rows


#: Rows the landing page and the report show (their verdicts, values and reasons are glued by
#: :func:`publish` as ``verdict_<id>``, ``printed_<id>``, ``value_<id>``, ``why_<id>``).
HEADLINE = ("ct-auc-released", "ct-auc-build", "ct-ppv-released", "ct-npv-released", "ct-seconds-gpu",
            "clf2d-vs-decovnet", "loc-hit-rate", "cxr-weights", "cxr-macro-f1", "cxr-covid-recall",
            "cxr-ext-covid", "cxr-ext-pneumonia", "cxr-ext-healthy")
CHAPTER_TITLES = {"04_decovnet": "04 · DeCoVNet", "05_2dclfnet": "05 · 2DClfNet",
                  "06_cam_localization": "06 · Lesion localisation", "07_cxr_resnet50": "07 · Chest X-ray ResNet-50",
                  "08_external_validation": "08 · External validation", "09_performance": "09 · Performance"}


def glue_key(claim_id: str) -> str:
    return claim_id.replace("-", "_")


def publish(nb, verdicts: list[Verdict]) -> None:
    """Glue the ledger into notebook ``nb`` (a :class:`reprolib.book.Notebook`): the counts per
    verdict (``n_rows``, ``n_<verdict>``), the counts per paper and verdict (``counts_table``),
    one table per chapter (``ledger_<chapter>``) and the headline rows (see :data:`HEADLINE`)."""
    import pandas as pd

    rows = as_rows(verdicts)
    counts = verdict_counts(verdicts)
    nb.glue("n_rows", len(rows))
    for verdict, k in counts.items():
        nb.glue("n_" + verdict.replace(" ", "_"), k)
    frame = pd.DataFrame(rows)
    by_paper = (frame.assign(paper=[v.claim.paper for v in verdicts])
                .pivot_table(index="verdict", columns="paper", values="id", aggfunc="count", fill_value=0)
                .reindex(index=list(VERDICTS), columns=list(PAPERS), fill_value=0))
    by_paper.columns = ["chest CT (seed 000)", "chest X-ray (seed 003)"]
    by_paper["all"] = by_paper.sum(axis=1)
    nb.glue_table("counts_table", by_paper)
    for chapter in CHAPTER_TITLES:
        part = frame[frame.chapter == chapter].drop(columns=["chapter"]).set_index("id")
        nb.glue_table(f"ledger_{chapter}", part, record=False)
        nb.glue(f"n_rows_{chapter}", len(part))
    nb.record("ledger", frame.to_dict(orient="list"))
    by_id = {r["id"]: r for r in rows}
    for claim_id in HEADLINE:
        r, key = by_id[claim_id], glue_key(claim_id)
        nb.glue_text(f"verdict_{key}", r["verdict"])
        nb.glue_text(f"printed_{key}", r["printed"])
        nb.glue_text(f"value_{key}", r["re-derived"] if r["re-derived"] != "–" else r["this build"])
        nb.glue_text(f"why_{key}", r["why"])
