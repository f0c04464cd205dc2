"""RunConfig: the frozen description of one training run, validated, with a stable content hash."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers

from .errors import ConfigError

DATASET_NAMES_FALLBACK = ("mnist-5k", "mnist", "fashion-mnist", "hasyv2")
INITS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal")
LOSSES = ("keras", "logits")
OPTIMIZERS = ("sgd",)
DEVICES = ("auto", "cpu", "cuda")
# Keys config.json carries besides the RunConfig fields; from_dict accepts and ignores them.
STORE_KEYS = frozenset({"run_id", "versions", "device_used"})


def dataset_names() -> tuple[str, ...]:
    """Names of the data sets a RunConfig may name."""
    try:
        from .data import DATASET_NAMES
    except ImportError:
        return DATASET_NAMES_FALLBACK
    return tuple(DATASET_NAMES)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run: data, network, optimiser, seed; `run_id` hashes everything but the device."""

    dataset: str = "mnist-5k"
    fold: int = 1
    width: int = 100
    depth: int = 2
    epochs: int = 100
    lr: float = 0.1
    batch_size: int = 128
    seed: int = 0
    init: str = "glorot_uniform"
    loss: str = "keras"
    mask: str = "none"
    optimizer: str = "sgd"
    momentum: float = 0.0
    snapshot_epochs: tuple = ()
    device: str = "auto"

    def __post_init__(self):
        problems = self._problems()
        if problems:
            raise ConfigError("invalid run configuration:\n  " + "\n  ".join(problems))
        # Normalise so that equal runs hash equally (lr=1 and lr=1.0, snapshot order).
        for name in ("fold", "width", "depth", "epochs", "batch_size", "seed"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "momentum", float(self.momentum))
        snaps = sorted({int(e) for e in self.snapshot_epochs} - {0, int(self.epochs)})
        object.__setattr__(self, "snapshot_epochs", tuple(snaps))

    def _problems(self) -> list[str]:
        p = []
        names = dataset_names()
        if self.dataset not in names:
            p.append(f"dataset={self.dataset!r}: unknown data set; choose one of {', '.join(names)}")
        if not _is_int(self.fold) or not 1 <= self.fold <= 10:
            p.append(f"fold={self.fold!r}: must be an integer from 1 to 10")
        elif self.fold != 1 and self.dataset != "hasyv2":
            p.append(f"fold={self.fold!r}: folds exist only for hasyv2; leave fold=1 for {self.dataset!r}")
        if not _is_int(self.width) or self.width < 1:
            p.append(f"width={self.width!r}: must be a positive integer (units per hidden layer)")
        if not _is_int(self.depth) or self.depth != 2:
            p.append(f"depth={self.depth!r}: only depth=2 (two hidden layers, as in the paper) is supported")
        if not _is_int(self.epochs) or self.epochs < 1:
            p.append(f"epochs={self.epochs!r}: must be a positive integer")
        if not _is_real(self.lr) or not math.isfinite(self.lr) or self.lr <= 0:
            p.append(f"lr={self.lr!r}: must be a finite number > 0")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            p.append(f"batch_size={self.batch_size!r}: must be a positive integer")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**63:
            p.append(f"seed={self.seed!r}: must be an integer from 0 to 2**63-1")
        if self.init not in INITS:
            p.append(f"init={self.init!r}: choose one of {', '.join(INITS)}")
        if self.loss not in LOSSES:
            p.append(f"loss={self.loss!r}: choose 'keras' (clipped softmax cross-entropy) or 'logits' (log-softmax)")
        one_char = isinstance(self.mask, str) and len(self.mask) == 1 and self.mask.isprintable()
        if not (self.mask == "none" or (one_char and not self.mask.isspace())):
            p.append(f"mask={self.mask!r}: use 'none' or a single visible character such as 'a'")
        if self.optimizer not in OPTIMIZERS:
            p.append(f"optimizer={self.optimizer!r}: only 'sgd' is supported")
        if not _is_real(self.momentum) or not 0 <= self.momentum < 1:
            p.append(f"momentum={self.momentum!r}: must be a number in [0, 1)")
        snaps = self.snapshot_epochs
        if not isinstance(snaps, (tuple, list)) or not all(_is_int(e) for e in snaps):
            p.append(f"snapshot_epochs={snaps!r}: must be a list of integer epochs")
        elif _is_int(self.epochs) and any(not 0 <= e <= self.epochs for e in snaps):
            p.append(f"snapshot_epochs={tuple(snaps)!r}: every epoch must lie in 0..epochs ({self.epochs})")
        if self.device not in DEVICES:
            p.append(f"device={self.device!r}: choose 'auto', 'cpu' or 'cuda'")
        return p

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (snapshot_epochs as a list)."""
        d = dataclasses.asdict(self)
        d["snapshot_epochs"] = list(self.snapshot_epochs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """Build a RunConfig from a dict such as to_dict() or config.json gives; unknown keys are errors."""
        if not isinstance(d, dict):
            raise ConfigError(f"a run configuration must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - STORE_KEYS)
        if unknown:
            raise ConfigError(f"unknown run configuration field(s) {', '.join(map(repr, unknown))}; "
                              f"known fields: {', '.join(sorted(known))}")
        kw = {k: v for k, v in d.items() if k in known}
        if isinstance(kw.get("snapshot_epochs"), list):
            kw["snapshot_epochs"] = tuple(kw["snapshot_epochs"])
        return cls(**kw)

    def replace(self, **kw) -> "RunConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **kw)

    @property
    def run_id(self) -> str:
        """Stable 16-hex content hash of every field except `device` (which does not change the result)."""
        d = self.to_dict()
        del d["device"]
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def group_key(self) -> str:
        """Hash of every field except seed and device: runs sharing it can train as one ensemble."""
        d = self.to_dict()
        del d["device"], d["seed"]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def short(self) -> str:
        """A short human label, e.g. 'mnist-5k w=100 seed=0'."""
        extra = "" if self.mask == "none" else f" mask={self.mask}"
        return f"{self.dataset} w={self.width} seed={self.seed} lr={self.lr:g} e={self.epochs}{extra}"


def parse_int_list(text: str, what: str = "values") -> list[int]:
    """Parse '0-4', '3' or '0,2,5-7' into a list of distinct non-negative integers (order kept)."""
    out: list[int] = []
    try:
        parts = [p.strip() for p in str(text).split(",")]
        for part in parts:
            lo, sep, hi = part.partition("-")
            a = int(lo)
            b = int(hi) if sep else a
            if a < 0 or b < a:
                raise ValueError(part)
            out.extend(v for v in range(a, b + 1) if v not in out)
    except ValueError:
        raise ConfigError(f"{what}={text!r}: use numbers and ranges such as '0-4' or '0,2,5-7'") from None
    return out
