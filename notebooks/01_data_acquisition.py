# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Data acquisition
#
# Every file the book reads is listed in a manifest under `data_manifests/` with its upstream URL,
# size, SHA-256, label, patient and licence. This notebook fetches the files of the chosen profile
# (from the local mirror when `REPRO_DATA_MIRROR` is set, else from the upstream URL), verifies every
# hash, and describes what we have. The `synthetic` profile instead generates procedural phantoms
# with known labels and lesion masks (`reprolib.phantoms`).

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None

# %%
import json
from pathlib import Path

import pandas as pd

from reprolib import book, config, data, figures, provenance

provenance.seed_everything(seed)
nb = book.Notebook("01_data_acquisition", profile, results_dir)
nb.banner()
prof = config.load_profile(profile)
work = Path(work_dir or config.work_dir(profile))
work.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Fetch and verify
#
# The fetch copies (or downloads) each file to a temporary name, hashes it while writing and moves
# it into the cache only when the SHA-256 matches the manifest; a cached file is re-hashed whenever
# its size or modification time differ from its verification stamp.

# %%
records = []
if profile == "synthetic":
    from reprolib import phantoms

    ph = prof["data"]["phantoms"]
    out = work / "synthetic_data"
    records = phantoms.make_synthetic_dataset(
        out, ct_count=ph["ct_count"], ct_shape=tuple(ph["ct_shape"]),
        ct_spacing_mm=tuple(ph["ct_spacing_mm"]), cxr_per_class=ph["cxr_per_class"],
        cxr_size=ph["cxr_size"], seed=seed)
    for r in records:  # verify what was written, exactly as for downloads
        p = out / r["path"]
        digest = phantoms.directory_sha256(p)[0] if p.is_dir() else data.sha256_file(p)
        assert digest == r["sha256"], r["path"]
    book.atomic_write_text(work / "synthetic_records.json", json.dumps(records, indent=1))
    table = (pd.DataFrame(records).groupby(["dataset", "role", "label"]).size()
             .rename("files").reset_index())
    n_files, n_bytes = len(records), sum(r["bytes"] for r in records)
    nb.glue("n_patients", len({r["group"] for r in records}))
else:
    manifests = data.profile_manifests(profile)
    report = data.fetch_profile(profile, data_dir=data_dir)
    table = data.summary_table(manifests, data_dir)
    n_files, n_bytes = report.n_files, report.n_bytes
    nb.glue_timing("fetch_seconds", report.seconds, 1)
    nb.glue("n_patients", int(table["patients"].sum()))
nb.glue("n_files", n_files)
nb.glue("n_megabytes", round(n_bytes / 1e6, 1))
nb.glue_table("dataset_table", table)
table

# %% [markdown]
# We have {glue:text}`n_files` verified files ({glue:text}`n_megabytes` MB) from
# {glue:text}`n_patients` patients or subjects.
#
# ```{glue:figure} dataset_table
# :name: tbl-datasets
# Files, classes, patients, licence and verification status per dataset of this profile.
# ```

# %% [markdown]
# ## What the images look like

# %%
import numpy as np

if profile == "synthetic":
    cxr = [r for r in records if r["role"] == "cxr_image"]
    picks = []
    for label in sorted({r["label"] for r in cxr}):
        picks += [r for r in cxr if r["label"] == label][:2]
    images = [figures.load_gray(out / r["path"]) for r in picks]
    titles = [r["label"] for r in picks]
    import nibabel as nib

    cts = [r for r in records if r["role"] == "ct_nifti"][:4]
    for r in cts:
        vol = np.asanyarray(nib.load(out / r["path"]).dataobj)
        images.append(np.rot90(np.clip(vol[:, :, vol.shape[2] // 2], -1200, 600)))
        titles.append(f"CT {r['label']}")
else:
    frame = data.entries_frame(manifests)
    picks = []
    for (ds, label), sub in frame[frame.role.isin(["cxr_image", "ct_png"])].groupby(["dataset", "label"]):
        picks += list(sub.sort_values("url").head(2).itertuples())
    images = [figures.load_gray(data.local_path(p, data_dir)) for p in picks]
    titles = [f"{p.dataset}\n{p.label}" for p in picks]
fig = figures.montage(images, titles, ncols=6)
nb.glue_figure("montage", fig)

# %% [markdown]
# ```{glue:figure} montage
# :name: fig-montage
# Examples of every image class of this profile (two per class and source). Note how differently
# the sources look: size, contrast and framing differ by source, and a classifier can learn them.
# ```

# %% [markdown]
# ## Caveats that shape the analysis
#
# These facts come from the data sources and the mirror's documentation; later chapters act on them.
#
# - **Age confound (chest X-ray).** The Kermany images are of children aged one to five; the COVID-19
#   images (Hannover, Cohen) are of adults. A classifier can separate the classes by anatomy alone
#   (chapter 07 audits this).
# - **External-set leakage (chest X-ray).** The COVID-19 Radiography Database used by the paper for
#   external validation contains copies of Kermany images; chapter 08 de-duplicates with a perceptual
#   hash before sampling.
# - **Hannover images appear in both X-ray sources** (as originals in Cohen's collection); the sample
#   keeps the patients disjoint.
# - **CC-CCII slices are already windowed PNGs** with no Hounsfield units and no spacing, so the CT
#   preprocessing cannot be applied as specified; they are flagged.
# - **COVID-CT-MD slice labels** must be aligned after sorting slices by position; its DICOM is
#   JPEG-Lossless compressed.
# - **MosMedData masks** come without their CT and under a no-derivatives licence: used unmodified,
#   only to test the lesion-hit metric.
# - **No ImageNet weights offline.** The ResNet-50 file cannot be downloaded on machines without
#   internet; chapter 07 says on its page whether it used them.

# %%
nb.finish()
