"""First-token stalls: found in a round's requests, and said in the trial's line, the search
table, the report and run --json, so a wide interval comes with its cause."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autotune.measure.metrics import LevelResult, RequestSample, aggregate, summarize
from autotune.measure.result import TrialResult
from autotune.measure.stalls import STALL_RUN, first_token_stall, stall_note


def round_of(ttfts: list[float]) -> list[RequestSample]:
    """Requests sent 50 ms apart, each with its TTFT and 16 tokens 20 ms apart."""
    return [RequestSample(start=i * 0.05, end=i * 0.05 + t + 0.3, ok=True, ttft=t,
                          itl=(0.02,) * 15, prompt_tokens=128, output_tokens=16)
            for i, t in enumerate(ttfts)]


def test_a_wave_of_slow_first_tokens_is_a_stall_and_its_size_is_its_median() -> None:
    wave = [0.07] * 20 + [1.1, 1.2, 1.3, 1.2, 1.25, 1.15] + [0.07] * 22
    assert first_token_stall(round_of(wave)) == pytest.approx(1.2)
    # the same slow requests scattered (never STALL_RUN in a row): no stall
    scattered = [0.07] * 48
    for i in (3, 9, 15, 21, 27, 33):
        scattered[i] = 1.2
    assert first_token_stall(round_of(scattered)) is None
    # a whole round slow alike is a slow round, not a stall (5x its median is the bar)
    assert first_token_stall(round_of([1.2] * 48)) is None
    # three in a row are not yet a wave
    assert first_token_stall(round_of([0.07] * 20 + [1.2] * (STALL_RUN - 1) + [0.07] * 20)) \
        is None


@settings(max_examples=100, deadline=None)
@given(base=st.floats(0.01, 0.09), size=st.floats(0.6, 5.0), at=st.integers(0, 30),
       length=st.integers(STALL_RUN, 16))
def test_any_wave_past_the_bar_is_found_wherever_it_sits(base: float, size: float, at: int,
                                                         length: int) -> None:
    ttfts = [base] * 48
    ttfts[at:at + length] = [size] * length
    assert first_token_stall(round_of(ttfts)) == pytest.approx(size)


def test_a_trial_with_stalled_rounds_says_so_in_its_line_table_report_and_json(
        tmp_path: Path) -> None:
    from autotune.app.schema import TrialDoc
    from autotune.cli.run import measured
    from autotune.report.gather import gather, markdown
    from autotune.report.tables import summary_rows
    from autotune.study.trials import record

    calm, stalled = [0.07] * 48, [0.07] * 20 + [1.2] * 16 + [0.07] * 12
    rounds = [summarize(round_of(t)) for t in (calm, stalled, calm, stalled, calm, calm)]
    assert [r.ttft_stall_s is not None for r in rounds] == [False, True, False, True, False,
                                                            False]
    level: LevelResult = aggregate("c16", {"concurrency": 16}, rounds, [{}] * 6)
    result = TrialResult(status="ok", command=[], env={}, metrics=level.metrics,
                         levels=[level])
    said = "2 of 6 rounds had a first-token stall of about 1.2 s"
    assert result.stalls() == said and said in measured(result)

    db = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=db)
    study.set_user_attr("metric", "output_throughput")
    trial = study.ask()
    record(trial, result, {})
    study.tell(trial, 1.0)
    _, rows = summary_rows(study, "output_throughput")
    assert said in rows[0][-1]
    assert TrialDoc.of(study.trials[0], None).stalls == said
    assert said in markdown(gather(db, "s", tmp_path / "runs"))
    assert stall_note([None, None]) is None
