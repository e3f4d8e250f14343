"""An API key given through the environment appears in no file under the run folder (records, response cache,
executed notebooks, manifest) and in no output, whatever the server does with it: a server (or proxy) that echoes
the Authorization header inside a normal 200 reply, a 401, a 500, and a connection dropped without a reply."""
import json, subprocess, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import pytest
from conftest import FAKE_KEY, KEY_ENV

ROOT = Path(__file__).resolve().parents[1]

class EchoAll(BaseHTTPRequestHandler):
    "An OpenAI-compatible chat endpoint that puts the request's Authorization header into whatever it answers (`mode`)."
    mode = "ok200"
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Authorization", "")
        key = auth.split()[-1] if auth else ""
        if self.mode == "drop":                   # the connection closes without a reply
            self.close_connection = True; return
        if self.mode == "ok200":                  # a normal completion whose text carries the key in several forms
            text = (f"The answer is B. Debug: Authorization: {auth}; key={key}; headers="
                    f"{json.dumps(dict(self.headers.items()))}. Evidence [T1] supports it.")
            body, status = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "echo",
                                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                                       "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
                                       "echo": {"authorization": auth}}), 200
        elif self.mode == "e401": body, status = json.dumps({"error": {"message": f"invalid api key {key}"}}), 401
        else: body, status = f"<pre>upstream failed; request headers: {dict(self.headers.items())}</pre>", 500
        data = body.encode()
        self.send_response(status); self.send_header("Content-Type", "application/json" if status != 500 else "text/html")
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)

@pytest.fixture
def echo_all():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), EchoAll)
    th = threading.Thread(target=srv.serve_forever, daemon=True); th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown(); srv.server_close(); EchoAll.mode = "ok200"

def _omind(*args):
    return subprocess.run([sys.executable, "-c", "import sys; from omind.pipeline import main; sys.exit(main(sys.argv[1:]))",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=900)

def test_api_key_never_written(echo_all, fake_key, tmp_path):
    p = tmp_path/"secret.yaml"
    p.write_text(f"extends: {ROOT/'params'/'tiny.yaml'}\n"
                 f"run: {{name: secret, results_dir: {tmp_path/'results'}, figures_dir: {tmp_path/'figures'}}}\n"
                 f"models:\n  teacher: {{backend: openai, base_url: '{echo_all}', model: echo, api_key_env: {KEY_ENV}, max_concurrency: 2, max_retries: 1}}\n"
                 "synthesis:\n  n: {mcqa: 2, classification: 1, root_cause: 1, qa: 1, conversation: 1}\n")
    outs = []
    for stage in ("knowledge", "synthesis", "review"):      # 200 replies echo the key: the stages succeed
        r = _omind("run", str(p), "--only", stage, "--log-output")
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        outs.append(r.stdout + r.stderr)
    run = tmp_path/"results"/"secret"
    recs = [json.loads(l) for l in (run/"synthesis"/"samples.jsonl").read_text().splitlines() if l.strip()]
    assert recs and any("Debug: Authorization" in json.dumps(r) for r in recs)    # the echoed text did reach the records
    assert (run/"review"/"done.json").exists() and (run/"cache"/"llm.sqlite").exists()
    # a dropped connection: the stage again through `omind run`, straight to the server (its error reaches the
    # executed notebook, the manifest and the terminal)
    EchoAll.mode = "drop"
    r = _omind("run", str(p), "--only", "synthesis", "--force", "--no-cache", "--log-output")
    assert r.returncode == 1 and "stage 'synthesis' failed" in r.stderr, r.stderr[-3000:]
    outs.append(r.stdout + r.stderr)
    # 401 and 500: the same stage code in this process (no kernel start), each into a run folder of its own
    from omind.core import load_params
    from omind.kb_build import load_knowledge
    from omind.retrieval import get_retriever
    from omind.synthesis import run_synthesis
    from omind.llm_http import EndpointError
    P0 = load_params(p); kb, R = load_knowledge(P0), get_retriever(P0)
    for mode in ("e401", "e500"):
        EchoAll.mode = mode
        with pytest.raises(EndpointError) as e: run_synthesis(load_params(p, sets=[f"run.name=secret-{mode}"]), kb, R, progress=False)
        assert mode[1:] in str(e.value), str(e.value)
        outs.append(str(e.value) + repr(e.value))
        assert (tmp_path/"results"/f"secret-{mode}"/"synthesis"/"stage.json").exists()
    files = [f for f in (tmp_path/"results").rglob("*") if f.is_file()]
    assert any(f.suffix == ".ipynb" for f in files) and any(f.name == "manifest.json" for f in files)
    assert any("set-aside" in f.parts for f in files)       # the 200 run's records, set aside by --force, are checked too
    leaks = [str(f) for f in files if FAKE_KEY.encode() in f.read_bytes() or FAKE_KEY[3:15].encode() in f.read_bytes()]
    assert leaks == [], leaks
    assert [o[:200] for o in outs if FAKE_KEY in o or FAKE_KEY[3:15] in o] == []
    man = json.loads((run/"manifest.json").read_text())
    assert man["stages"]["synthesis"]["status"] == "failed" and "failed" in man["stages"]["synthesis"]["error"]
    # the key's NAME is recorded (that is how a rerun finds it), its value never
    assert KEY_ENV in (run/"manifest.json").read_text()
