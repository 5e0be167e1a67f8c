"""What the chapters publish: a stage's results turned into glued values, phrases and tables.

The notebooks stay short by calling one function per section; each function takes a
:class:`reprolib.book.Notebook` and the stage's results, glues every value the chapter's prose
uses (``{glue:text}`key```) and records it in the results JSON. Values a profile cannot compute
are glued as "not available" (:meth:`Notebook.glue_text` with ``None``), so that every key
exists in every profile and the book builds with ``-W``. Formatting happens here, once per
quantity: a value that appears on several pages is one glued string.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import augment, evaluate, hits, models, paper_values, train
from .book import Notebook, plural

# --------------------------------------------------------------------------- chapter 04


#: Statistics of the released DeCoVNet probabilities, glued as ``rel_<key>`` with this format.
RELEASED_FORMATS = {
    "n": "{:d}", "n_pos": "{:d}", "n_neg": "{:d}", "tp": "{:d}", "fn": "{:d}", "tn": "{:d}", "fp": "{:d}",
    "patient_n": "{:d}", "saturated_n": "{:d}", "saturated_n_pos": "{:d}", "overlap_patients": "{:d}",
    "overlap_volumes": "{:d}", "no_overlap_n": "{:d}",
    "roc_auc": "{:.4f}", "roc_auc_ci_lo": "{:.3f}", "roc_auc_ci_hi": "{:.3f}", "average_precision": "{:.4f}",
    "average_precision_step": "{:.4f}", "accuracy": "{:.3f}", "sensitivity": "{:.3f}", "specificity": "{:.3f}",
    "ppv": "{:.3f}", "npv": "{:.3f}", "patient_roc_auc": "{:.3f}", "no_overlap_roc_auc": "{:.3f}",
    "no_overlap_accuracy": "{:.3f}", "youden_threshold": "{:.3f}", "youden_sensitivity": "{:.3f}",
    "youden_specificity": "{:.3f}",
}


def quoted_decovnet(nb: Notebook) -> None:
    """The TMI abstract's and the code's numbers (``reported_<key>``), quoted with their format."""
    P = paper_values.DECOVNET
    for key, fmt in [("roc_auc", "{:.3f}"), ("pr_auc", "{:.3f}"), ("accuracy", "{:.3f}"),
                     ("ppv_as_labelled", "{:.3f}"), ("npv_as_labelled", "{:.3f}"),
                     ("seconds_per_ct_gpu", "{:.2f}"), ("params", "{:,}"), ("n_train", "{:d}"), ("n_test", "{:d}")]:
        nb.glue_text(f"reported_{key}", P[key], fmt)


def released_statistics(nb: Notebook, stats: dict[str, Any] | None) -> None:
    """Glue the statistics recomputed from the released probabilities (``rel_<key>``) and their
    tables; ``stats`` is :func:`reprolib.evaluate.paper_statistics` or ``None`` (synthetic
    profile: nothing is fetched, every value reads "not available")."""
    for key, fmt in RELEASED_FORMATS.items():
        value = None if stats is None else stats[key]
        nb.glue_text(f"rel_{key}", int(value) if fmt == "{:d}" and value is not None else value, fmt)
    nb.glue_text("lp_rel_auc", None if stats is None else
                 f"{stats['roc_auc']:.3f} ({stats['roc_auc_ci_lo']:.3f}–{stats['roc_auc_ci_hi']:.3f})")
    nb.glue_markdown("released_skipped", "" if stats is not None else (
        ":::{note}\nThe synthetic profile downloads nothing, so this section shows no values: build the "
        "`sample` profile to recompute the paper's statistics from the released file.\n:::\n"))
    P = paper_values.DECOVNET
    rows = [("ROC AUC", P["roc_auc"], "roc_auc"), ("PR AUC (average precision)", P["pr_auc"], "average_precision"),
            ("accuracy at p > 0.5", P["accuracy"], "accuracy"),
            ('"PPV" in the abstract = sensitivity', P["ppv_as_labelled"], "sensitivity"),
            ('"NPV" in the abstract = specificity', P["npv_as_labelled"], "specificity"),
            ("true PPV (precision)", None, "ppv"), ("true NPV", None, "npv")]
    table = pd.DataFrame([(name, quoted, None if stats is None else stats[key]) for name, quoted, key in rows],
                         columns=["statistic", "TMI abstract", "recomputed"]).set_index("statistic")
    nb.glue_table("released_table", table, floatfmt="{:.4f}", record=stats is not None)
    ops = pd.DataFrame(stats["operating_points"]) if stats is not None else pd.DataFrame(
        {"note": ["not fetched in the synthetic profile"]})
    nb.glue_table("operating_points", ops, record=stats is not None, index=False)


def network_summary(nb: Notebook, input_shape: tuple[int, ...] = (1, 2, 100, 224, 336)) -> models.DeCoVNet:
    """Glue DeCoVNet's layer table, parameter count, MACs per slice and the stem's kernel."""
    net = models.DeCoVNet()
    n_params = models.count_parameters(net)
    summary = pd.DataFrame(models.model_summary(net, input_shape))
    summary["GMAC"] = summary.pop("macs") / 1e9
    summary["output_shape"] = summary["output_shape"].map(lambda s: "×".join(map(str, s[1:])) if s else "")
    nb.glue("params", n_params)
    nb.glue_text("lp_params", n_params, "{:,}")
    nb.glue("params_match", n_params == paper_values.DECOVNET["params"])
    nb.glue_text("params_match_word", "yes" if n_params == paper_values.DECOVNET["params"] else "no")
    gmac = {T: models.count_macs(net, (1, 2, T, 224, 336)) / 1e9 for T in (100, 300)}
    slope = (gmac[300] - gmac[100]) / 200
    nb.glue("gmac_t100", round(gmac[100], 2))
    nb.glue("gmac_slope", round(slope, 4))
    nb.glue("gmac_intercept", round(gmac[100] - 100 * slope, 2))
    nb.glue("stem_kernel", "×".join(map(str, net.stem[0].kernel_size)))
    nb.glue("input_hw_paper", "224×336")
    nb.glue_table("layer_table", summary.set_index("name"))
    return net


def classifier_settings(nb: Notebook, C: dict[str, Any]) -> None:
    """Glue this profile's DeCoVNet training settings beside the official ones (table and keys
    the claims ledger compares: ``input_hw``, ``train_lr``, ``train_epochs``, ``train_batch``,
    ``augment`` and the seed paper's augmentation as implemented by ``augment: seed``)."""
    hw, z_step = tuple(C["hw"]), int(C["z_step"])
    nb.glue("input_hw", f"{hw[0]}×{hw[1]}")
    nb.glue("train_lr", float(C["lr"]))
    nb.glue("train_epochs", int(C["epochs"]))
    nb.glue("train_batch", int(train.TrainConfig().batch))
    nb.glue("augment", str(C["augment"]))
    seed_aug = augment.SeedAugment()
    nb.glue("aug_crop_min", seed_aug.crop_scale[0])
    nb.glue("aug_rotation_deg", seed_aug.degrees)
    nb.glue("aug_flip_p", seed_aug.flip_p)
    nb.glue("aug_contrast", f"{seed_aug.contrast[0]:g}–{seed_aug.contrast[1]:g}")
    settings = pd.DataFrame({
        "this profile": [f"{hw[0]}×{hw[1]}", f"every {z_step}", C["epochs"], C["lr"], C["fc_init"], C["augment"]],
        "official code": ["224×336", "every 1", 100, 1e-5, "official", "official"]},
        index=pd.Index(["in-plane input", "1 mm slices kept", "epochs", "Adam learning rate",
                        "FC initialisation", "augmentation"], name="setting")).astype(str)
    nb.glue_table("our_settings", settings, record=False)


