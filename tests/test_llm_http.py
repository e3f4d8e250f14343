"""The OpenAI-compatible backend (the `openai` client) against a real llama.cpp server process (no mocks of the HTTP
layer), and against a tiny local server that answers 429 with Retry-After. Also: the server build is portable (no
AMX instruction in its CPU library), and a server that dies is reported with its signal and log."""
import importlib.util, json, math, re, shutil, signal, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import pytest
from conftest import (FAKE_KEY, KEY_ENV, free_port, start_server, stop_server, wait_ready, first_completion,
                      check_alive, ServerDied)
from omind.llm_http import OpenAILLM, EndpointError
from omind.llm_cache import CachedLLM
from omind.llm import GenConfig, label_probs, usage_snapshot, usage_delta
from omind.model_store import embedded_model_dir

ROOT = Path(__file__).resolve().parents[1]

def test_chat_batch(llama_server, fake_key):
    url, _ = llama_server
    llm = OpenAILLM("smollm2", url, api_key_env=fake_key, max_concurrency=2, role="teacher")
    before = usage_snapshot()
    outs = llm.chat(["What is 2+2?", [{"role": "user", "content": "Name a colour."}]], GenConfig(max_new_tokens=8))
    assert len(outs) == 2 and all(isinstance(o, str) and o for o in outs)
    u = usage_delta(before, usage_snapshot())["teacher"]          # the server's `usage` of each response, summed
    assert u["calls"] == 2 and u["prompt_tokens"] > 10 and 2 <= u["completion_tokens"] <= 16 and u["seconds"] > 0
    assert llm.usage["calls"] == 2

def test_wrong_key_is_clear_and_not_leaked(llama_server, monkeypatch):
    url, _ = llama_server
    monkeypatch.setenv("OMIND_WRONG_KEY", "sk-omind-WRONG-0000000000")
    llm = OpenAILLM("smollm2", url, api_key_env="OMIND_WRONG_KEY", max_retries=0)
    with pytest.raises(EndpointError) as e: llm.chat(["hi"], GenConfig(max_new_tokens=2))
    assert "401" in str(e.value) and "WRONG-0000" not in str(e.value)

def test_score_next_token(llama_server, fake_key):
    url, _ = llama_server
    llm = OpenAILLM("smollm2", url, api_key_env=fake_key)
    res = llm.score_next_token(["Answer yes or no: is the sky blue?"], ["yes", "no"])[0]
    assert set(res) == {"yes", "no"} and any(v > -1e9 for v in res.values())
    assert abs(sum(label_probs(res).values()) - 1) < 1e-6
    with pytest.raises(ValueError, match="score_choices"): llm.score_next_token(["Rate it 0-10."], ["1", "10"])

CHOICES = ["1", "10", "yes"]

def test_score_choices_over_http(llama_server, fake_key, tmp_path):
    """Multi-token choices via /completions with echo: '1' and '10' do not tie, and the decomposition holds. The
    backend comes from params (`models.<role>.tokenizer`, what the error message advises), not built by hand."""
    from omind.core import load_params
    from omind.backends import make_llm
    url, _ = llama_server
    P = load_params(overrides={"models": {"judge": {"backend": "openai", "base_url": url, "model": "smollm2", "api_key_env": fake_key,
                                                    "tokenizer": str(embedded_model_dir())}}})
    llm = make_llm(P.model("judge"), role="judge")
    conv = [{"role": "user", "content": "On a scale from 0 to 10, how bright is the sun? Answer with one number."}]
    res = llm.score_choices([conv, "Is the sky blue? yes or no"], CHOICES)
    assert len(res) == 2 and list(res[0]) == CHOICES
    assert all(-1e9 < v < 0 for r in res for v in r.values())
    assert res[0]["1"] != res[0]["10"]
    # P("1" ends) + P("10") = P(first token "1"), read from a call where nothing continues "1"
    p1 = llm.score_choices([conv], ["1", "2"])[0]["1"]
    assert abs(math.exp(res[0]["1"]) + math.exp(res[0]["10"]) - math.exp(p1)) < 1e-3
    nz = llm.score_choices([conv], ["10"], normalize=True)[0]["10"]
    assert abs(nz - res[0]["10"] / 2) < 1e-4                                          # "10" is two tokens for SmolLM2
    cl = CachedLLM(llm, tmp_path/"c.sqlite")                                          # cached like generation
    assert cl.score_choices([conv], ["1", "10"]) == cl.score_choices([conv], ["1", "10"]) and cl.stats == {"hits": 1, "misses": 1}

