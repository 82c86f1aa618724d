"""Networks by name (see :mod:`medcad.models.registry`) and safe saving / loading (:mod:`.store`)."""

from medcad.models.registry import add_model_module, create, get_factory, list_models, register

# Modules whose import registers networks; imported on the first registry lookup, not here.
add_model_module("medcad.models.unet2d")  # nodule_unet2d
add_model_module("medcad.models.cnn3d")  # nodule_cnn3d
add_model_module("medcad.models.resnet")  # resnet{10,18,34,50}_{2d,3d}
add_model_module("medcad.models.torchvision_backbones")  # torchvision (any torchvision classifier by arch)

__all__ = ["add_model_module", "create", "get_factory", "list_models", "register"]
