"""Semantic-segmentation networks from segmentation-models-pytorch, never downloading.

Each class *is* the segmentation-models-pytorch (smp) model of the same name (same modules,
same state-dict keys: ``encoder.*``, ``decoder.*``, ``segmentation_head.*``, less the unused
encoder stages, see below), built from ``num_classes`` first so that the CLI can build it
from the datamodule:

.. code-block:: yaml

    model:
      network:
        class_path: models.DeepLabV3
        init_args: {encoder_name: resnet50, encoder_weights: /data/weights/resnet50.pth}

* :class:`DeepLabV3` (smp default output stride 8) and :class:`DeepLabV3Plus` (16), any smp
  encoder (``resnet50``, ``tu-<timm name>``, ...); any other smp argument (e.g.
  ``decoder_channels``, ``decoder_atrous_rates``) is passed through.
* :class:`SmallSegNet`: the embedded CPU default (digits pasted on 64x64 canvases): a
  DeepLabV3+ on timm's MobileNetV3-Small, encoder depth 4, 64 decoder channels, atrous rates
  (1, 2, 3) (the stride-16 map of a 64x64 input is 4x4; VOC's 12, 24, 36 would see only
  padding there). 0.24M parameters; a forward + backward + SGD step of 16 x 3 x 64 x 64
  takes ~50 ms on two CPU cores (~57 ms of CPU time on one).

Every network returns logits ``(N, num_classes, H, W)`` at the input's ``H x W``, whatever its
size: smp refuses inputs whose sides are not multiples of the encoder's output stride, so
:meth:`forward` zero-pads the bottom and right to the next multiple (:attr:`size_divisor`;
zero is the mean colour of normalized images, as the original DeepLab pads its evaluation
images) and crops the logits back, so every logit stays aligned with its pixel (no resampling).

Pretrained weights come only from a local file (``encoder_weights``): a state dict of the
encoder (``.pth``, ``.pt`` or ``.safetensors``; a torchvision ResNet file or smp's
``model.safetensors`` of ``smp-hub/<encoder>.imagenet`` fit the smp ResNet encoders). Naming
weights (``"imagenet"``) is an error that says how to pass a file, because nothing may be
fetched at run time.

Encoder modules that no returned feature depends on (the stages a shallow
``encoder_depth`` leaves out, which smp keeps) are replaced by ``nn.Identity``, checked on a
probe image at construction: every parameter takes part in the loss, so DDP needs no
``find_unused_parameters``.

**SyncBatchNorm.** Nothing to do in the model for smp's own encoders (``resnet50``...: plain
``nn.BatchNorm2d``): Lightning's ``trainer.sync_batchnorm: true`` converts them. timm encoders
(``tu-*``, so :class:`SmallSegNet`) use timm's ``BatchNormAct2d`` (batch norm and activation in
one module), which torch's ``convert_sync_batchnorm`` (what ``sync_batchnorm: true`` runs)
turns into a plain ``SyncBatchNorm``, silently dropping the activation. Use the plugin
:class:`TimmSyncBatchNorm` instead (YAML: ``trainer.plugins: [{class_path:
models.TimmSyncBatchNorm}]``); a network whose norm + activation layers were converted the
plain way refuses to run (:meth:`forward` raises) rather than compute another function.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm
from torch import Tensor, nn

__all__ = [
    "DeepLabV3",
    "DeepLabV3Plus",
    "SmallSegNet",
    "TimmSyncBatchNorm",
    "load_encoder_weights",
]

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
# smp arguments these classes set themselves (logits only, never a download); the CLI passes
# smp's defaults (None) for the last two, so only a value is refused.
_REFUSED = {
    "classes": "use `num_classes`",
    "encoder_output_stride": "use `output_stride`",
    "activation": "the module expects logits",
    "aux_params": "the module expects one logits tensor",
}
_NONE_ALLOWED = ("activation", "aux_params")


class _Dense:
    """What the smp subclasses share: refusals, weights, pruning, any-size forward.

    Each subclass writes its own ``super().__init__(..., **smp_kwargs)`` call on purpose:
    jsonargparse finds the smp arguments a config may pass through ``**smp_kwargs`` by reading
    that call in the subclass's ``__init__`` (moved into a shared helper, the CLI refuses
    ``decoder_channels`` and the rest).
    """

    num_classes: int
    size_divisor: int
    encoder: nn.Module
    requires_divisible_input_shape: bool

    @staticmethod
    def _check_kwargs(kwargs: dict[str, Any]) -> None:
        for key, why in _REFUSED.items():
            if key in kwargs and not (key in _NONE_ALLOWED and kwargs[key] is None):
                raise ValueError(f"`{key}` cannot be set here: {why}.")

    def _finish(
        self, num_classes: int, encoder_name: str, in_channels: int, weights: str | None
    ) -> None:
        self.num_classes = num_classes
        self.encoder_name = encoder_name
        stride = int(getattr(self.encoder, "output_stride", 1))
        divisible = getattr(self, "requires_divisible_input_shape", True)
        self.size_divisor = stride if divisible else 1
        self._pruned = _prune_unused(self.encoder, in_channels, max(32, 2 * stride))
        # one of timm's fused norm + activation layers, checked by forward (see SyncBatchNorm)
        self._norm_act_path = next(
            (n for n, m in self.named_modules() if type(m).__name__ == "BatchNormAct2d"), None
        )
        if weights is not None:
            load_encoder_weights(self, weights)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes, H, W)`` at the input's size (padded and cropped back)."""
        if self._norm_act_path is not None:
            _check_norm_act(self.get_submodule(self._norm_act_path))  # type: ignore[attr-defined]
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.size_divisor, -w % self.size_divisor
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        logits = super().forward(x)  # type: ignore[misc]
        if pad_h or pad_w:
            logits = logits[..., :h, :w]
        if logits.shape[-2:] != (h, w):  # a decoder that does not return the input size
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits


