"""A 3D CNN over ``proc_volume@1`` volumes (steps x processes x metrics), LeNet-5-like, after
the online malware detector this modality descends from:

    conv 32 filters, kernel (D, 3, 3)  - spans every step: the depth axis collapses to 1
    max-pool 2 x 2 over the process and metric axes
    conv 64 filters, kernel (3, 3)
    max-pool 2 x 2
    dense 1024 -> dense 512 -> classes

with ReLU after each conv and dense layer, dropout after the dense layers (training only:
``deterministic=not train``) and an optional layer or batch norm after each stage (batch norm:
flax's ``batch_stats`` collection, updated by the shared loop in training, running statistics
at evaluation and in the artifact). ``view = "host_volume@1"`` reads a local host's
connections (D windows x H connections x 19) instead of /proc volumes. Adam comes from the
shared gradient loop (weight_decay = 0 in etc/models/cnn3d.toml); the inputs are normalised
along the view's feature axis (the 45 metrics) inside the artifact. Convolutions pad the
process and metric axes ("same") so a 3-row neighbourhood exists at every row.
"""
from __future__ import annotations

from dataclasses import dataclass

from malsensor.daemon.artifact import ViewInfo
from malsensor.daemon.proc.volume import D_DEFAULT, H_DEFAULT
from malsensor.daemon.views.host_volume import HOST_VOLUME, LOCAL_NETS_DEFAULT, WINDOW_S_DEFAULT, HostVolumeOptions
from malsensor.daemon.views.proc_volume import PROC_VOLUME, ProcVolumeOptions

from ..errors import TrainError
from .base import GradientKind, opt, register
from .layers import dense_head

NORMS = ("none", "layer", "batch")
VIEWS = ("proc_volume@1", "host_volume@1")


@dataclass
class CNN3DConfig:
    """Hyper-parameters (``[model]`` in etc/models/cnn3d.toml)."""

    view: str = opt("proc_volume@1", "what a volume is: processes from /proc (proc_volume@1) or a local host's "
                                     "connections from captures (host_volume@1)", choices=VIEWS)
    steps: int = opt(D_DEFAULT, "samples (proc_volume) or time windows (host_volume) per volume (D): the view's "
                                "first axis and the first kernel's depth", min=1)
    processes: int = opt(H_DEFAULT, "rows per volume (H): processes, or connections per window for host_volume",
                         min=1)
    window_s: float = opt(WINDOW_S_DEFAULT, "host_volume@1: seconds of packet time per window", min=0.001,
                          max=86400.0)
    late_s: float = opt(30.0, "host_volume@1: how long a window stays open after its end", min=0.0, max=86400.0)
    window_stride: int = opt(0, "host_volume@1: windows between two volumes of a host (0 = steps)", min=0)
    host_by: str = opt("address", "host_volume@1: a host is its address or its MAC", choices=("address", "mac"))
    local_nets: tuple[str, ...] = opt(LOCAL_NETS_DEFAULT, "host_volume@1: networks whose addresses are local "
                                                          "hosts ([] = both ends)")
    filters: tuple[int, ...] = (32, 64)
    dense: tuple[int, ...] = (1024, 512)
    dropout: float = opt(0.5, "dropout rate after each dense layer (training only)", min=0.0, max=1.0,
                         max_exclusive=True)
    norm: str = opt("none", "normalisation after each conv and dense layer: none | layer | batch (running "
                            "mean and variance, updated in training, used at evaluation and in the artifact)",
                    choices=NORMS)
    bn_momentum: float = opt(0.9, "norm = \"batch\": weight of the old running statistics at each step",
                             min=0.0, max=1.0, max_exclusive=True)


def _module(cfg: CNN3DConfig, n_classes: int):
    import flax.linen as nn

    def _norm(x, name: str, train: bool):
        if cfg.norm == "layer":
            return nn.LayerNorm(name=name)(x)
        if cfg.norm == "batch":  # statistics over every axis but the channels; running ones at evaluation
            return nn.BatchNorm(use_running_average=not train, momentum=cfg.bn_momentum, name=name)(x)
        return x

    class CNN3D(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = x[..., None]                                  # (B, D, H, W, 1)
            for i, f in enumerate(cfg.filters):
                depth = cfg.steps if i == 0 else 1            # the first kernel spans all steps
                x = nn.Conv(f, (depth, 3, 3), padding=((0, 0), (1, 1), (1, 1)), name=f"conv_{i}")(x)
                x = _norm(x, f"conv_norm_{i}", train)
                x = nn.relu(x)
                x = nn.max_pool(x, (1, 2, 2), strides=(1, 2, 2))
            x = x.reshape((x.shape[0], -1))
            return dense_head(x, cfg.dense, n_classes, activation=nn.relu, dropout=cfg.dropout, train=train,
                              norm=lambda x, i: _norm(x, f"dense_norm_{i}", train))

    return CNN3D()


@register
class CNN3D(GradientKind):
    name = "cnn3d"
    config_cls = CNN3DConfig

    def view(self, cfg: CNN3DConfig) -> ViewInfo:
        if cfg.view == "host_volume@1":
            return HOST_VOLUME.info(HostVolumeOptions(
                windows=cfg.steps, connections=cfg.processes, window_s=cfg.window_s, late_s=cfg.late_s,
                window_stride=cfg.window_stride, host_by=cfg.host_by, local_nets=tuple(cfg.local_nets)))
        return PROC_VOLUME.info(ProcVolumeOptions(steps=cfg.steps, processes=cfg.processes))

    def check(self, cfg: CNN3DConfig) -> None:
        if not cfg.filters or any(f < 1 for f in cfg.filters):
            raise TrainError("cnn3d: filters must be a non-empty list of positive filter counts")
        if any(h < 1 for h in cfg.dense):
            raise TrainError("cnn3d: dense must list positive layer widths")
        if cfg.processes >> len(cfg.filters) < 1:
            raise TrainError(f"cnn3d: {cfg.processes} process rows cannot be pooled {len(cfg.filters)} times by 2")

    def module(self, cfg: CNN3DConfig, n_classes: int):
        return _module(cfg, n_classes)
