"""Stage-wise driving of the zipper (``ZipCallback``): a zipper for a saved zipped model, the
stages in order, and the weights re-read between stages. Mixed into
:class:`~tfmot_zip.zipping.zipper.Zipper` (uses its fields).

Between the pairing of a residual stream (at its first writer) and the merge of its later
writers, and between the pairing of a space and the merge of the layers reading it, a layer's
cells may be shared by the task being merged and a lower task, and hold the lower task's
values; the task's own values are kept by the zipper (and in the layer's ``zip_record`` under
``"held"``, so a saved run resumes) until the layer is merged.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.model.graph import AlignedNode

__all__ = ["StagewiseMixin"]


class StagewiseMixin:
    """What :class:`~tfmot_zip.zipping.zipper.Zipper` needs to be driven stage by stage."""

    @classmethod
    def from_model(cls, zipped: keras.Model, **kwargs) -> "StagewiseMixin":
        """A zipper for an existing zipped model (e.g. loaded from a file), state restored.

        The plan is rebuilt from the per-task models the zipped model computes; unit maps
        come from the zip layers.
        """
        from tfmot_zip.model.builder import extract_task_models
        from tfmot_zip.model.graph import align_models
        from tfmot_zip.model.spaces import trace_spaces

        task_models = extract_task_models(zipped)
        graph = align_models(task_models)
        features, spaces = trace_spaces(graph)
        for space in spaces.values():
            first = zipped.get_layer(graph.nodes[space.writers[0]].name)
            space.maps = [first.get_maps(t)[1] for t in range(len(task_models))]
        zipper = cls(zipped, graph, features, spaces, **kwargs)
        for node in graph.zip_nodes() + zipper.depthwise_nodes:
            saved = zipper.layer(node).zip_record or {}
            record = zipper.records[node.index]
            record.shared = int(saved.get("shared", 0))
            record.merge_cost = float(saved.get("merge_cost") or 0.0)
            record.seconds = float(saved.get("seconds", 0.0))
            record.pairs = [(int(n), np.asarray(u, np.int64), np.asarray(c, np.int64)) for n, u, c in saved.get("pairs", [])]
        return zipper

    def stages(self) -> list[tuple[int, AlignedNode]]:
        """Every (pass, hidden layer) in zipping order."""
        return [(n, node) for n in range(1, self.n_tasks) for node in self.graph.hidden_zip_nodes()]

    def refresh_weights(self) -> None:
        """Re-reads every task's weights from the layers (training changed them).

        A layer not yet merged in this pass may already have been re-indexed (a later writer of
        a residual stream, or a reader of a zipped space): its cells that the current task
        shares with a lower task hold the lower task's values, so the current task keeps its
        own values there (:meth:`held_cells`) until the layer is merged.
        """
        if getattr(self, "_activation_cache", None) is not None:
            self._activation_cache.reset()
        for node in self.graph.zip_nodes():
            layer = self.layer(node)
            fresh = list(layer.get_tasks_weights(range(self.n_tasks)).values())
            if node.index not in self.merged and self.task < self.n_tasks:
                kernel_mask, bias_mask = self.aliased_cells(node, self.task)
                old_kernel, old_bias = self.weights[node.index][self.task]
                kernel, bias = fresh[self.task]
                kernel = np.where(kernel_mask, old_kernel, kernel)
                bias = None if bias is None else np.where(bias_mask, old_bias, bias)
                fresh[self.task] = (kernel, bias)
            self.weights[node.index] = fresh
        for node in self.depthwise_nodes:  # re-indexed only when merged: no aliased cells
            layer = self.layer(node)
            self.weights[node.index] = [layer.get_task_weights(t) for t in range(self.n_tasks)]

    def aliased_cells(self, node: AlignedNode, task: int) -> tuple[np.ndarray, np.ndarray]:
        """Masks (kernel, bias) of ``task``'s weights stored in cells a lower task also uses."""
        layer = self.layer(node)
        in_map, out_map = layer.get_maps(task)
        kernel_mask = np.zeros((len(in_map), len(out_map)), bool)
        bias_mask = np.zeros(len(out_map), bool)
        for t in range(task):
            in_t, out_t = layer.get_maps(t)
            shared_out = np.isin(out_map, out_t)
            kernel_mask |= np.isin(in_map, in_t)[:, None] & shared_out[None, :]
            bias_mask |= shared_out
        if node.kind == "conv":
            kernel_mask = np.broadcast_to(kernel_mask, tuple(layer.kernel_size) + kernel_mask.shape)
        return kernel_mask, bias_mask

    def held_cells(self, node: AlignedNode) -> dict | None:
        """The current task's own values in its aliased cells of a layer not merged in this pass
        (JSON-serialisable, for a checkpoint), or None when there are none."""
        if node.index in self.merged or self.task >= self.n_tasks:
            return None
        kernel_mask, bias_mask = self.aliased_cells(node, self.task)
        if not kernel_mask.any() and not bias_mask.any():
            return None
        kernel, bias = self.weights[node.index][self.task]
        return {
            "task": int(self.task),
            "kernel": [float(v) for v in kernel[kernel_mask]],
            "bias": [] if bias is None else [float(v) for v in bias[bias_mask]],
        }

    def restore_held(self, node: AlignedNode, held: dict | None) -> None:
        """Puts values saved by :meth:`held_cells` back (the layer's maps must be unchanged)."""
        if not held:
            return
        task = int(held["task"])
        kernel_mask, bias_mask = self.aliased_cells(node, task)
        kernel, bias = (None if w is None else w.copy() for w in self.weights[node.index][task])
        kernel[kernel_mask] = np.asarray(held["kernel"], kernel.dtype)
        if bias is not None:
            bias[bias_mask] = np.asarray(held["bias"], bias.dtype)
        self.weights[node.index][task] = (kernel, bias)

    def begin_pass(self, n: int, done: Callable[[AlignedNode], int] | None = None) -> None:
        """Starts (or resumes) pass ``n``; ``done(node)`` tells how many passes a layer finished."""
        self.task = n
        self.merged.clear()
        self.decided.clear()
        self.merged_depthwise.clear()
        if done is not None:
            for node in self.graph.hidden_zip_nodes():
                if done(node) >= n:
                    self.merged.add(node.index)
                    space = self.spaces[self.features[node.index].space]
                    self.decided.add(space.id)
                    # The pass's pairing of the stream, for its writers still to merge.
                    pairs = [(u, c) for p, u, c in self.records[node.index].pairs if p == n]
                    if pairs:
                        space.pairs = pairs[-1]
            for node in self.depthwise_nodes:  # merged with their space in an earlier session
                if any(p == n for p, _, _ in self.records[node.index].pairs):
                    self.merged_depthwise.add(node.index)

    def nodes_to_measure(self, node: AlignedNode) -> list[AlignedNode]:
        """Layers whose Hessians the next stage needs (a stream's ready writers, or the layer)."""
        space = self.spaces[self.features[node.index].space]
        if space.id in self.decided:
            return [node]
        return [self.graph.nodes[w] for w in space.writers if self.input_ready(self.graph.nodes[w])]