class DeepLabV3(_Dense, smp.DeepLabV3):
    """smp's DeepLabV3 (ASPP on a dilated encoder, upsampled to the input), offline.

    Args:
        num_classes: output channels (given by the datamodule through the CLI).
        encoder_name: any smp encoder (``resnet50``, ``resnet101``, ``tu-<timm name>``...).
        encoder_weights: ``None`` (random initialisation) or the local path of a state dict of
            the encoder (``.pth``, ``.pt``, ``.safetensors``); see :func:`load_encoder_weights`.
        in_channels: input image channels.
        encoder_depth: encoder stages used (3 to 5).
        output_stride: 8 (the DeepLabV3 default) or 16.
        smp_kwargs: any other argument of ``smp.DeepLabV3`` (``decoder_channels``,
            ``decoder_atrous_rates``, ``decoder_aspp_dropout``, ...).

    Raises:
        ValueError: named weights (``"imagenet"``), an unreadable or unfitting weights file,
            or an argument set here (``classes``, ``activation``, ``aux_params``...).
        FileNotFoundError: the weights file does not exist.
    """

    def __init__(
        self,
        num_classes: int,
        encoder_name: str = "resnet50",
        encoder_weights: str | None = None,
        in_channels: int = 3,
        encoder_depth: int = 5,
        output_stride: int = 8,
        **smp_kwargs: Any,
    ) -> None:
        _check_weights_arg(encoder_weights, encoder_name)
        self._check_kwargs(smp_kwargs)
        super().__init__(
            encoder_name=encoder_name,
            encoder_depth=encoder_depth,
            encoder_weights=None,
            encoder_output_stride=output_stride,
            in_channels=in_channels,
            classes=num_classes,
            **smp_kwargs,
        )
        self._finish(num_classes, encoder_name, in_channels, encoder_weights)


class DeepLabV3Plus(_Dense, smp.DeepLabV3Plus):
    """smp's DeepLabV3+ (ASPP plus a stride-4 low-level skip), offline.

    Args:
        num_classes: output channels (given by the datamodule through the CLI).
        encoder_name: any smp encoder (``resnet50``, ``tu-<timm name>``...).
        encoder_weights: ``None`` or the local path of a state dict of the encoder; see
            :func:`load_encoder_weights`.
        in_channels: input image channels.
        encoder_depth: encoder stages used (3 to 5).
        output_stride: 16 (the DeepLabV3+ default) or 8.
        smp_kwargs: any other argument of ``smp.DeepLabV3Plus`` (``decoder_channels``, ...).

    Raises:
        ValueError: as :class:`DeepLabV3`.
        FileNotFoundError: the weights file does not exist.
    """

    def __init__(
        self,
        num_classes: int,
        encoder_name: str = "resnet50",
        encoder_weights: str | None = None,
        in_channels: int = 3,
        encoder_depth: int = 5,
        output_stride: int = 16,
        **smp_kwargs: Any,
    ) -> None:
        _check_weights_arg(encoder_weights, encoder_name)
        self._check_kwargs(smp_kwargs)
        super().__init__(
            encoder_name=encoder_name,
            encoder_depth=encoder_depth,
            encoder_weights=None,
            encoder_output_stride=output_stride,
            in_channels=in_channels,
            classes=num_classes,
            **smp_kwargs,
        )
        self._finish(num_classes, encoder_name, in_channels, encoder_weights)


