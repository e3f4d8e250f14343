"Shared fixtures: a real llama.cpp OpenAI-compatible server on 127.0.0.1 serving the embedded GGUF."
import os, socket, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "sk-omind-FAKE-KEY-7f3a9c2e1b"      # recognisable, so tests can grep for leaks
KEY_ENV = "OMIND_TEST_API_KEY"

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def wait_ready(port, proc, timeout=120):
    import httpx
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: raise RuntimeError(f"llama.cpp server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {FAKE_KEY}"}, timeout=2).status_code == 200: return
        except Exception: pass
        time.sleep(0.3)
    raise TimeoutError("llama.cpp server did not come up")

def start_server(port, log_path):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] not installed (make server)")
    from omind.llm import smollm2_gguf
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "4096", "--n_threads", "2", "--api_key", FAKE_KEY,
           "--model_alias", "smollm2", "--logits_all", "true"]
    log = open(log_path, "wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

def stop_server(proc):
    proc.terminate()
    try: proc.wait(10)
    except subprocess.TimeoutExpired: proc.kill(); proc.wait()

@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    "(base_url, port) of a running llama.cpp server; stopped at the end of the session."
    port = free_port()
    proc = start_server(port, tmp_path_factory.mktemp("llama")/"server.log")
    try:
        wait_ready(port, proc)
        yield f"http://127.0.0.1:{port}/v1", port
    finally: stop_server(proc)

@pytest.fixture
def fake_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY); return KEY_ENV


@pytest.fixture
def sixth_family():
    "The toy task family of omind.testing, registered in one place for the test and removed afterwards."
    from omind.tasks import register, unregister
    from omind.testing import toy_task_family
    fam = register(toy_task_family())
    yield fam
    unregister(fam.name)
