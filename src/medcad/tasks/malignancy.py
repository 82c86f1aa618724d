"""Malignancy training (the book's chapter 14): fine-tune the nodule classifier, benign vs malignant.

Starts from a trained ``nodule_cnn3d`` folder, replaces its head, and trains only the head
(``finetune_depth=1``) or the head and the last conv block (``finetune_depth=2``) on the reference
nodules of the training split; model selection by validation AUC. ``three_way`` trains
non-nodule / benign / malignant instead (candidates included, all classes balanced).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from medcad.errors import InputError
from medcad.tasks.nodule_cls import ClassifierConfig, crop_description, nodule_data, train_classifier
from medcad.training.config import EarlyStoppingConfig, FitConfig, OptimizerConfig, SchedulerConfig


@dataclass(frozen=True)
class MalignancyConfig(ClassifierConfig):
    """A classifier run plus where to start from and how deep to fine-tune.

    Attributes:
        init_from: the nodule classifier's model folder (a run's ``model/``).
        finetune_depth: 1 = head only, 2 = head + last conv block.
        three_way: classes non-nodule / benign / malignant instead of benign / malignant.
    """

    out: str = "runs/malignancy"
    init_from: str = ""
    finetune_depth: int = 1
    three_way: bool = False
    fit: FitConfig = field(default_factory=lambda: FitConfig(
        epochs=10, monitor="val_auc", optimizer=OptimizerConfig("adam", 1e-3),
        scheduler=SchedulerConfig("plateau", factor=0.5, patience=3), early_stopping=EarlyStoppingConfig(patience=0)))


def freeze_for_finetune(model, depth: int) -> list[str]:
    """Freezes everything but the head (depth 1) or the head and the last block (depth 2); returns what trains."""
    if depth not in (1, 2):
        raise InputError(None, f"--finetune-depth must be 1 (head) or 2 (head + last block), got {depth}")
    for parameter in model.parameters():
        parameter.requires_grad = False
    trainable = {"head": model.head}
    if depth == 2:
        trainable[f"blocks.{len(model.blocks) - 1}"] = model.blocks[-1]
    for module in trainable.values():
        for parameter in module.parameters():
            parameter.requires_grad = True
    return list(trainable)


def malignancy_label(three_way: bool):
    """Label of a record: benign 0 / malignant 1 (nodules with a known label only), or 0/1/2 three-way."""

    def label_of(record):
        if not record.is_nodule:
            return 0 if three_way else None
        if record.is_malignant is None:
            return None
        return int(record.is_malignant) + (1 if three_way else 0)

    return label_of


def train_malignancy(config: MalignancyConfig, resume: bool = False, quiet: bool = False):
    """Fine-tunes the nodule classifier of ``config.init_from`` for malignancy; returns the fit result."""
    from medcad.models.store import load_model
    from medcad.training.loop import seed_everything

    if not config.init_from:
        raise InputError(None, "malignancy training starts from a nodule classifier: give --init-from MODEL_DIR")
    model, source = load_model(config.init_from)
    if source.name != "nodule_cnn3d":
        raise InputError(config.init_from, f"expected a nodule_cnn3d model, found {source.name}")
    config = replace(config, crop_irc=tuple(source.preprocessing.get("crop_irc", config.crop_irc)))
    if config.three_way and config.fit.monitor == "val_auc":  # no single AUC for three classes
        config = replace(config, fit=replace(config.fit, monitor="val_macro_f1"))
    data = nodule_data(config, malignancy_label(config.three_way))
    classes = ["non-nodule", "benign", "malignant"] if config.three_way else ["benign", "malignant"]
    seed_everything(config.fit.seed)
    model.reset_head(len(classes))
    trainable = freeze_for_finetune(model, config.finetune_depth)
    kwargs = {**source.kwargs, "num_classes": len(classes)}
    description = crop_description("nodule_cnn3d", kwargs, classes,
                                   {"source": "medcad train malignancy", "init_from": str(config.init_from),
                                    "finetune_depth": config.finetune_depth, "data": str(config.data)})
    fractions = None  # equal shares per class (benign / malignant, or all three)
    return train_classifier(config, model, data, description, fractions, resume=resume, quiet=quiet,
                            extra={"trainable": trainable, "classes": classes})
