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
# # 05 · 2DClfNet: the slice-wise baseline
#
# The paper compares DeCoVNet with **2DClfNet**, a 2D network that classifies every slice
# independently with shared weights and takes the maximum over slices (seed paper, Table 2). The
# official code does not contain it; `reprolib.models.Clf2DNet` builds it from the table, with
# the unspecified details chosen as stated in the specification (§6): a stride-2 7×7 stem and a
# 3×3/2 max-pool to reach a quarter of the resolution, residual blocks of two 3×3 convolutions
# with a 1×1 projection shortcut, 2×2 max-pooling, and two 3×3 convolutions with bias.

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None

# %%
import pandas as pd
import torch

from reprolib import book, config, models, provenance

provenance.seed_everything(seed)
nb = book.Notebook("05_2dclfnet", profile, results_dir)
nb.banner()

# %% [markdown]
# ## Size and cost side by side

# %%
T = config.load_profile(profile)["timing"]["T"]
nb.glue("timing_T", T)
shape = (1, 2, T, 224, 336)
nets = {"DeCoVNet (3D)": models.DeCoVNet(), "2DClfNet (slice-wise)": models.Clf2DNet()}
x = torch.rand(*shape)
rows = []
for name, net in nets.items():
    net.eval()
    with torch.inference_mode():
        t_med, _ = provenance.median_time(lambda: net(x), repeats=3)
        out = net(x)
    rows.append({"network": name, "parameters": models.count_parameters(net),
                 "GMAC": models.count_macs(net, shape) / 1e9,
                 "seconds": t_med, "output": "×".join(map(str, out.shape))})
compare = pd.DataFrame(rows).set_index("network")
nb.glue("clf2d_params", int(compare.loc["2DClfNet (slice-wise)", "parameters"]))
nb.glue("clf2d_gmac", round(float(compare.loc["2DClfNet (slice-wise)", "GMAC"]), 2))
nb.glue("decov_gmac", round(float(compare.loc["DeCoVNet (3D)", "GMAC"]), 2))
nb.glue_timing("clf2d_seconds", compare.loc["2DClfNet (slice-wise)", "seconds"])
nb.glue("threads", torch.get_num_threads())
nb.glue_table("arch_table", compare.round(3), record=False)
compare.round(3)

# %% [markdown]
# ```{glue:figure} arch_table
# :name: tbl-arch
# Parameters, multiply–accumulates and CPU inference time (median of three, untrained weights)
# of both networks for one volume of T slices at 224×336 (T below).
# ```
#
# 2DClfNet has {glue:text}`clf2d_params` parameters and costs {glue:text}`clf2d_gmac:.1f` GMAC per
# volume of {glue:text}`timing_T` slices against DeCoVNet's {glue:text}`decov_gmac:.1f` GMAC: with full-resolution 64-channel
# feature maps on every slice, the 2D baseline is the more expensive network.

# %%
nb.finish()
