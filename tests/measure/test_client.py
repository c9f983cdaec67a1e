"""The load generator's own behaviour, against the stand-in server (whose /metrics are exact)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from autotune.engine.argv import ServerSpec
from autotune.engine.server import VllmServer, free_port
from autotune.measure.client import run_workload
from autotune.measure.plan import Plan
from autotune.measure.server_api import Target
from autotune.measure.workload import Workload
from autotune.testing.fake_tokenizer import WordTokenizer
from tests.conftest import FAKE_LAUNCHER

KEY = "client-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    spec = ServerSpec(model="fake", launcher=FAKE_LAUNCHER, port=free_port(), api_key=KEY,
                      args={"max-num-seqs": 8, "max-model-len": 512})
    with VllmServer(spec, tmp_path_factory.mktemp("client") / "server.log",
                    startup_timeout_s=120) as s:
        yield s


def workload(**kw: object) -> Workload:
    return Workload.model_validate({"num_requests": 6, "concurrency": 3, "input_tokens": 20,
                                    "output_tokens": 12, "warmup_requests": 1, **kw})


def test_rate_level_is_not_throttled_by_a_concurrency_level(server: VllmServer) -> None:
    # 12 sessions started within ~0.01 s: an unbounded rate level has many running on the
    # server at once, even beside a level of concurrency 1 (a connection pool sized for that
    # level would let one through at a time)
    w = workload(levels=[{"concurrency": 1}, {"rate": 1000}], num_requests=12,
                 output_tokens=300, warmup_requests=0)
    # (a busy machine's read of /metrics can outlast the rate level, or come after the
    # server finished while the client stalled: it is run again, for up to a minute, until a
    # read saw two running; a pool of one connection never lets it)
    deadline = time.monotonic() + 60
    while True:
        runs = run_workload(Target(server.base_url, KEY), Plan(w, WordTokenizer()),
                            watch_metrics_s=0.02)
        if (runs[1].server.peak_requests_running or 0) >= 2 or time.monotonic() > deadline:
            break
    assert all(s.ok for s in runs[1].samples)
    assert (runs[0].server.peak_requests_running or 0) <= 1
    # more than one running at once is impossible through a pool of one connection
    assert (runs[1].server.peak_requests_running or 0) >= 2
