"""Where the sample's chest X-rays come from: Hannover originals found by metadata and hash, kept
out of development; the external set is every Hannover patient."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from reprolib import cxr_sources as S
from reprolib.adapters import cohen
from reprolib.errors import ManifestError


def test_age_groups_and_hannover_metadata():
    assert [cohen.age_group(a) for a in ("45", "17", "", None, "n/a", 18)] == ["adult", "child", "-", "-", "-", "adult"]
    assert cohen.is_hannover_original({"location": "Hannover Medical School, Hannover, Germany", "url": ""})
    assert cohen.is_hannover_original({"location": "", "url": "https://github.com/ml-workgroup/covid-19-image-repository"})
    assert not cohen.is_hannover_original({"location": "Milan, Italy", "url": "https://radiopaedia.org/x"})


def test_cohen_metadata_names_the_file_on_bad_input(tmp_path):
    bad = tmp_path / "metadata.csv"
    bad.write_text("patientid,finding\n1,COVID-19\n")
    with pytest.raises(ManifestError, match="metadata.csv.*columns"):
        cohen.cohen_metadata(bad)
    good = tmp_path / "m.csv"
    good.write_text("patientid,age,location,url,filename\n7,52,Hannover,,a.jpg\n")
    assert cohen.cohen_metadata(good)["a.jpg"]["age"] == "52"


def _chest(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = 60 + 40 * np.sin(x / (w / 7) + seed) + 30 * np.cos(y / (h / 5)) + rng.normal(0, 4, (h, w))
    for _ in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(h // 10, h // 4)
        img[(y - cy) ** 2 + (x - cx) ** 2 < r ** 2] += 70
    return np.clip(img, 0, 255).astype(np.uint8)


def test_same_pictures_finds_a_centre_cropped_upscaled_copy_and_nothing_else(tmp_path):
    """The Cohen collection holds Hannover pictures as 2000 px centre crops of the originals that
    the Hannover PNGs downscale: a plain pHash misses them, the centred square finds them."""
    original = _chest(1, 552, 640)  # the Hannover PNG's aspect
    Image.fromarray(original).save(tmp_path / "hannover.png")
    crop = np.asarray(S.centre_square(Image.fromarray(original)))
    Image.fromarray(crop).resize((700, 700), Image.BICUBIC).save(tmp_path / "cohen.jpg", quality=85)
    Image.fromarray(_chest(2, 700, 700)).save(tmp_path / "other.jpg", quality=85)
    found = S.same_pictures([tmp_path / "cohen.jpg", tmp_path / "other.jpg"], [tmp_path / "hannover.png"])
    assert found == {str(tmp_path / "cohen.jpg")}
    assert S.centre_square(Image.new("L", (640, 552))).size == (552, 552)


@pytest.mark.mirror
def test_sample_sources_keep_every_hannover_patient_out_of_development(sample_cache):
    src = S.sample_sources("sample", sample_cache[0])
    assert len(src.excluded) == 18 and src.confirmed_by_hash >= 10 and not src.hash_only
    hannover = {r.group for r in src.external}
    assert len(hannover) == 71 and {r.split for r in src.external} == {"external"}
    assert src.linked_patients <= hannover and len(src.linked_patients) >= 17
    dev_names = {r.path.name for r in src.development}
    assert not dev_names & {r.path.name for r in src.excluded}
    cohen = [r for r in src.development if r.source == S.COHEN]
    assert sum(r.label == "covid19" for r in cohen) == 200
    assert sum(r.label != "covid19" for r in cohen) == 79 and {r.age_group for r in cohen} >= {"adult"}
    assert {r.age_group for r in src.development if r.source == S.KERMANY} == {"child"}
    assert {r.split for r in src.same_source} == {"same_source"} and len(src.same_source) == 300
