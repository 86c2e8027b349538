"""Frozen teachers for the discriminator: images in [-1, 1] -> feature vectors.

Two kinds, chosen by a spec string (``--teacher``):

* ``clip:<open_clip model name>`` — an open_clip image encoder (VkD / KD-DLGAN use OpenAI's ViT-B/32).
  Weights come from an open_clip pretrained tag (``--teacher-pretrained openai``, needs the internet the
  first time) or from a local file (``--teacher-weights FILE``, no network at all).
* ``ckpt:<path>`` — a classifier checkpoint written by ``classifier_kd`` (or a RepDistiller-layout file with
  ``--teacher-arch``); its pooled penultimate feature is the teacher feature. This is how runs are made
  offline here.

The same classes load the ``--fd-features`` classifier of the evaluator (``role="FD network"``): every error
names the role the network plays, so a missing evaluator file is not reported as a missing teacher.

Preprocessing. ``kd-dlgan`` (default) is what KD-DLGAN did and VkD kept (``shared/reference/gan.md`` §6): the
DiffAugmented D inputs in [-1, 1] are upsampled by nearest neighbour to the teacher's resolution and given to
the teacher as they are, without the teacher's mean/std. ``native`` does what the teacher was trained with:
for CLIP, map to [0, 1], resize to 224 (bicubic) and the model's own mean/std (open_clip's preprocess_cfg); for a classifier, its recorded
normalisation at its input size.

The teacher is frozen: eval mode, ``requires_grad_(False)``, called under ``no_grad``; ``train()`` on the
wrapper never puts the network back in training mode. ``bf16=True`` runs it under bfloat16 autocast (on CUDA
or CPU) and returns float32 features.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.losses.classes import ClassEmbeddings
from kd_core.runtime.finite import first_non_finite

PREPROCESSING = ("kd-dlgan", "native")
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class TeacherError(ValueError):
    """A teacher that cannot be built from the given spec or files (one-line message)."""


class FrozenTeacher(nn.Module):
    """Base: holds a frozen network and turns [-1, 1] images into ``(B, feature_dim)`` features."""

    feature_dim: int
    description: str

    def __init__(self, network: nn.Module, preprocessing: str, bf16: bool, role: str = "teacher"):
        super().__init__()
        self.role = role  # what the network is for, in every message: "teacher" or "FD network"
        if preprocessing not in PREPROCESSING:
            raise TeacherError(f"unknown {role} preprocessing {preprocessing!r}; allowed: {', '.join(PREPROCESSING)}")
        bad = first_non_finite(network)
        if bad is not None:
            raise TeacherError(f"the {role} network has non-finite weights ({bad}); it cannot be used")
        self.network = network.eval().requires_grad_(False)
        self.preprocessing = preprocessing
        self.bf16 = bf16

    def train(self, mode: bool = True) -> "FrozenTeacher":
        # A frozen teacher stays in eval mode: BN statistics and dropout must not change with the student's mode.
        super().train(False)
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def class_embeddings(self) -> ClassEmbeddings:
        """The teacher's view of the classes, for the losses that need it (KD-DLGAN, label distillation)."""
        raise TeacherError(f"{type(self).__name__} offers no class embeddings")

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inputs = self.preprocess(images.detach())
        with torch.autocast(device_type=inputs.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            features = self.embed(inputs)
        return features.float()


def nearest_upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """KD-DLGAN's input: nearest-neighbour resize of the [-1, 1] images (7x for 32 -> 224)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="nearest")


def normalise(images01: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.tensor(mean, device=images01.device, dtype=images01.dtype).view(1, -1, 1, 1)
    std = torch.tensor(std, device=images01.device, dtype=images01.dtype).view(1, -1, 1, 1)
    return (images01 - mean) / std


class ClipTeacher(FrozenTeacher):
    """open_clip image encoder; features are ``encode_image`` outputs, not L2-normalised (as KD-DLGAN)."""

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = None, weights: str | os.PathLike | None = None,
                 preprocessing: str = "kd-dlgan", bf16: bool = False, class_names: Sequence[str] | None = None):
        import open_clip

        if model_name not in open_clip.list_models():
            raise TeacherError(f"unknown open_clip model {model_name!r}; e.g. ViT-B-32, ViT-B-32-quickgelu, ViT-B-16, RN50 "
                               f"(open_clip.list_models() lists all)")
        if weights is not None and pretrained is not None:
            raise TeacherError("give either a pretrained tag or a weights file for the CLIP teacher, not both")
        if weights is not None:
            weights = Path(weights)
            if not weights.is_file():
                raise TeacherError(f"CLIP weights file not found: {weights}")
            source = str(weights)
        elif pretrained is not None:
            tags = [tag for name, tag in open_clip.list_pretrained() if name == model_name]
            if pretrained not in tags:
                raise TeacherError(f"unknown pretrained tag {pretrained!r} for {model_name}; allowed: {', '.join(tags) or 'none'}")
            source = pretrained
        else:
            raise TeacherError("a CLIP teacher needs --teacher-pretrained TAG or --teacher-weights FILE "
                               "(a random CLIP is no teacher)")
        model = _load_clip(model_name, pretrained, weights)
        text, scale = None, None
        if class_names is not None:  # encoded once; the text tower is not kept
            text, scale = clip_text_embeddings(model, model_name, class_names)
        super().__init__(model.visual, preprocessing, bf16)
        self.register_buffer("class_text", text)
        self.logit_scale = scale
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        # The mean/std and interpolation this model was trained with (OpenAI's unless a tag says otherwise).
        config = getattr(model.visual, "preprocess_cfg", {}) or {}
        self.image_mean = tuple(config.get("mean", OPENAI_CLIP_MEAN))
        self.image_std = tuple(config.get("std", OPENAI_CLIP_STD))
        self.interpolation = config.get("interpolation", "bicubic")
        self.feature_dim = int(model.visual.output_dim)
        self.description = f"clip:{model_name} ({source})"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if self.preprocessing == "kd-dlgan":
            return nearest_upsample(images, self.image_size)
        mode = "bilinear" if self.interpolation == "bilinear" else "bicubic"
        resized = F.interpolate((images + 1) / 2, size=(self.image_size, self.image_size), mode=mode,
                                align_corners=False, antialias=True)
        return normalise(resized, self.image_mean, self.image_std)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs)

    def class_embeddings(self) -> ClassEmbeddings:
        """Zero-shot CLIP: the text embeddings of one prompt per class, scored as ``logit_scale · cos``."""
        if self.class_text is None:
            raise TeacherError("this CLIP teacher was built without class names (build_teacher(..., class_names=...))")
        return ClassEmbeddings(self.class_text, cosine=True, scale=self.logit_scale)


def clip_text_embeddings(model: nn.Module, model_name: str, class_names: Sequence[str]) -> tuple[torch.Tensor, float]:
    """``encode_text`` of the prompts ``"a {class}"`` (KD-DLGAN's, ``shared/reference/gan.md`` §6; underscores in
    names become spaces), unnormalised as KD-DLGAN uses them, and the model's ``exp(logit_scale)``."""
    import open_clip

    if not class_names:
        raise TeacherError("class embeddings need at least one class name")
    tokens = open_clip.get_tokenizer(model_name)([f"a {name.replace('_', ' ')}" for name in class_names])
    with torch.no_grad():
        text = model.encode_text(tokens).float()
        scale = float(model.logit_scale.exp())
    return text, scale


class ClassifierTeacher(FrozenTeacher):
    """A ``classifier_kd`` checkpoint; features are its ``forward_features`` (pooled penultimate embedding)."""

    def __init__(self, path: str | os.PathLike, arch: str | None = None, preprocessing: str = "kd-dlgan", bf16: bool = False,
                 role: str = "teacher"):
        from classifier_kd.models.checkpoint import load_classifier, read_input_spec

        path = Path(path)
        if not path.is_file():
            raise TeacherError(f"{role} checkpoint not found: {path}")
        try:
            network = load_classifier(path, arch=arch)
            spec = read_input_spec(path)
        except (ValueError, KeyError, RuntimeError) as error:
            raise TeacherError(f"could not load {role} checkpoint {path}: {error}") from error
        super().__init__(network, preprocessing, bf16, role)
        self.input_spec = spec
        self.feature_dim = int(network.feature_dim)
        self.description = f"ckpt:{path} ({getattr(network, 'arch', type(network).__name__)})"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        size = self.input_spec["size"]
        if self.preprocessing == "kd-dlgan":
            return nearest_upsample(images, size)
        resized = F.interpolate((images + 1) / 2, size=(size, size), mode="bilinear", align_corners=False) \
            if images.shape[-1] != size else (images + 1) / 2
        return normalise(resized, self.input_spec["mean"], self.input_spec["std"])

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network.forward_features(inputs)

    def class_embeddings(self) -> ClassEmbeddings:
        """The classifier's final linear layer (this project's stand-in for CLIP's text embeddings offline)."""
        try:
            return self.network.class_embeddings()
        except (AttributeError, ValueError) as error:
            raise TeacherError(f"{self.role} {self.description} has no class embeddings: {error}") from error


def _load_clip(model_name: str, pretrained: str | None, weights: Path | None) -> nn.Module:
    """An open_clip model whose weights went through ``kd_core``'s safe loader, never through open_clip's.

    ``pretrained`` (a tag): open_clip downloads the file into its cache (or finds it there) and builds the
    model for the tag (QuickGELU, preprocessing) without loading it; ``weights``: the architecture's default
    config. The file is then read by :func:`~kd_core.runtime.checkpoint.load_weights_file` and massaged into
    open_clip's layout as ``open_clip.factory.load_checkpoint`` does (third-party layouts, old text-tower
    names, scalar logit scale, resized position embeddings) before a strict ``load_state_dict``.
    """
    import open_clip
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

    from kd_core.runtime.checkpoint import CheckpointError, load_weights_file

    source = str(weights) if weights is not None else pretrained
    try:
        if pretrained is not None:
            path = open_clip.download_pretrained(open_clip.get_pretrained_cfg(model_name, pretrained))
            model = open_clip.create_model(model_name, pretrained=pretrained, load_weights=False, device="cpu")
        else:
            path = weights
            model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    except Exception as error:  # open_clip raises RuntimeError / OSError / HF errors on failed downloads
        raise TeacherError(f"could not get CLIP {model_name} weights ({source}): {_first_line(error)}") from error
    try:
        state = dict(load_weights_file(path, f"CLIP {model_name} weights"))
    except CheckpointError as error:
        raise TeacherError(str(error)) from error
    if state and next(iter(state)).startswith("module."):
        state = {key[len("module."):]: value for key, value in state.items()}
    try:
        state = convert_state_dict(model, state)
        if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
            state = convert_to_custom_text_state_dict(state)
        for key in ("logit_scale", "logit_bias"):
            current = getattr(model, key, None)
            if key in state and current is not None and current.ndim != state[key].ndim:
                state[key] = state[key].reshape(current.shape)
        if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None and "logit_scale" in state:
            state["logit_bias"] = torch.zeros_like(state["logit_scale"])
        resize_pos_embed(state, model)
        resize_text_pos_embed(state, model)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError, AssertionError) as error:  # open_clip's resizers assert shapes
        raise TeacherError(f"CLIP weights {source} do not fit {model_name}: {_first_line(error)}") from error
    return model


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] if text else type(error).__name__