def cohort_summary(nb: Notebook, items: list, folds: list, note: str) -> None:
    """Glue the size of the classifier cohort: volumes, classes, folds, slices per volume."""
    labels = np.array([lab for _, lab, _ in items])
    depths = [int(x.shape[1]) for x, _, _ in items]
    nb.glue("our_n", len(items))
    nb.glue("our_n_pos", int(labels.sum()))
    nb.glue("our_n_neg", int((1 - labels).sum()))
    nb.glue("our_n_folds", len(folds))
    nb.glue_text("our_folds_phrase", plural(len(folds), "fold"))
    nb.glue("our_T_min", min(depths))
    nb.glue("our_T_max", max(depths))
    nb.glue_text("our_cohort", note)


def trained_decovnet(nb: Notebook, oof: pd.DataFrame, oof_bn_train: pd.DataFrame, seed: int) -> dict[str, Any]:
    """Glue the held-out evaluation of the DeCoVNet trained in this build: ROC AUC, AP and the
    rates at p > 0.5 with 95 % intervals, whether it learned (:func:`reprolib.evaluate.learned`)
    and the ROC AUC with BatchNorm in train mode at test time (as the official test script)."""
    y, p = oof.label.to_numpy(), oof.p_covid.to_numpy()
    ours = evaluate.binary_report(y, p, n_boot=2000, seed=seed)
    for key in ("roc_auc", "roc_auc_ci_lo", "roc_auc_ci_hi", "average_precision", "accuracy", "sensitivity",
                "specificity"):
        nb.glue(f"our_{key}", float(ours[key]))
    for key in ("average_precision_ci_lo", "average_precision_ci_hi", "accuracy_ci_lo", "accuracy_ci_hi",
                "sensitivity_ci_lo", "sensitivity_ci_hi", "specificity_ci_lo", "specificity_ci_hi"):
        nb.glue(f"our_{key}", float(ours[key]))
    ok, reason = evaluate.learned(p, ours["roc_auc_ci_lo"])
    nb.glue("our_learned", ok)
    nb.glue_text("our_learned_reason", reason)
    nb.glue_text("our_learned_word", "learned" if ok else "did not learn")
    nb.glue("our_p_min", float(p.min()))
    nb.glue("our_p_max", float(p.max()))
    nb.glue_text("lp_our_auc", f"{ours['roc_auc']:.3f} ({ours['roc_auc_ci_lo']:.3f}–{ours['roc_auc_ci_hi']:.3f})"
                 f", n = {len(oof)}")
    nb.glue_text("lp_our_acc", f"{ours['accuracy']:.3f} ({ours['accuracy_ci_lo']:.3f}–{ours['accuracy_ci_hi']:.3f})"
                 f", n = {len(oof)}")
    nb.glue_text("lp_our_ap", f"{ours['average_precision']:.3f} ({ours['average_precision_ci_lo']:.3f}–"
                 f"{ours['average_precision_ci_hi']:.3f}), n = {len(oof)}")
    bn = evaluate.binary_report(oof_bn_train.label.to_numpy(), oof_bn_train.p_covid.to_numpy(), n_boot=2000, seed=seed)
    for suffix in ("", "_ci_lo", "_ci_hi"):
        nb.glue(f"our_roc_auc_bn_train{suffix}", float(bn["roc_auc" + suffix]))
    nb.glue_text("lp_our_auc_bn_train", f"{bn['roc_auc']:.3f} ({bn['roc_auc_ci_lo']:.3f}–{bn['roc_auc_ci_hi']:.3f})")
    return ours


