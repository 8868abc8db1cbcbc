"""The multi-model classifier test of Lim et al. §5.3 and Appendix A.

1. Split the star particles 1:1 into an upsampler-training half and a reference half (:func:`split_particles`).
2. Train each upsampler on the training half and draw upsampled sets from each.
3. Train an ``N``-class MLP (LeakyReLU) to tell the upsampled sets apart (uniform class prior: equal class sizes;
   half of each set held out for validation and early stopping).
4. Score each upsampler ``C`` on the reference particles by the mean log-posterior (Eq. 12)

       LP(C) = (1/N_ref) Σ_i log p(C | x_i, v_i),

   with the standard error of that mean as its 1σ uncertainty (Table 1).  Higher is better; with a uniform prior
   ``LP(C) - LP(C')`` is the mean log-likelihood ratio of the two upsamplers on the reference data (Eqs. 13–14).
   The classifier's separating power is reported as AUC on the held-out upsampled samples.

The paper's classifier has hidden layers [2048, 1024, 128, 128] (:data:`PAPER_CLASSIFIER`); the default here is
smaller so that it trains on a CPU.  Training reuses :func:`jaxstars.flows.fit` (custom loss; it only needs an object
with ``init``), so early stopping, validation and the epoch loop are the flows' own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxstars.flows import fit
from jaxstars.flows.nn import mlp_init

from .particles import Particles


@dataclass(frozen=True)
class ClassifierOptions:
    """MLP classifier settings.  Paper (§5.3): hidden [2048, 1024, 128, 128], LeakyReLU, Adam 1e-3, half of the
    upsampled data for validation, 1000 minibatches per epoch, patience 100."""

    hidden: tuple = (256, 256, 64)
    negative_slope: float = 0.01
    learning_rate: float = 1e-3
    val_fraction: float = 0.5
    batch_size: int = 2048
    patience: int = 8
    max_epochs: int = 60
    progress: bool = False

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))


PAPER_CLASSIFIER = ClassifierOptions(hidden=(2048, 1024, 128, 128), patience=100, max_epochs=10_000)


@dataclass(frozen=True)
class _MLPSpec:
    """The minimal 'flow-like' object :func:`jaxstars.flows.fit` needs: ``init(key)``."""

    sizes: tuple

    def init(self, key):
        return mlp_init(key, list(self.sizes))


def mlp_logits(params, x, negative_slope: float = 0.01):
    """Logits of the classifier MLP (LeakyReLU hidden layers, linear output)."""
    for layer in params[:-1]:
        x = jax.nn.leaky_relu(x @ layer["w"] + layer["b"], negative_slope)
    return x @ params[-1]["w"] + params[-1]["b"]


@dataclass
class MultiModelClassifier:
    """A trained ``N``-class classifier over standardised phase-space coordinates ``[r, v]``."""

    params: list
    names: tuple
    mean: np.ndarray
    std: np.ndarray
    options: ClassifierOptions
    info: dict

    def log_proba(self, phase_space, chunk: int = 65536) -> np.ndarray:
        """``log p(C | x)`` (n, N) for rows ``[x, y, z, v_x, v_y, v_z]`` (kpc, km/s)."""
        x = (np.asarray(phase_space, np.float64) - self.mean) / self.std
        out = [
            np.asarray(
                _log_softmax(self.params, jnp.asarray(x[i : i + chunk], jnp.float32), self.options.negative_slope)
            )
            for i in range(0, len(x), chunk)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.names)))


@jax.jit
def _log_softmax_impl(params, x, slope):
    return jax.nn.log_softmax(mlp_logits(params, x, slope), axis=-1)


def _log_softmax(params, x, slope):
    return _log_softmax_impl(params, x, slope)


def split_particles(particles: Particles, seed: int = 0) -> tuple[Particles, Particles]:
    """The §5.3 (i) 1:1 split: ``(upsampler-training half, reference half)``, random and seeded."""
    order = np.random.default_rng(seed).permutation(len(particles))
    half = len(particles) // 2
    return particles.subset(np.sort(order[:half])), particles.subset(np.sort(order[half:]))


def train_classifier(samples: dict, *, key: jax.Array, scale_from=None, options: ClassifierOptions | None = None):
    """Train the ``N``-class classifier on upsampled sets ``{name: (n_k, 6) array}``.

    Every class is truncated to the smallest set's size (uniform prior ``p(C) = 1/N``).  Inputs are standardised
    with the mean and std of ``scale_from`` (default: all samples).
    """
    options = options or ClassifierOptions()
    names = tuple(samples)
    if len(names) < 2:
        raise ValueError("the classifier test needs at least two upsampled sets")
    n_each = min(len(v) for v in samples.values())
    if n_each < 4:
        raise ValueError(f"every upsampled set needs at least 4 rows, the smallest has {n_each}")
    x = np.concatenate([np.asarray(samples[k], np.float64)[:n_each] for k in names])
    y = np.repeat(np.arange(len(names)), n_each).astype(np.int32)
    ref = x if scale_from is None else np.asarray(scale_from, np.float64)
    mean, std = ref.mean(0), ref.std(0)
    xs = ((x - mean) / std).astype(np.float32)
    spec = _MLPSpec((x.shape[1], *options.hidden, len(names)))
    slope = options.negative_slope

    def loss(_spec, params, batch, _key):
        logp = jax.nn.log_softmax(mlp_logits(params, batch["x"], slope), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, batch["label"][:, None], axis=1))

    result = fit(
        spec,
        {"x": xs, "label": y},
        key=key,
        loss=loss,
        epochs=options.max_epochs,
        batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        val_fraction=options.val_fraction,
        patience=options.patience,
        progress=options.progress,
    )
    # The held-out half (fit's split comes from the key): recompute it for AUCs.
    perm = np.asarray(jax.random.permutation(jax.random.split(key, 3)[0], len(xs)))
    val_idx = perm[: round(len(xs) * options.val_fraction)]
    clf = MultiModelClassifier(
        result.params,
        names,
        mean,
        std,
        options,
        {
            "train_loss": result.train_loss.tolist(),
            "val_loss": result.val_loss.tolist(),
            "best_epoch": int(result.best_epoch),
            "epochs": result.epochs_run,
            "n_per_class": n_each,
        },
    )
    clf.info["auc"] = pairwise_auc(clf, x[val_idx], y[val_idx])
    return clf


def roc_auc(scores_negative, scores_positive) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative) (ties count ½), by ranks."""
    s = np.concatenate([scores_negative, scores_positive])
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    # average ranks over ties
    sorted_s = s[order]
    _, start, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    n0, n1 = len(scores_negative), len(scores_positive)
    return float((ranks[n0:].sum() - n1 * (n1 + 1) / 2.0) / (n0 * n1))


