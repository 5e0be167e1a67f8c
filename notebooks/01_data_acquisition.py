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
# Every file the book reads is listed in a manifest under `data_manifests/`, with its upstream URL,
# size, SHA-256, label, patient and licence. This chapter fetches the files of the chosen profile,
# verifies every one of them and describes what we have. The `synthetic` profile downloads nothing:
# it generates procedural phantoms with known labels and lesion masks (`reprolib.phantoms`) and
# checks them in the same way. Where the files come from and how they are verified is described in
# the implementation notes (see {ref}`notes-data`).

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None

# %% tags=["remove-input"]
from pathlib import Path

from reprolib import book, config, figures, inputs, provenance
from reprolib.figures import preprocessing as figs

provenance.seed_everything(seed)
nb = book.Notebook("01_data_acquisition", profile, results_dir)
nb.banner(datasets=False)  # a paper build's datasets: the table below, written by this chapter
work = Path(work_dir or config.work_dir(profile))
work.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Fetch and verify
#
# A file is copied from the local mirror when `REPRO_DATA_MIRROR` is set, and downloaded from its
# upstream URL otherwise. The copy goes to a temporary name and is hashed while it is written; it
# moves into the cache only when its SHA-256 matches the manifest, so a partial or corrupt file is
# never taken for a complete one. A cached file is hashed again whenever its size or modification
# time differ from those recorded when it was verified.
#
# The `paper` profile reads the full public archives, unpacked where `repro data fetch --profile
# paper` says: one adapter per dataset checks each archive's layout and counts its items against the
# count its publisher documents; only the files listed in full in a manifest (the DeCoVNet release)
# are hashed. It stops before this chapter when a dataset is missing (see the README).

# %%
acquired = inputs.acquire(profile, work, data_dir=data_dir, seed=seed)

# %% tags=["remove-input"]
table = acquired.table  # phantoms: numbered rows (index not shown); real data: one row per dataset
nb.glue_table("dataset_table", table, index=table.index.name is not None, floatfmt="{:.1f}")
if acquired.seconds is not None:  # phantoms are generated, not fetched
    nb.glue_timing("fetch_seconds", acquired.seconds, 1)
for key, value in {"n_files": acquired.n_files, "n_megabytes": round(acquired.n_bytes / 1e6, 1),
                   "n_patients": acquired.n_patients,
                   "n_files_text": book.plural(acquired.n_files, acquired.noun),
                   "n_patients_text": book.plural(acquired.n_patients, "patient or subject",
                                                  "patients or subjects")}.items():
    nb.glue(key, value)

# %% [markdown]
# We have {glue:text}`n_files_text` ({glue:text}`n_megabytes:.1f` MB) from
# {glue:text}`n_patients_text`.
#
# :::{table} What this profile holds: for phantoms the files per dataset, role and class; for the sample the files, size (MB), classes (with their files), patients, licence and verified files per dataset; for the paper profile the items found in each archive, the count its publisher documents (and where that count comes from) and the items this run used.
# :name: tbl-datasets
# ```{glue:md} dataset_table
# :format: myst
# ```
# :::

# %% [markdown]
# ## What the images look like

# %% tags=["hide-input"]
if profile == "synthetic":
    images, titles = figs.synthetic_examples(acquired.records, acquired.root)
elif acquired.records:  # a full-data profile: its adapters' chest X-ray records
    images, titles = figs.record_examples(acquired.records)
else:
    images, titles = figs.manifest_examples(acquired.manifests, data_dir)
nb.glue_figure("montage", figures.montage(images, titles, ncols=6))

# %% [markdown]
# ```{glue:figure} montage
# :name: fig-montage
# Examples of every image class of this profile (two per class and source). Note how differently
# the sources look: size, contrast and framing differ by source, and a classifier can learn them.
# ```

# %% [markdown]
# ## Caveats that shape the analysis
#
# These facts come from the data sources and the mirror's documentation; later chapters act on
# them (see {ref}`notes-data` and {ref}`notes-deviations`).
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

# %% tags=["remove-cell"]
nb.finish()
