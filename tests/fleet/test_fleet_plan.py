"""`autotune plan` on a catalog of several hardware keys made for the test: replicas, cost,
order and intervals from each profile's card, profiles without a card or measured at another
SLO, and every bad input one line with exit 2."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from autotune.cli.main import main
from autotune.core.stats import Estimate
from autotune.profiles.card import Card, CardCapacity, CardSpec, judge
from autotune.profiles.profile import Profile, profile_path, write_profile
from tests.profiles.test_profile import meta
from tests.report.documented import check_documented

MODEL = "test/model-x"
SLO = {"p95_e2el_ms": 1500.0}


def card(held: tuple[float, float, float] | None, slo: dict[str, float] | None = None,
         over: str = "rate") -> Card:
    cap = None if held is None else CardCapacity(
        over=over, slo=slo or SLO,  # type: ignore[arg-type]
        held=Estimate(value=held[0], low=held[1], high=held[2], n=3, basis="rounds"))
    return Card(measured="2026-12-08T00:00:00+00:00", how="one fresh server, 3 rounds",
                memory_kind="gpu_process", capacity=cap)


def catalog(root: Path) -> Path:
    """Four hardware keys of one model: two with cards at the asked SLO, one without a card,
    one measured at a looser SLO; and a profile of another model."""
    def put(key: str, target: str, c: Card | None, model: str = MODEL) -> None:
        m = meta(model=model, target=target, hardware={"key": key, "target": target},
                 workload={"concurrency": 4, "output_tokens": 200}, card=c)
        p = Profile(settings={"model": model}, meta=m)
        write_profile(p, profile_path(root, key, model))

    put("a10g-24gb-x1", "a10g", card((20.0, 16.0, 24.0)))
    put("h100-80gb-x1", "h100", card((90.0, 80.0, 100.0)))
    put("l4-24gb-x1", "l4", None)
    put("a100-80gb-x1", "a100-80gb", card((60.0, 50.0, 70.0), {"p95_e2el_ms": 3000.0}))
    put("h100-80gb-x1", "h100", card((500.0, 450.0, 550.0)), model="other/model")
    return root


def plan(tmp_path: Path, *extra: str) -> list[dict[str, Any]]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["plan", "--model", MODEL, "--load", "40rps", "--slo", "p95_e2el_ms=1500",
                     "--profiles-dir", str(tmp_path / "profiles"), "--json", *extra])
    assert code == 0
    data = json.loads(buf.getvalue())
    check_documented("plan", data)
    rows: list[dict[str, Any]] = data["rows"]
    return rows


def test_replicas_and_cost_come_from_each_cards_conservative_capacity_cheapest_first(
        tmp_path: Path) -> None:
    catalog(tmp_path / "profiles")
    prices = tmp_path / "prices.yaml"
    prices.write_text("a10g: 1.0\nh100: 4.5\nh100-80gb-x1: 4.0\n")
    rows = {r["hardware"]: r for r in plan(tmp_path, "--prices", str(prices))}
    assert set(rows) == {"a10g-24gb-x1", "h100-80gb-x1", "l4-24gb-x1", "a100-80gb-x1"}
    a10g, h100 = rows["a10g-24gb-x1"], rows["h100-80gb-x1"]
    # 40 rps over the low end of 20 [16, 24]: 3 replicas, 2 at the interval's high end
    assert a10g["capacity"] == {"value": 20.0, "low": 16.0, "high": 24.0, "n": 3,
                                "basis": "rounds"}
    assert a10g["counted"] == 16.0
    assert a10g["replicas"] == {"value": 3, "low": 2, "high": 3}
    assert h100["replicas"] == {"value": 1, "low": 1, "high": 1}
    # the hardware key's price wins over its target's
    assert h100["price_per_h"] == 4.0 and h100["cost_per_h"]["value"] == 4.0
    assert a10g["cost_per_h"] == {"value": 3.0, "low": 2.0, "high": 3.0}
    # 40 rps x 200 output tokens: 28.8 million tokens an hour
    assert a10g["cost_per_m_output_tokens"]["value"] == pytest.approx(3.0 / 28.8)
    ordered = [r["hardware"] for r in plan(tmp_path, "--prices", str(prices))]
    assert ordered[:2] == ["a10g-24gb-x1", "h100-80gb-x1"]  # 3.0 an hour, then 4.0
    # no card: listed last with the command that measures one; a looser SLO: not used
    assert "autotune check PROFILE --card" in str(rows["l4-24gb-x1"]["note"])
    a100 = rows["a100-80gb-x1"]
    assert not a100["usable"] and a100["replicas"] is None
    assert "p95_e2el_ms <= 3000, looser than asked" in str(a100["note"])


def test_a_card_at_a_stricter_slo_is_used_and_said_so(tmp_path: Path) -> None:
    catalog(tmp_path / "profiles")
    rows = {r["hardware"]: r for r in plan(tmp_path)}
    assert rows["h100-80gb-x1"]["cost_per_h"] is None  # no prices: replicas only
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["plan", "--model", MODEL, "--load", "1200rpm", "--slo",
                     "p95_e2el_ms=4000", "--profiles-dir", str(tmp_path / "profiles")]) == 0
    text = buf.getvalue()
    # 1200 rpm is 20 rps; the 3000 ms card now fits (stricter than 4000) and says so
    assert "a100-80gb-x1" in text and "measured at p95_e2el_ms <= 3000, stricter than asked" \
        in text
    assert "capacity is each card's conservative bound" in text


@pytest.mark.parametrize(("args", "says"), [
    (["--load", "40 parsecs"], "--load: '40 parsecs' is not a load"),
    (["--load", "0rps"], "--load: '0rps' must be above zero"),
    (["--slo", "p95_e2e_ms=1500"], "unknown metric 'p95_e2e_ms' (did you mean 'p95_e2el_ms'?"),
    (["--slo", "p95_e2el_ms=fast"], "p95_e2el_ms's bound 'fast' is not a number"),
    (["--slo", "p95_e2el_ms"], "is not METRIC=BOUND"),
    (["--model", "nobody/none"], "--model nobody/none: no profile of that model"),
    (["--prices", "{prices}:a11g: 1.0"], "prices.yaml: a11g: names no hardware key or target "
                                         "of a profile or of autotune (did you mean 'a10g'?)"),
    (["--prices", "{prices}:a10g: cheap"], "prices.yaml: a10g: a price per hour must be a "
                                           "number"),
    (["--prices", "{prices}:- a10g"], "prices.yaml: expected a mapping"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          args: list[str], says: str) -> None:
    catalog(tmp_path / "profiles")
    base = {"--model": MODEL, "--load": "40rps", "--slo": "p95_e2el_ms=1500"}
    extra: list[str] = []
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if value.startswith("{prices}:"):
            f = tmp_path / "prices.yaml"
            f.write_text(value.split(":", 1)[1] + "\n")
            extra += [flag, str(f)]
        else:
            base[flag] = value
    argv = ["plan", *[x for kv in base.items() for x in kv], "--profiles-dir",
            str(tmp_path / "profiles"), *extra]
    capsys.readouterr()
    assert main(argv) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1, out.err
    assert says in out.err


def test_card_lines_are_judged_on_their_conservative_end() -> None:
    spec = CardSpec()
    t = spec.threshold("p99_e2e_ms")
    assert t is not None and (t.healthy, t.warning) == (1200, 2000)
    e = Estimate
    assert judge("p99_e2e_ms", e(value=900, low=800, high=1100, n=5, basis="rounds"), t) \
        == "healthy"
    # its figure within the healthy bound, its interval not: between
    assert judge("p99_e2e_ms", e(value=900, low=600, high=1300, n=5, basis="rounds"), t) \
        == "between"
    assert judge("p99_e2e_ms", e(value=2100, low=1900, high=2300, n=5, basis="rounds"), t) \
        == "warning"
    # capacity is better higher; without declared thresholds it is not judged
    assert spec.threshold("capacity") is None
    assert judge("capacity", e(value=20, low=16, high=24, n=3, basis="rounds"), None) \
        == "unjudged"
    cap = CardSpec.model_validate({"thresholds": {"capacity": {"healthy": 15, "warning": 8}}})
    assert judge("capacity", e(value=20, low=16, high=24, n=3, basis="rounds"),
                 cap.threshold("capacity")) == "healthy"
    assert judge("capacity", e(value=7, low=6, high=8, n=3, basis="rounds"),
                 cap.threshold("capacity")) == "warning"
    with pytest.raises(ValueError, match=r"healthy \(15\) must be below warning \(8\)"):
        CardSpec.model_validate({"thresholds": {"p99_e2e_ms": {"healthy": 15, "warning": 8}}})
    assert math.isclose(card((20.0, 16.0, 24.0)).conservative_capacity() or 0, 16.0)


def test_the_pages_prices_example_plans_the_catalog(tmp_path: Path) -> None:
    """docs/plan.md's prices file, as the page writes it, read by the command it shows."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "plan.md").read_text()
    body = page.split("cat > prices.yaml <<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    prices = tmp_path / "prices.yaml"
    prices.write_text(body + "\n")
    catalog(tmp_path / "profiles")
    rows = {r["hardware"]: r for r in plan(tmp_path, "--prices", str(prices))}
    assert rows["a10g-24gb-x1"]["price_per_h"] == 1.01
    assert rows["h100-80gb-x1"]["price_per_h"] == 4.5
