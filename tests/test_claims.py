"""The claims ledger: the registry is complete and well formed, and each verdict rule does what
the module docstring says, on results written by hand."""
from __future__ import annotations

import pytest

from reprolib import claims
from reprolib.errors import ConfigError

SEEDS = ("000", "003")


def test_registry_loads_with_rows_for_both_papers():
    rows = claims.load_registry()
    assert len(rows) >= 40
    by_paper = {p: [c for c in rows if c.paper == p] for p in claims.PAPERS}
    assert len(by_paper["ct"]) >= 20 and len(by_paper["cxr"]) >= 20
    assert {c.source.split(",")[0] for c in rows} <= {"seed paper", "TMI abstract", "official code"}
    assert set(claims.HEADLINE) <= {c.id for c in rows}


def test_registry_rejects_bad_rows(tmp_path):
    p = tmp_path / "claims.yml"
    base = "{id: a, paper: ct, source: seed paper, where: x, claim: y, quoted: 1, chapter: 04_decovnet"
    for text, message in [
        ("rows: []", "non-empty"),
        (f"rows:\n  - {base}, check: released}}", "needs a results key"),
        (f"rows:\n  - {base}, check: guess}}", "check must be one of"),
        (f"rows:\n  - {base}, check: absent, colour: red}}", "unknown fields"),
        (f"rows:\n  - {base}, check: absent}}\n  - {base}, check: absent}}", "duplicate id"),
        (f"rows:\n  - {base}, check: model, value: k}}", "learned"),
    ]:
        p.write_text(text)
        with pytest.raises(ConfigError, match=message):
            claims.load_registry(p)


def test_printed_tolerance_and_formula():
    assert claims.printed_tolerance(0.959) == pytest.approx(0.0005)
    assert claims.printed_tolerance(0.98) == pytest.approx(0.005)
    assert claims.printed_tolerance(13) == 0.5
    assert claims.printed_tolerance(1e-05) == pytest.approx(5e-6)
    assert claims.evaluate_formula("2 * p * r / (p + r)", {"p": 0.5, "r": 1.0}) == pytest.approx(2 / 3)
    for bad in ("__import__('os')", "p ** 2", "abs(p)"):
        with pytest.raises(ValueError):
            claims.evaluate_formula(bad, {"p": 1.0})


def claim(**kw) -> claims.Claim:
    base = dict(id="t", paper="ct", source="seed paper", where="x", claim="y", chapter="04_decovnet")
    return claims.Claim(**{**base, **kw})


def test_rederived_values_reproduce_within_the_printed_precision():
    c = claim(quoted=0.959, check="released", value="auc")
    assert claims.judge(c, {"04_decovnet": {"auc": 0.95904}}, "sample").verdict == "reproduced"
    assert claims.judge(c, {"04_decovnet": {"auc": 0.9596}}, "sample").verdict == "differs"
    assert claims.judge(c, {}, "sample").verdict == "not addressed"
    jin = claim(quoted=0.9278, check="arithmetic", formula="2 * p * r / (p + r)", inputs={"p": 0.9153, "r": 0.9498})
    assert claims.judge(jin, {}, "sample").verdict == "differs"  # 0.9322 printed as 0.9278


def test_model_rows_phantoms_learning_and_interval():
    c = claim(quoted=0.959, check="model", value="auc", ci=("lo", "hi"), n="n", learned="ok")
    good = {"04_decovnet": {"auc": 0.93, "lo": 0.90, "hi": 0.97, "n": 100, "ok": True}}
    assert claims.judge(c, good, "sample").verdict == "consistent"
    assert claims.judge(c, good, "synthetic").verdict == "phantoms only"
    far = {"04_decovnet": {**good["04_decovnet"], "lo": 0.6, "hi": 0.8}}
    v = claims.judge(c, far, "sample")
    assert v.verdict == "differs" and "excludes" in v.why
    flat = {"04_decovnet": {**good["04_decovnet"], "ok": False, "ok_reason": "its AUC interval reaches 0.4"}}
    v = claims.judge(c, flat, "sample")
    assert v.verdict == "not learned at this n" and "0.4" in v.why
    direction = claim(quoted=None, direction="positive", check="model", value="d", ci=("lo", "hi"), learned="ok")
    assert claims.judge(direction, {"04_decovnet": {"d": 0.1, "lo": -0.05, "hi": 0.2, "ok": True}},
                        "sample").verdict == "consistent"
    assert claims.judge(direction, {"04_decovnet": {"d": -0.2, "lo": -0.3, "hi": -0.1, "ok": True}},
                        "sample").verdict == "differs"


