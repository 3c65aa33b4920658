"""Pairing that sees what the layer refit will do (``method="mtz-lsq"``; docs/REFIT.md).

Before a layer is paired in a pass, every task's weights at it are re-solved by damped least
squares from the inputs the zipped network now gives it (the layers below are merged) to that
task's original pre-activations (:func:`tfmot_zip.zipping.refit.refit_layers`, one layer). MTZ's
cost and update are then taken at those weights. Each task's layer-wise error is a quadratic
whose minimum is the least-squares fit, so MTZ's cost of a pair is then *exactly* the increase
of the summed least-squares residual when the two units share their weights, and its update is
the joint least-squares solution: the pairs are chosen by what the refit can reach, not by the
distance between weights fitted to inputs that no longer exist. Mixed into
:class:`~tfmot_zip.zipping.zipper.Zipper`.
"""
from __future__ import annotations

from tfmot_zip.model.graph import AlignedNode

__all__ = ["LeastSquaresMixin"]


class LeastSquaresMixin:
    """Least-squares weights before pairing (uses the zipper's fields)."""

    def fit_before_pairing(self, node: AlignedNode) -> None:
        """Re-solves ``node``'s weights by least squares from its current inputs (once per pass)."""
        if not self.strategy.least_squares:
            return
        done = self.__dict__.setdefault("_least_squares_done", set())
        if (self.task, node.index) in done:
            return
        done.add((self.task, node.index))
        from tfmot_zip.zipping.refit import refit_layers

        self.flush_writes([self.layer(node)])  # the refit reads the layer's weights and maps as they stand

        refit_layers(self.model, self.graph, self.calibration, layers=[node.name], activations=self.zip_activations(),
                     max_conv_rows=self.max_conv_rows, seed=self.seed)
        layer = self.layer(node)
        self.weights[node.index] = list(layer.get_tasks_weights(range(self.n_tasks)).values())
