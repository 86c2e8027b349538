"""The ImageNet / cross-architecture zoo: torchvision and timm models behind the zoo's seams, mobilenet_v1.

Every library model is checked against the library itself: identical state_dict keys and shapes, and
``forward`` equal to the library model's own forward for the same tensors (the library twin is built on
the meta device and given our tensors with ``load_state_dict(assign=True)``, so no second initialisation).
Inputs are 32x32 (ViT-like models are built for 32 px with ``image_size``) to keep the file fast.
"""
from __future__ import annotations

import copy
import functools
import itertools
import sys
import urllib.error

import pytest
import torch
import torchvision

from classifier_kd.models import (
    IMAGENET_MODELS, PretrainedWeightsUnavailable, available, create_model, load_classifier, save_classifier,
)
from classifier_kd.models.checkpoint import _infer_num_classes
from classifier_kd.models import imagenet
from classifier_kd.models.imagenet import MobileNetV1

timm = pytest.importorskip("timm")

NUM_CLASSES = 3
TORCHVISION_DIMS = {
    "resnet18": 512, "resnet34": 512, "resnet50": 2048, "mobilenet_v2": 1280, "regnet_y_16gf": 3024,
    "convnext_tiny": 768, "swin_t": 768, "vit_b_16": 768,
}
TIMM_DIMS = {
    "timm/deit_tiny_patch16_224": 192, "timm/deit_small_patch16_224": 384, "timm/resmlp_12_224": 384,
    "timm/mixer_b16_224": 768, "timm/regnety_160": 3024, "timm/mobilenetv2_100": 1280, "timm/resnet18": 512,
    "timm/swin_tiny_patch4_window7_224": 768, "timm/vit_small_patch16_224": 384, "timm/convnext_tiny": 768,
}
OFA_SWIN_DIMS = {"timm/swin_pico_patch4_window7_224": 384, "timm/swin_nano_patch4_window7_224": 512}  # 8 x embed_dim
LIBRARY_DIMS = {**TORCHVISION_DIMS, **TIMM_DIMS}
SIZED = {"vit_b_16", "timm/deit_tiny_patch16_224", "timm/deit_small_patch16_224", "timm/resmlp_12_224",
         "timm/mixer_b16_224", "timm/swin_tiny_patch4_window7_224", "timm/vit_small_patch16_224"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _size(name: str) -> int | None:
    return 32 if name in SIZED else None


def library_model(name: str, num_classes: int, image_size: int | None = None) -> torch.nn.Module:
    """The model as the library builds it (random init)."""
    if name.startswith("timm/"):
        kwargs = {"img_size": image_size} if image_size else {}
        return timm.create_model(name.removeprefix("timm/"), num_classes=num_classes, **kwargs)
    kwargs = {"image_size": image_size} if image_size else {}
    return torchvision.models.get_model(name, num_classes=num_classes, **kwargs)


@functools.lru_cache(maxsize=None)
def ours(name: str) -> torch.nn.Module:
    """One real (CPU) eval-mode instance per name, for 32 px inputs; shared by the read-only tests."""
    torch.manual_seed(0)
    return create_model(name, NUM_CLASSES, image_size=_size(name)).eval()


def twin(name: str, model: torch.nn.Module) -> torch.nn.Module:
    """The library's own model holding ``model``'s tensors (strict load: the keys must be identical)."""
    try:
        with torch.device("meta"):
            lib = library_model(name, model.num_classes, model.image_size)
        lib.load_state_dict(model.state_dict(), strict=True, assign=True)
        if not any(t.is_meta for t in itertools.chain(lib.parameters(), lib.buffers())):
            return lib.eval()
    except NotImplementedError:  # torchvision's RegNet cannot be built on the meta device
        pass
    lib = library_model(name, model.num_classes, model.image_size)  # non-persistent buffers need a real build
    lib.load_state_dict(model.state_dict(), strict=True)
    return lib.eval()


def _meta_or_cached(name: str) -> torch.nn.Module:
    try:
        with torch.device("meta"):
            return create_model(name, NUM_CLASSES)
    except NotImplementedError:
        return ours(name)


def test_registry_lists_the_zoo():
    names = available()
    assert names == sorted(names)
    assert set(LIBRARY_DIMS) | set(OFA_SWIN_DIMS) | {"mobilenet_v1", "vkd_deit_tiny", "vkd_deit_small"} == set(IMAGENET_MODELS)
    assert set(IMAGENET_MODELS) <= set(names)
    assert {"resnet32x4", "ResNet50", "MobileNetV2"} <= set(names)  # the CIFAR zoo is still there


@pytest.mark.parametrize("name", [*LIBRARY_DIMS, *OFA_SWIN_DIMS])
def test_feature_dim_and_library_keys(name):
    model = _meta_or_cached(name)
    dims = {**LIBRARY_DIMS, **OFA_SWIN_DIMS}
    assert model.feature_dim == dims[name]
    assert model.num_classes == NUM_CLASSES
    assert model.arch == name
    state = model.state_dict()
    assert state[model.head_weight_key].shape == (NUM_CLASSES, model.feature_dim)
    if name in OFA_SWIN_DIMS:
        return  # not a timm registry name: no library twin to compare with
    with torch.device("meta" if next(model.parameters()).is_meta else "cpu"):
        lib = library_model(name, NUM_CLASSES, model.image_size)
    assert [(k, v.shape) for k, v in state.items()] == [(k, v.shape) for k, v in lib.state_dict().items()]


# One model per family (resnet34/50 compute their embedding with resnet18's code, deit_small with deit_tiny's);
# the big ones are only checked for keys and feature_dim above. Their seams are checked with siblings
# (torchvision RegNet: regnet_y_400mf below; timm's MlpMixer: resmlp_12) or are timm's generic one.
FORWARD_CHECKED = [name for name in LIBRARY_DIMS if name not in {
    "resnet34", "resnet50", "regnet_y_16gf", "timm/deit_small_patch16_224", "timm/regnety_160", "timm/mixer_b16_224"}]


@pytest.mark.parametrize("name", FORWARD_CHECKED)
def test_forward_is_head_of_features_and_matches_the_library(name):
    model = ours(name)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
        reference = twin(name, model)(x)
        assert features.shape == (2, LIBRARY_DIMS[name])
        assert logits.shape == (2, NUM_CLASSES)
        torch.testing.assert_close(logits, model.forward_head(features), rtol=0, atol=0)
        torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-6)