def test_a_smoke_schedule_never_earns_a_model_or_count_verdict(monkeypatch):
    monkeypatch.setenv("REPRO_SCHEDULE", "smoke")
    c = claim(quoted=0.959, check="model", value="auc", ci=("lo", "hi"), n="n", learned="ok")
    good = {"04_decovnet": {"auc": 0.95, "lo": 0.90, "hi": 0.97, "n": 12, "ok": True}}  # inside, learned
    v = claims.judge(c, good, "paper")
    assert v.verdict == "not learned at this n" and "smoke schedule" in v.why and "n = 12" in v.why
    n = claim(quoted=2507, check="count", value="k")
    v = claims.judge(n, {"04_decovnet": {"k": 8}}, "paper")
    assert v.verdict == "not reproducible offline" and "smoke schedule" in v.why
    monkeypatch.delenv("REPRO_SCHEDULE")
    assert claims.judge(c, good, "paper").verdict == "consistent"


def test_settings_counts_and_requirements():
    s = claim(quoted="224×336", check="setting", value="hw", note="CPU budget")
    assert claims.judge(s, {"04_decovnet": {"hw": "224×336"}}, "sample").verdict == "reproduced"
    v = claims.judge(s, {"04_decovnet": {"hw": "112×168"}}, "sample")
    assert v.verdict == "differs" and "CPU budget" in v.why
    n = claim(quoted=2507, check="count", value="k")
    assert claims.judge(n, {"04_decovnet": {"k": 61}}, "sample").verdict == "not reproducible offline"
    assert claims.judge(n, {"04_decovnet": {"k": 2507}}, "paper").verdict == "reproduced"
    assert claims.judge(n, {"04_decovnet": {"k": 61}}, "paper").verdict == "differs"
    assert claims.judge(n, {"04_decovnet": {"k": None}}, "sample").verdict == "not reproducible offline"
    gpu = claim(quoted=1.93, check="requires", needs="gpu", value="g", direction="at_most")
    assert claims.judge(gpu, {"04_decovnet": {"g": None}}, "sample").verdict == "not reproducible offline"
    assert claims.judge(gpu, {"04_decovnet": {"g": 1.2}}, "sample").verdict == "consistent"
    img = claim(quoted="imagenet", check="requires", needs="imagenet", value="w")
    assert claims.judge(img, {"04_decovnet": {"w": "random"}}, "sample").verdict == "not reproducible offline"
    assert claims.judge(img, {"04_decovnet": {"w": "imagenet"}}, "sample").verdict == "reproduced"
    assert claims.judge(claim(quoted=1, check="background"), {}, "sample").verdict == "not addressed"


def test_cross_chapter_keys_and_counts():
    c = claim(quoted=0.5, check="model", value="m", ci=("lo", "hi"), learned="07_cxr_resnet50.ok")
    results = {"04_decovnet": {"m": 0.5, "lo": 0.4, "hi": 0.6}, "07_cxr_resnet50": {"ok": True}}
    assert claims.judge(c, results, "sample").verdict == "consistent"
    verdicts = claims.ledger({}, "sample")
    counts = claims.verdict_counts(verdicts)
    assert sum(counts.values()) == len(verdicts) and list(counts) == list(claims.VERDICTS)
    rows = claims.as_rows(verdicts)
    assert all(r["verdict"] in claims.VERDICTS for r in rows)
    assert not any("nan" in str(v).lower().split() for r in rows for v in r.values())
