"""The GPU kit's size: packages, payload, parts and calls to send it (from its manifest).

    .venv/bin/python -m bench.gpu_kit [--kit .gpu-kit]   (after scripts/gpu_kit/prepare.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MiB = 2**20
CALL_BYTES = 64 * MiB  # what one call to the GPU machine carries, the working tree included


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--kit", type=Path, default=Path(".gpu-kit"))
    ns = ap.parse_args(argv)
    path = ns.kit / "manifest.json"
    if not path.is_file():
        print(f"no kit at {ns.kit}: run scripts/gpu_kit/prepare.py first", file=sys.stderr)
        return 2
    m = json.loads(path.read_text())
    parts = m["parts"]
    wheels = sum(p["bytes"] for p in m["packages"])
    largest = max(p["bytes"] for p in parts)
    print(f"vLLM {m['release']} kit: {len(m['packages'])} packages "
          f"({wheels / MiB:.1f} MiB of wheels), {m['unpacked_bytes'] / MiB:.0f} MiB installed")
    print(f"payload: {m['payload_bytes'] / MiB:.1f} MiB xz in {len(parts)} parts "
          f"(largest {largest / MiB:.1f} MiB, each under {CALL_BYTES // MiB} MiB a call)")
    print(f"left out of the wheel: {sum(t['bytes'] for t in m['trimmed']) / MiB:.0f} MiB "
          f"({', '.join(Path(t['file']).name for t in m['trimmed']) or 'nothing'})")
    print(f"calls: {len(parts)} (one part each; the last one also runs the kit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