# --------------------------------------------------------------------------- chapter 05


def network_comparison(nb: Notebook, T: int) -> None:
    """Glue the size and cost of DeCoVNet and 2DClfNet for one volume of ``T`` slices at
    224×336, and the output shape of each 2DClfNet stage of the seed paper's Table 2
    (``clf2d_shape_<stage>``, per slice)."""
    shape = (1, 2, T, 224, 336)
    nets = {"DeCoVNet (3D)": models.DeCoVNet(), "2DClfNet (slice-wise)": models.Clf2DNet()}
    rows = [{"network": name, "parameters": models.count_parameters(net),
             "GMAC": models.count_macs(net, shape) / 1e9,
             "output": "×".join(map(str, models.output_shape(net, shape)))} for name, net in nets.items()]
    compare = pd.DataFrame(rows).set_index("network")
    nb.glue("timing_T", T)
    nb.glue("clf2d_params", int(compare.loc["2DClfNet (slice-wise)", "parameters"]))
    nb.glue_text("lp_clf2d_params", int(compare.loc["2DClfNet (slice-wise)", "parameters"]), "{:,}")
    nb.glue("clf2d_gmac", round(float(compare.loc["2DClfNet (slice-wise)", "GMAC"]), 2))
    nb.glue("decov_gmac", round(float(compare.loc["DeCoVNet (3D)", "GMAC"]), 2))
    nb.glue_table("arch_table", compare, record=False)
    stages = {r["name"]: r["output_shape"] for r in models.model_summary(nets["2DClfNet (slice-wise)"], shape)}
    names = {"stem": "stem", "res1": "res1", "res2": "res2", "convs": "convs", "pool": "global_pool"}
    for key, stage in names.items():
        nb.glue(f"clf2d_shape_{key}", "×".join(map(str, stages[stage][1:])))
    nb.glue("clf2d_n_outputs", int(models.output_shape(nets["2DClfNet (slice-wise)"], shape)[-1]))


def clf2d_epochs_note(nb: Notebook, C: dict[str, Any]) -> int:
    """Glue the epochs of both networks and, when they differ, the phrase that says why."""
    decov, clf2d = int(C["epochs"]), int(C.get("clf2d_epochs", C["epochs"]))
    nb.glue("decov_epochs", decov)
    nb.glue("clf2d_epochs", clf2d)
    nb.glue_text("clf2d_epochs_note", f"Both train for {plural(clf2d, 'epoch')}." if clf2d == decov else (
        f"One setting differs: this profile trains 2DClfNet for {plural(clf2d, 'epoch')} against DeCoVNet's "
        f"{decov} (`classifier.clf2d_epochs`), because each 2DClfNet step costs several times DeCoVNet's and "
        "the profile must fit its CPU time budget. Fewer epochs can only handicap 2DClfNet, so a DeCoVNet "
        "lead here would be overstated."))
    return clf2d


def side_by_side(nb: Notebook, both: pd.DataFrame, items: list, C: dict[str, Any], n_folds: int,
                 seed: int) -> dict[str, dict[str, Any]]:
    """Glue both networks' held-out evaluation on the same volumes (``both``: the merged
    predictions, columns ``p_covid_decovnet``, ``p_covid_clf2d``, ``seconds_*``): the table, the
    paired ROC AUC difference with its bootstrap interval, whether each learned, and the costs."""
    y = both.label.to_numpy()
    names = {"DeCoVNet (3D)": "decovnet", "2DClfNet (slice-wise)": "clf2d"}
    reports = {name: evaluate.binary_report(y, both[f"p_covid_{key}"].to_numpy(), n_boot=2000, seed=seed)
               for name, key in names.items()}
    diff = evaluate.paired_auc_difference(y, both.p_covid_decovnet, both.p_covid_clf2d, n_boot=2000, seed=seed)
    mean_T = int(round(np.mean([x.shape[1] for x, _, _ in items])))
    run_shape = (1, 2, mean_T) + items[0][0].shape[2:]
    nets = {"DeCoVNet (3D)": models.DeCoVNet(proclf_grids=models.proclf_grids_for(tuple(C["hw"]))),
            "2DClfNet (slice-wise)": models.Clf2DNet()}
    rows = []
    for name, r in reports.items():
        key = names[name]
        rows.append({"network": name,
                     "ROC AUC (95 % CI)": f"{r['roc_auc']:.3f} ({r['roc_auc_ci_lo']:.3f}–{r['roc_auc_ci_hi']:.3f})",
                     "AP": r["average_precision"], "accuracy": r["accuracy"], "sensitivity": r["sensitivity"],
                     "specificity": r["specificity"],
                     "GMAC per volume (this input)": models.count_macs(nets[name], run_shape) / 1e9,
                     "s per volume (CPU)": float(both[f"seconds_{key}"].median())})
    nb.glue_table("side_by_side", pd.DataFrame(rows).set_index("network"), record=False)
    learned = {}
    for name, short in [("DeCoVNet (3D)", "decov"), ("2DClfNet (slice-wise)", "clf2d")]:
        r = reports[name]
        for m in ("roc_auc", "roc_auc_ci_lo", "roc_auc_ci_hi", "average_precision", "accuracy"):
            nb.glue(f"{short}_run_{m}", float(r[m]))
        learned[short], reason = evaluate.learned(both[f"p_covid_{names[name]}"], r["roc_auc_ci_lo"])
        nb.glue(f"{short}_learned", learned[short])
        nb.glue_text(f"{short}_learned_reason", reason)
    nb.glue("both_learned", learned["decov"] and learned["clf2d"])
    nb.glue_text("both_learned_reason", "; ".join(
        f"{n} {'learned' if learned[k] else 'did not learn'}" for n, k in (("DeCoVNet", "decov"), ("2DClfNet", "clf2d"))))
    nb.glue("auc_diff", float(diff["difference"]))
    nb.glue("auc_diff_lo", float(diff["ci_lo"]))
    nb.glue("auc_diff_hi", float(diff["ci_hi"]))
    nb.glue("run_n", len(both))
    nb.glue("run_folds", n_folds)
    nb.glue_text("run_folds_phrase", plural(n_folds, "fold"))
    nb.glue("run_mean_T", mean_T)
    nb.glue_timing("clf2d_seconds_per_volume", float(both.seconds_clf2d.median()))
    nb.glue_timing("decov_seconds_per_volume", float(both.seconds_decovnet.median()))
    r2 = reports["2DClfNet (slice-wise)"]
    nb.glue_text("lp_clf2d_auc", f"{r2['roc_auc']:.3f} ({r2['roc_auc_ci_lo']:.3f}–{r2['roc_auc_ci_hi']:.3f}), "
                 f"n = {len(both)}")
    return reports


