"""A stand-in vLLM server: same argv shape, endpoints, streaming format, and failure messages.

Run it as `python -m autotune.testing.fake_vllm --model M --port P [vLLM-style options]`. It
models a batching engine: at most `--max-num-seqs` requests decode at once, each token takes
`--fake-tpot-ms`, the rest queue. Fault switches (`--fake-*`) script start-up failures.

Prompts are counted with the model's own `tokenizer.json` when `--model` is a directory that
has one (as vLLM counts them; for chat, the messages' contents without a template), else one
token per word (`autotune.testing.fake_tokenizer.WordTokenizer`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fake_vllm")
    p.add_argument("--model", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key")
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-num-batched-tokens", type=int)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--load-format", default="auto")
    # the default from the environment: one tuner's servers start slowly, another's sharing its
    # study (and space) do not
    p.add_argument("--fake-startup-s", type=float,
                   default=float(os.environ.get("FAKE_VLLM_STARTUP_S", "0.2")))
    p.add_argument("--fake-tpot-ms", type=float, default=2.0)
    p.add_argument("--fake-tpot-scale", type=float, default=1.0,
                   help="every token takes this many times --fake-tpot-ms: long tokens keep the "
                        "scheduling delays of a loaded machine small beside them")
    p.add_argument("--fake-startup-mib", type=int, default=0,
                   help="hold this much memory during start-up only, as compilation does")
    p.add_argument("--fake-garble-from", type=int, default=-1,
                   help="from this output token on, other words: a setting whose numerics "
                        "change what the model says (-1: never)")
    p.add_argument("--fake-resident-mib", type=int, default=0,
                   help="hold this much memory for the server's whole life")
    p.add_argument("--fake-base-mib", type=int, default=0,
                   help="held like --fake-resident-mib, and meant to be set for every candidate: "
                        "a floor beside which the process's own few MiB of noise are small")
    p.add_argument("--fake-max-memory-utilization", type=float, default=0.9)
    p.add_argument("--fake-crash", action=argparse.BooleanOptionalAction, default=False,
                   help="exit 1 during start-up")
    p.add_argument("--fake-missing-module",
                   help="exit 1 during start-up as an engine install that lacks this module")
    p.add_argument("--fake-hang", action="store_true", help="never become healthy")
    p.add_argument("--fake-engine-dead", action="store_true",
                   help="log that the engine failed to start, then linger silent, as vLLM's "
                        "API server has been seen to")
    p.add_argument("--fake-ignore-sigterm", action="store_true",
                   help="ignore SIGTERM, as a busy or wedged server may")
    p.add_argument("--fake-stray", action="store_true",
                   help="start a child that leaves the process group (a session of its own)")
    p.add_argument("--fake-die-after", type=int, default=0,
                   help="exit abruptly when this many requests have started (0: never)")
    p.add_argument("--fake-preemptions-per-request", type=float, default=0.0)
    p.add_argument("--fake-hang-after", type=int, default=0,
                   help="wedge (no token, no /health) when this many requests have started")
    p.add_argument("--fake-models-status", type=int, default=200,
                   help="the status /v1/models answers with")
    p.add_argument("--fake-leak-kib-per-request", type=int, default=0,
                   help="keep this much memory per request, forever")
    p.add_argument("--fake-garbage-chunk", action="store_true",
                   help="stream a chunk that is JSON but not an object")
    return p.parse_args(config_argv(argv))


def config_argv(argv: list[str] | None) -> list[str]:
    """`--config FILE` as vLLM reads it: the file's options first, the command line's after
    (which win)."""
    import sys

    import yaml

    args = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in args:
        return args
    i = args.index("--config")
    doc = yaml.safe_load(Path(args[i + 1]).read_text()) or {}
    from_file = []
    for k, v in doc.items():
        if isinstance(v, bool):
            from_file += [f"--{k}"] if v else [f"--no-{k}"]
        else:
            from_file += [f"--{k}", str(v)]
    return from_file + args[:i] + args[i + 2:]


class Engine:
    """Batching model: `max_num_seqs` requests decode at once, each token takes `tpot_s`."""

    def __init__(self, max_num_seqs: int, tpot_s: float) -> None:
        self.slots = asyncio.Semaphore(max_num_seqs)
        self.tpot_s = tpot_s
        self.running = 0
        self.waiting = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.started = 0
        self.preemptions = 0.0


def token_counter(model: str) -> Callable[[str], int]:
    path = Path(model) / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        return lambda text: len(tok.encode(text, add_special_tokens=True).ids)
    return lambda text: len(text.split())


def make_app(args: argparse.Namespace, engine: Engine) -> web.Application:
    count = token_counter(args.model)

    def authorized(request: web.Request) -> bool:
        return not args.api_key or request.headers.get("Authorization") == (
            f"Bearer {args.api_key}")

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def models(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.json_response({"error": "Unauthorized"}, status=401)
        if args.fake_models_status != 200:
            return web.Response(text="<html>upstream error</html>",
                                status=args.fake_models_status)
        return web.json_response({"object": "list", "data": [{"id": args.model}]})

    async def metrics(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.json_response({"error": "Unauthorized"}, status=401)
        text = (
            f'vllm:num_requests_running{{engine="0"}} {engine.running}\n'
            f'vllm:num_requests_waiting{{engine="0"}} {engine.waiting}\n'
            f'vllm:num_preemptions_total{{engine="0"}} {engine.preemptions}\n'
            f'vllm:kv_cache_usage_perc{{engine="0"}} {min(1.0, engine.running / 100):.3f}\n'
            f'vllm:prompt_tokens_total{{engine="0"}} {engine.prompt_tokens}\n'
            f'vllm:generation_tokens_total{{engine="0"}} {engine.generation_tokens}\n'
        )
        return web.Response(text=text)

    async def generate(request: web.Request) -> web.StreamResponse:
        if not authorized(request):
            return web.json_response({"error": "Unauthorized"}, status=401)
        chat = request.path.endswith("/chat/completions")
        req = await request.json()
        if chat:
            text = " ".join(str(m.get("content", "")) for m in req.get("messages", []))
        else:
            text = str(req.get("prompt", ""))
        n_prompt = count(text)
        n_out = int(req.get("max_tokens") or 16)
        if n_prompt + n_out > args.max_model_len:
            return web.json_response({"error": "prompt too long"}, status=400)
        if float(req.get("temperature", 0)) < 0:
            return web.json_response({"error": {"message": "temperature must be "
                                                "non-negative, got -1.0"}}, status=400)
        engine.started += 1
        if args.fake_die_after and engine.started >= args.fake_die_after:
            print("RuntimeError: EngineCore encountered a fatal error.", flush=True)
            os._exit(1)
        engine.preemptions += args.fake_preemptions_per_request
        if args.fake_leak_kib_per_request:  # touched pages, never freed: a leak
            _LEAKED.append(bytearray(b"\x01") * (args.fake_leak_kib_per_request * 1024))
        if args.fake_hang_after and engine.started >= args.fake_hang_after:
            print("wedged: the event loop stops", flush=True)
            while True:
                time.sleep(1)  # blocks every stream and /health, the process stays alive
        def garbled(i: int) -> bool:
            return bool(0 <= args.fake_garble_from <= i)

        def word(i: int) -> str:
            return f" {'x' if garbled(i) else 'w'}{i}"

        if not req.get("stream"):  # one JSON answer (the quality guard's greedy requests)
            body_text = "".join(word(i) for i in range(n_out))
            return web.json_response({"object": "text_completion", "choices": [
                {"index": 0, "text": body_text, "finish_reason": "length",
                 "token_ids": [1000 + i if garbled(i) else i for i in range(n_out)]}],
                "usage": {
                "prompt_tokens": n_prompt, "completion_tokens": n_out,
                "total_tokens": n_prompt + n_out}})
        engine.waiting += 1
        async with engine.slots:
            engine.waiting -= 1
            engine.running += 1
            try:
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await resp.prepare(request)
                kind = "chat.completion.chunk" if chat else "text_completion"
                if args.fake_garbage_chunk:
                    await resp.write(b"data: [1, 2, 3]\n\n")
                for i in range(n_out):
                    if engine.tpot_s:
                        await asyncio.sleep(engine.tpot_s)
                    choice: dict[str, Any] = {"index": 0, "finish_reason":
                                              "length" if i == n_out - 1 else None}
                    if chat:
                        choice["delta"] = {"content": word(i)}
                    else:
                        choice["text"] = word(i)
                    await resp.write(b"data: " + json.dumps(
                        {"object": kind, "choices": [choice]}).encode() + b"\n\n")
                engine.prompt_tokens += n_prompt
                engine.generation_tokens += n_out
                if (req.get("stream_options") or {}).get("include_usage"):
                    usage = {"prompt_tokens": n_prompt, "completion_tokens": n_out,
                             "total_tokens": n_prompt + n_out}
                    await resp.write(b"data: " + json.dumps(
                        {"choices": [], "usage": usage}).encode() + b"\n\n")
                await resp.write(b"data: [DONE]\n\n")
                await resp.write_eof()
                return resp
            finally:
                engine.running -= 1

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/completions", generate)
    app.router.add_post("/v1/chat/completions", generate)
    return app


_RESIDENT = bytearray()  # --fake-resident-mib: kept until the server exits
_LEAKED: list[bytearray] = []  # --fake-leak-kib-per-request


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    # where it may run: a server of trials side by side is pinned to its own cores
    print(f"fake vLLM starting: {args}; cores: {sorted(os.sched_getaffinity(0))} "
          f"omp-bind: {os.environ.get('VLLM_CPU_OMP_THREADS_BIND', '')}", flush=True)
    # as vLLM: the flag prints with the arguments above; the environment's key is used unsaid
    args.api_key = args.api_key or os.environ.get("VLLM_API_KEY")
    if args.fake_ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.fake_stray:
        # named after the working directory and port, so a test finds its own strays
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)",
                          f"fake_vllm_stray cwd={os.getcwd()} port={args.port}"],
                         start_new_session=True)
    held = bytearray(b"\x01") * (args.fake_startup_mib * 2**20)  # resident, not lazily mapped
    time.sleep(args.fake_startup_s)
    del held
    global _RESIDENT
    _RESIDENT = bytearray(b"\x01") * ((args.fake_resident_mib + args.fake_base_mib) * 2**20)
    if args.gpu_memory_utilization > args.fake_max_memory_utilization:
        print("ValueError: Available memory on node 0 (7.6 GiB) is less than desired CPU memory "
              f"utilization ({args.gpu_memory_utilization})", flush=True)
        return 1
    if args.fake_missing_module:
        print(f"ModuleNotFoundError: No module named '{args.fake_missing_module}'", flush=True)
        return 1
    if args.fake_crash:
        print("RuntimeError: Engine core initialization failed.", flush=True)
        return 1
    if args.fake_hang:
        while True:
            time.sleep(1)
    if args.fake_engine_dead:
        print("RuntimeError: Engine core initialization failed. See root cause above. "
              "Failed core proc(s): {}", flush=True)
        while True:
            time.sleep(1)
    kv_tokens = int(args.gpu_memory_utilization * 100_000)
    print(f"Auto set ({kv_tokens * 2**12 / 2**30:.2f}/8.00) GiB for KV cache on node 0",
          flush=True)
    print(f"CPU KV cache size: {kv_tokens:,} tokens, Maximum concurrency for "
          f"{args.max_model_len} tokens per request: {kv_tokens / args.max_model_len:.2f}x",
          flush=True)
    print(f"Starting vLLM server on http://{args.host}:{args.port}", flush=True)
    engine = Engine(args.max_num_seqs, args.fake_tpot_ms * args.fake_tpot_scale / 1000.0)
    web.run_app(make_app(args, engine), host=args.host, port=args.port, print=None,
                access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
