"""Profiles: the winning settings as a file `vllm serve --config` takes unchanged, plus metadata.

The vLLM settings are the YAML document itself. Everything else (metrics, hardware, study) sits
in a comment block, which vLLM ignores and `read_profile` parses back.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from autotune.config import parse_model, read_yaml
from autotune.errors import ConfigError

META_BEGIN = "# --- autotune metadata ---"
META_END = "# --- end autotune metadata ---"


class ProfileMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    autotune_version: str
    created: str
    target: str
    model: str
    hardware: dict[str, Any]
    vllm_version: str
    space: str
    space_fingerprint: str
    workload: dict[str, Any]
    study: str
    trial: int
    objective: dict[str, Any]
    metrics: dict[str, float]
    env: dict[str, str] = Field(default_factory=dict)
    serve: str = Field("vllm serve", description="the command that takes --config")


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    settings: dict[str, Any]
    meta: ProfileMeta

    def deploy_command(self, path: str | Path) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.meta.env.items()))
        cmd = f"{self.meta.serve} --config {shlex.quote(str(path))}"
        return f"{env} {cmd}" if env else cmd


def model_slug(model: str) -> str:
    """A file name for a model: `Qwen/Qwen3-0.6B` -> `qwen--qwen3-0.6b`."""
    if model.startswith(("/", "./", "../", "~")):
        model = Path(model).name
    slug = model.lower().replace("/", "--").replace(":", "-")
    slug = re.sub(r"[^a-z0-9._-]+", "-", slug).strip("-.")
    return slug or "model"


def profile_path(profiles_dir: Path, target: str, model: str) -> Path:
    return profiles_dir / target / f"{model_slug(model)}.yaml"


def render(profile: Profile, path: Path) -> str:
    meta_yaml = yaml.safe_dump(profile.meta.model_dump(mode="json"), sort_keys=False,
                               default_flow_style=False, width=100)
    lines = [
        "# autotune profile: vLLM settings, usable as is with `vllm serve --config`.",
        f"# Tuned for {profile.meta.model} on {profile.meta.target} "
        f"({profile.meta.objective.get('metric')} = {profile.meta.objective.get('value'):.4g}).",
        "# Deploy:",
        f"#   {profile.deploy_command(path)}",
        "#",
        META_BEGIN,
        *("# " + line if line else "#" for line in meta_yaml.splitlines()),
        META_END,
        yaml.safe_dump(profile.settings, sort_keys=False, default_flow_style=False).rstrip(),
        "",
    ]
    return "\n".join(lines)


def write_profile(profile: Profile, path: Path) -> None:
    """Atomic: a reader sees the old file or the new one, never half of either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(profile, path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_profile(path: str | Path) -> Profile:
    p = Path(path)
    settings = read_yaml(p)
    if not isinstance(settings, dict):
        raise ConfigError(str(p), None, "a profile must be a mapping of vLLM options")
    text = p.read_text()
    if META_BEGIN not in text or META_END not in text:
        raise ConfigError(str(p), None, "no autotune metadata block")
    block = text.split(META_BEGIN, 1)[1].split(META_END, 1)[0]
    meta_lines = [line[2:] if line.startswith("# ") else line.lstrip("#")
                  for line in block.strip("\n").splitlines()]
    try:
        meta = yaml.safe_load("\n".join(meta_lines))
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), "metadata", f"malformed YAML: {exc}") from exc
    parsed = parse_model(Profile, {"settings": settings, "meta": meta}, str(p))
    return parsed
