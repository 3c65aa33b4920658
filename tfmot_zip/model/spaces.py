"""Unit spaces: which physical units each task's tensors live in, traced through the graph.

Every Dense/Conv2D output opens a *unit space* whose physical units are numbered
``0..capacity-1`` (``capacity`` = the sum of every task's width); task ``t``'s units map to
physical units through ``maps[t]``. Layers that keep channels (activations, BatchNorm,
pooling, padding, dropout, depthwise convolutions) pass the space through; ``Flatten`` keeps it and
records the spatial positions; ``Add`` joins the spaces of its inputs into one residual stream, whose
writers must all use one pairing; so does ``Multiply`` (a squeeze-and-excitation gate's last layer
writes into the space of the tensor it gates, so its units follow that pairing). ``Concatenate`` on the
channel axis lays its parts' spaces side by side: its physical units are each part's physical units
shifted by the capacities of the parts before it, and each part keeps its own pairing (a layer reading
the concatenation sees the combined map, :meth:`Feature.in_map`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from tfmot_zip.model.graph import ModelGraph, UnsupportedModelError

__all__ = ["UnitSpace", "Feature", "trace_spaces"]


@dataclass
class UnitSpace:
    """Physical units shared by one or more writer layers (one residual stream, or one layer)."""

    id: int
    widths: list[int]
    writers: list[int] = field(default_factory=list)
    maps: list[np.ndarray] = field(default_factory=list)
    decided: bool = False
    pairs: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def capacity(self) -> int:
        return int(sum(self.widths))

    def reset_maps(self) -> None:
        offsets = np.concatenate([[0], np.cumsum(self.widths)[:-1]]).astype(np.int64)
        self.maps = [offsets[t] + np.arange(w, dtype=np.int64) for t, w in enumerate(self.widths)]


@dataclass(frozen=True)
class Feature:
    """What a tensor holds: the raw input, or units of a space (maybe flattened over positions).

    ``input_units`` is the trailing size of a raw-input tensor (every task sees every input unit).
    ``parts`` (a channel concatenation; ``space`` is then -1) lists the spaces laid side by side, in
    order: part ``p``'s physical unit ``u`` is the concatenation's physical unit ``offset_p + u``,
    ``offset_p`` being the summed capacities of the parts before it.

    Example:
        >>> spaces = {1: UnitSpace(1, [2, 3]), 4: UnitSpace(4, [1, 2])}
        >>> for s in spaces.values():
        ...     s.reset_maps()
        >>> concat = Feature("units", parts=(1, 4))
        >>> concat.capacity(spaces), concat.task_width(spaces, 1), concat.in_map(spaces, 1).tolist()
        (8, 5, [2, 3, 4, 6, 7])
    """

    kind: str  # "input" or "units"
    space: int = -1
    positions: int = 1
    flat: bool = False
    input_units: int = 0
    parts: tuple[int, ...] = ()

    @property
    def space_ids(self) -> tuple[int, ...]:
        """The spaces this tensor's units come from (one, or a concatenation's parts in order)."""
        if self.kind == "input":
            return ()
        return self.parts if self.parts else (self.space,)

    def _units(self, spaces: dict[int, UnitSpace]) -> int:
        return int(sum(spaces[s].capacity for s in self.space_ids))

    def capacity(self, spaces: dict[int, UnitSpace]) -> int:
        if self.kind == "input":
            return self.input_units
        return self.positions * self._units(spaces) if self.flat else self._units(spaces)

    def in_map(self, spaces: dict[int, UnitSpace], task: int) -> np.ndarray:
        """Task ``task``'s input unit -> physical input unit (row) of a layer reading this."""
        if self.kind == "input":
            return np.arange(self.input_units, dtype=np.int64)
        maps, offset = [], 0
        for s in self.space_ids:
            maps.append(offset + spaces[s].maps[task])
            offset += spaces[s].capacity
        m = np.concatenate(maps).astype(np.int64)
        if not self.flat:
            return m
        return (np.arange(self.positions)[:, None] * offset + m[None, :]).reshape(-1)

    def task_width(self, spaces: dict[int, UnitSpace], task: int) -> int:
        if self.kind == "input":
            return self.input_units
        w = int(sum(spaces[s].widths[task] for s in self.space_ids))
        return self.positions * w if self.flat else w


CONCAT = -2  # source marker of a concatenation (trace_spaces' first pass)


def _width(layer) -> int:
    return int(layer.units if hasattr(layer, "units") else layer.filters)


