"""The asymmetric-autoencoder encoder: its artifact format and numpy inference (DESIGN 1.3).

The encoder reads what the stream's window state holds — the window mean ``x = Σwv / Σw``
(d) and the event count — and produces K coefficients::

    h = relu(W1 · [x, log1p(count)] + b1)
    c = B·x + W2 · h + b2          (residual on the projected mean)
    v = Bᵀ·c                       (the decoder: the fixed basis, never trained)

so ``v`` always lies in the span of the content basis (cross-version safe), and with
``W2 = 0, b2 = 0`` the encoder *is* the ``mean`` encoder; training only moves it away from
that where behaviour says so. Training lives in :mod:`offline.ae_training` (torch); serving
needs only numpy and safetensors, so a worker never imports torch.

An artifact is a directory::

    encoder.safetensors   hidden.weight (H x d+1), hidden.bias (H), out.weight (K x H),
                          out.bias (K), float32
    config.json           architecture, basis_version, window/lag/bucket/horizon, training
                          settings and metrics, library versions, encoder_version

``encoder_version`` is a hash of the tensors and of the config (except ``created_at`` and the
version itself), so retraining with the same data, settings and seed reproduces it, and
:meth:`AutoencoderArtifact.load` refuses files that no longer match it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lte_core.artifact_dir import write_artifact_dir
from lte_core.basis import BasisArtifact
from lte_core.encoders import Encoded, Projection, _check_non_empty
from lte_core.errors import EncoderArtifactError, EncoderBasisMismatchError
from lte_core.summary import WindowSummary

FORMAT = 1
KIND = "asymmetric-autoencoder"
WEIGHTS_FILE = "encoder.safetensors"
CONFIG_FILE = "config.json"
_UNHASHED = ("encoder_version", "created_at")
_TENSORS = ("hidden.weight", "hidden.bias", "out.weight", "out.bias")

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class AutoencoderWeights:
    """The trainable encoder; the decoder is the basis and is not stored here."""

    hidden_weight: F32
    hidden_bias: F32
    out_weight: F32
    out_bias: F32

    @property
    def d(self) -> int:
        return int(self.hidden_weight.shape[1]) - 1

    @property
    def hidden(self) -> int:
        return int(self.hidden_weight.shape[0])

    @property
    def k(self) -> int:
        return int(self.out_weight.shape[0])

    def tensors(self) -> dict[str, F32]:
        return dict(
            zip(
                _TENSORS,
                (self.hidden_weight, self.hidden_bias, self.out_weight, self.out_bias),
                strict=True,
            )
        )

    @classmethod
    def from_tensors(cls, tensors: dict[str, npt.NDArray[Any]]) -> AutoencoderWeights:
        missing = [name for name in _TENSORS if name not in tensors]
        if missing:
            raise EncoderArtifactError(f"{WEIGHTS_FILE}: missing tensors {missing}")
        w = {name: np.ascontiguousarray(tensors[name], dtype=np.float32) for name in _TENSORS}
        hidden, d1 = w["hidden.weight"].shape if w["hidden.weight"].ndim == 2 else (0, 0)
        k = w["out.weight"].shape[0] if w["out.weight"].ndim == 2 else 0
        if (
            hidden < 1
            or d1 < 2
            or k < 1
            or w["hidden.bias"].shape != (hidden,)
            or w["out.weight"].shape != (k, hidden)
            or w["out.bias"].shape != (k,)
        ):
            shapes = {name: tuple(t.shape) for name, t in w.items()}
            raise EncoderArtifactError(f"{WEIGHTS_FILE}: inconsistent tensor shapes {shapes}")
        if not all(np.isfinite(t).all() for t in w.values()):
            raise EncoderArtifactError(f"{WEIGHTS_FILE}: weights contain NaN or infinity")
        return cls(w["hidden.weight"], w["hidden.bias"], w["out.weight"], w["out.bias"])

    @classmethod
    def mean_equivalent(cls, d: int, k: int, hidden: int, seed: int = 0) -> AutoencoderWeights:
        """Random hidden layer, zero output layer: exactly the ``mean`` encoder."""
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(d + 1)
        return cls(
            hidden_weight=rng.uniform(-bound, bound, (hidden, d + 1)).astype(np.float32),
            hidden_bias=rng.uniform(-bound, bound, hidden).astype(np.float32),
            out_weight=np.zeros((k, hidden), dtype=np.float32),
            out_bias=np.zeros(k, dtype=np.float32),
        )


def compute_encoder_version(weights: AutoencoderWeights, config: dict[str, Any]) -> str:
    """Content hash (16 hex chars) of the tensors and the hashed part of the config."""
    h = hashlib.sha256()
    h.update(f"lte-encoder/{FORMAT}\0".encode())
    hashed = {k: v for k, v in config.items() if k not in _UNHASHED}
    h.update(json.dumps(hashed, sort_keys=True, separators=(",", ":")).encode())
    for name, tensor in weights.tensors().items():
        h.update(f"\0{name}\0{tensor.dtype.str}\0{tensor.shape}\0".encode())
        h.update(np.ascontiguousarray(tensor, dtype="<f4").tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class AutoencoderArtifact:
    weights: AutoencoderWeights
    config: dict[str, Any]
    encoder_version: str

    @classmethod
    def create(cls, weights: AutoencoderWeights, config: dict[str, Any]) -> AutoencoderArtifact:
        """Stamp a new artifact; ``config`` must name at least ``basis_version``."""
        if "basis_version" not in config:
            raise EncoderArtifactError("config: basis_version is required")
        full = {
            **{k: v for k, v in config.items() if k not in _UNHASHED},
            "format": FORMAT,
            "kind": KIND,
            "architecture": {
                "input": "window_mean+log1p_count",
                "d": weights.d,
                "k": weights.k,
                "hidden": weights.hidden,
                "activation": "relu",
                "coefficients": "basis_projection_of_mean+mlp",
                "decoder": "fixed_basis",
            },
        }
        # A JSON round trip makes the hashed config exactly what load() will read back.
        full = json.loads(json.dumps(full, sort_keys=True))
        version = compute_encoder_version(weights, full)
        stamped = {
            **full,
            "encoder_version": version,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return cls(weights=weights, config=stamped, encoder_version=version)

    @property
    def basis_version(self) -> str:
        return str(self.config["basis_version"])

    @property
    def name(self) -> str:
        return f"ae:{self.encoder_version}"

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Written to a temporary directory and renamed into place: a worker never loads a
        half-written encoder."""
        from safetensors.numpy import save_file  # noqa: PLC0415 - optional at import time

        def fill(tmp: Path) -> None:
            save_file(
                self.weights.tensors(),
                str(tmp / WEIGHTS_FILE),
                metadata={"encoder_version": self.encoder_version},
            )
            (tmp / CONFIG_FILE).write_text(
                json.dumps(self.config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )

        return write_artifact_dir(directory, fill)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> AutoencoderArtifact:
        from safetensors import SafetensorError  # noqa: PLC0415
        from safetensors.numpy import load_file  # noqa: PLC0415

        path = Path(directory)
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            raise EncoderArtifactError(
                f"{path} is not an encoder artifact (no {CONFIG_FILE}); train one with "
                "`lte train-encoder --basis DIR --log LOG --out DIR`"
            )
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            tensors = load_file(str(path / WEIGHTS_FILE))
        except (OSError, ValueError, SafetensorError) as exc:
            raise EncoderArtifactError(f"{path}: cannot read the encoder ({exc})") from exc
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise EncoderArtifactError(f"{config_path}: unsupported encoder artifact format")
        if config.get("kind") != KIND or "basis_version" not in config:
            raise EncoderArtifactError(f"{config_path}: not an {KIND} config")
        weights = AutoencoderWeights.from_tensors(tensors)
        actual = compute_encoder_version(weights, config)
        if actual != config.get("encoder_version"):
            raise EncoderArtifactError(
                f"{path}: content hashes to {actual} but config.json says "
                f"{config.get('encoder_version')}; the artifact was modified. Retrain it with "
                "`lte train-encoder` instead of editing files"
            )
        return cls(weights=weights, config=config, encoder_version=actual)


class AutoencoderEncoder:
    """Batched numpy inference of an :class:`AutoencoderArtifact` on one basis.

    The MLP runs in float32 (what it was trained in); the projection of the mean and the
    decoding run in float64 like the ``mean`` encoder's, so a zero MLP reproduces ``mean``
    bit for bit.
    """

    __slots__ = ("_project", "_w1", "_w1_count", "artifact", "name")

    def __init__(self, artifact: AutoencoderArtifact, basis: BasisArtifact) -> None:
        if artifact.basis_version != basis.basis_version:
            raise EncoderBasisMismatchError(
                f"encoder {artifact.name} was trained on basis {artifact.basis_version}, "
                f"this basis is {basis.basis_version}; train a new encoder with "
                f"`lte train-encoder --basis <this basis dir> ...`, or serve it with the "
                f"basis it was trained on"
            )
        w = artifact.weights
        if w.d != basis.d or w.k != basis.k:
            raise EncoderBasisMismatchError(
                f"encoder {artifact.name} has d={w.d}, K={w.k}; basis {basis.basis_version} "
                f"has d={basis.d}, K={basis.k}"
            )
        self.artifact = artifact
        self.name = artifact.name
        self._project = Projection(basis)
        self._w1 = np.ascontiguousarray(w.hidden_weight[:, : w.d].T)
        self._w1_count = w.hidden_weight[:, w.d]

    @classmethod
    def load(cls, directory: str | os.PathLike[str], basis: BasisArtifact) -> AutoencoderEncoder:
        return cls(AutoencoderArtifact.load(directory), basis)

    def encode(self, windows: WindowSummary) -> Encoded:
        _check_non_empty(windows)
        mean = windows.sums / windows.weight_sums[:, None]
        return self.encode_means(mean, windows.counts)

    def encode_means(self, mean: F64, counts: npt.NDArray[np.int64]) -> Encoded:
        """The encoder on window means directly (offline evaluation and tests)."""
        w = self.artifact.weights
        log_count = np.log1p(counts.astype(np.float32))
        hidden = mean.astype(np.float32) @ self._w1
        hidden += log_count[:, None] * self._w1_count
        hidden += w.hidden_bias
        np.maximum(hidden, 0.0, out=hidden)
        residual = hidden @ w.out_weight.T + w.out_bias
        coefficients = self._project.coefficients(mean) + residual.astype(np.float64)
        return self._project.from_coefficients(coefficients)
