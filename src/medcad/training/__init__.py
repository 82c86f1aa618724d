"""The shared training loop: ``train_one_epoch`` / ``evaluate`` / ``fit``, typed configs, safe checkpoints, logs.

Every task (image classification, nodule CAD, volume classification) trains through these small
functions with explicit arguments; a task supplies its model, data loaders, loss, metrics and, when
its batches are not ``(image, label)`` samples, a ``step_fn``.
"""