def trace_spaces(graph: ModelGraph) -> tuple[dict[int, Feature], dict[int, UnitSpace]]:
    """Features of every node's output and the unit spaces (streams) of the zip-able layers.

    Example:
        >>> from tfmot_zip.apps import zoo
        >>> from tfmot_zip.model.graph import align_models
        >>> g = align_models([zoo.lenet_300_100(), zoo.lenet_300_100()])
        >>> features, spaces = trace_spaces(g)
        >>> sorted(s.capacity for s in spaces.values())
        [20, 200, 600]
    """
    nodes = graph.nodes
    parent = {n.index: n.index for n in nodes if n.is_zip}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # First pass: which zip layer (space root) feeds each node (CONCAT: a concatenation).
    source: dict[int, int | None] = {}
    for node in nodes:
        if node.kind == "input":
            source[node.index] = None
        elif node.is_zip:
            source[node.index] = node.index
        elif node.kind == "concat":
            if any(source[i] is None for i in node.inbound):
                raise UnsupportedModelError(
                    f"Concatenate layer {node.name!r} concatenates a raw model input (or a tensor computed from it "
                    "without any Dense/Conv2D layer); tfmot_zip zips concatenations of layer outputs only, whose "
                    "units it can pair. Put a Conv2D/Dense layer (a stem) between the input and the concatenation."
                )
            source[node.index] = CONCAT
        elif node.kind in ("add", "multiply"):
            roots = [source[i] for i in node.inbound]
            if any(r is None for r in roots):
                raise UnsupportedModelError(
                    f"{type(node.layers[0]).__name__} layer {node.name!r} combines a raw model input with a layer "
                    "output; residual streams and gated tensors must start at a Dense/Conv2D layer (a stem)."
                )
            if any(r == CONCAT for r in roots):
                raise UnsupportedModelError(
                    f"{type(node.layers[0]).__name__} layer {node.name!r} reads the output of a Concatenate layer; "
                    "tfmot_zip does not join a concatenation's unit spaces into one residual stream or gate. "
                    "Apply the Add/Multiply to the parts before concatenating them, or put a Conv2D/Dense layer "
                    "between the concatenation and the Add/Multiply."
                )
            for r in roots[1:]:
                parent[find(r)] = find(roots[0])
            source[node.index] = roots[0]
        else:
            source[node.index] = source[node.inbound[0]] if node.inbound else None
    spaces: dict[int, UnitSpace] = {}
    for node in graph.zip_nodes():
        root = find(node.index)
        widths = [_width(layer) for layer in node.layers]
        space = spaces.get(root)
        if space is None:
            space = spaces[root] = UnitSpace(root, widths)
        elif space.widths != widths:
            raise UnsupportedModelError(
                f"Layers {nodes[space.writers[0]].name!r} and {node.name!r} write into one residual "
                f"stream but have different widths ({space.widths} and {widths}); the writers of a "
                "stream must agree."
            )
        space.writers.append(node.index)
    for space in spaces.values():
        space.reset_maps()
    # Second pass: features.
    features: dict[int, Feature] = {}
    for node in nodes:
        layer = node.layers[0]
        if node.kind == "input":
            shape = tuple(graph.models[0].input_shape[1:])
            features[node.index] = Feature("input", input_units=int(shape[-1]))
        elif node.is_zip:
            inp = features[node.inbound[0]]
            rank = len(layer.input_shape)
            if node.kind == "dense" and rank != 2:
                raise UnsupportedModelError(
                    f"Dense layer {node.name!r} reads a rank-{rank} tensor; add a Flatten or "
                    "GlobalAveragePooling2D before it (Dense on images is not supported)."
                )
            features[node.index] = Feature("units", space=find(node.index))
        elif node.kind == "flatten":
            inp = features[node.inbound[0]]
            shape = layer.input_shape[1:]
            if inp.kind == "input":
                features[node.index] = Feature("input", input_units=int(np.prod(shape)))
            else:
                features[node.index] = replace(inp, positions=int(np.prod(shape[:-1])), flat=True)
        elif node.kind == "global_pool":
            inp = features[node.inbound[0]]
            if inp.kind == "input":
                features[node.index] = Feature("input", input_units=int(layer.input_shape[-1]))
            else:
                features[node.index] = Feature("units", inp.space, parts=inp.parts)
        elif node.kind == "concat":
            parts: list[int] = []
            for i in node.inbound:
                inp = features[i]
                if inp.flat:
                    raise UnsupportedModelError(
                        f"Concatenate layer {node.name!r} concatenates flattened tensors (the output of a Flatten "
                        f"layer, {nodes[i].name!r}); tfmot_zip zips channel concatenations of unflattened layer "
                        "outputs. Concatenate before the Flatten (channels last), or use GlobalAveragePooling2D."
                    )
                parts.extend(inp.space_ids)  # nested concatenations are flattened into one list of parts
            features[node.index] = Feature("units", parts=tuple(parts))
        elif node.kind == "depthwise" and features[node.inbound[0]].parts:
            raise UnsupportedModelError(
                f"DepthwiseConv2D layer {node.name!r} reads the output of a Concatenate layer; a depthwise layer "
                "follows the pairing of one unit space and tfmot_zip does not yet split it over a concatenation's "
                "parts. Put a 1x1 Conv2D between the concatenation and the depthwise layer, or apply a "
                "depthwise layer to each part before concatenating."
            )
        elif node.kind in ("add", "multiply"):
            features[node.index] = Feature("units", space=find(source[node.index]))
        else:
            inp = features[node.inbound[0]]
            if inp.kind == "input":
                features[node.index] = Feature("input", input_units=int(layer.output_shape[-1]))
            else:
                features[node.index] = inp
    return features, spaces