def test_torchvision_regnet_seam():
    torch.manual_seed(0)
    lib = torchvision.models.regnet_y_400mf(num_classes=NUM_CLASSES).eval()
    features, head, linear = imagenet._TV_FAMILIES[imagenet.TORCHVISION_MODELS["regnet_y_16gf"]]
    reference = copy.deepcopy(lib)
    model = imagenet.LibraryClassifier(lib, features=features, head=head, linear=linear, image_size=None,
                                       library="torchvision")
    assert list(model.state_dict()) == list(reference.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, model.feature_dim)
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_image_size():
    assert ours("vit_b_16").image_size == 32 and ours("timm/deit_tiny_patch16_224").image_size == 32
    with torch.device("meta"):
        assert create_model("vit_b_16", 5).image_size == 224  # None = native
        assert create_model("timm/swin_tiny_patch4_window7_224", 5).image_size == 224
        assert create_model("resnet18", 5, image_size=32).image_size is None  # CNNs ignore it
        assert create_model("timm/convnext_tiny", 5, image_size=32).image_size is None
        assert create_model("resnet20", 5, image_size=64).image_size is None  # CIFAR models too
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        create_model("resnet18", 5, image_size=0)
    with pytest.raises(ValueError, match="not a multiple of its patch size 16"):
        create_model("vit_b_16", 5, image_size=40)


