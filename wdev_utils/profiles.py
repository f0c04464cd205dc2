"""Profiles: named parameter sets (profiles/*.yml) for the notebooks and the sweep."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILE_DIR = REPO_ROOT / "profiles"
_KEYS = {"description", "store", "device", "parameters", "notebooks"}


@dataclass(frozen=True)
class Profile:
    """A profile: shared notebook parameters plus per-notebook overrides."""

    name: str
    description: str
    store: str | None
    device: str
    parameters: dict = field(default_factory=dict)
    notebooks: dict = field(default_factory=dict)

    def notebook_parameters(self, notebook: str) -> dict:
        """Parameters for one notebook: the shared ones updated by its overrides."""
        merged = dict(self.parameters)
        merged.update(self.notebooks.get(notebook) or {})
        return merged


def profile_names() -> list[str]:
    """Names of the profiles shipped in profiles/."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yml"))


def load_profile(name_or_path: str) -> Profile:
    """Load a profile by name (profiles/NAME.yml) or by path to a YAML file."""
    path = Path(name_or_path)
    if not (path.suffix in {".yml", ".yaml"} and path.exists()):
        path = PROFILE_DIR / f"{name_or_path}.yml"
    if not path.exists():
        raise ConfigError(
            f"unknown profile {name_or_path!r}: choose one of {', '.join(profile_names())} "
            f"or give the path to a .yml file"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the file") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a profile is a mapping with keys {sorted(_KEYS)}")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    params = raw.get("parameters") or {}
    notebooks = raw.get("notebooks") or {}
    if not isinstance(params, dict) or not isinstance(notebooks, dict):
        raise ConfigError(f"{path}: 'parameters' and 'notebooks' must be mappings")
    for nb, over in notebooks.items():
        if over is not None and not isinstance(over, dict):
            raise ConfigError(f"{path}: notebooks.{nb} must be a mapping of parameter: value")
    return Profile(
        name=path.stem,
        description=str(raw.get("description", "")).strip(),
        store=raw.get("store"),
        device=str(raw.get("device", "auto")),
        parameters=params,
        notebooks=notebooks,
    )
