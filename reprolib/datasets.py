"""Descriptions of the public datasets (citation, licence, upstream, caveats).

The ``files`` lists of the ``sample`` manifests are generated from the offline
mirror's ``index.tsv`` by ``repro data build-manifests``; the descriptions here
are the human part. ``PAPER_ONLY`` datasets have no per-file list: their
``paper`` section says where and how to download them for the ``paper`` profile.
"""
from __future__ import annotations

DATASETS: dict[str, dict] = {
    "covid-ct-md": {
        "title": "COVID-CT-MD: COVID-19 computed tomography scan dataset (sample volumes)",
        "citation": "Afshar P. et al., COVID-CT-MD, a COVID-19 computed tomography scan dataset "
                    "applicable in machine learning and deep learning. Sci Data 8:121 (2021).",
        "licence": "CC-BY-4.0",
        "upstream": {"doi": "10.1038/s41597-021-00900-3",
                     "url": "https://figshare.com/collections/COVID-CT-MD/5129081",
                     "host": "ShahinSHH/COVID-CT-MD@52699790020e0d5410c3158fe588e38505769349"},
        "modality": "ct",
        "notes": [
            "DICOM is JPEG Lossless (Process 14); decoded with SimpleITK.",
            "Sort slices by SliceLocation before using the slice or lobe labels; labels are padded to 200 slices.",
            "Index.csv skips Label Index 43; the label arrays are indexed by row position.",
        ],
        "paper": {"url": "https://figshare.com/collections/COVID-CT-MD/5129081",
                  "content": "169 COVID-19 / 60 CAP / 76 normal patients",
                  "instructions": "Download the figshare collection (no login) and unpack it under "
                                  "$REPRO_DATA_DIR/figshare.com/COVID-CT-MD/.",
                  "layout_note": "Not confirmed offline: the folder names inside the figshare zips. The adapter expects the class folders of the publisher's sample data ({COVID-19 subjects,Cap subjects,Normal subjects}/<subject>/*.dcm) and names them in its error."},
    },
    "lung-pet-ct-dx": {
        "title": "Lung-PET-CT-Dx, patient A0002 (one CT series and its tumour boxes)",
        "citation": "Li P. et al., A large-scale CT and PET/CT dataset for lung cancer diagnosis "
                    "(Lung-PET-CT-Dx). The Cancer Imaging Archive (2020).",
        "licence": "CC-BY-4.0",
        "upstream": {"doi": "10.7937/TCIA.2020.NNC20461",
                     "url": "https://www.cancerimagingarchive.net/collection/lung-pet-ct-dx/",
                     "host": "huyenbui117/lung_CT@520adfe9e2e8e2b8c02985b228002c5b2997e5b6"},
        "modality": "ct",
        "notes": [
            "Folder names contain double spaces.",
            "10 of the 18 box files name slices of the mirrored B40f series; 8 name the B70f series, not mirrored.",
            "TCIA data usage policy applies (LICENSE).",
        ],
        "paper": {"url": "https://www.cancerimagingarchive.net/collection/lung-pet-ct-dx/",
                  "instructions": "Use the NBIA Data Retriever (no login for this collection)."},
    },
    "cc-ccii": {
        "title": "CC-CCII: one common-pneumonia scan (PNG slices)",
        "citation": "Zhang K. et al., Clinically applicable AI system for accurate diagnosis, quantitative "
                    "measurements, and prognosis of COVID-19 pneumonia using computed tomography. "
                    "Cell 181:1423 (2020).",
        "licence": "CC-BY-3.0-CN",
        "upstream": {"doi": "10.1016/j.cell.2020.04.045", "url": "http://ncov-ai.big.ac.cn/download",
                     "host": "placerda/pulmo-sense@996becdd17d79aa8be0f6158a2126ec862fea383"},
        "modality": "ct",
        "notes": ["8-bit PNG slices, already windowed: no Hounsfield units and no voxel spacing."],
        "paper": {"url": "http://ncov-ai.big.ac.cn/download",
                  "content": "1,449 NCP / 1,347 CP / 1,046 normal scans",
                  "instructions": "Download the zip parts from the China National Center for Bioinformation "
                                  "page (no login) and unpack under $REPRO_DATA_DIR/ncov-ai.big.ac.cn/.",
                  "layout_note": 'Not confirmed offline: the folder names inside the zip parts. The adapter expects {NCP,CP,Normal}/<patient_id>/<scan_id>/<slice images> and names it in its error.'},
    },
    "mosmeddata": {
        "title": "MosMedData: lesion masks of 50 CT-1 studies",
        "citation": "Morozov S.P. et al., MosMedData: chest CT scans with COVID-19 related findings "
                    "dataset. medRxiv (2020), arXiv:2005.06465.",
        "licence": "CC-BY-NC-ND-3.0",
        "upstream": {"doi": "10.1101/2020.05.20.20100362",
                     "url": "https://mosmed.ai/datasets/covid19_1110",
                     "host": "michaelwfry/MosMedData-Chest-CT-Scans-with-COVID-19-Related-Findings"
                             "@8c80277445ed21db9b876ef213f2a89bad1c7366"},
        "modality": "ct",
        "notes": ["Masks only; the paired CT studies are not in the sample.",
                  "No-derivatives licence: the files are used unmodified and never redistributed modified."],
        "paper": {"url": "https://mosmed.ai/datasets/covid19_1110",
                  "content": "1,110 studies: CT-0 254 / CT-1 684 / CT-2 125 / CT-3 45 / CT-4 2",
                  "instructions": "Download the archive from mosmed.ai (registration form) and unpack "
                                  "under $REPRO_DATA_DIR/mosmed.ai/.",
                  "layout_note": "Not confirmed offline from the publisher's README: the layout COVID19_1110/studies/CT-<k>/study_<nnnn>.nii.gz and COVID19_1110/masks/ comes from published code that reads the archive. The adapter names it in its error."},
    },
    "decovnet-release": {
        "title": "DeCoVNet released per-volume test probabilities (20200212-auc95p9.txt)",
        "citation": "Wang X. et al., A weakly-supervised framework for COVID-19 classification and lesion "
                    "localization from chest CT. IEEE TMI 39(8):2615 (2020).",
        "licence": "CC-BY-NC-SA-4.0",
        "upstream": {"doi": "10.1109/TMI.2020.2995965",
                     "url": "https://github.com/sydney0zq/covid-19-detection",
                     "host": "sydney0zq/covid-19-detection@4eba9ff8959a1e70272bbf4f2a2b4b0398c4ffc8"},
        "modality": "predictions",
        "notes": ["131 test volumes (75 COVID-19, 56 negative); the CT volumes are not public."],
        "paper": {"url": "https://github.com/sydney0zq/covid-19-detection",
                  "instructions": "Same file as the sample profile."},
    },
    "kermany-224": {
        "title": "Kermany paediatric chest X-rays (224x224 copy, sampled)",
        "citation": "Kermany D.S. et al., Identifying medical diagnoses and treatable diseases by "
                    "image-based deep learning. Cell 172:1122 (2018).",
        "licence": "CC-BY-4.0",
        "upstream": {"doi": "10.17632/rscbjbr9sj.2",
                     "url": "https://data.mendeley.com/datasets/rscbjbr9sj/2",
                     "host": "waliatushar/ai-pneumonia-detection@362d6d1be840461d0f26253972ec86bbc8533772"},
        "modality": "cxr",
        "notes": ["Resized to 224x224 without keeping the aspect ratio by the host repository.",
                  "Subjects are children aged 1-5 (age confound against adult COVID-19 images)."],
        "paper": {"url": "https://data.mendeley.com/datasets/rscbjbr9sj/2",
                  "instructions": "Same images in full resolution: see the `kermany` manifest."},
    },
    "hannover-mhh": {
        "title": "Hannover Medical School COVID-19 image repository (all 71 patients, frontal CXRs)",
        "citation": "Winther H.B. et al., COVID-19 Image Repository. figshare (2020), "
                    "doi:10.6084/m9.figshare.12275009.",
        "licence": "CC-BY-3.0",
        "upstream": {"doi": "10.25835/0090041",
                     "url": "https://github.com/ml-workgroup/covid-19-image-repository",
                     "host": "ml-workgroup/covid-19-image-repository@ad7ab099b425f16e06bba22322336b7d6a732965"},
        "modality": "cxr",
        "notes": ["Every patient of the repository; 18 of them also appear in the Cohen collection as re-encoded "
                  "2000 px JPEGs, which the chest X-ray chapters identify (metadata and perceptual hash) and "
                  "keep out of training, so that Hannover is an external set.",
                  "COVID-19 only: an external set for sensitivity, not specificity."],
        "paper": {"url": "https://github.com/ml-workgroup/covid-19-image-repository",
                  "instructions": "Clone the repository (no login)."},
    },
    "ieee8023-covid-chestxray": {
        "title": "COVID-19 image data collection (Cohen): 218 COVID-19 and 79 adult non-COVID chest X-rays",
        "citation": "Cohen J.P. et al., COVID-19 image data collection. arXiv:2003.11597 (2020).",
        "licence": "CC-BY-4.0 / CC-BY-3.0 per image; metadata CC-BY-NC-SA-4.0",
        "upstream": {"doi": "arXiv:2003.11597",
                     "url": "https://github.com/ieee8023/covid-chestxray-dataset",
                     "host": "hida6/covid-chestxray-dataset@584034aa7fbf06496741f11008d72fd791c8e443"},
        "modality": "cxr",
        "notes": ["18 COVID-19 images are Hannover originals (metadata location/url): excluded from training.",
                  "Non-COVID images are of adults (bacterial, viral, other pneumonia, no finding): the adult "
                  "controls that the paediatric Kermany images lack.",
                  "Age, sex and view of every image in metadata.csv (joined on filename)."],
        "paper": {"url": "https://github.com/ieee8023/covid-chestxray-dataset",
                  "content": "161 COVID-19 images in the paper",
                  "instructions": "Clone the repository (no login): `git clone https://github.com/ieee8023/covid-chestxray-dataset $REPRO_DATA_DIR/github.com/ieee8023/covid-chestxray-dataset`."},
    },
}