def test_library_state_dict_file_loads_strict(tmp_path):
    # What torchvision / timm write (e.g. torchvision's resnet18-f37072fd.pth): a bare state_dict.
    for name, num_classes in (("resnet18", 10), ("timm/resnet18", 7)):
        torch.manual_seed(2)
        lib = library_model(name, num_classes).eval()
        path = tmp_path / f"{name.replace('/', '_')}.pth"
        torch.save(lib.state_dict(), path)
        x = torch.randn(2, 3, 32, 32)
        for loaded in (create_model(name, num_classes, weights=path), load_classifier(path, arch=name)):
            assert loaded.num_classes == num_classes  # inferred from head_weight_key by load_classifier
            with torch.no_grad():
                torch.testing.assert_close(loaded.eval()(x), lib(x), rtol=0, atol=0)


def test_vit_state_dict_at_other_size_needs_image_size(tmp_path):
    name = "timm/deit_tiny_patch16_224"
    path = tmp_path / "deit32.pth"
    torch.save({"model": ours(name).state_dict()}, path)  # mdistiller-style layout, trained at 32 px
    with pytest.raises(ValueError, match=r"pos_embed .*built for 224 px inputs; pass image_size="):
        load_classifier(path, arch=name)
    loaded = create_model(name, NUM_CLASSES, weights=path, image_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ours(name)(x), rtol=0, atol=0)


def test_vit_b_16_our_format_round_trip_at_32px(tmp_path):
    source = ours("vit_b_16")
    spec = {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    path = tmp_path / "vit.pt"
    save_classifier(path, source, "vit_b_16", NUM_CLASSES, input_spec=spec)
    loaded = load_classifier(path).eval()  # arch, classes and (from input_spec) image_size come from the file
    assert (loaded.arch, loaded.num_classes, loaded.image_size) == ("vit_b_16", NUM_CLASSES, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


def test_num_classes_inferred_for_a_model_that_cannot_be_built_on_meta(tmp_path):
    # torchvision's RegNet computes its widths with tensor ops, so the meta probe falls back to the CPU.
    state = {"fc.weight": torch.empty(7, 3024)}
    assert _infer_num_classes("regnet_y_16gf", state, tmp_path / "r.pth") == 7


def test_mobilenet_v1():
    with torch.device("meta"):
        model = create_model("mobilenet_v1", 1000)
    # Stem 3*32*9 conv + 2*32 BN; block (c_in -> c_out): 9*c_in dw + 2*c_in BN + c_in*c_out pw + 2*c_out BN;
    # fc 1024*1000 + 1000. Howard et al. 2017 report 4.2 million, rounded to 0.1M: |count - 4.2M| <= 0.05M.
    widths = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    blocks = sum(11 * c_in + c_in * c_out + 2 * c_out for c_in, c_out in zip(widths, widths[1:]))
    expected = 3 * 32 * 9 + 2 * 32 + blocks + 1024 * 1000 + 1000
    count = sum(p.numel() for p in model.parameters())
    assert count == expected == 4_231_976
    assert abs(count - 4.2e6) <= 0.05e6
    assert (model.feature_dim, model.head_weight_key, model.image_size) == (1024, "fc.weight", None)
    # mdistiller's ImageNet MobileNetV1 names (model.<i>: stem, 13 blocks with convs at .0/.3, BNs at .1/.4)
    keys = model.state_dict().keys()
    assert {"model.0.0.weight", "model.0.1.running_var", "model.1.0.weight", "model.1.3.weight",
            "model.13.4.bias", "fc.weight", "fc.bias"} <= set(keys)
    assert model.get_submodule("model.1.0").groups == 32 and model.get_submodule("model.12.0").stride == (2, 2)
    small = create_model("mobilenet_v1", NUM_CLASSES).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert small.forward_features(x).shape == (2, 1024)
        torch.testing.assert_close(small(x), small.forward_head(small.forward_features(x)), rtol=0, atol=0)
    assert isinstance(small, MobileNetV1)
    with pytest.raises(ValueError, match="mobilenet_v1 has no built-in pretrained weights.*weights=PATH"):
        create_model("mobilenet_v1", 10, pretrained=True)


def test_wrapper_follows_dtype_copy_and_mode():
    model = copy.deepcopy(ours("resnet18")).double()  # .double() replaces BN buffers: the library side must follow
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), twin("resnet18", model)(x), rtol=0, atol=0)
    assert model.train().training and all(m.training for m in model.modules())
    assert ours("resnet18").training is False  # the deepcopy is independent
    assert "library=torchvision.ResNet" in repr(model)


