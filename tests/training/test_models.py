"""Networks and image transforms of the training benchmark."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from fedimage.errors import OptionError  # noqa: E402
from fedimage.training.models import build_model  # noqa: E402
from fedimage.training.transforms import IMAGENET_MEAN, ImageTransform, resize_to  # noqa: E402

# torchvision's resnet18(num_classes=17): 11,689,512 parameters - 1000 + 17 outputs of 513 weights each
TORCHVISION_RESNET18_17_OUTPUTS = 11_689_512 - 513 * 1000 + 513 * 17


pytestmark = pytest.mark.slow  # Ray, Flower, pfl, training or a docs build: `make test-fast` skips it


def test_resnet18gn_matches_torchvision_layout_with_group_norm():
    model = build_model("resnet18gn", 17, 224)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_RESNET18_17_OUTPUTS
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 20  # stem 1 + 8 blocks x 2 + 3 downsamples
    assert all(norm.num_groups == min(32, norm.num_channels) for norm in norms)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    model.eval()
    logits = model(torch.randint(0, 256, (2, 256, 256, 3), dtype=torch.uint8))
    assert logits.shape == (2, 17) and torch.isfinite(logits).all()


def test_cnn_output_and_loss():
    model = build_model("cnn", 5, 28)
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    targets = torch.tensor([[1, 0, 0, 1, 0]] * 3, dtype=torch.float32)
    assert model(images).shape == (3, 5)
    loss = model.loss(images, targets)
    assert model.training and loss.ndim == 0 and torch.isfinite(loss)
    model.loss(images, targets, eval=True)
    assert not model.training


def test_unknown_model_and_empty_vocabulary_are_errors():
    with pytest.raises(OptionError, match="resnet18gn, cnn"):
        build_model("vgg", 3, 32)
    with pytest.raises(OptionError, match="no labels"):
        build_model("cnn", 0, 32)


def test_flair_sizes_and_normalization():
    assert resize_to(224) == 256
    transform = ImageTransform(224).eval()
    mean_image = torch.tensor([round(m * 255) for m in IMAGENET_MEAN], dtype=torch.uint8).expand(
        1, 256, 256, 3
    )
    out = transform(mean_image.contiguous())
    assert out.shape == (1, 3, 224, 224) and out.abs().max() < 0.01


def test_eval_is_a_center_crop_and_training_crops_and_flips_reproducibly():
    columns = torch.arange(32, dtype=torch.uint8).mul(7).view(1, 1, 32, 1).expand(2, 32, 32, 3).contiguous()
    transform = ImageTransform(28)  # resize_to(28) == 32: no resize
    transform.eval()
    center = transform(columns)
    assert torch.equal(center, transform(columns)) and center.shape == (2, 3, 28, 28)
    transform.train()
    torch.manual_seed(0)
    first = transform(columns)
    torch.manual_seed(0)
    assert torch.equal(first, transform(columns))
    torch.manual_seed(1)
    crops = torch.cat([transform(columns) for _ in range(8)])
    rows = crops[:, 0, 0, :]
    increasing = (rows[:, 1:] > rows[:, :-1]).all(dim=1)
    decreasing = (rows[:, 1:] < rows[:, :-1]).all(dim=1)
    assert (increasing | decreasing).all() and increasing.any() and decreasing.any()  # flipped and not
    assert len({round(float(row[0]), 4) for row in rows[increasing]}) > 1  # different crop offsets
