"""DeepLabV3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation",
arXiv:1706.05587): a dilated backbone, ASPP with image-level features, a 1×1 classifier and
bilinear upsampling to the input size; with `decoder=True`, DeepLabV3+ (arXiv:1802.02611): the
classifier reads the ASPP features merged with the backbone's stride-4 map."""

import warnings

import keras

from tfdeeplab.backbones import OUTPUT_STRIDES, get_backbone
from tfdeeplab.layers.aspp import ASPP
from tfdeeplab.layers.auxiliary_head import AuxiliaryHead
from tfdeeplab.layers.decoder import LOW_LEVEL_FILTERS, deeplabv3plus_decoder
from tfdeeplab.layers.pointrend import PointRendRefiner
from tfdeeplab.layers.resize_like import AlignedPadding, CropLike, ResizeLike
from tfdeeplab.segmentation_model import SegmentationModel

PAPER_RATES_AT_OS16 = (6, 12, 18)
# The crop the paper's rates were chosen for (DeepLabV3, section 4.1: 513×513 PASCAL crops).
PAPER_CROP = 513
# The stride of the backbones' "low" map, which the decoder's logits have.
LOW_STRIDE = 4
# PointRend's default points per subdivision step: the cells of the input's stride-4 map.
POINTS_STRIDE = 4