def test_score_choices_needs_tokenizer(llama_server, fake_key):
    url, _ = llama_server
    with pytest.raises(ValueError, match=r"models\.<role>\.tokenizer"):
        OpenAILLM("smollm2", url, api_key_env=fake_key).score_choices(["hi"], ["yes", "no"])

def test_cache_makes_no_second_call(llama_server, fake_key, tmp_path):
    url, _ = llama_server
    cl = CachedLLM(OpenAILLM("smollm2", url, api_key_env=fake_key), tmp_path/"c.sqlite")
    a = cl.chat(["Say hello."], GenConfig(max_new_tokens=6)); b = cl.chat(["Say hello."], GenConfig(max_new_tokens=6))
    assert a == b and cl.stats == {"hits": 1, "misses": 1}
    assert FAKE_KEY.encode() not in (tmp_path/"c.sqlite").read_bytes()

def test_endpoint_down_then_up(tmp_path, fake_key):
    "A request sent while the server is down succeeds once it comes up (retries with backoff)."
    port = free_port()
    llm = OpenAILLM("smollm2", f"http://127.0.0.1:{port}/v1", api_key_env=fake_key, max_retries=10)
    out, err = {}, {}
    def call():
        try: out["r"] = llm.chat(["Say hi."], GenConfig(max_new_tokens=4))
        except Exception as e: err["e"] = e
    t = threading.Thread(target=call); t.start()
    time.sleep(2.0)                                   # the first attempts hit a closed port
    assert t.is_alive() and not out
    proc = start_server(port, tmp_path/"server.log")
    try:
        t.join(120)
        check_alive(proc, tmp_path/"server.log")
        assert not err, err
        assert out["r"] and isinstance(out["r"][0], str)
    finally: stop_server(proc)

def test_endpoint_down_gives_clear_error(fake_key):
    llm = OpenAILLM("smollm2", f"http://127.0.0.1:{free_port()}/v1", api_key_env=fake_key, max_retries=2)
    with pytest.raises(EndpointError, match="failed after 2 retries: ConnectError"): llm.chat(["hi"])


class RateLimited(BaseHTTPRequestHandler):
    "Answers the first `limit` requests with 429 and a Retry-After header, then a chat completion with usage."
    limit, retry_after, seen = 1, "2", []
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append(time.time())
        if len(type(self).seen) <= type(self).limit:
            body, status = json.dumps({"error": {"message": "slow down"}}).encode(), 429
            self.send_response(status)
            if type(self).retry_after is not None: self.send_header("Retry-After", type(self).retry_after)
        else:
            body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                               "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
                               "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json"); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)

@pytest.fixture
def rate_limited():
    RateLimited.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), RateLimited)
    th = threading.Thread(target=srv.serve_forever, daemon=True); th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown(); srv.server_close()

@pytest.mark.parametrize("retry_after,min_wait,max_wait", [("2", 1.9, 4.0), (None, 0.0, 1.5)], ids=["retry-after-2s", "no-header"])
def test_429_is_retried_honouring_retry_after(rate_limited, fake_key, retry_after, min_wait, max_wait, monkeypatch):
    "A 429 is retried; the wait is what Retry-After asks (2 s), not the client's own short backoff (~0.5 s)."
    monkeypatch.setattr(RateLimited, "retry_after", retry_after)
    llm = OpenAILLM("m", rate_limited, api_key_env=fake_key, max_retries=3, role="judge")
    before = usage_snapshot()
    assert llm.chat(["hi"], GenConfig(max_new_tokens=4)) == ["fine"]
    assert len(RateLimited.seen) == 2
    wait = RateLimited.seen[1] - RateLimited.seen[0]
    assert min_wait <= wait <= max_wait, wait
    u = usage_delta(before, usage_snapshot())["judge"]
    assert (u["calls"], u["prompt_tokens"], u["completion_tokens"]) == (1, 11, 2)

def test_429_after_the_last_retry_is_a_clear_error(rate_limited, fake_key, monkeypatch):
    monkeypatch.setattr(RateLimited, "limit", 99); monkeypatch.setattr(RateLimited, "retry_after", "0.1")
    llm = OpenAILLM("m", rate_limited, api_key_env=fake_key, max_retries=2)
    with pytest.raises(EndpointError) as e: llm.chat(["hi"])
    assert f"{rate_limited}/chat/completions" in str(e.value) and "failed after 2 retries: HTTP 429" in str(e.value)
    assert FAKE_KEY not in str(e.value) and len(RateLimited.seen) == 3

