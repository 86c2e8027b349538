"""classifier_kd.models.vkd_deit: VkD's DeiT student (conv stem, mean-patch dist token, two heads)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("timm")

from classifier_kd.distiller import Distiller  # noqa: E402
from classifier_kd.models import available, create_model  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_student(num_classes: int = 10):
    torch.manual_seed(0)
    return create_model("vkd_deit_tiny", num_classes, image_size=32)  # 2 x 2 patches


def test_registered_with_deit_sizes():
    assert {"vkd_deit_tiny", "vkd_deit_small"} <= set(available())
    with torch.device("meta"):
        tiny, small = create_model("vkd_deit_tiny", 1000), create_model("vkd_deit_small", 1000)
    assert (tiny.distill_feature_dim, tiny.feature_dim, small.distill_feature_dim) == (192, 384, 384)
    assert tiny.pos_embed.shape == (1, 198, 192)  # cls + dist + 14 x 14 patches at 224 px
    assert not any("dist_token" in name for name, _ in tiny.named_parameters())  # the dist token is not learned
    with pytest.raises(ValueError, match="no published weights"):
        create_model("vkd_deit_tiny", 10, pretrained=True)


def test_seams_and_the_evaluation_output():
    model = tiny_student().eval()
    x = torch.randn(3, 3, 32, 32)
    tokens = model.tokens(x)
    assert tokens.shape == (3, 2 + 4, 192)
    features, logits, distill_logits = model.forward_distill(x)
    torch.testing.assert_close(features, tokens[:, 2:].mean(dim=1))  # VkD distils the mean patch token
    torch.testing.assert_close(logits, model.head(tokens[:, 0]))
    torch.testing.assert_close(distill_logits, model.head_dist(tokens[:, 1]))
    torch.testing.assert_close(model(x), (logits + distill_logits) / 2)  # evaluation averages the heads
    torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))


def test_dist_token_is_the_mean_patch_embedding():
    model = tiny_student().eval()
    seen = {}
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.setdefault("tokens", args[0]))
    x = torch.randn(2, 3, 32, 32)
    model.tokens(x)
    patches = model.patch_proj(model.stem(x)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(seen["tokens"][:, 1] - model.pos_embed[:, 1], patches.mean(dim=1))


def test_distiller_routes_ce_to_the_cls_head_and_kd_to_the_dist_head():
    student = tiny_student()
    torch.manual_seed(1)
    teacher = create_model("resnet20", 10).eval()  # 64-d features
    distiller = Distiller(student, teacher, [("kd", 1.0, {"temperature": 1.0}), ("vkd", 1.0, {})])
    assert distiller.losses["vkd"].projector(torch.randn(2, 192)).shape == (2, 64)  # mean patch token -> teacher
    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    _, terms = distiller(images, labels)
    terms["loss_ce"].backward(retain_graph=True)
    assert student.head.weight.grad is not None and student.head_dist.weight.grad is None
    student.zero_grad(set_to_none=True)
    terms["loss_kd"].backward(retain_graph=True)
    assert student.head_dist.weight.grad is not None and student.head.weight.grad is None
    student.zero_grad(set_to_none=True)
    terms["loss_vkd"].backward()
    assert student.head.weight.grad is None and student.head_dist.weight.grad is None  # features only
    assert student.patch_proj.weight.grad.abs().sum() > 0