# --------------------------------------------------------------------------- chapter 06


def r3dcc_survey(nb: Notebook, cc: pd.DataFrame, profile: str) -> None:
    """Glue the 3DCC survey table; on phantoms, R3dcc's own hit rate against the random-voxel chance."""
    nb.glue_table("cc3d_table", cc)
    synthetic = profile == "synthetic"
    flags = [bool(h) for h in cc.get("R3dcc hit (median voxel)", pd.Series(dtype=object)).dropna()] if synthetic else []
    rate, lo, hi, k, n = hits.hit_rate(flags) if synthetic else (None,) * 5
    base = float(cc["random lung voxel hit probability"].dropna().mean()) if synthetic else None
    if synthetic:
        nb.glue("r3dcc_hit_rate", rate)
        nb.glue("random_baseline", base)
    nb.glue_text("lp_r3dcc_hit", None if not synthetic else f"{rate:.3f} ({k}/{n}; 95 % CI {lo:.3f}–{hi:.3f})")
    nb.glue_text("lp_r3dcc_random", base)
    negatives = cc[cc.label != "covid19"]
    nb.glue_text("r3dcc_empty_negatives", f"{int((negatives['R3dcc voxels'] == 0).sum())} of "
                 f"{plural(len(negatives), 'negative volume')}")


def _rate_text(r: pd.Series) -> str | None:
    if r.n == 0:
        return None
    return f"{r.hit_rate:.3f} ({int(r.hits)}/{int(r.n)}; 95 % CI {r.ci_lo:.3f}–{r.ci_hi:.3f})"