def default_aspp_rates(output_stride):
    """The paper's rates, (6, 12, 18) at output stride 16, scaled with the feature resolution."""
    return tuple(r * 16 // output_stride for r in PAPER_RATES_AT_OS16)


def auto_aspp_rates(output_stride, crop_size=PAPER_CROP):
    """The paper's rates for a 513 crop, scaled to the feature map of a `crop_size` crop.

    A rate is a distance in feature cells, and what it should span is a share of the image:
    (6, 12, 18) at output stride 16 reach 18-36-55% of the 33-cell map of a 513 crop. A 192
    crop at output stride 16 has a 12-cell map, where rates 12 and 18 would see only zero
    padding off-centre (a 1×1 convolution in effect); scaled, they are (2, 4, 7).

    Returns:
        Rates ≥ 1: round(rate × 16 / output_stride × crop_size / 513), (12, 24, 36) at output
        stride 8 and (6, 12, 18) at 16 for a 513 crop.
    """
    scale = 16 / output_stride * crop_size / PAPER_CROP
    return tuple(max(1, int(rate * scale + 0.5)) for rate in PAPER_RATES_AT_OS16)


def _crop_of(input_shape, crop_size):
    known = [s for s in input_shape[:2] if s is not None]
    if known:
        return min(known)
    return None if crop_size is None else int(crop_size)


def _check_rates(aspp_rates, output_stride, crop):
    aspp_rates = "auto" if aspp_rates is None else aspp_rates
    if isinstance(aspp_rates, str):
        if aspp_rates != "auto":
            raise ValueError(f"aspp_rates={aspp_rates!r} must be 'auto' or positive integers")
        return auto_aspp_rates(output_stride, PAPER_CROP if crop is None else crop)
    rates = tuple(aspp_rates)
    if any(isinstance(r, bool) or int(r) != r or r < 1 for r in rates):
        raise ValueError(
            f"aspp_rates={aspp_rates!r} must be positive integers, e.g. "
            f"{default_aspp_rates(output_stride)} at output_stride={output_stride}, or () for "
            "the light head"
        )
    if crop is not None:
        feature = -(-crop // output_stride)
        # A 3×3 kernel with rate ≥ the map size sees only padding beyond its centre tap: it
        # degenerates to a 1×1 convolution (paper, section 3.3 and figure 4).
        too_large = [r for r in rates if r >= feature]
        if too_large:
            warnings.warn(
                f"aspp_rates {too_large} do not fit the {feature}-cell feature map of a "
                f"{crop}-pixel crop at output_stride={output_stride}: they act as 1×1 "
                f"convolutions there. aspp_rates='auto' gives "
                f"{auto_aspp_rates(output_stride, crop)}.",
                stacklevel=3,
            )
    return tuple(int(r) for r in rates)


def DeepLabV3(
    num_classes,
    backbone="resnet50",
    output_stride=16,
    aspp_rates="auto",
    multi_grid=None,
    aspp_filters=256,
    dropout=0.1,
    backbone_weights=None,
    input_shape=(None, None, 3),
    alpha=1.0,
    batchnorm_momentum=None,
    pointrend=False,
    pointrend_points=None,
    pointrend_training_points=None,
    pointrend_image_features=True,
    subdivision_steps=None,
    crop_size=None,
    align_corners=True,
    aux_head=False,
    aux_loss_weight=0.4,
    decoder=False,
    rgb_bands=None,
    band_mean=None,
    band_std=None,
    name=None,
):
    """Builds DeepLabV3 as a functional `keras.Model`.

    Args:
        num_classes: number of classes (≥ 1).
        backbone: a name from `tfdeeplab.BACKBONES`.
        output_stride: 8, 16 or 32.
        aspp_rates: rates of the 3×3 ASPP branches, or "auto" (default): the paper's (6, 12, 18)
            at output stride 16 for a 513 crop, scaled to the training crop's feature map (see
            `auto_aspp_rates`). Explicit rates that do not fit the crop's map give a warning.
            () is the light head of DeepLab's mobile models: image pooling and the 1×1 branch
            only (no 3×3 branch reads the high-level features).
        multi_grid: unit rates of the last ResNet block, e.g. (1, 2, 4).
        aspp_filters: channels of the ASPP branches and projection.
        dropout: dropout rate after the ASPP projection.
        backbone_weights: None, "imagenet" or a keras.applications weights file (see
            `get_backbone`).
        input_shape: (H, W, bands); H and W may be None (any size, also odd ones such as
            321×479). bands ≥ 1: other than 3 (or with `band_mean`), the model is the RGB one
            widened by `tfdeeplab.bands.with_input_bands` (pretrained RGB kernels on the
            `rgb_bands`, the other bands' first-convolution slices starting at zero).
        alpha: MobileNetV2 width multiplier.
        batchnorm_momentum: momentum of every BatchNormalization; None keeps the backbone's own
            (0.999 in MobileNetV2) and 0.99 in ASPP. Use ~0.9 (PyTorch's default) when training
            from scratch or briefly.
        pointrend: add a PointRend head (Kirillov et al., arXiv:1912.08193) on the stride-4
            "low" features: `fit` trains it (see `PointRendDeepLab`), inference refines the
            most uncertain points by adaptive subdivision.
        pointrend_points: points re-predicted per subdivision step; None: one per 4×4
            pixels of the input (the cells of its stride-4 map, `POINTS_STRIDE`).
        pointrend_training_points: points per image in training; None: the coarse map's
            cells.
        pointrend_image_features: the point head also reads the image's pixels at each point
            (`PointRendRefiner`'s `image_features`; default True: the only full-resolution
            evidence the head has, it is what lets the last steps place 1–3 px structures).
        subdivision_steps: None: log2(the coarse logits' stride), down to stride 1 as
            detectron2's semantic PointRend: log2(output_stride), or 2 with the decoder.
        crop_size: the training crop (pixels), which "auto" rates are scaled to when H and W
            of `input_shape` are None; None: 513, the paper's.
        align_corners: the pixel-grid convention of the logits' upsampling and PointRend's
            points (see `tfdeeplab.layers.resize_like`). True (default, DeepLab's): the model
            pads its input at the bottom and right to the next 32·k + 1 pixels (none at 129,
            193, 513: use such crops), where the backbones' cells sit on pixels
            output_stride·i (`benchmarks.alignment`), upsamples with aligned corners, and
            crops the logits back to the input. False: half-pixel centres (torchvision's), no
            padding; the cells are then off by up to half a stride.
        aux_head: add torchvision's auxiliary FCN head (`AuxiliaryHead`) on the backbone's
            stride-16 "mid" features: its loss, times `aux_loss_weight` (arcgis.learn's 0.4),
            joins the training loss; inference and exports never run it.
        aux_loss_weight: the weight of the auxiliary loss.
        decoder: DeepLabV3+: the ASPP features, upsampled to stride 4, merged with the
            backbone's stride-4 "low" map by `deeplabv3plus_decoder` (`aspp_filters` channels)
            before the classifier, so the coarse logits are at stride 4 (thin structures
            survive); PointRend then subdivides from stride 4.
        rgb_bands: the input bands that are R, G, B (default (0, 1, 2); one band: grey).
        band_mean, band_std: per-band statistics of the training data in the input's units
            (16-bit, reflectance, …), normalised inside the model; None: 8-bit imagery.
        name: model name; default `deeplabv3_<backbone>_os<output_stride>`
            (`deeplabv3plus_...` with the decoder).

    Returns:
        A `keras.Model` taking float RGB in [0, 255], (B, H, W, 3), and returning float32
        logits (B, H, W, num_classes) at the input resolution. The backbone is the nested
        model named "backbone" (freeze it with `model.get_layer("backbone").trainable = False`).
    """
    _check_arguments(num_classes, output_stride, input_shape)
    if input_shape[-1] != 3 or band_mean is not None or rgb_bands is not None:
        arguments = {k: v for k, v in locals().items() if k in _REBUILT_ARGUMENTS}
        return _multispectral(arguments, input_shape, rgb_bands, band_mean, band_std)
    rates = _check_rates(aspp_rates, output_stride, _crop_of(input_shape, crop_size))
    images = keras.Input(shape=tuple(input_shape), name="image")
    padded = AlignedPadding(name="aligned_padding")(images) if align_corners else images
    maps = _backbone_maps(
        padded, backbone, output_stride=output_stride, weights=backbone_weights,
        multi_grid=multi_grid, alpha=alpha, batchnorm_momentum=batchnorm_momentum, mid=aux_head,
    )  # fmt: skip
    head_momentum = 0.99 if batchnorm_momentum is None else batchnorm_momentum
    aspp = ASPP(aspp_filters, rates, dropout, head_momentum, name="aspp")
    coarse = _coarse_logits(aspp, maps, num_classes, decoder, align_corners)
    if aux_head:
        head = _auxiliary_head(num_classes, maps, aux_loss_weight, align_corners, head_momentum)
        coarse = head([coarse, maps["mid"], padded, images])
    refiner = None
    if pointrend:
        refiner = _pointrend_refiner(
            num_classes, LOW_STRIDE if decoder else output_stride, subdivision_steps,
            align_corners, points=pointrend_points,
            points_stride=POINTS_STRIDE if pointrend_points is None else None,
            training_points=pointrend_training_points, image_features=pointrend_image_features,
        )  # fmt: skip
    logits = _logits_at_input_size(coarse, maps["low"], padded, images, refiner, align_corners)
    name = name or f"deeplabv3{'plus' if decoder else ''}_{backbone}_os{output_stride}"
    model = PointRendDeepLab if pointrend else SegmentationModel
    return model(images, logits, name=f"{name}_pointrend" if pointrend else name)


# DeepLabV3's arguments that the RGB model of a multispectral one is built with.
_REBUILT_ARGUMENTS = (
    "num_classes", "backbone", "output_stride", "aspp_rates", "multi_grid", "aspp_filters",
    "dropout", "backbone_weights", "alpha", "batchnorm_momentum", "pointrend",
    "pointrend_points", "pointrend_training_points", "pointrend_image_features",
    "subdivision_steps", "crop_size", "align_corners", "aux_head", "aux_loss_weight",
    "decoder", "name",
)  # fmt: skip


def _multispectral(arguments, input_shape, rgb_bands, band_mean, band_std):
    """The RGB DeepLabV3 of `arguments`, widened to input_shape's bands (`with_input_bands`)."""
    from tfdeeplab.bands import with_input_bands

    rgb = DeepLabV3(**arguments, input_shape=(*input_shape[:2], 3))
    return with_input_bands(rgb, int(input_shape[-1]), rgb_bands, band_mean, band_std)


def _backbone_maps(padded, backbone, **options):
    """The backbone (`get_backbone(backbone, **options)`, named "backbone") on `padded`."""
    features = get_backbone(backbone, input_shape=padded.shape[1:], **options)
    features.name = "backbone"
    return features(padded)


def _coarse_logits(aspp, maps, num_classes, decoder, align_corners):
    """The classifier's logits from the ASPP features, through the decoder if asked."""
    x = aspp(maps["high"])
    if decoder:
        x = deeplabv3plus_decoder(
            x,
            maps["low"],
            aspp.filters,
            LOW_LEVEL_FILTERS,
            aspp.batchnorm_momentum,
            align_corners,
        )
    return keras.layers.Conv2D(num_classes, 1, name="classifier")(x)


def _auxiliary_head(num_classes, maps, loss_weight, align_corners, batchnorm_momentum):
    return AuxiliaryHead(
        num_classes,
        max(8, maps["mid"].shape[-1] // 4),  # torchvision's in_channels // 4
        loss_weight=loss_weight,
        align_corners=align_corners,
        batchnorm_momentum=batchnorm_momentum,
        name="aux_head",
    )


def _pointrend_refiner(num_classes, stride, steps, align_corners, **options):
    """The refiner of coarse logits at `stride`; `steps` None: down to stride 1."""
    steps = stride.bit_length() - 1 if steps is None else steps
    return PointRendRefiner(
        num_classes,
        steps,
        align_corners=align_corners,
        dtype="float32",
        name="pointrend",
        **options,
    )


def _logits_at_input_size(coarse, low, padded, images, refiner, align_corners):
    """The coarse logits refined by PointRend (`refiner`) or upsampled bilinearly to the padded
    input, then cropped to the input."""
    if refiner is not None:
        logits = refiner([coarse, low, padded])
    else:
        # Named "logits" when it is the output; the crop below takes the name otherwise.
        upsampled = "upsampled" if align_corners else "logits"
        resize = ResizeLike("bilinear", align_corners, dtype="float32", name=upsampled)
        logits = resize([coarse, padded])
    if align_corners:
        logits = CropLike(dtype="float32", name="logits")([logits, images])
    return logits


def _check_arguments(num_classes, output_stride, input_shape):
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be an integer ≥ 1.")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            f"output_stride={output_stride!r} is not supported; choose one of: "
            f"{', '.join(map(str, OUTPUT_STRIDES))}"
        )
    bands = input_shape[-1] if len(input_shape) == 3 else None
    if bands is None or isinstance(bands, bool) or int(bands) != bands or bands < 1:
        raise ValueError(
            f"input_shape={input_shape!r} must be (H, W, bands) with H, W ints or None and "
            "bands ≥ 1."
        )


@keras.saving.register_keras_serializable(package="tfdeeplab")
class PointRendDeepLab(SegmentationModel):
    """A segmentation model with a `PointRendRefiner` named "pointrend" (the class of models
    saved with one). Inference returns the refined logits (B, H, W, K). Training returns them
    with the point head's outputs: {"logits": the dense logits (the coarse ones upsampled: the
    paper trains without subdivision), "point_logits" (B, N, K), "points" (B, N, 2),
    "image_size"} (see `SegmentationModel` and `PointRendRefiner.training_outputs`), and the
    point loss joins the compiled dense loss, so `fit` trains the point head on ordinary
    (image, mask) batches. All PointRend settings live in the refiner's config.
    """