def test_any_timm_name_is_accepted_but_not_listed():
    with torch.device("meta"):
        model = create_model("timm/resnet10t", 4)
    assert (model.arch, model.num_classes, model.feature_dim) == ("timm/resnet10t", 4, 512)
    assert "timm/resnet10t" not in available()


def test_unknown_timm_name():
    with pytest.raises(ValueError, match="unknown timm model 'timm/no_such_net'.*timm.list_models"):
        create_model("timm/no_such_net", 10)
    with pytest.raises(ValueError, match="unknown model 'no_such_net'"):
        create_model("no_such_net", 10)


def test_timm_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ImportError, match=r"^model timm/resnet18 needs timm: pip install -e \.\[imagenet\]$"):
        create_model("timm/resnet18", 10)


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and empty caches: torch.hub (torchvision, timm URL weights) and the Hugging Face hub."""
    from huggingface_hub.errors import LocalEntryNotFoundError
    from timm.models import _builder, _hub

    def no_hf(*args, **kwargs):
        raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic "
                                      "has been disabled.")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    monkeypatch.setattr(_builder, "load_state_dict_from_url", _no_network)
    monkeypatch.setattr(_hub, "hf_hub_download", no_hf)
    return tmp_path / "hub"


@pytest.mark.parametrize("name", ["resnet18", "timm/deit_tiny_patch16_224"])
def test_pretrained_offline_error(offline, name):
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        create_model(name, 10, pretrained=True)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"the pretrained weights of {name} could not be fetched (")
    assert message.endswith("pass weights=PATH (CLI: --teacher-ckpt / --weights) to a local file")
    assert isinstance(info.value, RuntimeError)


def test_pretrained_torchvision_from_the_hub_cache_gets_a_fresh_head(offline):
    # A file already in torch.hub's cache is used without a download: the library's own mechanism.
    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    torch.manual_seed(3)
    imagenet = library_model("resnet18", 1000)
    (offline / "checkpoints").mkdir(parents=True)
    torch.save(imagenet.state_dict(), offline / "checkpoints" / url.rsplit("/", 1)[1])
    model = create_model("resnet18", 10, pretrained=True)
    assert model.fc.weight.shape == (10, 512) and model.num_classes == 10
    expected = {k: v for k, v in imagenet.state_dict().items() if not k.startswith("fc.")}
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    assert create_model("resnet18", 1000, pretrained=True).fc.weight.equal(imagenet.fc.weight)


def test_pretrained_timm_resamples_to_image_size(offline, monkeypatch):
    import safetensors.torch
    from timm.models import _hub

    torch.manual_seed(4)
    imagenet = library_model("timm/deit_tiny_patch16_224", 1000)  # 224 px: 197 position embeddings
    file = offline.parent / "model.safetensors"
    safetensors.torch.save_file(imagenet.state_dict(), str(file))
    monkeypatch.setattr(_hub, "hf_hub_download", lambda *args, **kwargs: str(file))
    model = create_model("timm/deit_tiny_patch16_224", 10, pretrained=True, image_size=32)
    assert model.image_size == 32 and model.pos_embed.shape == (1, 5, 192)
    assert model.head.weight.shape == (10, 192)
    assert torch.equal(model.blocks[0].attn.qkv.weight, imagenet.blocks[0].attn.qkv.weight)


def test_pretrained_torchvision_vit_at_other_size_is_refused():
    with pytest.raises(ValueError, match="pretrained vit_b_16 is for 224 px inputs.*image_size=32"):
        create_model("vit_b_16", 10, pretrained=True, image_size=32)


def test_models_without_library_weights_refuse_pretrained():
    with pytest.raises(ValueError, match="swin_pico_patch4_window7_224 has no built-in pretrained weights"):
        create_model("timm/swin_pico_patch4_window7_224", 10, pretrained=True)
