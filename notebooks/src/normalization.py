# requires: torch
# %% [markdown]
# # Balancing, synaptic scaling and normalization on one task
#
# **The claim examined.** Shen, Wang & Navlakha (*A correspondence between normalization strategies
# in artificial and biological neural networks*, Neural Computation 33(12), 2021) argue that
# normalization in deep learning (batch norm, weight norm, ...) and homeostatic plasticity in the
# brain (synaptic scaling) both push the hidden units of a layer toward **load balancing**: every
# unit about equally used. The paper implemented by `balgraph` (*neural synaptic balance*) studies a
# different balance: a unit is **balanced** when the cost of its incoming weights equals the cost of
# its outgoing weights (eq. 5.8; summed over a layer, eq. 8.1), a state reached by rescalings that
# leave the network function unchanged (Theorem 9.1).
#
# The two ideas differ in what they equalize and in whether they keep the function:
#
# | | equalizes | within | function |
# |---|---|---|---|
# | balancing (`balgraph.torch.balance_`) | a unit's incoming vs outgoing weight cost | each unit | unchanged (incoming ×λ, outgoing ÷λ) |
# | synaptic scaling (`SynapticScaling`) | mean activity across units | a layer | changed (incoming × (a*/ā)^γ only) |
#
# We train the same small MLP (64-64-64-10, ReLU) on scikit-learn's digits with the same seeds,
# initial weights and mini-batches under seven regimes, and record loss, accuracy, the balance
# deficit (Section 10) and load balance (CV and normalized entropy of mean activations). The
# synaptic-scaling rule here is the standard multiplicative one (Turrigiano 1998; van Rossum, Bi &
# Turrigiano 2000), not Shen et al.'s exact algorithm, of which only the abstract was available.

# %%
import os
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from torch.nn.utils.parametrizations import weight_norm

import balgraph
import balgraph.torch as bt

SMALL = os.environ.get("BALGRAPH_SMALL") == "1"
SEEDS = [0, 1] if SMALL else [0, 1, 2]
STEPS = 300 if SMALL else 2000
EVAL_EVERY = 50 if SMALL else 100
BATCH, LR, WEIGHT_DECAY, BALANCE_EVERY = 32, 0.05, 1e-3, 50
torch.set_num_threads(1)
print(f"{len(SEEDS)} seeds, {STEPS} SGD steps of batch {BATCH}, lr {LR}")

# %% [markdown]
# ## Task and regimes
#
# Digits (1797 8×8 images, pixels scaled to [0, 1]), a fixed 75/25 train/test split. All regimes use
# plain SGD without momentum; they differ in one thing each:
#
# * **SGD**: nothing else; **SGD + L2**: `weight_decay = 1e-3`;
# * **balance at init**: `balance_` (L2, p = 2) once before training: same function, other weights;
# * **balance every 50**: the same, then `BalanceEvery(k=50)` after the optimizer step;
# * **synaptic scaling**: `SynapticScaling(target="layer_mean", gamma=0.05, momentum=0.9)` after
#   every optimizer step;
# * **batch norm**: `nn.BatchNorm1d` between each hidden Linear and its ReLU;
# * **weight norm**: `torch.nn.utils.parametrizations.weight_norm` on every Linear.
#
# The seed fixes the Linear initializations (identical in every regime) and the mini-batch order.

# %%
digits = load_digits()
X_all = torch.tensor(digits.data / 16.0, dtype=torch.float64)
y_all = torch.tensor(digits.target)
perm = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(1234))
n_train = int(0.75 * len(y_all))
Xtr, ytr = X_all[perm[:n_train]], y_all[perm[:n_train]]
Xte, yte = X_all[perm[n_train:]], y_all[perm[n_train:]]
REGIMES = ["SGD", "SGD + L2", "balance at init", "balance every 50", "synaptic scaling", "batch norm", "weight norm"]
loss_fn = nn.CrossEntropyLoss()