def hit_rates(nb: Notebook, per: pd.DataFrame, kind: str) -> None:
    """Glue the hit-rate table of chapter 06 (both populations × CAM variants × tile sizes, with
    the random-voxel chance beside every rate), the headline rates and their margins over chance."""

    scored = per[per.hit.notna()]
    nb.glue("cam_n_volumes", int(per.case_id.nunique()))
    nb.glue("cam_n_scored", int(scored.case_id.nunique()))
    nb.glue_text("cam_hit_kind", kind)
    nb.glue_timing("cam_seconds_per_volume", float(per.seconds.median()) if len(per) else float("nan"))
    pp = hits.hit_rate_table(per, population="predicted_positive")
    al = hits.hit_rate_table(per, population="all_annotated")
    both = pd.concat({"predicted positive": pp, "all annotated": al}, names=["population"])
    show = both.assign(**{"hit rate (95 % CI)": [
        "–" if n == 0 else f"{r:.3f} ({lo:.3f}–{hi:.3f})" for r, lo, hi, n in
        zip(both.hit_rate, both.ci_lo, both.ci_hi, both.n)]})
    show = show[["n", "hits", "hit rate (95 % CI)", "random_baseline", "hit_rate_centroid", "hit_rate_largest_cam",
                 "median_dice"]].rename(columns={"hit_rate_centroid": "centroid",
                                                 "hit_rate_largest_cam": "largest CAM only",
                                                 "random_baseline": "random lung voxel", "median_dice": "median Dice"})
    nb.glue_table("hit_table", show)
    main, main_all, grad = pp.loc[("linear", 6)], al.loc[("linear", 6)], pp.loc[("gradcam", 6)]
    glued = {"cam_hit_rate": (main, "hit_rate"), "cam_hit_lo": (main, "ci_lo"), "cam_hit_hi": (main, "ci_hi"),
             "cam_random_baseline": (main, "random_baseline"), "cam_only_hit_rate": (main, "hit_rate_largest_cam"),
             "gradcam_hit_rate": (grad, "hit_rate"), "cam_w7_hit_rate": (pp.loc[("linear", 7)], "hit_rate"),
             "cam_all_hit_rate": (main_all, "hit_rate"), "cam_all_random_baseline": (main_all, "random_baseline")}
    for key, (r, col) in glued.items():
        nb.glue(key, None if r.n == 0 else float(r[col]))
    for key, r in (("cam", main), ("cam_all", main_all)):
        nb.glue(f"{key}_hits", int(r.hits))
        nb.glue(f"{key}_n", int(r.n))
    nb.glue("cam_beats_random", None if main.n == 0 else bool(main.hit_rate > main.random_baseline))
    for key, r in (("cam_margin", main), ("cam_all_margin", main_all)):  # hit rate minus the random-voxel chance
        nb.glue(key, None if r.n == 0 else float(r.hit_rate - r.random_baseline))
    nb.glue("gradcam_margin", None if grad.n == 0 else float(grad.hit_rate - grad.random_baseline))
    nb.glue("cam_margin_ci_lo", None if main.n == 0 else float(main.ci_lo - main.random_baseline))
    nb.glue("cam_margin_ci_hi", None if main.n == 0 else float(main.ci_hi - main.random_baseline))
    nb.glue("cc3d_window_paper", 7 if pp.loc[("linear", 7)].n or al.loc[("linear", 7)].n else None)
    fmt = "{:.3f}"
    nb.glue_text("lp_cam_hit", _rate_text(main) and f"{_rate_text(main)}, {kind}, random lung voxel "
                 f"{main.random_baseline:.3f}")
    nb.glue_text("lp_cam_hit_pp", _rate_text(main))
    nb.glue_text("lp_cam_hit_all", _rate_text(main_all))
    nb.glue_text("lp_cam_random_pp", None if main.n == 0 else main.random_baseline, fmt)
    nb.glue_text("lp_cam_random_all", None if main_all.n == 0 else main_all.random_baseline, fmt)
    nb.glue_text("lp_cam_only", None if main.n == 0 else main.hit_rate_largest_cam, fmt)
    nb.glue_text("lp_gradcam", None if grad.n == 0 else grad.hit_rate, fmt)
    nb.glue_text("lp_cam_w7", None if pp.loc[("linear", 7)].n == 0 else pp.loc[("linear", 7)].hit_rate, fmt)
    nb.glue_text("cam_pp_phrase", f"{plural(int(main.n), 'volume')} of {int(main_all.n)}")
    above = None if main.n == 0 else ("above" if main.hit_rate > main.random_baseline else "not above")
    nb.glue_text("cam_above_word", above or "not comparable with")
    first = per[(per.CAM == "linear") & (per.window == 6)]
    n_empty = int((first["R3dcc voxels"] == 0).sum())
    nb.glue_text("r3dcc_empty_phrase", f"{n_empty} of {plural(len(first), 'volume')}")
    empty = int((first["lesion voxels"] == 0).sum())
    nb.glue("cam_empty_predictions", empty)
    nb.glue_text("cam_empty_phrase", f"{empty} of {plural(len(first), 'volume')}")
    outside = int((first["point_in_lung"] == False).sum())  # noqa: E712  (None = empty prediction)
    nb.glue("cam_points_outside_lung", outside)
    nb.glue_text("cam_points_outside_phrase", f"{outside} of {plural(len(first), 'volume')}")
    cols = ["fold", "p_covid", "R3dcc voxels", "lesion voxels", "point_in_lung", "hit", "hit_centroid",
            "hit_largest_cam", "random_baseline", "dice", "seconds"]
    nb.glue_table("cam_table", first.set_index("case_id")[cols].rename(columns={"point_in_lung": "point in lung"}))


def self_hits(nb: Notebook, metric: pd.DataFrame) -> None:
    """Glue the self-hit rates of the hit metric's two hit points."""
    nb.glue("self_hit_median", float(metric.iloc[0]["rate"]))
    nb.glue("self_hit_centroid", float(metric.iloc[1]["rate"]))
    nb.glue("n_gt_masks", int(metric.iloc[0]["n"]))
    nb.glue_table("metric_table", metric)


# --------------------------------------------------------------------------- chapters 07 and 08


def cxr_split(nb: Notebook, dev: list, counts: pd.DataFrame) -> None:
    """Glue the development split: images per class, source and split, patient overlap, the
    images per class before augmentation (``n_dev_<class>``, compared with the paper's counts)."""
    from . import cxr

    patients = {s: {r.patient for r in dev if r.split == s} for s in ("train", "val")}
    nb.glue("patient_overlap", len(patients["train"] & patients["val"]))
    nb.glue("n_train", sum(r.split == "train" for r in dev))
    nb.glue("n_val", sum(r.split == "val" for r in dev))
    nb.glue("n_not_certain_patients", len({r.patient for r in dev if r.label == "not_certain"}))
    for c in cxr.CLASSES:
        nb.glue(f"n_dev_{c}", sum(r.label == c for r in dev))
        nb.glue(f"n_train_{c}", sum(r.label == c and r.split == "train" for r in dev))
    nb.glue_table("split_table", counts)


def confound(nb: Notebook, audit: dict[str, Any]) -> None:
    """Glue the confound audit (a classifier that sees only image geometry and intensity)."""
    nb.glue("confound_accuracy", audit["accuracy"])
    nb.glue("confound_majority", audit["majority_accuracy"])
    covid_auc = audit["per_class_auc"].get("covid19", float("nan"))
    nb.glue("confound_covid_auc", covid_auc)
    nb.glue_text("lp_confound_covid_auc", covid_auc)
    table = pd.DataFrame({"recall": audit["per_class_recall"], "one-vs-rest AUC": audit["per_class_auc"]})
    table.index.name = "class"
    nb.glue_table("confound_table", table)


