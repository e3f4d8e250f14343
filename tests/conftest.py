"""Shared fixtures and the order of the test files: a real llama.cpp OpenAI-compatible server on 127.0.0.1 serving the embedded GGUF, checked alive
after a real (batched) completion, and reported once, with its exit signal and log, when it dies."""
import os, signal, socket, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "sk-omind-FAKE-KEY-7f3a9c2e1b"      # recognisable, so tests can grep for leaks
KEY_ENV = "OMIND_TEST_API_KEY"

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

class ServerDied(RuntimeError):
    "The llama.cpp server process exited: the message has its exit code or signal and the end of its log."

def death_report(proc, log_path, n: int = 25) -> str:
    "Why the server process is gone: exit code or signal name, and the last `n` lines of its log."
    rc = proc.returncode
    how = f"killed by {signal.Signals(-rc).name}" if rc is not None and rc < 0 else f"exited with code {rc}"
    hint = (" (SIGILL: the build uses an instruction this CPU does not allow, e.g. AMX tiles from a native build;"
            " rebuild with `make clean-server server`)") if rc == -signal.SIGILL else ""
    try: tail = Path(log_path).read_text(errors="replace").splitlines()[-n:]
    except OSError: tail = ["(no log)"]
    return f"llama.cpp server {how}{hint}; last lines of {log_path}:\n" + "\n".join(tail)

def check_alive(proc, log_path):
    "Raise ServerDied (signal and log) when the server process has exited."
    if proc.poll() is not None: raise ServerDied(death_report(proc, log_path))

def wait_ready(port, proc, timeout=120, log_path=None):
    import httpx
    t0 = time.time()
    while time.time() - t0 < timeout:
        check_alive(proc, log_path)
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {FAKE_KEY}"}, timeout=2).status_code == 200: return
        except Exception: pass
        time.sleep(0.3)
    raise TimeoutError("llama.cpp server did not come up")

def first_completion(port, proc, log_path):
    """One real completion of a multi-token prompt (a batched prompt takes the CPU's matrix kernels, where a build
    for another CPU dies), then the server must still be alive."""
    import httpx
    try:
        httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=120, headers={"Authorization": f"Bearer {FAKE_KEY}"},
                   json={"model": "smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": "Name three colours of the rainbow, please."}]})
    except Exception: pass
    time.sleep(0.2)
    check_alive(proc, log_path)

def start_server(port, log_path):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] not installed (make server)")
    from omind.model_store import smollm2_gguf
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "4096", "--n_threads", "2", "--api_key", FAKE_KEY,
           "--model_alias", "smollm2", "--logits_all", "true"]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.log_path = log_path
    return proc

def stop_server(proc):
    proc.terminate()
    try: proc.wait(10)
    except subprocess.TimeoutExpired: proc.kill(); proc.wait()

@pytest.fixture(scope="module")
def _llama(tmp_path_factory):
    """The server of a test module: started once; a failure to start or a death is kept here and reported by one test
    only. Stopped when the module's tests are done, so that it takes no CPU from the tests that follow it."""
    log_path = tmp_path_factory.mktemp("llama")/"server.log"
    port = free_port()
    proc = start_server(port, log_path)
    state = {"url": f"http://127.0.0.1:{port}/v1", "port": port, "proc": proc, "log": log_path, "died": None, "reported": False}
    try:
        wait_ready(port, proc, log_path=log_path)
        first_completion(port, proc, log_path)
    except (ServerDied, TimeoutError) as e: state["died"] = str(e)
    try: yield state
    finally: stop_server(proc)

@pytest.fixture
def llama_server(_llama):
    "(base_url, port) of the running llama.cpp server. When it has died, the first test fails with why; later ones skip."
    if _llama["died"]:
        if _llama["reported"]: pytest.skip("the llama.cpp server died earlier in this session (see the first failure)")
        _llama["reported"] = True
        pytest.fail(_llama["died"], pytrace=False)
    yield _llama["url"], _llama["port"]
    if _llama["proc"].poll() is not None and not _llama["died"]:
        _llama["died"] = death_report(_llama["proc"], _llama["log"]); _llama["reported"] = True
        pytest.fail(_llama["died"], pytrace=False)

@pytest.fixture
def fake_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY); return KEY_ENV


@pytest.fixture(scope="session")
def mini_reference(tmp_path_factory, worker_id):
    """The finished, uninterrupted paper-mini run that test_pipeline.py checks and test_pipeline_resume.py compares a
    killed-and-resumed run with: run once per session. Under pytest-xdist the two files run on two workers; the first
    to ask runs it under a file lock in the session's shared temporary folder and the other waits for it and reuses it
    (the pattern pytest-xdist documents for a session fixture that must execute once)."""
    from filelock import FileLock
    from pipeline_run import load_reference, run_reference
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    tmp = shared/"mini-reference"
    with FileLock(str(shared/"mini-reference.lock")):
        ref = load_reference(tmp)
        if ref is None:
            tmp.mkdir(exist_ok=True)
            ref = run_reference(tmp)
    return ref


@pytest.fixture
def sixth_family():
    "The toy task family of omind.testing, registered in one place for the test and removed afterwards."
    from omind.tasks import register, unregister
    from omind.testing import toy_task_family
    fam = register(toy_task_family())
    yield fam
    unregister(fam.name)


# The test files that take longest (each runs whole pipelines or stages), longest first. `make test` runs pytest with
# `-n 2 --dist loadfile --no-loadscope-reorder`: every file goes to one worker, in the order collected, so starting the
# long ones first lets the short ones fill in and both workers finish together (longest-processing-time-first). Only the
# order changes; every test still runs.
SLOW_FIRST = ["test_pipeline.py", "test_pipeline_resume.py", "test_sweep.py", "test_train.py", "test_bad_inputs.py", "test_synthesis.py",
              "test_llm_http.py", "test_evaluate.py", "test_secrets.py", "test_docs.py", "test_pipeline_errors.py",
              "test_plan.py", "test_params_cli.py", "test_lmeval.py", "test_tracking.py"]

def pytest_collection_modifyitems(config, items):
    rank = {f: i for i, f in enumerate(SLOW_FIRST)}
    items.sort(key=lambda it: rank.get(it.path.name, len(rank)))      # stable: within a file, and among the rest, as collected
