"""A task head re-solved by the cross-entropy towards the original model's outputs (numpy only).

A softmax classifier's head is judged by the class probabilities it gives, not by its logits: a
least-squares fit to the original logits spends as much effort on the logit of a class the image
is far from as on the two classes it hesitates between, and on the per-sample constant the softmax
ignores. Fitting the probabilities instead, with the original model's softmax as soft targets,

    min_w  sum_i [ logsumexp(a_i) - p_i . a_i ]  +  lam / 2 ||w - w_old||^2,
    a_i = [f_i 1] w,   p_i = softmax(l_i),   lam = damping * mean(diag([F 1]^T [F 1]))

(the cross-entropy to ``p_i``, equal to the KL divergence up to a constant) is a convex problem of
the head's weights alone: multinomial logistic regression on soft labels, solved by L-BFGS (in numpy) from the
prior ``w_old`` (the head's current weights). A sigmoid head takes one binary cross-entropy per
unit, ``sum_ij softplus(a_ij) - p_ij a_ij`` with ``p = sigmoid(l)``. Both have the gradient
``[F 1]^T (q - p) + lam (w - w_old)``, ``q`` the head's own probabilities, and the damping plays
the part it has in :class:`~tfmot_zip.core.refit.LinearRefit`: it keeps the solution where the
data say little.

The data are read in blocks, once per evaluation, and every sum may be reduced over workers
(``reduce``), so each worker of a distributed zip takes the same steps to the same weights.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

__all__ = ["HEAD_FITS", "HEAD_LOSSES", "cross_entropy", "cross_entropy_refit", "head_probabilities"]

#: The output activations whose cross-entropy :func:`cross_entropy_refit` fits.
HEAD_LOSSES = ("softmax", "sigmoid")
#: How a zip's head refit fits a head: ``"auto"`` by the cross-entropy of a softmax or sigmoid head
#: and by least squares to the original logits otherwise; or always by ``"least_squares"``, or by the
#: ``"softmax"`` or ``"sigmoid"`` cross-entropy (a linear head whose model applies one after it).
HEAD_FITS = ("auto", "least_squares") + HEAD_LOSSES

_NEGLIGIBLE = 1e-30
_KEPT_BYTES = 256 * 2**20  # the feature blocks kept in memory between evaluations, at most

Blocks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def head_probabilities(logits: np.ndarray, loss: str) -> np.ndarray:
    """The probabilities a ``loss`` head (``"softmax"`` or ``"sigmoid"``) gives for ``logits [n, k]``.

    Example:
        >>> head_probabilities(np.array([[0.0, np.log(3.0)]]), "softmax").round(2).tolist()
        [[0.25, 0.75]]
        >>> head_probabilities(np.array([[0.0, 800.0, -800.0]]), "sigmoid").tolist()
        [[0.5, 1.0, 0.0]]
    """
    logits = np.asarray(logits, np.float64)
    if loss == "softmax":
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    elif loss == "sigmoid":
        probabilities = np.exp(-np.logaddexp(0.0, -logits))
    else:
        raise ValueError(f"Unknown head loss {loss!r}; expected one of {list(HEAD_LOSSES)}.")
    # below 1e-30 a probability changes nothing, and subnormal ones slow every later product 50-fold
    probabilities[probabilities < _NEGLIGIBLE] = 0.0
    return probabilities


def _loss_terms(logits: np.ndarray, targets: np.ndarray, loss: str) -> tuple[float, np.ndarray]:
    """The summed cross-entropy of ``logits [k, n]`` (classes first: the reductions over classes then
    run along whole rows, several times faster) to the probabilities ``targets [k, n]``, and its derivative."""
    if loss == "softmax":
        shifted = logits - logits.max(axis=0)
        own = np.exp(shifted)
        total = own.sum(axis=0)
        value = float(np.log(total).sum() - np.vdot(targets, shifted))
        own /= total
    else:
        value = float(np.logaddexp(0.0, logits).sum() - np.vdot(targets, logits))
        own = np.exp(-np.logaddexp(0.0, -logits))
    own -= targets
    return value, own


def cross_entropy(logits: np.ndarray, target_logits: np.ndarray, loss: str) -> float:
    """The summed cross-entropy of a ``loss`` head's ``logits [n, k]`` to the probabilities of
    ``target_logits`` (the objective above without the damping).

    Example:
        >>> round(cross_entropy(np.zeros((1, 2)), np.zeros((1, 2)), "softmax"), 4)  # log 2
        0.6931
    """
    if loss not in HEAD_LOSSES:
        raise ValueError(f"Unknown head loss {loss!r}; expected one of {list(HEAD_LOSSES)}.")
    logits = np.asarray(logits, np.float64)
    return _loss_terms(np.ascontiguousarray(logits.T), np.ascontiguousarray(head_probabilities(target_logits, loss).T), loss)[0]


def _lbfgs(objective: Callable[[np.ndarray], tuple[float, np.ndarray]], x: np.ndarray, max_iterations: int,
           memory: int = 10, gradient_tolerance: float = 1e-4, value_tolerance: float = 2.2e-9) -> np.ndarray:
    """Minimises a smooth convex ``objective`` (value and gradient) by L-BFGS with a backtracking
    (Armijo) line search, from ``x``; stops as scipy's L-BFGS-B does, on the largest gradient entry (of
    the per-sample objective; 1e-4 as scikit-learn's logistic regression) or the relative decrease of the
    value. Written in numpy so that every product runs in one BLAS thread pool (scipy's Fortran L-BFGS-B
    brings its own, and alternating two pools is several times slower)."""
    value, grad = objective(x)
    history: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(max_iterations):
        if np.max(np.abs(grad)) <= gradient_tolerance:
            break
        direction, alphas = -grad, []
        for s, y, rho in reversed(history):  # the two-loop recursion
            alpha = rho * float(s @ direction)
            direction = direction - alpha * y
            alphas.append(alpha)
        if history:
            s, y, _ = history[-1]
            direction = direction * (float(s @ y) / float(y @ y))
        else:
            direction = direction / max(1.0, float(np.sum(np.abs(grad))))  # a first step of at most unit length
        for (s, y, rho), alpha in zip(history, reversed(alphas)):
            direction = direction + s * (alpha - rho * float(y @ direction))
        slope = float(grad @ direction)
        if slope >= 0:  # not a descent direction (rounding): restart from the gradient
            history, direction = [], -grad / max(1.0, float(np.sum(np.abs(grad))))
            slope = float(grad @ direction)
        step = 1.0
        while True:
            new_x = x + step * direction
            new_value, new_grad = objective(new_x)
            if new_value <= value + 1e-4 * step * slope or step < 1e-12:
                break
            step *= 0.5
        s, y = new_x - x, new_grad - grad
        if float(s @ y) > 1e-12 * float(s @ s):  # keeps the curvature pairs positive
            history = (history + [(s, y, 1.0 / float(s @ y))])[-memory:]
        decrease = value - new_value
        x, value, grad = new_x, new_value, new_grad
        if decrease <= value_tolerance * max(abs(value), abs(value + decrease), 1.0):
            break
    return x


def cross_entropy_refit(
    blocks: Blocks,
    kernel: np.ndarray,
    bias: np.ndarray | None,
    loss: str = "softmax",
    damping: float = 1e-3,
    reduce: Callable[[list], list] | None = None,
    max_iterations: int = 500,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The head ``(kernel [d, k], bias [k] or None)`` that minimises the damped cross-entropy above.

    Args:
        blocks: called once per evaluation; yields ``(features [n, d], target_logits [n, k])``
            blocks covering the data (the original model's pre-activations as targets).
        kernel, bias: the prior (the head's current weights); ``bias=None`` keeps a head without bias.
        loss: ``"softmax"`` or ``"sigmoid"``, the head's output activation.
        damping: relative pull towards the prior (as ``LinearRefit.solve``); 0 for none.
        reduce: sums a list of arrays over workers (``Replicas.sum_all``); None for one process.
        max_iterations: L-BFGS iterations at most.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> features = rng.normal(size=(400, 3))
        >>> true = rng.normal(size=(3, 4))
        >>> targets = features @ true                    # the original head's logits
        >>> kernel, bias = cross_entropy_refit(lambda: [(features, targets)], np.zeros((3, 4)), np.zeros(4), damping=1e-6)
        >>> fitted = head_probabilities(features @ kernel + bias, "softmax")
        >>> bool(np.abs(fitted - head_probabilities(targets, "softmax")).max() < 1e-3)
        True
    """
    if loss not in HEAD_LOSSES:
        raise ValueError(f"Unknown head loss {loss!r}; expected one of {list(HEAD_LOSSES)}.")
    if not (np.isfinite(damping) and damping >= 0):
        raise ValueError(f"Expected a finite non-negative damping (e.g. 1e-3). Received: damping={damping!r}")
    kernel = np.asarray(kernel, np.float64)
    d, k = kernel.shape
    has_bias = bias is not None
    prior = np.vstack([kernel, np.asarray(bias, np.float64)[None, :]]) if has_bias else kernel
    reduce = reduce if reduce is not None else (lambda values: values)

    def rows(features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, np.float64).reshape(len(features), -1)
        if features.shape[1] != d:
            raise ValueError(f"Expected features with {d} columns (the head's inputs); received {features.shape[1]}.")
        return np.hstack([features, np.ones((len(features), 1))]) if has_bias else features

    gram, count, kept, kept_bytes = np.zeros((len(prior), len(prior))), 0, [], 0
    for features, targets in blocks():
        x = rows(features)
        if np.shape(targets) != (len(x), k):
            raise ValueError(f"Expected target logits of shape [{len(x)}, {k}]; received {np.shape(targets)}.")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(targets))):
            raise ValueError("The head's features or target logits hold NaN or infinite values; check the calibration data.")
        gram += x.T @ x
        count += len(x)
        kept_bytes += x.nbytes
        if kept_bytes > _KEPT_BYTES:  # dropped whole once over the budget: the evaluations then read the blocks
            kept = None
        elif kept is not None:
            kept.append((x, head_probabilities(targets, loss)))
    gram, count = reduce([gram, np.array([count], np.float64)])
    count = float(count[0])
    if count == 0:
        raise ValueError("cross_entropy_refit needs at least one sample; the blocks yielded none.")
    lam = float(damping) * float(np.mean(np.diag(gram)))
    # L-BFGS runs in whitened coordinates phi = L^T w, L L^T the damped Gram per sample, where the problem is
    # about as well conditioned as the softmax's own curvature allows: the rows become z = x L^-T, and the
    # prior's term lam/2 |w - w_old|^2 becomes lam/2 (phi - phi_old)^T M (phi - phi_old), M = L^-1 L^-T.
    scale = float(np.mean(np.diag(gram))) / count
    chol = np.linalg.cholesky(gram / count + max(lam / count, 1e-9 * scale) * np.eye(len(gram)))
    white = np.linalg.inv(chol).T  # w = white @ phi
    metric = white.T @ white
    start = chol.T @ prior

    def whitened(x: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray((x @ white).T), np.ascontiguousarray(targets.T)  # [d (+1), n], [k, n]

    if kept is not None:  # every block in memory, whitened once
        data = [whitened(x, p) for x, p in kept]
        pairs = lambda: data  # noqa: E731
    else:
        pairs = lambda: (whitened(rows(f), head_probabilities(t, loss)) for f, t in blocks())  # noqa: E731
    del kept

    def objective(phi: np.ndarray) -> tuple[float, np.ndarray]:
        phi = phi.reshape(prior.shape)
        value, grad = 0.0, np.zeros_like(phi)
        for zt, pt in pairs():
            v, residual = _loss_terms(phi.T @ zt, pt, loss)
            value += v
            grad += zt @ residual.T
        value, grad = reduce([np.array([value]), grad])
        pull = metric @ (phi - start)
        value = float(value[0]) + 0.5 * lam * float(np.sum((phi - start) * pull))
        return value / count, ((grad + lam * pull) / count).ravel()  # per sample: the scale L-BFGS's tolerances expect

    solution = white @ _lbfgs(objective, start.ravel(), int(max_iterations)).reshape(prior.shape)
    return (solution[:-1], solution[-1]) if has_bias else (solution, None)
