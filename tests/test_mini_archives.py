"""The miniature archives: each adapter reads what the writer wrote, with the counts the writer's
plan implies; the paper profile's inputs, schedule and refusal on them."""
from __future__ import annotations

import json

import pytest

from reprolib import adapters, book, cli, config, full_data, inputs, mini_archives, runner
from reprolib.errors import ConfigError

#: Items of each dataset the writer makes at per_class = 2, worked out from its plan by hand.
WRITTEN = {"covid-ct-md": 6, "mosmeddata": 5, "cc-ccii": 9, "covid-19-ct-seg": 3, "kermany": 12,
           "ieee8023-covid-chestxray": 9, "covid-19-radiography-database": 12}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    return root, mini_archives.write(root, per_class=2)


def test_every_adapter_reads_its_miniature_archive(archive):
    root, written = archive
    assert written == WRITTEN and set(written) == set(adapters.ADAPTERS)
    counts = {}
    for name in adapters.ADAPTERS:
        mod = adapters.adapter(name)
        inv = mod.index(root / mod.SUBDIR)
        counts[name] = dict(inv.counts)
        assert inv.status in ("partial", "found"), name
    assert counts["covid-ct-md"] == {"COVID-19 subjects": 2, "Cap subjects": 2, "Normal subjects": 2}
    assert counts["mosmeddata"] == {"CT-0": 2, "CT-1": 2, "CT-2": 1, "CT-3": 0, "CT-4": 0, "masks": 2}
    assert counts["cc-ccii"] == {"NCP": 3, "CP": 3, "Normal": 3}  # the first patient of a class has two scans
    assert counts["covid-19-ct-seg"] == {"coronacases": 2, "radiopaedia": 1}
    assert counts["kermany"] == {"train/NORMAL": 4, "train/PNEUMONIA": 4, "test/NORMAL": 2, "test/PNEUMONIA": 2}
    assert counts["ieee8023-covid-chestxray"] == {"X-ray images": 9}  # tuberculosis counted, then skipped
    assert counts["covid-19-radiography-database"] == {"COVID": 3, "Normal": 3, "Lung_Opacity": 3, "Viral Pneumonia": 3}


def test_the_paper_profile_refuses_partial_archives_unless_smoke(archive, monkeypatch):
    root, _ = archive
    monkeypatch.delenv("REPRO_SCHEDULE", raising=False)
    gaps = {g.dataset for g in full_data.missing("paper", root)}
    assert gaps >= {"covid-ct-md", "kermany", "mosmeddata"}  # partial is not found
    monkeypatch.setenv("REPRO_SCHEDULE", "smoke")
    assert {g.dataset for g in full_data.missing("paper", root)} == {"decovnet-release"}  # not fetched here
    lines = full_data.report("paper", root)
    assert "(accepted by the smoke schedule)" in next(x for x in lines if " kermany:" in x)


def test_smoke_inputs_are_the_archives_cut_per_class(archive, monkeypatch):
    root, _ = archive
    monkeypatch.setenv("REPRO_SCHEDULE", "smoke")
    cases = inputs.ct_cases("paper", root)
    per = cases.groupby(["dataset", "label"]).size().to_dict()
    assert per == {("cc-ccii", "common_pneumonia"): 2, ("cc-ccii", "covid19"): 2, ("cc-ccii", "normal"): 2,
                   ("covid-19-ct-seg", "covid19"): 2, ("covid-ct-md", "cap"): 2, ("covid-ct-md", "covid19"): 2,
                   ("covid-ct-md", "normal"): 2, ("mosmeddata", "covid19"): 2, ("mosmeddata", "normal"): 2}
    assert all(str(root) in p for p in cases.path)  # the archives, never the sample's files
    masks = inputs.role_files("paper", "mosmeddata", "lesion_mask", root)
    assert [p.name for p in masks] == ["study_0003_mask.nii.gz", "study_0004_mask.nii.gz"]
    from reprolib import cxr_sources

    src = cxr_sources.full_sources("paper", root)
    assert {(r.source, r.label) for r in src.development} == {
        ("kermany", "healthy"), ("kermany", "pneumonia"), ("ieee8023-covid-chestxray", "covid19"),
        ("ieee8023-covid-chestxray", "healthy"), ("ieee8023-covid-chestxray", "pneumonia")}
    assert {r.split for r in src.same_source} == {"same_source"} and len(src.same_source) == 4
    assert {(r.source, r.split) for r in src.external} == {("covid-19-radiography-database", "external")}
    assert len(src.external) == 6  # 2 COVID, 2 Normal, 2 Viral Pneumonia; Lung_Opacity skipped
    assert src.excluded == []  # the Hannover row is the fourth COVID-19 image: cut by per_class
    table = full_data.datasets_used("paper", root)
    # 2 per class from each of train, test and val
    assert table.loc["kermany", "used"] == 10 and table.loc["kermany", "documented"] == 5856


