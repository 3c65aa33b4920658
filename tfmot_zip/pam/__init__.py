"""Pruning-Aware Merging (PAM): merge so that pruning lowers the cost of every subset of tasks.

Each hidden Dense/Conv2D layer of the merged network holds groups of units serving task subsets:
``shared`` (every task), partial subsets ``"a+b"`` and single tasks (docs/METHOD.md, PAM); a
subset of tasks runs only the groups serving one of its tasks. Flow (docs/PAM.md)::

    result = merge_and_prune(models, train_sets, val_sets, targets)  # prune, Hessian-merge, prune
    result.net.subset_costs()                                       # FLOPs/params per task subset
    export_subsets_tflite(result.net, "pam.tflite")                 # one signature per subset
    sparse = prune_unstructured(result.net, train_sets, 0.8)         # TFMOT magnitude pruning (size)

Modules: ``network`` (GroupedNetwork, its tf_keras models), ``reading`` (networks from tf_keras
models), ``grouping`` (the published mutual-information grouping), ``merging`` (Hessian merge of
one-task networks), ``train`` (joint fine-tuning), ``pruning`` (Taylor importance, structured and
unstructured pruning), ``search`` (merge_and_prune), ``export`` (one TFLite signature per subset).
"""
from tfmot_zip.pam.export import export_subsets_tflite
from tfmot_zip.pam.grouping import merge_pam, merge_pam_network, pam_grouping, taylor_grouping
from tfmot_zip.pam.merging import merge_pruned_networks
from tfmot_zip.pam.network import GroupedNetwork, GroupLayer
from tfmot_zip.pam.pruning import prune_step, prune_structured, prune_unstructured, taylor_importance
from tfmot_zip.pam.reading import separate_network, shared_network_from_zip
from tfmot_zip.pam.search import PamResult, default_thresholds, merge_and_prune
from tfmot_zip.pam.train import evaluate, finetune

__all__ = [
    "GroupLayer",
    "GroupedNetwork",
    "pam_grouping",
    "taylor_grouping",
    "merge_pam_network",
    "merge_pam",
    "separate_network",
    "merge_pruned_networks",
    "merge_and_prune",
    "PamResult",
    "default_thresholds",
    "shared_network_from_zip",
    "finetune",
    "evaluate",
    "taylor_importance",
    "prune_step",
    "prune_structured",
    "prune_unstructured",
    "export_subsets_tflite",
]
