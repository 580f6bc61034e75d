"""torchvision's DeepLabV3 architectures rebuilt layer for layer in Keras, so their weights load
exactly (`from_torchvision`) and export like every tfdeeplab model."""

from tfdeeplab.torchvision_port.deeplabv3 import (
    ARCHS,
    build_torchvision_deeplabv3,
    from_torchvision,
)
from tfdeeplab.torchvision_port.state_dict import StateDictError, read_state_dict

__all__ = [
    "ARCHS",
    "StateDictError",
    "build_torchvision_deeplabv3",
    "from_torchvision",
    "read_state_dict",
]