def test_stage_summaries_record_usage_per_role(llama_server, fake_key, tmp_path):
    "A run whose teacher is the llama.cpp server records the teacher's calls and tokens in the synthesis summary and the manifest."
    url, _ = llama_server
    p = tmp_path/"usage.yaml"
    p.write_text(f"extends: {ROOT/'params'/'tiny.yaml'}\n"
                 f"run: {{name: usage, results_dir: {tmp_path/'results'}, figures_dir: {tmp_path/'figures'}}}\n"
                 f"models:\n  teacher: {{backend: openai, base_url: '{url}', model: smollm2, api_key_env: {KEY_ENV}, max_concurrency: 2}}\n"
                 "synthesis:\n  n: {mcqa: 2, classification: 0, root_cause: 0, qa: 2, conversation: 0}\n")
    for stage in ("knowledge", "synthesis"):
        r = subprocess.run([sys.executable, "-c", "import sys; from omind.pipeline import main; sys.exit(main(sys.argv[1:]))",
                            "run", str(p), "--only", stage], cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    run = tmp_path/"results"/"usage"
    summ = json.loads((run/"synthesis"/"summary.json").read_text())
    u = summ["usage"]["teacher"]
    assert u["calls"] >= 4 and u["prompt_tokens"] > 100 and u["completion_tokens"] > 0 and u["seconds"] > 0, summ["usage"]
    man = json.loads((run/"manifest.json").read_text())
    assert man["stages"]["synthesis"]["usage"] == summ["usage"]
    assert man["stages"]["knowledge"].get("usage", {}) == {}                  # no LLM in the knowledge stage
    assert "synthesis  done in" in r.stdout and "teacher: " in r.stdout     # `omind run` prints the usage of a stage


TILE = re.compile(r"^\s*[0-9a-f]+:\s+(tile\w*|ldtilecfg|sttilecfg|tdp\w+)\b", re.M)   # AMX mnemonics in objdump -d

def test_server_build_has_no_amx_instructions():
    """The installed llama.cpp CPU library holds no AMX instruction (and no AVX-512 register): a build made with
    native detection on a CPU that advertises AMX dies with SIGILL at `tilezero` on a VM that does not grant the
    tiles. The Makefile builds with GGML_NATIVE=OFF, AVX2/FMA/F16C, AVX-512 and AMX off."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None: pytest.skip("llama-cpp-python not installed (SKIP_SERVER=1)")
    libs = sorted(p for p in Path(spec.origin).parent.rglob("libggml*.so*") if p.is_file())
    assert libs, f"no ggml library under {Path(spec.origin).parent}"
    assert shutil.which("objdump"), "objdump (binutils) is needed to check the server build"
    cpu = [p for p in libs if "cpu" in p.name] or libs
    for lib in cpu:
        asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True, check=True).stdout
        assert len(asm) > 10_000, lib                                  # really disassembled
        tiles = sorted(set(TILE.findall(asm)))
        assert tiles == [], f"{lib} holds AMX instructions {tiles}: rebuild portably (`make clean-server server`)"
        assert "%zmm" not in asm, f"{lib} uses AVX-512 registers: rebuild portably (`make clean-server server`)"

def test_dead_server_is_reported_with_signal_and_log(tmp_path):
    "A server that dies (here: a stand-in that kills itself with SIGILL, as an AMX build does) is reported with its signal and log."
    log = tmp_path/"server.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-c", "import os, signal, sys; print('llama_model_loader: loaded'); "
                                 "print('ggml_backend_cpu: AMX'); sys.stdout.flush(); os.kill(os.getpid(), signal.SIGILL)"],
                                stdout=f, stderr=subprocess.STDOUT)
    proc.wait(30)
    with pytest.raises(ServerDied) as e: first_completion(free_port(), proc, log)
    msg = str(e.value)
    assert "killed by SIGILL" in msg and "AMX tiles" in msg and "ggml_backend_cpu: AMX" in msg and str(log) in msg
    with pytest.raises(ServerDied, match="exited with code 3"):
        p2 = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]); p2.wait(30); wait_ready(free_port(), p2, log_path=log)