class SmallSegNet(DeepLabV3Plus):
    """The embedded CPU default: DeepLabV3+ on MobileNetV3-Small (0.24M parameters).

    A :class:`DeepLabV3Plus` with other defaults, chosen for 64x64 inputs on a CPU: timm's
    ``mobilenetv3_small_100`` encoder, depth 4 (output stride 16), 64 decoder channels and
    atrous rates (1, 2, 3). YAML: ``class_path: models.SmallSegNet`` (no ``init_args``).

    Args:
        num_classes: output channels.
        encoder_name: the encoder (default ``tu-mobilenetv3_small_100``).
        encoder_weights: ``None`` or the local path of a state dict of the encoder.
        in_channels: input image channels.
        encoder_depth: encoder stages used.
        output_stride: 16 or 8.
        decoder_channels: channels of the ASPP and of the decoder.
        decoder_atrous_rates: dilations of the three atrous ASPP branches.
        smp_kwargs: any other argument of ``smp.DeepLabV3Plus``.

    Example:
        >>> net = SmallSegNet(11)
        >>> net(torch.zeros(2, 3, 37, 53)).shape
        torch.Size([2, 11, 37, 53])
    """

    def __init__(
        self,
        num_classes: int,
        encoder_name: str = "tu-mobilenetv3_small_100",
        encoder_weights: str | None = None,
        in_channels: int = 3,
        encoder_depth: int = 4,
        output_stride: int = 16,
        decoder_channels: int = 64,
        decoder_atrous_rates: Sequence[int] = (1, 2, 3),
        **smp_kwargs: Any,
    ) -> None:
        super().__init__(
            num_classes,
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            encoder_depth=encoder_depth,
            output_stride=output_stride,
            decoder_channels=decoder_channels,
            decoder_atrous_rates=tuple(decoder_atrous_rates),
            **smp_kwargs,
        )


# ------------------------------------------------------------------------- SyncBatchNorm
class TimmSyncBatchNorm(TorchSyncBatchNorm):
    """Lightning's SyncBatchNorm plugin, keeping the activation of timm's norm + act layers.

    ``apply`` converts with ``timm.layers.convert_sync_batchnorm`` (``BatchNormAct2d`` ->
    ``SyncBatchNormAct``, plain batch norms -> ``SyncBatchNorm``); ``revert`` (Lightning runs it
    after ``fit``) turns ``SyncBatchNormAct`` back into ``BatchNormAct2d`` and the rest as
    Lightning does. YAML: ``trainer.plugins: [{class_path: models.TimmSyncBatchNorm}]``.
    """

    def apply(self, model: nn.Module) -> nn.Module:  # noqa: D102
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:  # noqa: D102
        from timm.layers.norm_act import BatchNormAct2d, SyncBatchNormAct

        if not isinstance(model, SyncBatchNormAct):
            return super().revert(model)  # recurses through self.revert
        out = BatchNormAct2d(
            model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats
        )
        if model.affine:
            out.weight, out.bias = model.weight, model.bias
        out.running_mean, out.running_var = model.running_mean, model.running_var
        out.num_batches_tracked = model.num_batches_tracked
        out.act, out.drop = model.act, model.drop
        out.train(model.training)
        return out


def _check_norm_act(module: nn.Module) -> None:
    if type(module).__name__ not in ("BatchNormAct2d", "SyncBatchNormAct"):
        raise RuntimeError(
            "the timm encoder's BatchNormAct2d layers (batch norm + activation) were replaced "
            f"by plain {type(module).__name__}, which drops the activation: torch's "
            "convert_sync_batchnorm (Lightning's `trainer.sync_batchnorm: true`) does that. Use "
            "the plugin models.TimmSyncBatchNorm instead (YAML: trainer.plugins: "
            "[{class_path: models.TimmSyncBatchNorm}])."
        )


# ------------------------------------------------------------------------------- weights
def _check_weights_arg(value: str | None, encoder_name: str) -> None:
    """Refuse anything but ``None`` or the path of a local state-dict file."""
    if value is None:
        return
    if not isinstance(value, str | Path) or Path(value).suffix.lower() not in WEIGHT_SUFFIXES:
        raise ValueError(
            f"encoder_weights={value!r}: nothing is downloaded here. Pass the local path of a "
            f"state dict of the {encoder_name} encoder ({', '.join(WEIGHT_SUFFIXES)}; YAML: "
            "model.network.init_args.encoder_weights), or None for random initialisation."
            + _where_to_get(value, encoder_name)
        )
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file not found: {path}")


