"""Numbers the two papers *report*, quoted with their source.

These are quotations, not results: the notebooks glue them next to the values
this build computes, so that the book never types a number by hand and every
comparison names where the quoted number comes from.
"""
from __future__ import annotations

#: DeCoVNet (Wang et al., IEEE TMI 2020, abstract), 131-volume test set.
DECOVNET = {
    "roc_auc": 0.959,
    "pr_auc": 0.976,
    "accuracy": 0.901,
    "ppv_as_labelled": 0.840,  # equals sensitivity (mislabelled in the abstract)
    "npv_as_labelled": 0.982,  # equals specificity (mislabelled in the abstract)
    "seconds_per_ct_gpu": 1.93,
    "n_train": 499,
    "n_test": 131,
    "params": 346_978,  # active parameters of the official code's network (spec §5)
}

#: Chest X-ray ResNet-50 (Gueguim Kana et al. 2020), validation table and external set.
CXR = {
    "per_class": {  # precision, recall, "accuracy" (= precision in the paper), F1 — in percent
        "pneumonia": {"precision": 98.8, "recall": 97.2, "accuracy": 98.8, "f1": 98.0},
        "covid19": {"precision": 100.0, "recall": 99.8, "accuracy": 100.0, "f1": 99.8},
        "healthy": {"precision": 95.6, "recall": 99.0, "accuracy": 95.6, "f1": 97.3},
        "not_certain": {"precision": 100.0, "recall": 100.0, "accuracy": 100.0, "f1": 100.0},
    },
    "average_percent": 99.0,
    "external_accuracy_percent": {"covid19": 97.0, "pneumonia": 85.0, "healthy": 98.0},
    "external_per_class": 200,
    "n_validation": 2418,
    "confusion_quoted": {"pneumonia_correct": 2383, "covid_correct": 539, "covid_total": 540},
    "epochs": 15,
}

SOURCES = {
    "DECOVNET": "Wang X. et al., IEEE TMI 39(8):2615 (2020), abstract",
    "CXR": "Gueguim Kana E.B. et al. (2020), Table 1, confusion matrix and external validation text",
}