PAPER_ONLY: dict[str, dict] = {
    "covid-19-ct-seg": {
        "title": "COVID-19-CT-Seg: 20 CT cases with lung and infection masks",
        "citation": "Ma J. et al., Towards data-efficient learning: a benchmark for COVID-19 CT lung "
                    "and infection segmentation. Med Phys 48:1197 (2021).",
        "licence": "CC-BY-NC-SA-4.0 (Zenodo record states CC-BY-4.0; check before use)",
        "upstream": {"doi": "10.5281/zenodo.3757476", "url": "https://zenodo.org/records/3757476"},
        "modality": "ct",
        "notes": ["The 10 Radiopaedia cases are intensity-normalised, not HU."],
        "paper": {"url": "https://zenodo.org/records/3757476",
                  "instructions": "Download the four zip files (no login) and unzip each into a folder of its "
                                  "own name under $REPRO_DATA_DIR/zenodo.org/records/3757476/.",
                  "layout_note": 'Not confirmed offline: the folder names inside the four zips. The adapter expects each zip unpacked into a folder of its own name and names that layout in its error.'},
    },
    "kermany": {
        "title": "Kermany paediatric chest X-rays, full resolution (Mendeley v2)",
        "citation": DATASETS["kermany-224"]["citation"],
        "licence": "CC-BY-4.0",
        "upstream": {"doi": "10.17632/rscbjbr9sj.2",
                     "url": "https://data.mendeley.com/datasets/rscbjbr9sj/2"},
        "modality": "cxr",
        "notes": ["5,856 images; the paper used 2,507 pneumonia + 2,487 healthy."],
        "paper": {"url": "https://data.mendeley.com/datasets/rscbjbr9sj/2",
                  "instructions": "Download ChestXRay2017.zip (no login) into $REPRO_DATA_DIR/mendeley/."},
    },
    "covid-19-radiography-database": {
        "title": "COVID-19 Radiography Database (external validation of the CXR paper)",
        "citation": "Chowdhury M.E.H. et al., Can AI help in screening viral and COVID-19 pneumonia? "
                    "IEEE Access 8:132665 (2020), arXiv:2003.13145.",
        "licence": "unknown (no licence stated); not redistributed",
        "upstream": {"doi": "arXiv:2003.13145",
                     "url": "https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database"},
        "modality": "cxr",
        "notes": ["Its Viral Pneumonia images and Normal-63 ... Normal-1403 are copies of Kermany images: "
                  "de-duplicate against training images before sampling."],
        "paper": {"url": "https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database",
                  "login_required": True,
                  "instructions": "Needs a Kaggle account: `kaggle datasets download "
                                  "tawsifurrahman/covid19-radiography-database`, unpack under "
                                  "$REPRO_DATA_DIR/kaggle/covid19-radiography-database/."},
    },
}
