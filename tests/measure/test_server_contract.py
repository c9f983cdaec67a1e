"""One suite, two servers: the stand-in must behave like real vLLM wherever autotune looks.

The real server is the CPU engine with the built-in tiny model, started once for the module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from autotune.engine.argv import ServerSpec
from autotune.engine.logs import kv_cache_tokens
from autotune.engine.memory import MemorySampler
from autotune.engine.probes import SystemProbe, process_tree_memory
from autotune.engine.server import VllmServer, free_port
from autotune.measure.client import run_workload
from autotune.measure.metrics import RequestSample, summarize
from autotune.measure.plan import Plan
from autotune.measure.server_api import Target, prometheus_values, scrape_metrics, served_model
from autotune.measure.workload import Workload
from autotune.model.tokens import ModelTokenizer
from autotune.testing.models import make_other_tokenizer_model
from tests.conftest import FAKE_LAUNCHER, ONE_PROCESS_ENV, REAL_LAUNCHER

KEY = "-contract-key"  # a leading dash, as a random key may have: it must not read as an option
MAX_LEN = 512
# the real server's memory samples and /metrics are counted while it serves a timed load
REAL = [pytest.mark.engine, pytest.mark.serial]  # one real server for the module


@pytest.fixture(scope="module", params=["fake", pytest.param("real", marks=REAL)])
def server(request: pytest.FixtureRequest, tiny_model: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    common = {"max-model-len": MAX_LEN, "max-num-seqs": 8}
    if request.param == "real":
        spec = ServerSpec(model=str(tiny_model), launcher=REAL_LAUNCHER, port=free_port(),
                          api_key=KEY, env={"VLLM_CPU_KVCACHE_SPACE": "1"},
                          args={**common, "load-format": "dummy", "enforce-eager": True,
                                "gpu-memory-utilization": 0.3})
    else:
        spec = ServerSpec(model=str(tiny_model), launcher=FAKE_LAUNCHER, port=free_port(),
                          api_key=KEY, args=common)
    log = tmp_path_factory.mktemp(request.param) / "server.log"
    with VllmServer(spec, log, startup_timeout_s=300) as s:
        yield s


def workload(**kw: object) -> Workload:
    return Workload.model_validate({"num_requests": 6, "concurrency": 3, "input_tokens": 20,
                                    "output_tokens": 12, "warmup_requests": 1, **kw})


def drive(server: VllmServer, w: Workload) -> list[RequestSample]:
    tok = ModelTokenizer(str(server.spec.model))
    runs = run_workload(Target(server.base_url, KEY), Plan(w, tok), watch_metrics_s=None)
    return [s for r in runs for s in r.samples]


def prom(server: VllmServer, name: str) -> float | None:
    return prometheus_values(scrape_metrics(server.base_url, KEY), [name]).get(name)


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_streamed_requests_are_measured(server: VllmServer, endpoint: str) -> None:
    w = workload(endpoint=endpoint)
    samples = drive(server, w)
    assert len(samples) == w.num_requests, "warm-up requests are not recorded"
    assert all(s.ok for s in samples), [s.error for s in samples]
    for s in samples:
        assert s.output_tokens == w.output_tokens, "ignore_eos: exactly what was asked"
        if endpoint == "completions":
            assert s.prompt_tokens == s.planned_prompt_tokens == w.input_tokens
        else:
            assert s.prompt_tokens >= w.input_tokens
        assert s.ttft is not None and 0 < s.ttft <= s.e2el
    # tokens come as they are made (vLLM's API process, when it falls behind, sends what
    # piled up as one chunk: a request of a starved minute may arrive whole, not every one)
    assert any(len(s.itl) >= 1 for s in samples)
    m = summarize(samples)
    assert m.output_throughput > 0
    assert m.ttft_ms.mean < m.e2el_ms.mean


def test_api_key_is_enforced(server: VllmServer) -> None:
    assert httpx.get(f"{server.base_url}/health", timeout=5).status_code == 200
    r = httpx.post(f"{server.base_url}/v1/completions", timeout=5,
                   json={"model": "x", "prompt": "hi", "max_tokens": 1})
    assert r.status_code == 401
    assert served_model(server.base_url, KEY)
    # the key reached the server through its environment: its log and command line lack it
    assert KEY not in server.log_path.read_text() and KEY not in " ".join(server.argv)


def test_requests_over_the_context_are_classified_errors(server: VllmServer) -> None:
    w = workload(input_tokens=MAX_LEN + 50, num_requests=2, warmup_requests=0)
    samples = drive(server, w)
    assert [s.ok for s in samples] == [False, False]
    assert {s.error for s in samples} == {"http_400"}
    assert server.alive()


def test_metrics_and_startup_log(server: VllmServer) -> None:
    assert prom(server, "vllm:num_preemptions_total") == 0
    before = prom(server, "vllm:generation_tokens_total") or 0
    w = workload(num_requests=2, warmup_requests=0, output_tokens=7)
    drive(server, w)
    assert prom(server, "vllm:generation_tokens_total") == before + 14
    kv = kv_cache_tokens(server.log_path.read_text())
    assert kv is not None and kv > MAX_LEN


def test_multi_turn_resends_history(server: VllmServer, tmp_path: Path) -> None:
    data = tmp_path / "chats.json"
    data.write_text(json.dumps([{"conversations": [
        {"from": "human", "value": "the server model token"},
        {"from": "gpt", "value": "cache batch"},
        {"from": "human", "value": "request latency memory"},
        {"from": "gpt", "value": "queue"},
        {"from": "human", "value": "engine worker"}]}]))
    w = Workload.model_validate({
        "endpoint": "chat", "dataset": {"path": str(data), "format": "sharegpt",
                                        "multi_turn": True},
        "output_tokens": 5, "num_requests": 2, "concurrency": 2, "warmup_requests": 0})
    samples = drive(server, w)
    assert len(samples) == 6 and all(s.ok for s in samples), samples
    for conv in (samples[:3], samples[3:]):
        # each turn carries the previous turns and the replies: its prompt grows by more
        # than the new user message alone
        assert conv[0].prompt_tokens < conv[1].prompt_tokens < conv[2].prompt_tokens
        assert conv[1].prompt_tokens - conv[0].prompt_tokens >= 3 + 2  # new message + reply
        # the dataset's reply lengths set max_tokens: 2 words, then 1
        assert [s.output_tokens for s in conv] == [2, 1, 5]


def test_server_metrics_are_watched_during_load(server: VllmServer) -> None:
    w = workload(num_requests=16, concurrency=4, output_tokens=200, warmup_requests=0)
    plan = Plan(w, ModelTokenizer(str(server.spec.model)))
    # read while requests were in flight, not only before and after the round; a read of
    # /metrics takes longer on a busy machine, so rounds are run until one saw two such reads
    # (a watcher that reads only before or after the round never gets there)
    deadline = time.monotonic() + 120
    while True:
        (run,) = run_workload(Target(server.base_url, KEY), plan, watch_metrics_s=0.05)
        if run.server.samples_under_load >= 2 or time.monotonic() > deadline:
            break
    assert run.server.samples_under_load >= 2, run.server
    assert run.server.samples > run.server.samples_under_load
    # the gauges were read; the real server refreshes them too sparsely to assert their peak
    assert run.server.peak_requests_running is not None
    assert run.server.peak_kv_cache_usage is not None
    assert run.server.preemptions == 0


def test_memory_of_the_process_tree(server: VllmServer) -> None:
    assert server.pid is not None
    with MemorySampler(SystemProbe(), server.pid, interval_s=0.05) as m:
        # reading PSS of a large tree takes a while on a busy machine: load the server until
        # the sampler's thread has sampled it twice after the first sample (or a minute passed)
        deadline = time.monotonic() + 60
        while m.peaks.samples < 3 and time.monotonic() < deadline:
            drive(server, workload(num_requests=8, concurrency=4, output_tokens=40))
    p = m.peaks
    assert p.samples >= 3
    assert 10 * 2**20 < p.host_uss_bytes <= p.host_pss_bytes <= p.host_rss_bytes
    tree = process_tree_memory(server.pid)
    if server.spec.launcher == REAL_LAUNCHER:
        # API server, engine core: several processes sharing torch's pages, which RSS counts
        # once per process and PSS once in all
        assert len(tree.pids) >= 2
        assert tree.pss < 0.9 * tree.rss
    else:
        assert tree.pids == (server.pid,)


# token counts only: nothing timed, it may run beside other tests
@pytest.fixture(scope="module", params=["fake", pytest.param("real", marks=pytest.mark.engine)])
def other_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[VllmServer]:
    """A server of a second model whose tokenizer splits words into 2-7 tokens."""
    model = make_other_tokenizer_model(tmp_path_factory.mktemp("models") / "other")
    common = {"max-model-len": MAX_LEN, "max-num-seqs": 8}
    if request.param == "real":
        spec = ServerSpec(model=str(model), launcher=REAL_LAUNCHER, port=free_port(),
                          api_key=KEY, env={"VLLM_CPU_KVCACHE_SPACE": "1", **ONE_PROCESS_ENV},
                          args={**common, "load-format": "dummy", "enforce-eager": True,
                                "gpu-memory-utilization": 0.3})
    else:
        spec = ServerSpec(model=str(model), launcher=FAKE_LAUNCHER, port=free_port(),
                          api_key=KEY, args=common)
    log = tmp_path_factory.mktemp(f"other-{request.param}") / "server.log"
    with VllmServer(spec, log, startup_timeout_s=300) as s:
        yield s


def test_counts_are_the_declared_tokens_for_another_tokenizer(other_server: VllmServer
                                                              ) -> None:
    w = workload(input_tokens={"dist": "uniform", "low": 60, "high": 160}, output_tokens=9,
                 num_requests=8, shared_prefix_tokens=20)
    samples = drive(other_server, w)
    assert all(s.ok for s in samples), [s.error for s in samples]
    for s in samples:
        # the server counted exactly the planned prompt: the shared prefix plus the declared
        # length, in this model's tokens, and exactly the tokens asked for
        assert s.prompt_tokens == s.planned_prompt_tokens
        assert 20 + 60 <= s.prompt_tokens <= 20 + 160
        assert s.output_tokens == 9
    # the same word list in words would be 2-7 times fewer: words are not tokens here
    tok = ModelTokenizer(str(other_server.spec.model))
    text = Plan(w, tok).round(0, 0).sessions[0].turns[0].text
    assert len(text.split()) * 2 < len(tok.encode(text))
