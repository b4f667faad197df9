"""Networks for multi-label image classification, in plain PyTorch.

``resnet18gn`` is FLAIR's from-scratch model: torchvision's ResNet-18 layout with every
BatchNorm replaced by ``GroupNorm(min(32, C), C)`` (what pfl-research's conversion does and
what ml-flair's default 32-group normalization gives), since batch statistics would leak
across a user's examples and break per-user clipping. ``cnn`` is a small GroupNorm CNN for
CPU runs. Both take uint8 NHWC batches and apply :class:`ImageTransform` themselves.
"""

from __future__ import annotations

from typing import Any

from fedimage.errors import OptionError
from fedimage.extras import require
from fedimage.training.transforms import ImageTransform

torch = require("torch")
nn = torch.nn
F = nn.functional


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = group_norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = group_norm(channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), group_norm(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class ResNet18GN(nn.Module):
    """ResNet-18 (stages of 2 blocks, 64-128-256-512 channels) with GroupNorm; logits out."""

    def __init__(self, num_outputs: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            group_norm(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, channels = [], 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(channels, width, stride), BasicBlock(width, width)))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(512, num_outputs)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SmallCNN(nn.Module):
    """Three conv + GroupNorm + ReLU stages (32-64-128 channels), global average pooling, linear."""

    def __init__(self, num_outputs: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in (32, 64, 128):
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                group_norm(width),
                nn.ReLU(inplace=True),
            ]
            layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


BACKBONES = {"resnet18gn": ResNet18GN, "cnn": SmallCNN}


class MultiLabelNet(nn.Module):
    """A backbone behind :class:`ImageTransform`, with binary cross-entropy loss.

    ``loss`` and ``metrics`` follow pfl's ``PyTorchModel`` protocol (``eval`` picks the mode).
    """

    def __init__(self, backbone: nn.Module, crop: int):
        super().__init__()
        self.transform = ImageTransform(crop)
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.transform(images))

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor, eval: bool = False) -> torch.Tensor:
        self.train(not eval)
        return F.binary_cross_entropy_with_logits(self(inputs), targets)

    @torch.no_grad()
    def metrics(self, inputs: torch.Tensor, targets: torch.Tensor, eval: bool = True) -> dict[str, Any]:
        """Summed BCE over images and labels, weighted by their count (pfl's ``Weighted``)."""
        weighted = require("pfl.metrics").Weighted
        self.train(not eval)
        summed = F.binary_cross_entropy_with_logits(self(inputs), targets, reduction="sum").item()
        return {"loss": weighted(summed, targets.numel())}


def build_model(name: str, num_outputs: int, crop: int) -> MultiLabelNet:
    """``resnet18gn`` or ``cnn`` with ``num_outputs`` logits, reading crops of side ``crop``."""
    if name not in BACKBONES:
        raise OptionError(f"unknown model {name!r}; choose one of {', '.join(BACKBONES)}")
    if num_outputs < 1:
        raise OptionError(f"the store has no labels of the chosen kind ({num_outputs}); nothing to train")
    return MultiLabelNet(BACKBONES[name](num_outputs), crop)