def cxr_training(nb: Notebook, S: dict[str, Any], mode: str, reason: str, losses: list[float], checkpoint_sha256: str,
                 n_train_balanced: dict[str, int]) -> None:
    """Glue the training settings (size, epochs, learning rates, augmentation), where the
    initial weights came from (a banner when they are random) and the trained checkpoint."""
    from . import cxr

    nb.glue("weights_mode", mode)
    nb.glue_text("weights_phrase", "ImageNet weights" if mode == "imagenet" else "random initialisation")
    nb.glue_markdown("weights_banner", (
        ":::{admonition} Trained from ImageNet weights\n:class: note\n" + reason + "\n:::\n") if mode == "imagenet"
        else (":::{admonition} Trained from random initialisation\n:class: warning\n"
              f"{reason} The paper fine-tunes ImageNet weights; without them, the frozen lower layers are "
              "random features and the scores below are not comparable with the paper's.\n:::\n"))
    nb.glue("checkpoint_sha256", checkpoint_sha256)
    nb.glue("train_loss_last", round(losses[-1], 4))
    nb.glue("epochs", int(S["epochs"]))
    nb.glue("image_size", int(S["size"]))
    nb.glue("lr_low", float(min(S["lrs"])))
    nb.glue("lr_high", float(max(S["lrs"])))
    nb.glue("contrast_range", f"{cxr.CONTRAST_RANGE[0]:g}–{cxr.CONTRAST_RANGE[1]:g}")
    nb.glue("contrast_p", cxr.CONTRAST_P)
    nb.glue_text("n_train_balanced", ", ".join(f"{c} {n}" for c, n in n_train_balanced.items()))


def cxr_validation(nb: Notebook, y: np.ndarray, yhat: np.ndarray, seed: int) -> pd.DataFrame:
    """Glue per-class precision, recall, F1 and one-vs-rest accuracy with 95 % intervals (Wilson;
    bootstrap for F1), the macro F1, the overall accuracy, whether the model learned
    (:func:`reprolib.evaluate.learned_multiclass`) and the paper's table. Returns the report."""
    from . import cxr

    labels = list(range(len(cxr.CLASSES)))
    report = evaluate.per_class_report(y, yhat, labels)
    report.index = [cxr.CLASSES[i] if isinstance(i, (int, np.integer)) else i for i in report.index]
    report.index.name = "class"
    present = [c for c in cxr.CLASSES if c in report.index and report.loc[c, "support"] > 0]
    f1_ci = evaluate.f1_intervals(y, yhat, labels, seed=seed)
    report["f1_lo"] = [f1_ci.get(str(labels[cxr.CLASSES.index(c)]), (np.nan, np.nan))[0] if c in cxr.CLASSES else np.nan
                       for c in report.index]
    report["f1_hi"] = [f1_ci.get(str(labels[cxr.CLASSES.index(c)]), (np.nan, np.nan))[1] if c in cxr.CLASSES else np.nan
                       for c in report.index]
    macro_f1 = float(report.loc[present, "f1"].mean())
    nb.glue("macro_f1", macro_f1)
    nb.glue("macro_f1_ci_lo", f1_ci["macro"][0])
    nb.glue("macro_f1_ci_hi", f1_ci["macro"][1])
    nb.glue_text("lp_macro_f1", f"{macro_f1:.3f} ({f1_ci['macro'][0]:.3f}–{f1_ci['macro'][1]:.3f}), n = {len(y)}")
    correct = int((np.asarray(y) == np.asarray(yhat)).sum())
    lo, hi = evaluate.wilson_ci(correct, len(y))
    nb.glue("accuracy", correct / len(y))
    nb.glue("accuracy_ci_lo", lo)
    nb.glue("accuracy_ci_hi", hi)
    for i, c in enumerate(cxr.CLASSES):
        there = c in present
        row = report.loc[c] if c in report.index else None
        for m in ("precision", "recall"):
            for suffix in ("", "_lo", "_hi"):
                v = float(row[m + suffix]) if there else None
                nb.glue(f"{m}_{c}" + {"": "", "_lo": "_ci_lo", "_hi": "_ci_hi"}[suffix],
                        None if v is None or not np.isfinite(v) else v)
        nb.glue(f"f1_{c}", float(row["f1"]) if there else None)
        nb.glue(f"f1_{c}_ci_lo", float(row["f1_lo"]) if there else None)
        nb.glue(f"f1_{c}_ci_hi", float(row["f1_hi"]) if there else None)
        nb.glue(f"support_{c}", int((np.asarray(y) == i).sum()))
        nb.glue(f"predicted_{c}", int((np.asarray(yhat) == i).sum()))
    covid_recall = float(report.loc["covid19", "recall"]) if "covid19" in present else None
    nb.glue_text("lp_covid_recall", covid_recall)
    ok, reason, _ = evaluate.learned_multiclass(y, yhat, seed=seed)
    nb.glue("cxr_learned", ok)
    nb.glue_text("cxr_learned_reason", reason)
    nb.glue_text("cxr_learned_word", "learned" if ok else "did not learn")
    cols = ["precision", "precision_lo", "precision_hi", "recall", "recall_lo", "recall_hi", "f1", "f1_lo", "f1_hi",
            "accuracy_ovr", "accuracy_ovr_lo", "accuracy_ovr_hi", "support"]
    nb.glue_table("val_report", report[cols])
    nb.glue_text("reported_macro_f1", paper_values.CXR["average_percent"] / 100, "{:.2f}")
    return report


