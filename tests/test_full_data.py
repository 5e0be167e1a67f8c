"""The paper profile refuses to run without its full datasets; it never falls back to the sample."""
from __future__ import annotations

import pytest

from reprolib import adapters, cli, config, data, full_data, runner
from reprolib.errors import ConfigError


def test_only_the_paper_profile_needs_the_full_data():
    assert full_data.needs_full_data("paper")
    assert not full_data.needs_full_data("sample") and not full_data.needs_full_data("synthetic")
    assert full_data.missing("sample") == [] and full_data.missing("synthetic") == []


def test_every_dataset_without_a_full_reader_is_listed_with_how_to_get_it(isolated):
    gaps = {g.dataset: g for g in full_data.missing("paper")}
    wanted = config.load_profile("paper")["data"]["datasets"]
    assert list(gaps) == wanted  # empty cache: even the one complete dataset is missing
    manifests = {m.dataset: m for m in data.profile_manifests("paper")}
    for name, gap in gaps.items():
        assert manifests[name].paper["instructions"] in gap.how
        if name in full_data.COMPLETE_IN_MANIFEST:
            assert "not in the data cache" in gap.why and "repro data fetch --profile paper" in gap.why
        elif adapters.adapter(name) is not None:  # an adapter that finds nothing names where it looked
            assert gap.why.startswith(f"not found under $REPRO_DATA_DIR/{adapters.adapter(name).SUBDIR} (")
            assert adapters.adapter(name).LAYOUT in gap.why
        else:
            raise AssertionError(f"{name}: neither complete in its manifest nor read by an adapter")


def test_a_paper_run_stops_before_the_first_notebook(isolated, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(runner, "execute", lambda *a, **k: calls.append(a))
    with pytest.raises(ConfigError) as err:
        runner.run("paper")
    text = str(err.value)
    assert "nothing was run (it never falls back to the sample)" in text
    for name in config.load_profile("paper")["data"]["datasets"]:
        assert f"- {name}: " in text
    assert calls == [] and not runner.state_dir("paper").exists()  # no status, no executed notebook
    assert cli.main(["run", "--profile", "paper", "--quiet"]) == 2
    assert "kermany" in capsys.readouterr().err


def test_data_verify_of_the_paper_profile_reports_each_dataset(isolated, capsys):
    assert cli.main(["data", "verify", "--profile", "paper"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1].rstrip(":") for line in out] == config.load_profile("paper")["data"]["datasets"]
    assert all(line.startswith(("missing", "partial", "found")) for line in out)
    assert str(isolated["data"]) not in "\n".join(out)
