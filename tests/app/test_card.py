"""`autotune check PROFILE --card` on the stand-in server, whose figures are known by
construction (each token 10 ms, 8 requests decoding at once, half a MiB kept per request):
the card is measured, judged and recorded; against a planted regression (a record a hundred
times better) the check exits 3 and keeps the record. Only what a busy machine cannot turn is
asserted: it makes the stand-in slower, never faster than its construction."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from autotune.cli.main import main
from autotune.core.stats import Estimate
from autotune.profiles.card import Card, CardLine, regressions
from autotune.profiles.profile import Profile, read_profile, write_profile
from tests.conftest import FAKE_LAUNCHER
from tests.profiles.test_profile import meta

# a leak small beside the stand-in's own memory (its peak moves little between two cards),
# large beside the few hundred MiB an hour its PSS wanders by
TPOT_MS, OUTPUT, SLOTS, LEAK_KIB = 10, 16, 8, 64


def standin(tmp: Path, recorded: Card | None = None) -> Path:
    from autotune.model.builtin import TINY_QWEN3, ensure_builtin_model

    path = tmp / "profiles" / "cpu" / "m.yaml"
    write_profile(Profile(
        settings={"model": str(ensure_builtin_model(TINY_QWEN3)), "fake-startup-s": 0.1,
                  "max-num-seqs": SLOTS, "fake-tpot-ms": TPOT_MS,
                  "fake-leak-kib-per-request": LEAK_KIB},
        meta=meta(env={}, workload={"num_requests": 8, "concurrency": 4, "input_tokens": 8,
                                    "output_tokens": OUTPUT, "warmup_requests": 0},
                  card=recorded)), path)
    return path


def card(path: Path, tmp: Path, capsys: pytest.CaptureFixture[str], *extra: str
         ) -> tuple[int, dict[str, object]]:
    code = main(["check", str(path), "--card", "--soak", "4", "--slo", "p95_e2el_ms=400",
                 "--launcher", shlex.join(FAKE_LAUNCHER), "--runs-dir", str(tmp / "runs"),
                 "--json", *extra])
    out = capsys.readouterr().out
    doc: dict[str, object] = json.loads(out)
    return code, doc


def test_the_card_of_the_stand_in_is_what_it_was_built_to_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # two seconds of arrivals a level: the stand-in's queue forms within one
    monkeypatch.setattr("autotune.app.card.LEVEL_S", 2.0)
    path = standin(tmp_path)
    code, doc = card(path, tmp_path, capsys)
    assert code == 0 and doc["recorded"] is True
    c = read_profile(path).meta.card
    assert c is not None and c.capacity is not None
    lines = c.lines
    # one request alone: 16 tokens of 10 ms (and a first token): its P99 is about 170 ms
    p99 = lines["p99_e2e_ms"].figure
    # (a busy machine makes it slower, never faster than its construction)
    assert p99 is not None and p99.value >= 150 and p99.n == 3
    assert lines["p99_e2e_ms"].judged == "healthy"  # the default 1200 ms bound
    # 8 at once, 170 ms each: about 47 requests a second before a queue forms; the SLO (400
    # ms, twice a request alone) holds below that and breaks above
    held = c.capacity.held
    assert c.capacity.slo == {"p95_e2el_ms": 400.0} and c.capacity.over == "rate"
    assert 0 <= held.value <= 120 and held.n == 3
    assert c.capacity.broke is None or c.capacity.broke.value > held.value
    # 64 KiB kept per request at up to 4 x 6 requests a second: growth far above the few
    # hundred MiB an hour the stand-in's PSS wanders by, and below what the load could leak
    growth = lines["growth_mib_per_h"].figure
    ceiling = LEAK_KIB / 1024 * 4 * 1000 / (OUTPUT * TPOT_MS) * 3600
    assert growth is not None and 0 < growth.value < 1.5 * ceiling
    mem = lines["peak_memory_gib"].figure
    assert mem is not None and mem.value > 0.01 and lines["peak_memory_gib"].judged == "unjudged"
    text = path.read_text()
    assert "# Card: P99 latency of one request at a time:" in text
    assert "# Card: capacity at p95_e2el_ms <= 400:" in text
    assert main(["profiles", "show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "baseline card (autotune check PROFILE --card measures it again):" in shown
    assert "  memory growth: " in shown and ": warning" in shown
    from autotune.profiles.card import card_text
    from autotune.report.gather import ReportData, markdown
    md = markdown(ReportData(study="s", metric="output_throughput", maximize=True, trials=[],
                             importances="-", card=card_text(c)))
    assert "## Baseline card\n\n- P99 latency of one request at a time: " in md

    assert regressions(c, c) == []  # a card is no worse than itself
    # a planted regression: the same server under a record a hundred times better, P99 and
    # capacity (as if it had since become that much slower): worse, exit 3, the record kept
    def scaled(e: Estimate, f: float) -> Estimate:
        return e.model_copy(update={k: v * f for k, v in e.model_dump().items()
                                    if k in ("value", "low", "high") and v is not None})
    assert p99 is not None
    cap_line = lines["capacity"]
    assert cap_line.figure is not None
    better = c.model_copy(update={"lines": {
        **c.lines, "p99_e2e_ms": lines["p99_e2e_ms"].model_copy(
            update={"figure": scaled(p99, 0.01)}),
        "capacity": cap_line.model_copy(update={"figure": scaled(
            cap_line.figure, 100) if cap_line.figure.value > 0 else Estimate(
                value=1000.0, low=1000.0, high=1000.0, n=3, basis="rounds")})}})
    slow = standin(tmp_path / "slow", recorded=better)
    code, doc = card(slow, tmp_path, capsys)
    assert code == 3 and doc["ok"] is False and doc["recorded"] is False
    said = doc["regressions"]
    assert isinstance(said, list) and said
    kept = read_profile(slow).meta.card  # the record stays (kept to 6 digits in the file)
    assert kept is not None and kept.measured == better.measured
    was, now = better.lines["p99_e2e_ms"].figure, kept.lines["p99_e2e_ms"].figure
    assert was is not None and now is not None and now.value == pytest.approx(was.value,
                                                                             rel=1e-5)


def test_a_line_is_worse_only_beyond_noise() -> None:
    def with_p99(low: float, high: float) -> Card:
        e = Estimate(value=(low + high) / 2, low=low, high=high, n=3, basis="rounds")
        return Card(measured="2026-12-08T00:00:00+00:00", how="-", memory_kind="host_pss",
                    lines={"p99_e2e_ms": CardLine(figure=e)})
    # another run's noise: within 1.5 times the recorded worse end is no regression
    assert regressions(with_p99(100, 200), with_p99(210, 290)) == []
    (worse,) = regressions(with_p99(100, 200), with_p99(310, 360))
    assert worse.startswith("P99 latency of one request at a time: 335 [310, 360]")
    assert regressions(with_p99(100, 200), with_p99(10, 20)) == []  # better is no regression


def test_slo_and_record_are_card_flags(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = standin(tmp_path)
    for flag in (["--slo", "p95_e2el_ms=400"], ["--record"]):
        assert main(["check", str(path), *flag]) == 2
        err = capsys.readouterr().err
        assert err == f"autotune: error: {flag[0]}: only with --card\n"
    assert main(["check", str(path), "--card", "--slo", "p95_e2e_ms=400"]) == 2
    assert "did you mean 'p95_e2el_ms'?" in capsys.readouterr().err