def parse_teacher_spec(spec: str, role: str = "teacher") -> tuple[str, str]:
    """``clip:ViT-B-32`` -> ("clip", "ViT-B-32"); ``ckpt:PATH`` -> ("ckpt", "PATH"); errors name the role and forms."""
    kind, sep, value = spec.partition(":")
    if not sep or kind not in ("clip", "ckpt") or not value:
        raise TeacherError(f"bad {role} {spec!r}; expected clip:<open_clip model> (e.g. clip:ViT-B-32) or ckpt:<path>")
    return kind, value


def build_teacher(spec: str, *, pretrained: str | None = None, weights: str | None = None, arch: str | None = None,
                  preprocessing: str = "kd-dlgan", bf16: bool = False,
                  class_names: Sequence[str] | None = None, role: str = "teacher") -> FrozenTeacher:
    """A frozen teacher from a ``--teacher`` spec and its options. ``class_names``: encode these classes with a
    CLIP teacher's text tower, for :meth:`FrozenTeacher.class_embeddings` (a classifier uses its own head).
    ``role``: what the network is for, named in every error (``"FD network"`` for the evaluator's classifier)."""
    kind, value = parse_teacher_spec(spec, role)
    if kind == "clip":
        if arch is not None:
            raise TeacherError("--teacher-arch applies to ckpt: teachers only")
        return ClipTeacher(value, pretrained=pretrained, weights=weights, preprocessing=preprocessing, bf16=bf16,
                           class_names=class_names)
    if pretrained is not None or weights is not None:
        raise TeacherError("--teacher-pretrained/--teacher-weights apply to clip: teachers; a ckpt: teacher is the file itself")
    return ClassifierTeacher(value, arch=arch, preprocessing=preprocessing, bf16=bf16, role=role)
