"""Keras layers that compute exactly what torchvision's `nn.Conv2d` / `nn.BatchNorm2d` compute,
and a record of which state-dict prefix each one takes its weights from.

PyTorch pads convolutions symmetrically (`padding=dilation·(kernel - 1) / 2` on every side);
Keras' "same" pads symmetrically only at stride 1 (at stride 2 it pads one pixel more at the
bottom and right of even inputs), so strided convolutions here get an explicit
`ZeroPadding2D` and "valid" padding. Dilated convolutions are tfdeeplab's atrous layers, which
export as one dilated TFLite kernel (see `tfdeeplab.layers.atrous`).
"""

import keras

from tfdeeplab.layers.atrous import AtrousConv2D, AtrousDepthwiseConv2D
from tfdeeplab.layers.fused_batch_norm import FusedBatchNormalization

# PyTorch's BatchNorm2d momentum 0.1 is Keras' 0.9 (the weight of the old statistic).
TORCH_MOMENTUM = 0.9


class StateDictSlots:
    """Builds layers named after torchvision's modules and remembers, for each, the
    state-dict prefix its weights come from (e.g. "backbone.layer1.0.conv1").

    Args:
        prefix: prefixed to every recorded key (e.g. "backbone.").
        strip: removed from layer names (names inside a nested model need not repeat it).
        momentum: of every BatchNormalization built (Keras' convention; PyTorch's 0.1 is 0.9).
    """

    def __init__(self, prefix="", strip="", momentum=TORCH_MOMENTUM):
        self.prefix = prefix
        self.strip = strip
        self.momentum = momentum
        self.layers = {}

    def add(self, key, layer):
        """Records `layer` as the owner of the weights under `prefix + key`; returns it."""
        self.layers[self.prefix + key] = layer
        return layer

    def name(self, key):
        return (self.prefix + key).removeprefix(self.strip)

    def conv(self, x, key, filters, kernel, stride=1, dilation=1, bias=False, groups=1):
        """`nn.Conv2d(padding=dilation·(kernel-1)//2)` on `x`: depthwise when `groups` equals
        the input channels (the only grouped convolution torchvision's models use here)."""
        name = self.name(key)
        pad = dilation * (kernel - 1) // 2
        padding = "same"
        if stride > 1:
            if pad:
                x = keras.layers.ZeroPadding2D(pad, name=f"{name}.pad")(x)
            padding = "valid"
        options = {"strides": stride, "padding": padding, "use_bias": bias, "name": name}
        if dilation > 1:
            options["dilation_rate"] = dilation
        if groups == 1:
            cls = AtrousConv2D if dilation > 1 else keras.layers.Conv2D
            layer = cls(filters, kernel, **options)
        elif groups == x.shape[-1] == filters:
            cls = AtrousDepthwiseConv2D if dilation > 1 else keras.layers.DepthwiseConv2D
            layer = cls(kernel, **options)
        else:
            raise ValueError(f"{name}: groups={groups} is neither 1 nor depthwise")
        return self.add(key, layer)(x)

    def batch_norm(self, x, key, epsilon):
        """`nn.BatchNorm2d(eps=epsilon)` on `x`."""
        layer = FusedBatchNormalization(
            momentum=self.momentum, epsilon=epsilon, name=self.name(key)
        )
        return self.add(key, layer)(x)
