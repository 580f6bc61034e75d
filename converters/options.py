"""The export options, as enums: quantization mode, what the model outputs, integer I/O."""

import enum


class _Choice(str, enum.Enum):
    @classmethod
    def parse(cls, value, argument):
        """`value` as a member; a ValueError names `argument` and the valid values otherwise."""
        try:
            return cls(value.value if isinstance(value, enum.Enum) else value)
        except ValueError:
            allowed = ", ".join(member.value for member in cls)
            raise ValueError(f"{argument}={value!r} is unknown; choose one of: {allowed}") from None


class Quantization(_Choice):
    """How a TFLite export stores weights and computes.

    NONE: float32 weights and activations.
    FLOAT16: float16 weights (half the size), float32 compute on CPUs.
    DYNAMIC: int8 weights, activations quantized on the fly ("dynamic range").
    INT8: full-integer weights and activations, ranges calibrated on representative data.
    QAT: INT8 after quantization-aware fine-tuning (through the tf_keras bridge).
    """

    NONE = "none"
    FLOAT16 = "float16"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    QAT = "qat"

    @property
    def integer(self):
        return self in (Quantization.INT8, Quantization.QAT)


class Output(_Choice):
    """LOGITS: float (B, H, W, K) logits. MASK: argmax in the graph, (B, H, W) uint8 class ids."""

    LOGITS = "logits"
    MASK = "mask"


class IOType(_Choice):
    """Input (and logits output) type of an integer model: float32 keeps float I/O around the
    integer graph; uint8 takes raw RGB bytes; int8 is the signed variant."""

    FLOAT32 = "float32"
    UINT8 = "uint8"
    INT8 = "int8"