def external_sets(nb: Notebook, profile: str, ext_frame: pd.DataFrame, removed_table: pd.DataFrame,
                  n_pairs: int) -> None:
    """Glue what the external set is in this profile and what de-duplication removed."""
    desc = {"synthetic": "held-out phantoms from the same generator (test split)",
            "sample": "every patient of the Hannover repository (another hospital; COVID-19 only, so it measures "
                      "sensitivity), reported beside the Kermany *test* split (other children of the training "
                      "hospital: a same-source held-out set, not an external one)",
            "paper": "the COVID-19 Radiography Database (Chowdhury et al.)"}[profile]
    nb.glue_text("external_desc", desc)
    sources = ext_frame.groupby(["label", "source"]).size().rename("images").to_frame()
    nb.glue_table("external_sources", sources)
    nb.glue("n_removed", int(removed_table.removed.sum()))
    nb.glue("n_external_before", int(removed_table.before.sum()))
    nb.glue_table("dedup_table", removed_table)
    db = ext_frame[ext_frame.source.astype(str).str.contains("radiography", case=False)]
    for c in ("covid19", "healthy", "pneumonia"):
        nb.glue(f"ext_db_{c}", int((db.label == c).sum()) if len(db) else None)
    nb.glue_markdown("dup_pairs_block", (
        "```{glue:figure} dup_pairs\n:name: fig-dup-pairs\nExamples of removed pairs (top: external image; "
        "bottom: its development twin).\n```\n") if n_pairs else
        "No external image was a near-copy of a development image, so there is no pair to show.")


def external_accuracy(nb: Notebook, records: list, y: np.ndarray, probs: np.ndarray, per_class: int) -> None:
    """Glue the accuracy per class on the de-duplicated held-out images (at most ``per_class`` drawn
    per class and set) with Wilson intervals, per set: ``external`` (another hospital) and
    ``same_source`` (held out from a training source), next to the paper's external accuracies
    (quoted; the paper's set was the COVID-19 Radiography Database). For COVID-19 on the external set
    it also gives one score per patient (a patient counts as found when the mean of its images'
    probabilities is highest for COVID-19): ``ext_patients_covid19``, ``ext_patient_acc_covid19``."""
    from . import cxr

    nb.glue("external_per_class", int(per_class))
    paper_ext = paper_values.CXR["external_accuracy_percent"]
    for cls, pct in paper_ext.items():
        nb.glue_text(f"reported_ext_acc_{cls}", pct / 100, "{:.2f}")
    y, yhat = np.asarray(y), np.asarray(probs).argmax(1)
    sets = np.array([r.split for r in records])
    rows = []
    for cls in cxr.CLASSES:
        k_idx = y == cxr.CLASSES.index(cls)
        n = int(k_idx.sum())
        nb.glue(f"ext_n_{cls}", n)
        if n == 0:
            for key in (f"ext_acc_{cls}_ci_lo", f"ext_acc_{cls}_ci_hi"):
                nb.glue(key, None)
            if cls in paper_ext:
                nb.glue_text(f"lp_ext_acc_{cls}", None)
            continue
        k = int((yhat[k_idx] == y[k_idx]).sum())
        lo, hi = evaluate.wilson_ci(k, n)
        kinds = sorted(set(sets[k_idx]))
        rows.append({"class": cls, "set": ", ".join(kinds), "n": n, "correct": k, "accuracy": k / n, "ci_lo": lo,
                     "ci_hi": hi, "paper (%)": paper_ext.get(cls)})
        nb.glue(f"ext_acc_{cls}", k / n)
        nb.glue(f"ext_acc_{cls}_ci_lo", lo)
        nb.glue(f"ext_acc_{cls}_ci_hi", hi)
        where = {"external": "another hospital", "same_source": "same source, not external"}.get(kinds[0], kinds[0])
        nb.glue_text(f"lp_ext_acc_{cls}", f"{k / n:.3f} ({lo:.3f}–{hi:.3f}), n = {n}, {where}")
    nb.glue_table("external_accuracy", pd.DataFrame(rows).set_index("class"))
    covid = cxr.CLASSES.index("covid19")
    ext = (sets == "external") & (y == covid)
    patients = sorted({r.group for r, e in zip(records, ext) if e})
    found = 0
    for g in patients:
        idx = [i for i, r in enumerate(records) if ext[i] and r.group == g]
        found += int(np.asarray(probs)[idx].mean(axis=0).argmax() == covid)
    lo, hi = evaluate.wilson_ci(found, len(patients))
    nb.glue("ext_patients_covid19", len(patients))
    nb.glue("ext_patient_acc_covid19", found / len(patients) if patients else None)
    nb.glue_text("lp_ext_patient_acc_covid19", None if not patients else
                 f"{found / len(patients):.3f} ({lo:.3f}–{hi:.3f}), {plural(len(patients), 'patient')}")


# --------------------------------------------------------------------------- every trained chapter


def seed_spread(nb: Notebook, keys: dict[str, str]) -> None:
    """Glue ``seed_spread``: in the synthetic profile, a table of how much each trained value of
    ``keys`` (results key -> label) varied over the calibration runs (median and range), beside
    this run's value, so that a reader sees how much a single run means; empty elsewhere."""
    import json

    from . import config

    path = config.calibration_json()
    spread = json.loads(path.read_text()).get(nb.name, {}) if nb.profile == "synthetic" and path.is_file() else {}
    rows = []
    for key, label in keys.items():
        s = spread.get(key)
        if s is None:
            continue
        mine = nb.values.get(key)
        rows.append({"value": label, "this run": mine, "median": s["median"], "range": f"{s['min']:.3f}–{s['max']:.3f}",
                     "runs": s["n"]})
    if not rows:
        nb.glue_markdown("seed_spread", "")
        return
    from .book import markdown_table

    table = markdown_table(pd.DataFrame(rows).set_index("value"))
    n = rows[0]["runs"]
    nb.glue_markdown("seed_spread", (
        f":::{{table}} How much this chapter's trained values vary on phantoms: median and range over {n} "
        "calibration runs (five seeds, each with the CPU's own kernels and with oneDNN and ATen capped one "
        "instruction set lower; `tests/expected/calibrate.py`), beside this run's value.\n"
        f":name: tbl-{nb.name[:2]}-spread\n\n{table}\n:::\n"))


