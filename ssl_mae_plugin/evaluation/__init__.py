"""Evaluating frozen and fine-tuned backbones: features, k-NN, linear probes, fine-tuning.

A backbone is any ``torch.nn.Module`` with ``forward_features(images) -> [N, D]``; wrap an
:class:`ssl_mae_plugin.MAE` in :class:`PooledBackbone` to choose its pooling. The
:class:`Evaluator` runs the protocols a recipe asks for on one model, with caches.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from ssl_mae_plugin.evaluation.classifier import Budget, FitOptions, check_training_options
from ssl_mae_plugin.evaluation.features import (
    FlattenedPixels,
    PooledBackbone,
    cached_features,
    extract_features,
    frozen_eval,
)
from ssl_mae_plugin.evaluation.finetune import (
    FineTuneClassifier,
    check_finetune_options,
    finetune,
    layer_decay_param_groups,
    vit_classifier,
    vit_layer_id,
)
from ssl_mae_plugin.evaluation.knn import check_knn_options, knn_classify
from ssl_mae_plugin.evaluation.linear import (
    AugmentedLinearProbe,
    LinearHead,
    augmented_linear_probe,
    linear_probe,
)
from ssl_mae_plugin.evaluation.metrics import topk_correct
from ssl_mae_plugin.evaluation.transforms import (
    TransformedDataset,
    finetune_train_transform,
    probe_train_transform,
)
from ssl_mae_plugin.lars import LARS

__all__ = [
    "LARS",
    "AugmentedLinearProbe",
    "Budget",
    "FineTuneClassifier",
    "FitOptions",
    "FlattenedPixels",
    "LinearHead",
    "PooledBackbone",
    "TransformedDataset",
    "augmented_linear_probe",
    "cached_features",
    "check_finetune_options",
    "check_knn_options",
    "check_training_options",
    "extract_features",
    "finetune",
    "finetune_train_transform",
    "frozen_eval",
    "knn_classify",
    "layer_decay_param_groups",
    "linear_probe",
    "probe_train_transform",
    "topk_correct",
    "vit_classifier",
    "vit_layer_id",
]