def _where_to_get(value: object, encoder_name: str) -> str:
    """A hint naming the file smp would have downloaded, when smp knows one."""
    settings = smp.encoders.encoders.get(encoder_name, {}).get("pretrained_settings", {})
    repo = settings.get(value, {}).get("repo_id") if isinstance(value, str) else None
    if repo:
        return (
            f" smp's {value!r} weights of {encoder_name} are the file model.safetensors of "
            f"the Hugging Face repository {repo}: fetch it on a machine with internet and "
            "pass its path."
        )
    if encoder_name.startswith("tu-"):
        return (
            f" For a timm encoder, save `timm.create_model({encoder_name[3:]!r}, "
            "pretrained=True, features_only=True).state_dict()` on a machine with internet "
            "(the keys of this encoder are those, prefixed with 'model.')."
        )
    return ""


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read encoder weights file {path}: {err}") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a Lightning checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"encoder weights file {path} does not hold a state dict of tensors.")
    return state


def load_encoder_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict into ``model.encoder``, refusing any mismatch.

    The file holds the encoder's own keys (``model.encoder.state_dict()``), or a whole model /
    Lightning checkpoint whose encoder keys start with ``encoder.`` or ``network.encoder.``
    (the rest is ignored). A classifier ``fc.*`` (torchvision ResNet files) and the stages a
    shallow ``encoder_depth`` does not use are skipped; every other encoder tensor must be
    present with the same shape.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, or tensors that do not fit the encoder (naming the file).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file not found: {path}")
    state = _read_state_dict(path)
    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    own = encoder.state_dict()
    if not own.keys() & state.keys():
        for prefix in ("network.encoder.", "encoder."):
            if any(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                break
    pruned = tuple(f"{name}." for name in getattr(model, "_pruned", ()))
    skipped = ("fc.",) if not any(k.startswith("fc.") for k in own) else ()
    state = {k: v for k, v in state.items() if not k.startswith(pruned + skipped)}
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    wrong = [
        f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} here"
        for k in sorted(own.keys() & state.keys())
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        name = getattr(model, "encoder_name", type(encoder).__name__)
        raise ValueError(
            f"encoder weights file {path} does not fit the {name} encoder: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}), {len(wrong)} of another shape (e.g. {wrong[:3]})."
        )
    nn.Module.load_state_dict(encoder, state, strict=True)


def _prune_unused(encoder: nn.Module, in_channels: int, size: int) -> tuple[str, ...]:
    """Replace the encoder modules that no feature depends on by ``nn.Identity``.

    smp's own encoders keep every stage whatever ``encoder_depth`` (and timm's MobileNet /
    EfficientNet feature models run their last blocks without returning them): parameters
    that never get a gradient, which DDP refuses without ``find_unused_parameters``. One
    probe (eval mode, so the BatchNorm statistics do not move: one ``size x size`` image,
    then a walk of its autograd graph, no backward) finds them; the largest modules
    made only of them are replaced, and a second probe checks that every feature is
    unchanged (otherwise they are restored and frozen instead). Returns the replaced names.
    """
    params = dict(encoder.named_parameters())
    was_training = encoder.training
    encoder.eval()
    try:
        x = torch.randn(1, in_channels, size, size, generator=torch.Generator().manual_seed(0))
        try:
            features = [f for f in encoder(x) if isinstance(f, Tensor)]
            reached = _graph_leaves([f.grad_fn for f in features])
        except Exception:  # an encoder the probe does not fit: leave it whole
            return ()
        unused = {name for name, p in params.items() if id(p) not in reached}
        if not unused:
            return ()
        names: list[str] = []
        for name, module in encoder.named_modules():
            if not name or any(name.startswith(f"{n}.") for n in names):
                continue
            own = [f"{name}.{k}" for k, _ in module.named_parameters()]
            if own and all(k in unused for k in own):
                names.append(name)
        originals = []
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = encoder.get_submodule(parent_name)
            originals.append((parent, child, getattr(parent, child)))
            setattr(parent, child, nn.Identity())
        try:
            with torch.no_grad():
                after = [f for f in encoder(x) if isinstance(f, Tensor)]
            same = len(after) == len(features) and all(
                torch.equal(a, b.detach()) for a, b in zip(after, features)
            )
        except Exception:
            same = False
        if same and not any(n in unused for n, _ in encoder.named_parameters()):
            return tuple(names)
        for parent, child, module in originals:  # not separable: keep them, frozen
            setattr(parent, child, module)
        for name in unused:
            params[name].requires_grad_(False)
        return ()
    finally:
        encoder.train(was_training)


def _graph_leaves(roots: list[Any]) -> set[int]:
    """``id`` of every parameter the autograd graphs under ``roots`` accumulate into."""
    seen: set[int] = set()
    leaves: set[int] = set()
    stack = [r for r in roots if r is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)  # an AccumulateGrad node
        if variable is not None:
            leaves.add(id(variable))
        stack.extend(n for n, _ in node.next_functions if n is not None)
    return leaves
