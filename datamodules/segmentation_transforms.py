"""Image + mask pipelines of the segmentation datamodules, built with **albumentations**.

albumentations moves an image and its mask through the same geometric operations in one call
(the reason it is used here and torchvision v2 for classification, see
:mod:`datamodules.transforms`). Inputs are an RGB ``(H, W, 3)`` uint8 array and an
``(H, W)`` uint8 mask of class ids (``255`` = void); a pipeline returns the pair
``(image, mask)``: a float32 ``(3, H', W')`` normalized tensor and an int64 ``(H', W')``
tensor.

* **Masks are never interpolated**: every resize uses nearest neighbour on the mask
  (``LongestMaxSize(mask_interpolation=cv2.INTER_NEAREST)``), so no new label appears and the
  void label survives; padding fills the image with 0 (black, before normalization) and the
  mask with ``255`` (void: padded pixels are never scored).
* **Train** (:func:`voc_train_transform`): colour jitter (brightness/contrast, then
  hue/saturation/value; image only) -> ``LongestMaxSize(max_size)`` -> ``PadIfNeeded(crop,
  crop)`` -> ``RandomCrop(crop)`` -> ``HorizontalFlip`` -> normalize. The jitter runs first
  (it is pixel-wise, so it commutes with the geometry) so that it neither tints the padding,
  which stays exactly 0 in the image, nor costs more than the original image size.
* **Evaluation** (:func:`voc_eval_transform`): ``LongestMaxSize(size)`` ->
  ``PadIfNeeded(size, size)`` -> normalize. Deterministic. The image is kept at the **top
  left** (``position="top_left"``): padding is at the bottom and right, so the prediction of
  the resized image is ``logits[..., :h, :w]``; the padded pixels are void in the mask.

**Reproducibility.** albumentations 2.x draws from its own generators (a NumPy ``Generator``
and a ``random.Random`` per transform): ``seed_everything`` and the NumPy / torch seeds do not
reach them, and a pipeline built with ``seed=None`` is seeded from the OS. So the training
dataset (:class:`datamodules.voc.SegmentationFileDataset`) draws **one seed per sample from
torch's global generator** (``int(torch.randint(0, 2**31 - 1, ()))``) and reseeds the pipeline
with it before applying it (:meth:`SegmentationTransform.set_random_seed`). Consequences:

* each DataLoader worker has its own torch generator (seeded by the loader from the base seed
  and the worker id), so workers draw different crops;
* the augmentation is a function of torch's generator state: a seeded run repeats itself, and
  the ``RNGState`` callback, which saves and restores torch's generator in checkpoints,
  reproduces the augmentations after a resume, as for :mod:`datamodules.digits`.

The reseed does **not** use albumentations' ``Compose.set_random_seed``: that gives every
transform its *own* generator seeded with the *same* seed, so their first draws coincide --
after a per-sample reseed the flip, the brightness/contrast and the HSV decisions (each
``random() < p``) would be one and the same coin, and the flip would be tied to the
crop's vertical offset (both read the same first number).
:meth:`SegmentationTransform.set_random_seed` instead hands one fresh
``(numpy Generator, random.Random)`` pair, seeded from the sample's seed, to the whole
pipeline (``Compose.set_random_state``): one stream, drawn in order, as with an unseeded
pipeline. Cost: about 25 us per sample (22 us for the two generators, 3 us for the
``torch.randint``; measured on this project's 2-core CPU machine), next to about 12 ms for
the training transform itself on a 500x375 VOC image (plus ~2.5 ms of JPEG decoding): 0.2 %.
(``Compose.set_random_seed`` on this 8-transform pipeline would cost about 170 us.)
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2
from torch import Tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SegmentationTransform",
    "voc_eval_transform",
    "voc_train_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Mask value of padded pixels (the VOC void label).
PAD_MASK_VALUE = 255


class SegmentationTransform:
    """An albumentations pipeline applied to an ``(image, mask)`` pair.

    Args:
        compose: the pipeline; it must end with ``ToTensorV2``.

    Calling it with an RGB ``(H, W, 3)`` uint8 array and an ``(H, W)`` uint8 mask returns a
    float32 ``(3, H', W')`` image tensor and an int64 ``(H', W')`` mask tensor.
    """

    def __init__(self, compose: A.Compose) -> None:
        self.compose = compose

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[Tensor, Tensor]:  # noqa: D102
        out = self.compose(image=image, mask=mask)
        return out["image"], out["mask"].long()

    def set_random_seed(self, seed: int) -> None:
        """Reseed the whole pipeline: one generator pair, shared by every transform, in order.

        Unlike ``A.Compose.set_random_seed`` (one identically seeded generator per transform,
        whose draws then coincide), the transforms draw successive numbers from one stream.
        """
        self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.compose!r})"


def _pad(size: int, position: str) -> A.PadIfNeeded:
    return A.PadIfNeeded(
        min_height=size,
        min_width=size,
        position=position,
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        fill_mask=PAD_MASK_VALUE,
    )


def _resize(max_size: int) -> A.LongestMaxSize:
    return A.LongestMaxSize(
        max_size=max_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST
    )


def _tail(mean: Sequence[float], std: Sequence[float]) -> list:
    return [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]


def voc_train_transform(
    crop_size: int = 512,
    max_size: int = 640,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    jitter: bool = True,
) -> SegmentationTransform:
    """The training pipeline: jitter, resize, pad, random crop, flip, normalize.

    Args:
        crop_size: side of the square training crop.
        max_size: the longer image side is resized to this (up or down) before cropping.
        mean: per-channel mean of pixels in ``[0, 1]``.
        std: per-channel standard deviation of pixels in ``[0, 1]``.
        jitter: apply the colour jitter (``RandomBrightnessContrast(0.2, 0.2)`` and
            ``HueSaturationValue(20, 30, 20)``, each with probability 0.5). ``False`` leaves
            pixel values unchanged (tests check image/mask alignment with it).
    """
    colour = (
        [
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.HueSaturationValue(hue_shift_limit=20, sat_shift_limit=30, val_shift_limit=20, p=0.5),
        ]
        if jitter
        else []
    )
    return SegmentationTransform(
        A.Compose(
            [
                *colour,
                _resize(max_size),
                _pad(crop_size, "top_left"),
                A.RandomCrop(height=crop_size, width=crop_size),
                A.HorizontalFlip(p=0.5),
                *_tail(mean, std),
            ]
        )
    )


def voc_eval_transform(
    size: int = 480,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> SegmentationTransform:
    """The evaluation pipeline: longer side to ``size``, pad to ``size x size`` (bottom/right).

    Args:
        size: side of the square output; the image keeps its aspect ratio at the top left.
        mean: per-channel mean of pixels in ``[0, 1]``.
        std: per-channel standard deviation of pixels in ``[0, 1]``.
    """
    return SegmentationTransform(
        A.Compose([_resize(size), _pad(size, "top_left"), *_tail(mean, std)])
    )