def make_model(regime, seed):
    torch.manual_seed(seed)
    sizes, layers = [64, 64, 64, 10], []
    for k in range(3):
        lin = nn.Linear(sizes[k], sizes[k + 1]).double()
        layers.append(weight_norm(lin) if regime == "weight norm" else lin)
        if k < 2:
            if regime == "batch norm":
                layers.append(nn.BatchNorm1d(sizes[k + 1]).double())
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def measure(model):
    """Loss, accuracy, balance (Section 10, eq. 5.8) and load balance, in eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        loss = float(loss_fn(model(Xtr), ytr))
        acc = float((model(Xte).argmax(1) == yte).double().mean())
    pb, _ = bt.to_problem(model, Xtr[:2], p=2.0)
    deficit = balgraph.balance_deficit(pb, p=2.0)
    r = np.abs(balgraph.imbalance(pb, balgraph.Lp(2.0), np.zeros(pb.n_vars)))
    lb = list(bt.load_balance_report(model, Xtr).values())
    model.train(was_training)
    return dict(loss=loss, acc=acc, deficit=deficit, median_r=float(np.median(r)),
                entropy=float(np.mean([x.entropy for x in lb])), cv=float(np.mean([x.cv for x in lb])),
                silent=sum(x.silent for x in lb))


def train_loss(model):
    model.eval()
    with torch.no_grad():
        value = float(loss_fn(model(Xtr), ytr))
    model.train()
    return value


def run(regime, seed):
    model = make_model(regime, seed)
    opt = torch.optim.SGD(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY if regime == "SGD + L2" else 0.0)
    loss_jumps = []  # relative change of the training loss across each balancing
    if regime.startswith("balance"):
        before = train_loss(model)
        bt.balance_(model, 2.0, Xtr[:2], optimizer=opt)
        loss_jumps.append(abs(train_loss(model) - before) / before)
    every = bt.BalanceEvery(model, BALANCE_EVERY, 2.0, Xtr[:2], optimizer=opt) if regime == "balance every 50" else None
    scaling = bt.SynapticScaling(model, target="layer_mean", gamma=0.05, momentum=0.9) if regime == "synaptic scaling" else None
    g = torch.Generator().manual_seed(10_000 + seed)
    rows = [dict(step=0, **measure(model))]
    model.train()
    for step in range(1, STEPS + 1):
        idx = torch.randint(0, n_train, (BATCH,), generator=g)
        opt.zero_grad()
        loss_fn(model(Xtr[idx]), ytr[idx]).backward()
        opt.step()
        if scaling is not None:
            scaling.step()
        if every is not None:
            before = train_loss(model) if step % BALANCE_EVERY == 0 else None
            if every() is not None:
                loss_jumps.append(abs(train_loss(model) - before) / before)
        if step % EVAL_EVERY == 0:
            rows.append(dict(step=step, **measure(model)))
    keys = rows[0].keys()
    return {k: np.array([row[k] for row in rows]) for k in keys}, np.array(loss_jumps), model


t0 = time.perf_counter()
results, jumps, models = {}, {}, {}
with warnings.catch_warnings():
    warnings.simplefilter("error", balgraph.ConvergenceWarning)
    for regime in REGIMES:
        runs = [run(regime, s) for s in SEEDS]
        results[regime] = {k: np.stack([r[0][k] for r in runs]) for k in runs[0][0]}
        jumps[regime] = np.concatenate([r[1] for r in runs])
        models[regime] = [r[2] for r in runs]
steps = results["SGD"]["step"][0]
print(f"{len(REGIMES) * len(SEEDS)} training runs in {time.perf_counter() - t0:.1f} s")

# %% [markdown]
# ## Curves (mean ± one standard deviation over seeds)
#
# The balance deficit is Section 10's `Σ_i (IN_i − OUT_i)²` over hidden units (and, for the batch-norm
# model in eval mode, its BatchNorm units), with the costs `Σ|w|²` of eq. 8.1; `median |r|` is the
# median relative imbalance `(IN − OUT)/(IN + OUT)` of eq. 5.8, which does not depend on the weight
# scale. Load balance is averaged over the two hidden layers (means over the training set).

# %%
panels = [("loss", "training loss", True), ("acc", "test accuracy", False),
          ("deficit", "balance deficit (Section 10)", True), ("median_r", "median |r| (eq. 5.8)", False),
          ("entropy", "load balance: normalized entropy", False), ("cv", "load balance: CV of mean activity", False)]
fig, axes = plt.subplots(2, 3, figsize=(15, 8))
for ax, (key, title, log) in zip(axes.ravel(), panels):
    for regime in REGIMES:
        vals = results[regime][key]
        mu, sd = vals.mean(0), vals.std(0)
        line, = ax.plot(steps, mu, label=regime, lw=1.5)
        ax.fill_between(steps, mu - sd, mu + sd, color=line.get_color(), alpha=0.15)
    ax.set_title(title)
    ax.set_xlabel("SGD step")
    if log:
        ax.set_yscale("log")
axes[0, 0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Final values

# %%
print(f"{'regime':<18} {'loss':>15} {'test acc':>15} {'deficit':>17} {'median |r|':>15} {'entropy':>15} {'CV':>15}")
for regime in REGIMES:
    res = results[regime]
    cells = [f"{res[k][:, -1].mean():7.4g} ± {res[k][:, -1].std():<6.2g}" for k in ("loss", "acc", "deficit", "median_r", "entropy", "cv")]
    print(f"{regime:<18} " + " ".join(f"{c:>15}" for c in cells))
for regime in ("balance at init", "balance every 50"):
    print(f"{regime}: {jumps[regime].size} balancings, largest relative change of the training loss"
          f" {jumps[regime].max():.1e}")
gap = results["synaptic scaling"]["entropy"][:, -1] - results["SGD"]["entropy"][:, -1]
print("final entropy, synaptic scaling minus SGD, per seed:", np.round(gap, 4))

# %% [markdown]
# Where does synaptic scaling's large balance deficit come from? Per first-layer unit: the norm of
# its incoming weights and the fraction of training images on which it fires.

# %%
for regime in ("SGD", "synaptic scaling"):
    for seed, model in zip(SEEDS, models[regime]):
        with torch.no_grad():
            fires = (model[0](Xtr) > 0).double().mean(0).numpy()
        norms = model[0].weight.detach().norm(dim=1).numpy()
        k = int(np.argmax(norms))
        print(f"{regime:<17} seed {seed}: row norms median {np.median(norms):.3g}, max {norms[k]:.3g}"
              f" (that unit fires on {100 * fires[k]:.2f} % of images; median unit {100 * np.median(fires):.1f} %)")

# %% [markdown]
# ## Reading the results
#
# *Balancing.* Every balancing left the training loss unchanged up to rounding (the table's last
# lines): it is a change of coordinates of the same function, and right after it the deficit is
# (numerically) zero. Between balancings SGD moves the weights away from balance again, because the
# gradient of the loss is not equivariant under rescaling (`∇loss(F∘θ) = ∇loss(θ)/F`): the balanced
# runs therefore follow different trajectories from plain SGD even though they start from the same
# function (the paper's Figure 8: without a regularizer, SGD at a finite learning rate leaves a
# balanced state). With L2 weight decay, gradient descent on `E + R` must converge to a balanced
# state (Theorem 7.1, Figure 7), so compare the deficit of *SGD + L2* with *SGD*: within this short
# run it only moves toward balance, it is far from converged.
#
# *Synaptic scaling* acts on the other quantity: it multiplies each unit's incoming weights by
# `(ā_layer/ā_i)^γ`, which moves mean activities toward the layer mean, so its load-balance entropy
# rises and its CV falls relative to plain SGD (on every seed in the full run). It does so by
# changing the function, and it does not balance units in the sense of eq. 5.8: its deficit is the
# largest of all regimes. The last cell above shows why: equalizing *mean* activity makes a unit
# that fires on a handful of images fire very strongly on them, through incoming weights hundreds
# to thousands of times larger than the median row, while its outgoing weights are left alone. In
# this setting (γ = 0.05, 2000 steps) it trained to a higher loss and lower test accuracy than
# plain SGD. Batch norm also equalizes usage (its entropy is the highest), through per-unit
# standardization of the pre-activations rather than through the weights; weight norm, which
# decouples each unit's weight norm from its direction, changed load balance little here.
#
# Effects of balancing and of L2 on loss and accuracy are small on this task: in the full run the
# balanced runs ended with a training loss within about one standard deviation of plain SGD, and
# L2 lowered the deficit only moderately in 2000 steps. With three seeds we do not claim an effect
# on learning speed either way; the curves above show what was measured.

# %% [markdown]
# ## Checks

# %%
# Balancing keeps the function: the loss is unchanged at every balancing (float64).
assert jumps["balance at init"].size == len(SEEDS)
assert jumps["balance every 50"].size == len(SEEDS) * (1 + STEPS // BALANCE_EVERY)
assert max(jumps["balance at init"].max(), jumps["balance every 50"].max()) < 1e-9
# Balanced right after balancing: at the measurement points that coincide with a balancing.
assert np.all(results["balance every 50"]["median_r"][:, 1:] < 1e-6)
assert np.all(results["SGD"]["median_r"][:, -1] > 1e-3)
# Synaptic scaling raises load balance above plain SGD, on every seed.
assert np.all(results["synaptic scaling"]["entropy"][:, -1] > results["SGD"]["entropy"][:, -1])
assert np.all(results["synaptic scaling"]["cv"][:, -1] < results["SGD"]["cv"][:, -1])
# Every regime learns the task (chance is 10 %).
assert all(results[r]["acc"][:, -1].min() > 0.5 for r in REGIMES)
