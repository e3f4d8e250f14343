"""The API key never leaves the OpenAI-compatible backend: a local server echoes the request headers back in a 200
body of an unexpected shape, in 4xx and 5xx bodies, in a malformed status line (a connection-level error), and cut
at the length of an error excerpt; a closed port gives a plain connection error. The key must appear in no exception
text (chained ones included), no captured output or log line, and no file written under the run's results folder."""
import json, logging, socket, threading, traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import pytest
from conftest import FAKE_KEY, KEY_ENV, free_port
from omind.llm_http import OpenAILLM, EndpointError
from omind.llm_cache import CachedLLM
from omind.llm import GenConfig
from omind.model_store import tiny_model_dir

PLAIN_KEY = "omind-plain-Zq81xY5w3LkP0v"          # a key without the `sk-` shape: only its value can find it

def leaked(text: str, key: str) -> bool:
    "The key, or any 10-character piece of it (a key cut in half by an excerpt), is in `text`."
    return any(key[i:i+10] in text for i in range(len(key) - 9))

class Echo(BaseHTTPRequestHandler):
    "Answers every POST according to the first path segment, echoing the request headers back."
    def log_message(self, *a): pass               # the server's own log is not the backend's output

    def do_POST(self):
        mode = self.path.strip("/").split("/")[0]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Authorization", "")
        echo = json.dumps({"authorization": auth, "you_sent": dict(self.headers.items())})
        if mode == "badstatus":                   # not HTTP at all: the client fails while parsing the status line
            self.wfile.write(f"HTTP/1.1 2OO {auth}\r\n\r\n".encode()); self.wfile.flush()
            self.close_connection = True; return
        status, ctype, body = {
            "shape200": (200, "application/json", echo),                                  # 200, unexpected shape
            "nologprobs200": (200, "application/json", json.dumps({"choices": [{"message": {"content": "x"}}],
                                                                   "debug": dict(self.headers.items())})),
            "text200": (200, "text/plain", f"ok {auth}"),                                 # 200, not JSON
            "e400": (400, "application/json", json.dumps({"error": {"message": f"bad request from {auth}"}})),
            "e401": (401, "text/plain", f"invalid api key: {auth.split()[-1] if auth else ''}"),
            "e500": (500, "text/html", f"<pre>upstream failed; request headers: {echo}</pre>"),
            "cut400": (400, "text/plain", "." * 280 + "token=" + auth.split()[-1] if auth else ""),
        }[mode]
        data = body.encode()
        self.send_response(status); self.send_header("Content-Type", ctype); self.send_header("Content-Length", str(len(data)))
        self.end_headers(); self.wfile.write(data)

@pytest.fixture(scope="module")
def echo_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    th = threading.Thread(target=srv.serve_forever, daemon=True); th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown(); srv.server_close()

CALLS = {
    "chat": lambda llm: llm.chat(["hello"], GenConfig(max_new_tokens=4)),
    "score_next_token": lambda llm: llm.score_next_token(["hello"], ["yes", "no"]),
    "score_choices": lambda llm: llm.score_choices(["hello"], ["yes", "no"]),
}
CASES = [("shape200", "chat"), ("shape200", "score_next_token"), ("shape200", "score_choices"),
         ("nologprobs200", "score_next_token"), ("text200", "chat"), ("e400", "chat"), ("e400", "score_choices"),
         ("e401", "chat"), ("e500", "chat"), ("e500", "score_next_token"), ("badstatus", "chat"), ("cut400", "chat"),
         ("refused", "chat")]

@pytest.mark.parametrize("key", [FAKE_KEY, PLAIN_KEY], ids=["sk-key", "plain-key"])
@pytest.mark.parametrize("mode,call", CASES, ids=[f"{m}-{c}" for m, c in CASES])
def test_key_never_leaves_the_backend(echo_server, mode, call, key, monkeypatch, tmp_path, capfd, caplog):
    monkeypatch.setenv(KEY_ENV, key)
    results = tmp_path/"results"/"run"
    base = f"http://127.0.0.1:{free_port()}/v1" if mode == "refused" else f"{echo_server}/{mode}/v1"
    llm = CachedLLM(OpenAILLM("echo", base, api_key_env=KEY_ENV, max_retries=1,
                              tokenizer=str(tiny_model_dir())), results/"cache"/"llm.sqlite")
    caplog.set_level(logging.DEBUG)              # whatever httpx / httpcore log at any level is captured too
    with pytest.raises(EndpointError) as ei: CALLS[call](llm)
    e = ei.value
    texts = {"message": str(e), "repr": repr(e), "traceback": "".join(traceback.format_exception(e))}
    # what the pipeline and the executed notebook keep of a failed stage: the message and the traceback
    results.mkdir(parents=True, exist_ok=True)
    (results/"manifest.json").write_text(json.dumps({"status": "failed", "error": str(e)[:2000]}))
    (results/"error.txt").write_text(texts["traceback"])
    out = capfd.readouterr()
    texts.update(stdout=out.out, stderr=out.err, log="\n".join(r.getMessage() for r in caplog.records))
    assert [k for k, t in texts.items() if leaked(t, key)] == []
    files = [f for f in (tmp_path/"results").rglob("*") if f.is_file()]
    assert files and [str(f) for f in files if leaked(f.read_bytes().decode("utf-8", "replace"), key)] == []
    # the error is still useful: it names the endpoint, and what went wrong
    assert base in str(e) or "score_choices" in str(e), str(e)
    if mode.startswith("e"): assert mode[1:4] in str(e)

def test_echoed_header_is_really_sent(echo_server, monkeypatch):
    "The server does see the key (so the test above is not passing because nothing was sent)."
    import httpx
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    r = httpx.post(f"{echo_server}/shape200/v1/chat/completions", json={}, headers={"Authorization": f"Bearer {FAKE_KEY}"})
    assert FAKE_KEY in r.text