def test_smoke_schedule_settings_and_folders(monkeypatch):
    monkeypatch.delenv("REPRO_SCHEDULE", raising=False)
    full = config.load_profile("paper")
    assert "schedule" not in full and "schedules" not in full and full["cxr"]["epochs"] == 15
    assert config.work_dir("paper").parent.name == "paper"
    monkeypatch.setenv("REPRO_SCHEDULE", "smoke")
    smoke = config.load_profile("paper")
    assert smoke["schedule"] == "smoke" and smoke["cxr"]["epochs"] == 1 and smoke["device"] == "cpu"
    assert smoke["cxr"]["freeze_until"] == full["cxr"]["freeze_until"]  # merged section by section
    assert config.work_dir("paper").parent.name == "paper-smoke" and config.results_dir("paper").name == "paper-smoke"
    monkeypatch.setenv("REPRO_SCHEDULE", "nightly")
    with pytest.raises(ConfigError, match="has no schedule 'nightly'"):
        config.load_profile("paper")


def test_banner_names_the_schedule_and_the_datasets(isolated, monkeypatch):
    monkeypatch.setenv("REPRO_SCHEDULE", "smoke")
    path = config.work_dir("paper") / book.DATASETS_USED_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schedule": "smoke", "datasets": [
        {"dataset": "kermany", "found": 12, "documented": 5856, "used": 8, "counts from": "x"}]}))
    text = book.banner_markdown("paper")
    assert ":class: warning" in text and "paper profile, smoke schedule" in text and "not results" in text
    assert "kermany 8 of 12 found (5,856 documented)" in text
    assert "kermany" not in book.banner_markdown("paper", datasets=False)  # chapter 01 shows its own table
    monkeypatch.delenv("REPRO_SCHEDULE")
    assert "kermany" not in book.banner_markdown("paper")  # the full run has not written its own list


def test_data_fetch_dry_run_lists_steps_and_fetches_nothing(isolated, capsys):
    assert cli.main(["data", "fetch", "--profile", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[:-1]] == [
        "download" if d in full_data.COMPLETE_IN_MANIFEST else "manual"
        for d in config.load_profile("paper")["data"]["datasets"]]
    kaggle = next(line for line in out if " covid-19-radiography-database:" in line)
    assert "kaggle datasets download" in kaggle and "(needs an account)" in kaggle
    assert "It must then read as $REPRO_DATA_DIR/mendeley/chest_xray/" in next(x for x in out if " kermany:" in x)
    for name in ("covid-ct-md", "cc-ccii", "mosmeddata", "covid-19-ct-seg"):  # layouts the manifest flags
        assert "(Not confirmed offline" in next(x for x in out if f" {name}:" in x)
    assert out[-1].startswith("to download: ") and out[-1].endswith("(dry run: nothing fetched)")
    assert not any(isolated["data"].rglob("*.*"))


def test_smoke_run_refuses_without_the_archives(isolated, monkeypatch):
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("a notebook ran"))
    monkeypatch.setenv("REPRO_SCHEDULE", "")  # cli.main sets it for this process; teardown unsets it
    assert cli.main(["run", "--profile", "paper", "--schedule", "smoke", "--quiet"]) == 2
    assert config.schedule() == "smoke"
