"""Model specs: a TOML file (etc/models/KIND.toml) or a bare kind name (built-in defaults).

::

    kind = "mlp"
    description = "..."          # optional
    [model]                      # the kind's hyper-parameters (its config dataclass)
    hidden = [256, 256, 128]
    [train]                      # TrainConfig below
    epochs = 20
    [data]                       # DataConfig below
    label = "label"

Unknown keys are errors (a typo must not silently fall back to a default).
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from malsensor.daemon.runtime.tomlpos import key_lines

from .errors import TrainError
from .zoo.base import build_config, get_kind


@dataclass
class TrainConfig:
    """How a model is fitted (``[train]``). Fitted kinds (forest) use seed only."""

    batch_size: int = 256
    epochs: int = 40
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    class_weight: str = "sqrt"         # balanced | sqrt | none (loss weights from the training split)
    patience: int = 10                 # epochs without a better validation macro-F1 before stopping; 0 = never
    seed: int = 0
    eval_batch_size: int = 4096
    canary_rows: int = 32


@dataclass
class DataConfig:
    """Dataset defaults (``[data]``); command-line options override them."""

    label: str = ""                    # label column/key; "" = default ("label", then "s_mac")
    split: str = "auto"                # auto | random | group | time
    dedup: bool = False
    skip_bad: bool = False
    split_ratios: str = ""             # "" = 60,20,20; else "TRAIN,VAL,TEST" percentages (e.g. "80,20,0")
    refit: bool = False                # after selection, refit the chosen configuration on train + validation


@dataclass
class Spec:
    kind: str
    model: Any
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    source: str = ""
    description: str = ""

    def as_dict(self) -> dict:
        return {"kind": self.kind, "model": _plain(asdict(self.model)), "train": asdict(self.train),
                "data": asdict(self.data)}

    def with_train(self, **over: Any) -> "Spec":
        over = {k: v for k, v in over.items() if v is not None}
        return replace(self, train=replace(self.train, **over)) if over else self


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def load_spec(arg: str | Path) -> Spec:
    """A spec from a TOML path, or the defaults of a kind name."""
    p = Path(arg)
    if p.suffix == ".toml" or p.exists():
        try:
            text = p.read_text(encoding="utf-8")
            doc = tomllib.loads(text)
        except FileNotFoundError:
            raise TrainError(f"{p}: no such model spec") from None
        except OSError as e:
            raise TrainError(f"{p}: cannot read: {e.strerror or e}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise TrainError(f"{p}: invalid TOML: {e}") from None
        return spec_from_dict(doc, str(p), key_lines(text))
    kind = get_kind(str(arg))
    return Spec(kind.name, kind.config_cls(), source=f"builtin:{kind.name}")


def spec_from_dict(doc: dict, where: str, lines: dict | None = None) -> Spec:
    """A spec from a parsed TOML document; problems name ``where`` (and the line, with ``lines``)."""
    allowed = {"kind", "description", "model", "train", "data"}
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise TrainError(f"{where}: unknown top-level key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    if not isinstance(doc.get("kind"), str):
        raise TrainError(f"{where}: 'kind' (a string such as \"forest\") is required")
    kind = get_kind(doc["kind"])
    for sect in ("model", "train", "data"):
        if sect in doc and not isinstance(doc[sect], dict):
            raise TrainError(f"{where}: [{sect}] must be a table")
    model = build_config(kind.config_cls, doc.get("model", {}), where, ("model",), lines)
    train = build_config(TrainConfig, doc.get("train", {}), where, ("train",), lines)
    data = build_config(DataConfig, doc.get("data", {}), where, ("data",), lines)
    return Spec(kind.name, model, train, data, where, str(doc.get("description", "")))