def pairwise_auc(clf: MultiModelClassifier, x, y) -> dict:
    """AUC of every pair ``a vs b`` on labelled samples, scored by ``log p(b|x) - log p(a|x)``."""
    logp = clf.log_proba(x)
    out = {}
    for a in range(len(clf.names)):
        for b in range(a + 1, len(clf.names)):
            score = logp[:, b] - logp[:, a]
            out[f"{clf.names[a]} vs {clf.names[b]}"] = roc_auc(score[y == a], score[y == b])
    return out


def log_posterior_scores(clf: MultiModelClassifier, reference) -> dict:
    """Eq. 12 on reference particles: ``{name: {"lp": LP(C), "se": standard error}}``."""
    logp = clf.log_proba(reference)
    n = len(logp)
    return {
        name: {"lp": float(logp[:, k].mean()), "se": float(logp[:, k].std(ddof=1) / np.sqrt(n))}
        for k, name in enumerate(clf.names)
    }


def multi_model_test(
    samples: dict, reference, *, key: jax.Array, options: ClassifierOptions | None = None
) -> dict:
    """Train the classifier on ``samples`` and score each upsampler on ``reference`` (n, 6): a Table 1/A1 column.

    Returns ``(result, classifier)``: ``result`` holds ``scores`` (``{name: {"lp", "se"}}``, Eq. 12), pairwise
    ``auc``, sizes and the classifier settings (JSON-able); ``classifier`` is the trained
    :class:`MultiModelClassifier`.
    """
    clf = train_classifier(samples, key=key, scale_from=reference, options=options)
    return {
        "scores": log_posterior_scores(clf, reference),
        "auc": clf.info["auc"],
        "n_reference": len(reference),
        "n_per_class": clf.info["n_per_class"],
        "epochs": clf.info["epochs"],
        "best_epoch": clf.info["best_epoch"],
        "classifier": {**asdict(clf.options), "hidden": list(clf.options.hidden)},
    }, clf
