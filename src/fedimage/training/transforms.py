"""Image batches for the network: uint8 NHWC in (or a 16-bit store's, see :func:`model_images`),
normalized float NCHW out, in PyTorch.

FLAIR's pipeline generalized to any crop size N: images are resized to ``resize_to(N)``
(= round(N * 8 / 7), so 256 for FLAIR's 224 and no resize for a 256-pixel store), then
randomly cropped and horizontally flipped for training or center-cropped for evaluation,
and normalized with ImageNet's channel statistics. A gray store's one channel is repeated
into three (what an RGB store of the same images holds), so every model takes either store.

A 16-bit store's uint16 images are scaled by their maximum, 65535, as uint8 images are by 255:
:func:`model_images` turns them into float32 in [0, 1] as soon as they leave numpy (torch's
``uint16`` has few operations), and :class:`ImageTransform` takes uint8, such floats, or uint16.
"""

from __future__ import annotations

import numpy as np

from fedimage.extras import require

torch = require("torch")
F = torch.nn.functional

#: The largest value of a 16-bit store's images: what scales them to [0, 1].
UINT16_MAX = 65535.0

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_to(crop: int) -> int:
    """Side the images are resized to before cropping ``crop`` (FLAIR: 256 for 224)."""
    return round(crop * 8 / 7)


def model_images(images: np.ndarray) -> torch.Tensor:
    """Store images (a batch [B, S, S, C] or one [S, S, C]) as the tensor fedimage's models take:
    uint8 as they are (copied only when read-only), uint16 (a 16-bit store's) as float32 in [0, 1]
    (divided by 65535), float32 as they are (taken to be in [0, 1] already)."""
    if images.dtype == np.uint16:
        return torch.from_numpy(images.astype(np.float32) / np.float32(UINT16_MAX))
    if images.dtype not in (np.uint8, np.float32):
        raise ValueError(f"expected uint8, uint16 or float32 images, got {images.dtype}")
    if not images.flags.writeable:  # a decoded PNG's pixels (torch warns about read-only arrays)
        images = images.copy()
    return torch.from_numpy(np.ascontiguousarray(images))


class ImageTransform(torch.nn.Module):
    """uint8 [B, H, W, 3] (or [B, H, W, 1], gray) -> float32 [B, 3, N, N]: random crop + flip when
    training, center crop in eval.

    A 16-bit store's images come as float [B, H, W, C] in [0, 1] (:func:`model_images`) or as uint16;
    both are scaled to uint8's range (x 255, x 255/65535) before the same normalization.
    """

    def __init__(
        self, crop: int, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
    ):
        super().__init__()
        self.crop = crop
        self.size = resize_to(crop)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"expected uint8 images [B, H, W, 3] or [B, H, W, 1], got {tuple(images.shape)}")
        x = images.permute(0, 3, 1, 2).float()
        if images.dtype == torch.uint16:
            x = x * (255.0 / UINT16_MAX)
        elif images.is_floating_point():
            x = x * 255.0
        elif images.dtype != torch.uint8:
            raise ValueError(f"expected uint8, uint16 or float images, got {images.dtype}")
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        if self.training:
            return self._random_crop_flip(x)
        offset = (self.size - self.crop) // 2
        return x[..., offset : offset + self.crop, offset : offset + self.crop]

    def _random_crop_flip(self, x: torch.Tensor) -> torch.Tensor:
        """An independent crop position and flip per image, drawn from torch's seeded generator."""
        batch = x.shape[0]
        span = self.size - self.crop + 1
        tops = torch.randint(0, span, (batch,)).tolist()
        lefts = torch.randint(0, span, (batch,)).tolist()
        flips = (torch.rand(batch) < 0.5).tolist()
        crops = []
        for image, top, left, flip in zip(x, tops, lefts, flips, strict=True):
            crop = image[:, top : top + self.crop, left : left + self.crop]
            crops.append(crop.flip(-1) if flip else crop)
        return torch.stack(crops)
