"""torchvision's ImageNet ResNets, built from ``num_classes`` first, never downloading.

:class:`TorchvisionResNet` *is* a ``torchvision.models.ResNet`` (same modules, same
state-dict keys), so weights saved by torchvision load into it unchanged. Weights come only
from a local file: ``weights_path`` (a state dict, e.g. torchvision's
``resnet50-0676ba61.pth``, or a Lightning checkpoint whose ``state_dict`` keys start with
``network.``). Asking for named pretrained ``weights`` without a file is an error that says
how to pass one, because nothing may be fetched at run time.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.models import resnet as tv_resnet

__all__ = ["TorchvisionResNet"]

_LAYOUTS = {
    18: (tv_resnet.BasicBlock, [2, 2, 2, 2]),
    34: (tv_resnet.BasicBlock, [3, 4, 6, 3]),
    50: (tv_resnet.Bottleneck, [3, 4, 6, 3]),
    101: (tv_resnet.Bottleneck, [3, 4, 23, 3]),
    152: (tv_resnet.Bottleneck, [3, 8, 36, 3]),
}


class TorchvisionResNet(tv_resnet.ResNet):
    """torchvision ResNet-18/34/50/101/152 (7x7 stride-2 stem, max-pool, global pool).

    Args:
        num_classes: output logits (given by the datamodule through the CLI).
        depth: 18, 34, 50, 101 or 152.
        weights: ``None`` (random init, the default) or the name of torchvision pretrained
            weights (e.g. ``"IMAGENET1K_V2"``): only allowed together with ``weights_path``,
            and then only a label for the file.
        weights_path: local file with a state dict to load. The classifier (``fc``) is
            skipped when its shape does not match ``num_classes``; every other tensor must
            match.
        zero_init_residual: zero the last BN of each residual branch (torchvision option).

    Raises:
        ValueError: unknown depth, pretrained ``weights`` without ``weights_path``, or a
            weights file that does not fit the network.
        FileNotFoundError: ``weights_path`` does not exist.

    Example:
        >>> net = TorchvisionResNet(10, depth=18)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    def __init__(
        self,
        num_classes: int,
        depth: int = 50,
        weights: str | None = None,
        weights_path: str | None = None,
        zero_init_residual: bool = False,
    ) -> None:
        if depth not in _LAYOUTS:
            raise ValueError(f"`depth` must be one of {sorted(_LAYOUTS)}; got {depth}.")
        if num_classes < 1:
            raise ValueError(f"`num_classes` must be positive; got {num_classes}.")
        if weights is not None and weights_path is None:
            raise ValueError(
                f"pretrained weights {weights!r} were asked for but nothing is downloaded: "
                "fetch the file on a machine with internet (e.g. torchvision's "
                f"ResNet{depth}_Weights.{weights}.url) and pass its local path as "
                "`weights_path` (YAML: model.network.init_args.weights_path)."
            )
        block, layers = _LAYOUTS[depth]
        super().__init__(
            block, layers, num_classes=num_classes, zero_init_residual=zero_init_residual
        )
        self.num_classes = num_classes
        self.depth = depth
        if weights_path is not None:
            self.load_weights(weights_path)

    def load_weights(self, path: str | Path) -> None:
        """Load a local state dict (``fc`` skipped when its shape differs).

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is unreadable or its tensors do not fit this network.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"cannot read weights file {path}: {err}") from err
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"weights file {path} does not hold a state dict.")
        if any(k.startswith("network.") for k in state):
            state = {k[8:]: v for k, v in state.items() if k.startswith("network.")}
        own = self.state_dict()
        for key in ("fc.weight", "fc.bias"):
            if key in state and state[key].shape != own[key].shape:
                del state[key]
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(
                f"weights file {path} does not fit a ResNet-{self.depth}: missing "
                f"{missing[:5]}, unexpected {unexpected[:5]}."
            )