# --------------------------------------------------------------------------- chapter 07: sources and age


def cxr_sources(nb: Notebook, src: Any | None) -> None:
    """Glue where the sample's chest X-rays come from (:class:`reprolib.cxr_sources.SampleSources`):
    the Hannover originals kept out of development, found by metadata and confirmed by perceptual
    hash, and the Hannover patients they belong to; "not available" in the synthetic profile."""
    n_meta = None if src is None else len(src.excluded) - len(src.hash_only)
    nb.glue_text("n_hannover_origin_metadata", n_meta, "{:d}")
    nb.glue_text("n_hannover_origin_hash", None if src is None else src.confirmed_by_hash, "{:d}")
    nb.glue_text("n_hannover_origin_hash_only", None if src is None else len(src.hash_only), "{:d}")
    nb.glue_text("n_hannover_origin_patients", None if src is None else len(src.linked_patients), "{:d}")


def adult_confound(nb: Notebook, audit: dict[str, Any] | None) -> None:
    """Glue the confound audit restricted to adults: COVID-19 against adult non-COVID images by image
    geometry and intensity alone (None when the profile has no adult non-COVID images)."""
    auc = None if audit is None else audit["per_class_auc"].get("covid19")
    nb.glue_text("confound_covid_auc_adult", auc)
    nb.glue_text("confound_adult_n", None if audit is None else audit["n_images"], "{:d}")


def age_groups(nb: Notebook, records: list, y: np.ndarray, yhat: np.ndarray) -> None:
    """Glue validation metrics by age group: images, accuracy and the COVID-19 specificity (non-COVID
    images not called COVID-19) with Wilson intervals, and the COVID-19 specificity on adult
    non-COVID images alone (``covid_spec_adult``, the number that says whether the model learned
    COVID-19 or adulthood)."""
    from . import cxr

    covid = cxr.CLASSES.index("covid19")
    groups = np.array([r.age_group for r in records])
    y, yhat = np.asarray(y), np.asarray(yhat)
    rows = []
    for group in ("child", "adult", "-"):
        sel = groups == group
        if not sel.any():
            continue
        right = int((y[sel] == yhat[sel]).sum())
        acc_lo, acc_hi = evaluate.wilson_ci(right, int(sel.sum()))
        neg = sel & (y != covid)
        kept = int((yhat[neg] != covid).sum())
        spec_lo, spec_hi = evaluate.wilson_ci(kept, int(neg.sum()))
        rows.append({"age group": {"-": "unknown"}.get(group, group), "images": int(sel.sum()),
                     "accuracy": right / sel.sum(), "accuracy 95 % CI": _interval(acc_lo, acc_hi),
                     "non-COVID images": int(neg.sum()),
                     "COVID-19 specificity": kept / neg.sum() if neg.any() else None,
                     "specificity 95 % CI": _interval(spec_lo, spec_hi)})
        if group == "adult":
            nb.glue("covid_spec_adult", kept / neg.sum() if neg.any() else None)
            nb.glue("covid_spec_adult_ci_lo", spec_lo if neg.any() else None)
            nb.glue("covid_spec_adult_ci_hi", spec_hi if neg.any() else None)
            nb.glue("covid_spec_adult_n", int(neg.sum()))
            nb.glue_text("lp_covid_spec_adult", None if not neg.any() else
                         f"{kept / neg.sum():.3f} ({spec_lo:.3f}–{spec_hi:.3f}), n = {int(neg.sum())}")
    if "lp_covid_spec_adult" not in nb.values:
        nb.glue_text("lp_covid_spec_adult", None)
    nb.glue_table("age_table", pd.DataFrame(rows).set_index("age group"))


def _interval(lo: float, hi: float) -> str:
    return "–" if not np.isfinite(lo) else f"{lo:.3f}–{hi:.3f}"


def paper_comparison(nb: Notebook, report: pd.DataFrame) -> None:
    """One table: the seed paper's per-class precision, recall and F1 (Table 1, per cent) beside
    ours in the same units, with our 95 % intervals."""
    rows = []
    for cls, printed in paper_values.CXR["per_class"].items():
        if cls not in report.index:
            continue
        r = report.loc[cls]
        for metric, lo, hi in (("precision", "precision_lo", "precision_hi"), ("recall", "recall_lo", "recall_hi"),
                               ("f1", "f1_lo", "f1_hi")):
            ours = r[metric]
            rows.append({"class": cls, "metric": metric, "seed paper 003 (%)": printed[metric],
                         "this build (%)": None if not np.isfinite(ours) else 100 * ours,
                         "95 % CI (%)": "–" if not np.isfinite(r[lo]) else f"{100 * r[lo]:.1f}–{100 * r[hi]:.1f}",
                         "images": int(r["support"])})
    nb.glue_table("paper_vs_ours", pd.DataFrame(rows).set_index(["class", "metric"]), floatfmt="{:.1f}")
