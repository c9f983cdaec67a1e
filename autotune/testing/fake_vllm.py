"""A stand-in vLLM server: same argv shape, endpoints, streaming format, and failure messages.

Run it as `python -m autotune.testing.fake_vllm --model M --port P [vLLM-style options]`. It
models a batching engine: at most `--max-num-seqs` requests decode at once, each token takes
`--fake-tpot-ms`, the rest queue. Fault switches (`--fake-*`) script start-up failures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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
    p.add_argument("--fake-startup-s", type=float, default=0.2)
    p.add_argument("--fake-tpot-ms", type=float, default=2.0)
    p.add_argument("--fake-max-memory-utilization", type=float, default=0.9)
    p.add_argument("--fake-crash", action="store_true", help="exit 1 during start-up")
    p.add_argument("--fake-hang", action="store_true", help="never become healthy")
    return p.parse_args(argv)


class Engine:
    def __init__(self, max_num_seqs: int, tpot_s: float) -> None:
        self.slots = threading.Semaphore(max_num_seqs)
        self.tpot_s = tpot_s
        self.lock = threading.Lock()
        self.running = 0
        self.waiting = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0


def make_handler(args: argparse.Namespace, engine: Engine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *a: Any) -> None:
            pass

        def _auth(self) -> bool:
            if args.api_key and self.headers.get("Authorization") != f"Bearer {args.api_key}":
                self._json(401, {"error": "Unauthorized"})
                return False
            return True

        def _json(self, code: int, obj: Any) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if not self._auth():
                return
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": args.model}]})
            elif self.path == "/metrics":
                with engine.lock:
                    text = (
                        f'vllm:num_requests_running{{engine="0"}} {engine.running}\n'
                        f'vllm:num_requests_waiting{{engine="0"}} {engine.waiting}\n'
                        'vllm:num_preemptions_total{engine="0"} 0.0\n'
                        'vllm:kv_cache_usage_perc{engine="0"} 0.0\n'
                        f'vllm:prompt_tokens_total{{engine="0"}} {engine.prompt_tokens}\n'
                        f'vllm:generation_tokens_total{{engine="0"}} {engine.generation_tokens}\n'
                    )
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            req = json.loads(self.rfile.read(length) or b"{}")
            if not self._auth():
                return
            chat = self.path == "/v1/chat/completions"
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                self._json(404, {"error": "not found"})
                return
            text = (req["messages"][-1]["content"] if chat else req.get("prompt", "")) or ""
            n_prompt = len(str(text).split())
            n_out = int(req.get("max_tokens") or 16)
            if n_prompt + n_out > args.max_model_len:
                self._json(400, {"error": "prompt too long"})
                return
            with engine.lock:
                engine.waiting += 1
            engine.slots.acquire()
            with engine.lock:
                engine.waiting -= 1
                engine.running += 1
            try:
                self._stream(req, chat, n_prompt, n_out)
            finally:
                engine.slots.release()
                with engine.lock:
                    engine.running -= 1

        def _stream(self, req: dict[str, Any], chat: bool, n_prompt: int, n_out: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

            def send(obj: Any) -> None:
                self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
                self.wfile.flush()

            for i in range(n_out):
                time.sleep(engine.tpot_s)
                choice: dict[str, Any] = {"index": 0, "finish_reason":
                                          "length" if i == n_out - 1 else None}
                if chat:
                    choice["delta"] = {"content": f" w{i}"}
                else:
                    choice["text"] = f" w{i}"
                send({"object": "chat.completion.chunk" if chat else "text_completion",
                      "choices": [choice]})
            with engine.lock:
                engine.prompt_tokens += n_prompt
                engine.generation_tokens += n_out
            if (req.get("stream_options") or {}).get("include_usage"):
                send({"choices": [], "usage": {"prompt_tokens": n_prompt,
                                               "completion_tokens": n_out,
                                               "total_tokens": n_prompt + n_out}})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    print(f"fake vLLM starting: {args}", flush=True)
    time.sleep(args.fake_startup_s)
    if args.gpu_memory_utilization > args.fake_max_memory_utilization:
        print("ValueError: Available memory on node 0 (7.6 GiB) is less than desired CPU memory "
              f"utilization ({args.gpu_memory_utilization})", flush=True)
        return 1
    if args.fake_crash:
        print("RuntimeError: Engine core initialization failed.", flush=True)
        return 1
    if args.fake_hang:
        while True:
            time.sleep(1)
    kv_tokens = int(args.gpu_memory_utilization * 100_000)
    print(f"CPU KV cache size: {kv_tokens:,} tokens, Maximum concurrency for "
          f"{args.max_model_len} tokens per request: {kv_tokens / args.max_model_len:.2f}x",
          flush=True)
    engine = Engine(args.max_num_seqs, args.fake_tpot_ms / 1000.0)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args, engine))
    server.daemon_threads = True
    print(f"Starting vLLM server on http://{args.host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
