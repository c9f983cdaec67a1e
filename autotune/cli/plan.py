"""`autotune plan`: every profile of a model (the user's and the shipped catalog's) into the
servers a load needs on each hardware, and with the user's prices what they cost."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from autotune.cli.flags import folder

DEFAULT_DIR = Path("profiles")


def add_plan_command(sub: Any) -> None:
    p = sub.add_parser("plan", help="the servers a load needs on each hardware a model has a "
                       "profile for, from each profile's card, and with --prices their cost")
    p.add_argument("--model", required=True, help="the model the profiles were tuned for, as "
                   "`run --model` named it (hub id, builtin:NAME)")
    p.add_argument("--load", required=True, help="the load to serve: a number and a unit, "
                   "rps, rpm or rph (requests started per second, minute, hour) or sessions "
                   "(in flight at once), e.g. 40rps")
    p.add_argument("--slo", required=True, nargs="+", metavar="METRIC=BOUND",
                   help="the latency bound(s) the load must be served within, e.g. "
                   "p95_e2el_ms=1500")
    p.add_argument("--prices", type=Path, help="YAML: price per server-hour by hardware key "
                   "or target (docs/plan.md); without it, replicas only")
    p.add_argument("--profiles-dir", type=folder, default=DEFAULT_DIR,
                   help="the user's profiles (default profiles/); the shipped catalog is "
                   "read too")
    p.add_argument("--json", action="store_true", help="JSON on standard output")


def _profiles(root: Path) -> list[tuple[Path, Any]]:
    from autotune.profiles.catalog import find_profiles, shipped_root

    roots = [r for r in (root, shipped_root()) if r is not None and r.is_dir()]
    seen: set[Path] = set()
    out = []
    for r in roots:
        for e in find_profiles(r):
            where = e.path.resolve()
            if e.profile is not None and where not in seen:
                seen.add(where)
                out.append((e.path, e.profile))
    return out


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _range(r: tuple[float, float] | None, digits: int = 3) -> str:
    return "" if r is None else f" [{r[0]:.{digits}g}, {r[1]:.{digits}g}]"


def cmd_plan(ns: argparse.Namespace) -> int:
    from autotune.core.errors import UserError
    from autotune.engine.hardware import KNOWN_TARGETS
    from autotune.fleet.plan import Source, order, parse_load, parse_slo, plan_row
    from autotune.fleet.prices import read_prices
    from autotune.profiles.profile import model_slug
    from autotune.report.tables import table

    load = parse_load(ns.load)
    slo = parse_slo(ns.slo)
    found = _profiles(ns.profiles_dir)
    mine = [(path, p) for path, p in found
            if p.meta.model == ns.model or path.stem == model_slug(ns.model)]
    if not mine:
        raise UserError(f"--model {ns.model}: no profile of that model under "
                        f"{ns.profiles_dir} or in the shipped catalog")
    known = {*KNOWN_TARGETS, *(str(p.meta.hardware.get("key", "")) for _, p in found)}
    prices = read_prices(ns.prices, known) if ns.prices is not None else {}
    rows = order([plan_row(Source(str(p.meta.hardware.get("key", p.meta.target)),
                                  p.meta.target, str(path), p.meta.card, p.meta.workload),
                           load, slo, prices) for path, p in mine])
    if ns.json:
        from autotune.app.schema import LoadDoc, PlanDoc, PlanRowDoc

        doc = PlanDoc(model=ns.model, load=LoadDoc(over=load.over, value=load.value,
                                                   text=load.text),
                      slo=slo, rows=[PlanRowDoc.of(r) for r in rows])
        print(json.dumps(doc.model_dump(mode="json"), indent=2))
        return 0
    unit = "/s" if load.over == "rate" else " in flight"
    print(f"{ns.model}: {load.text} at {', '.join(f'{k} <= {v:g}' for k, v in slo.items())}; "
          "capacity is each card's conservative bound (the low end of its 95% interval over "
          "its rounds), replicas and cost with their intervals")
    header = ["hardware", f"capacity{unit} [95%]", "counted", "replicas", "per hour",
              "per 1M output tokens", "note"]
    print(table([[r.hardware, "-" if r.held is None else r.held.describe(3), _num(r.counted),
                  _num(r.replicas) + (f" [{r.replicas_range[0]}, {r.replicas_range[1]}]"
                                      if r.replicas_range else ""),
                  _num(r.cost_per_h) + _range(r.cost_per_h_range),
                  _num(r.cost_per_m_tokens) + _range(r.cost_per_m_tokens_range), r.note]
                 for r in rows], header))
    return 0


__all__ = ["add_plan_command", "cmd_plan"]
