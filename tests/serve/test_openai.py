"""End-to-end test of `serve` driven by the official `openai` Python client (pinned and installed
by scripts/serve-test.sh), on the real SmolLM2 model, CPU backend, 127.0.0.1.

    python3 tests/serve/test_openai.py SERVE_BINARY MODEL.gguf

Starts the server on a free port and checks: greedy answers of 8 concurrent requests equal the
same requests sent one at a time; streamed deltas joined equal the non-streamed text (chat and
completions, with usage); stop strings against the uncut answer; a client that disconnects
mid-stream frees its slot (seen in /metrics); each bad input gets its status and OpenAI error
JSON and the next good request still succeeds; 64 requests over 16 connections all complete and
the server's RSS returns near its idle level; SIGTERM during a request lets it finish and exits 0.
Prints `serve: N passed, M failed`; exits 1 on any failure.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

import openai

KEY = "test-key-123"
CTX = 256
MAX_SEQS = 8
PROMPTS = [
    "What is the capital of France?",
    "Name three colours.",
    "Write a haiku about the sea.",
    "What is 2 + 2?",
    "Say hello in Spanish.",
    "Who wrote Hamlet?",
    "List two fruits.",
    "What is water made of?",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, model):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(os.environ.get("SERVE_LOG", "/tmp/serve-test.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "--model", model, "--port", str(self.port), "--ctx", str(CTX),
             "--max-seqs", str(MAX_SEQS), "--max-queue", "64", "--api-key", KEY,
             "--max-body", "1MiB", "--shutdown-timeout", "60"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode} at start (log: {self.log.name})")
            try:
                if self.raw("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("serve did not answer /health within 120 s")

    def raw(self, method, path, body=None, key=KEY, headers=None):
        """(status, parsed JSON or text, headers) of one plain HTTP request."""
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        h = {"Content-Type": "application/json"}
        if key:
            h["Authorization"] = f"Bearer {key}"
        h.update(headers or {})
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status, text, hdrs = r.status, r.read().decode(), r.headers
        except urllib.error.HTTPError as e:
            status, text, hdrs = e.code, e.read().decode(), e.headers
        try:
            return status, json.loads(text), hdrs
        except ValueError:
            return status, text, hdrs

    def metrics(self):
        _, text, _ = self.raw("GET", "/metrics")
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def client(server, **kw):
    return openai.OpenAI(base_url=server.base + "/v1", api_key=KEY, max_retries=0, timeout=300, **kw)


def chat(c, model, prompt, **kw):
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                  temperature=0, max_tokens=kw.pop("max_tokens", 16), **kw)
    return r.choices[0].message.content, r.choices[0].finish_reason, r.usage


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def test_models(s, model):
    ids = [m.id for m in client(s).models.list().data]
    expect(ids == [model], f"models {ids}")


def test_concurrent_greedy_equals_one_at_a_time(s, model):
    c = client(s)
    alone = [chat(c, model, p) for p in PROMPTS]
    together = [None] * len(PROMPTS)
    start = threading.Barrier(len(PROMPTS))

    def one(i):
        start.wait()
        together[i] = chat(client(s), model, PROMPTS[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p, a, b in zip(PROMPTS, alone, together):
        expect(a[0] == b[0] and a[1] == b[1], f"{p!r}: alone {a[0]!r}/{a[1]} vs concurrent {b[0]!r}/{b[1]}")
        expect(a[2].completion_tokens == b[2].completion_tokens and a[2].prompt_tokens == b[2].prompt_tokens,
               f"{p!r}: usage {a[2]} vs {b[2]}")
        expect(a[0], f"{p!r}: empty answer")
    expect(s.metrics()["vramless_engine_steps_total"] > 0, "no engine steps counted")


def test_streamed_deltas_equal_the_whole_answer(s, model):
    c = client(s)
    for prompt in PROMPTS[:2]:
        text, finish, usage = chat(c, model, prompt, max_tokens=20)
        parts, last_finish, stream_usage, roles = [], None, None, []
        for chunk in c.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                               temperature=0, max_tokens=20, stream=True,
                                               stream_options={"include_usage": True}):
            if chunk.usage is not None:
                stream_usage = chunk.usage
            for ch in chunk.choices:
                if ch.delta.role:
                    roles.append(ch.delta.role)
                if ch.delta.content:
                    parts.append(ch.delta.content)
                if ch.finish_reason:
                    last_finish = ch.finish_reason
        expect("".join(parts) == text, f"chat stream {''.join(parts)!r} vs {text!r}")
        expect(last_finish == finish, f"finish {last_finish} vs {finish}")
        expect(roles == ["assistant"], f"roles {roles}")
        expect(stream_usage is not None and stream_usage.completion_tokens == usage.completion_tokens
               and stream_usage.total_tokens == usage.total_tokens, f"usage {stream_usage} vs {usage}")
    whole = c.completions.create(model=model, prompt="The capital of France is", max_tokens=12, temperature=0)
    parts = [ch.choices[0].text for ch in c.completions.create(
        model=model, prompt="The capital of France is", max_tokens=12, temperature=0, stream=True) if ch.choices]
    expect("".join(parts) == whole.choices[0].text, f"completion stream {parts} vs {whole.choices[0].text!r}")
    expect(whole.usage.completion_tokens == 12 and whole.choices[0].finish_reason == "length",
           f"completion usage {whole.usage}")


def test_stop_strings_cut_the_answer(s, model):
    c = client(s)
    uncut = c.completions.create(model=model, prompt="The capital of France is", max_tokens=16, temperature=0)
    text = uncut.choices[0].text
    # A stop string taken from the middle of the uncut answer (the outside reference).
    stop = text[len(text) // 2:len(text) // 2 + 3]
    expect(len(stop) == 3, f"answer too short: {text!r}")
    want = text[:text.index(stop)]
    for stream in (False, True):
        if stream:
            got = "".join(ch.choices[0].text for ch in c.completions.create(
                model=model, prompt="The capital of France is", max_tokens=16, temperature=0,
                stop=[stop], stream=True) if ch.choices)
        else:
            r = c.completions.create(model=model, prompt="The capital of France is", max_tokens=16,
                                     temperature=0, stop=[stop])
            got = r.choices[0].text
            expect(r.choices[0].finish_reason == "stop", f"finish {r.choices[0].finish_reason}")
        expect(got == want, f"stop {stop!r} (stream={stream}): {got!r} vs {want!r}")


def wait_until(what, cond, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


def test_disconnect_frees_the_slot(s, model):
    before = s.metrics()['vramless_requests_total{outcome="cancelled"}']
    c = client(s)
    stream = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Tell a long story."}],
                                       temperature=0, max_tokens=CTX - 60, stream=True)
    got = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            got += 1
            if got == 3:
                break
    expect(s.metrics()["vramless_running_sequences"] == 1, "the stream was not running")
    stream.close()
    wait_until("the disconnected request's slot is free", lambda: (
        s.metrics()["vramless_running_sequences"] == 0 and s.metrics()["vramless_kv_blocks_used"] == 0))
    m = s.metrics()
    expect(m['vramless_requests_total{outcome="cancelled"}'] == before + 1, f"cancelled count {m}")
    expect(m["vramless_completion_tokens_total"] > 0, "no tokens counted")


def check_error(status, body, want_status, want_param=None, want_code=None, what=""):
    expect(status == want_status, f"{what}: status {status} (want {want_status}): {body}")
    expect(isinstance(body, dict) and isinstance(body.get("error"), dict), f"{what}: not error JSON: {body}")
    e = body["error"]
    expect(set(e) == {"message", "type", "param", "code"} and e["message"], f"{what}: error fields {e}")
    if want_param is not None:
        expect(e["param"] == want_param, f"{what}: param {e['param']} (want {want_param})")
    if want_code is not None:
        expect(e["code"] == want_code, f"{what}: code {e['code']} (want {want_code})")


def test_bad_inputs_get_their_status_and_the_next_request_succeeds(s, model):
    c = client(s)
    good = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}
    long_prompt = " ".join(["word"] * (CTX + 10))
    cases = [
        ("bad JSON", "POST", "/v1/chat/completions", b"{\"messages\": [", KEY, 400, None, "invalid_json"),
        ("not an object", "POST", "/v1/chat/completions", [1, 2], KEY, 400, None, None),
        ("missing messages", "POST", "/v1/chat/completions", {"model": model}, KEY, 400, "messages", None),
        ("wrong-typed max_tokens", "POST", "/v1/chat/completions", dict(good, max_tokens="many"), KEY, 400, "max_tokens", None),
        ("max_tokens 0", "POST", "/v1/chat/completions", dict(good, max_tokens=0), KEY, 400, "max_tokens", None),
        ("prompt + max_tokens beyond the context", "POST", "/v1/completions",
         {"model": model, "prompt": "Hello", "max_tokens": CTX}, KEY, 400, "max_tokens", "context_length_exceeded"),
        ("prompt beyond the context", "POST", "/v1/completions",
         {"model": model, "prompt": long_prompt, "max_tokens": 4}, KEY, 400, None, "context_length_exceeded"),
        ("n > 1", "POST", "/v1/chat/completions", dict(good, n=2), KEY, 400, "n", "unsupported_parameter"),
        ("tools", "POST", "/v1/chat/completions",
         dict(good, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]), KEY, 400, "tools", "unsupported_parameter"),
        ("logprobs", "POST", "/v1/chat/completions", dict(good, logprobs=True), KEY, 400, "logprobs", "unsupported_parameter"),
        ("unknown model", "POST", "/v1/chat/completions", dict(good, model="gpt-4o"), KEY, 404, "model", "model_not_found"),
        ("unknown route", "POST", "/v1/embeddings", good, KEY, 404, None, "unknown_url"),
        ("wrong method", "GET", "/v1/chat/completions", None, KEY, 405, None, None),
        ("body too large", "POST", "/v1/chat/completions", b"{\"x\":\"" + b"a" * (2 << 20) + b"\"}", KEY, 413, None, "request_too_large"),
        ("no API key", "POST", "/v1/chat/completions", good, None, 401, None, "invalid_api_key"),
        ("wrong API key", "GET", "/v1/models", None, "nope", 401, None, "invalid_api_key"),
    ]
    for what, method, path, body, key, status, param, code in cases:
        got, parsed, _ = s.raw(method, path, body, key=key)
        check_error(got, parsed, status, param, code, what)
        text, finish, _ = chat(c, model, "Hi", max_tokens=2)
        expect(finish in ("stop", "length"), f"after {what}: good request failed")
    # The official client raises its typed errors for the same answers.
    for exc, kw in [(openai.BadRequestError, dict(max_tokens=0)), (openai.NotFoundError, dict(model="nope"))]:
        try:
            args = dict(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
            args.update(kw)
            c.chat.completions.create(**args)
            raise AssertionError(f"{kw}: no error")
        except exc as e:
            check_error(e.status_code, e.response.json(), e.status_code, what=str(kw))
    try:
        openai.OpenAI(base_url=s.base + "/v1", api_key="wrong", max_retries=0).models.list()
        raise AssertionError("wrong key accepted")
    except openai.AuthenticationError:
        pass
    expect(s.proc.poll() is None, "the server died")


def test_load_64_requests_over_16_connections(s, model):
    # Warm up, then the idle level.
    chat(client(s), model, "Hi", max_tokens=4)
    time.sleep(0.5)
    idle = s.rss_kib()
    results, errors, lock = [], [], threading.Lock()

    def worker(w):
        c = client(s)  # one connection pool per worker
        for i in range(4):
            try:
                parts, finish, usage = [], None, None
                for chunk in c.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": PROMPTS[(w + i) % len(PROMPTS)]}],
                        temperature=0.7, seed=w * 4 + i, max_tokens=8, stream=True,
                        stream_options={"include_usage": True}):
                    if chunk.usage:
                        usage = chunk.usage
                    for ch in chunk.choices:
                        parts.append(ch.delta.content or "")
                        finish = ch.finish_reason or finish
                with lock:
                    results.append((finish, usage))
            except Exception as e:  # noqa: BLE001 - every failure is reported
                with lock:
                    errors.append(repr(e))

    t0 = time.time()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - t0
    expect(not errors, f"{len(errors)} requests failed: {errors[:3]}")
    expect(len(results) == 64, f"{len(results)} of 64 answered")
    expect(all(f in ("stop", "length") and u and u.completion_tokens >= 1 for f, u in results),
           f"bad results {results[:4]}")
    m = s.metrics()
    expect(m["vramless_queue_length"] == 0 and m["vramless_running_sequences"] == 0, f"not drained: {m}")
    expect(m['vramless_requests_total{outcome="rejected"}'] == 0, "requests rejected")
    time.sleep(1.0)
    after = s.rss_kib()
    print(f"    load: 64 requests in {took:.1f} s; RSS idle {idle / 1024:.1f} MiB, after {after / 1024:.1f} MiB")
    expect(after <= idle * 1.15 + 16 * 1024, f"RSS {after} KiB after the load vs {idle} KiB idle")


def test_sigterm_finishes_the_running_request_and_exits_0(s, model):
    c = client(s)
    result = {}

    def run():
        result["answer"] = chat(c, model, "Tell a story.", max_tokens=24)

    t = threading.Thread(target=run)
    t.start()
    wait_until("the request runs", lambda: s.metrics()["vramless_running_sequences"] == 1, 30)
    s.proc.send_signal(signal.SIGTERM)
    t.join(120)
    expect("answer" in result and result["answer"][2].completion_tokens >= 1, f"running request lost: {result}")
    rc = s.proc.wait(60)
    expect(rc == 0, f"exit code {rc}")


def main():
    binary, model_path = sys.argv[1], sys.argv[2]
    print(f"serve test: openai {openai.__version__}, {binary}, {model_path}")
    s = Server(binary, model_path)
    model = client(s).models.list().data[0].id
    tests = [test_models, test_concurrent_greedy_equals_one_at_a_time, test_streamed_deltas_equal_the_whole_answer,
             test_stop_strings_cut_the_answer, test_disconnect_frees_the_slot,
             test_bad_inputs_get_their_status_and_the_next_request_succeeds, test_load_64_requests_over_16_connections,
             test_sigterm_finishes_the_running_request_and_exits_0]
    passed = failed = 0
    try:
        for t in tests:
            t0 = time.time()
            try:
                t(s, model)
                passed += 1
                print(f"  ok   {t.__name__} ({time.time() - t0:.1f} s)")
            except Exception:  # noqa: BLE001
                failed += 1
                print(f"  FAIL {t.__name__}:\n{traceback.format_exc()}")
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
    if failed:
        print(f"server log: {s.log.name}")
    print(f"serve: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
