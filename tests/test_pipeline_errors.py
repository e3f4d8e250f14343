"""`omind run` when it cannot or must not go on (tiny params): a missing upstream stage (refused before anything is
written), an unknown stage, a failing cell named with its notebook and cell, a stage kernel that dies with `omind
run` (SIGTERM, SIGKILL), and a run refused while a previous kernel still holds the run's lock."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from pipeline_run import ROOT, params, omind, omind_cmd


def test_missing_upstream_stage(tmp_path):
    r = omind("run", str(params(tmp_path)), "--only", "dataset")
    assert r.returncode == 1 and "needs stage 'review'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path/"results").exists()                  # refused before anything is written: no empty run folder
    r = omind("figures", str(tmp_path/"results"/"tiny"))       # nothing finished: an error, and nothing written
    assert r.returncode == 1 and not (tmp_path/"figures").exists() and not (tmp_path/"results").exists(), r.stderr

def test_unknown_stage(tmp_path):
    r = omind("run", str(params(tmp_path)), "--only", "trainn")
    assert r.returncode == 2 and "invalid choice: 'trainn'" in r.stderr and "review" in r.stderr

def test_failing_cell_names_notebook_and_cell(tmp_path):
    "A stage that raises gives the executed notebook, the cell and the error, and a non-zero exit."
    p = params(tmp_path, extra=f"knowledge: {{triples_files: [{ROOT/'tests'/'fixtures'/'bad_triples.csv'}]}}\n")
    r = omind("run", str(p), "--only", "knowledge")
    assert r.returncode == 1, r.stderr
    assert "stage 'knowledge' failed in" in r.stderr and "02_knowledge.ipynb" in r.stderr and "cell" in r.stderr
    assert "bad_triples.csv:3" in r.stderr and "the row has 2 of 4 columns" in r.stderr
    man = json.loads((tmp_path/"results"/"tiny"/"manifest.json").read_text())
    assert man["stages"]["knowledge"]["status"] == "failed"


def _kernel_pid(lock: Path, proc, timeout=120) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        txt = lock.read_text().strip() if lock.exists() else ""
        if txt.isdigit(): return int(txt)
        assert proc.poll() is None, "omind run exited before its kernel started"
        time.sleep(0.1)
    raise TimeoutError("no kernel pid in the kernel lock")

def _alive(pid: int) -> bool:
    try: os.kill(pid, 0)
    except ProcessLookupError: return False
    try:                                             # a zombie is dead for our purposes
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except FileNotFoundError: return False

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_kernel_dies_with_the_run(tmp_path, sig):
    "Stopping `omind run` (SIGTERM) or killing it (SIGKILL) takes its stage kernel with it at once."
    p = params(tmp_path)
    proc = subprocess.Popen(omind_cmd("run", str(p), "--only", "knowledge"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = tmp_path/"results"/"tiny"/".kernel.lock"
    kpid = _kernel_pid(lock, proc)
    proc.send_signal(sig); proc.wait(30)
    assert proc.returncode != 0
    t0 = time.time()
    while _alive(kpid) and time.time() - t0 < 0.5: time.sleep(0.02)
    assert not _alive(kpid), f"kernel {kpid} outlived `omind run` ({sig.name})"
    r = omind("run", str(p), "--only", "knowledge")  # and the next run starts at once
    assert r.returncode == 0, r.stderr[-2000:]

def test_run_refuses_while_a_previous_kernel_holds_the_lock(tmp_path):
    p = params(tmp_path)
    rd = tmp_path/"results"/"tiny"; rd.mkdir(parents=True)
    code = ("import os, time; os.environ['OMIND_KERNEL_LOCK'] = %r; from omind.runner import guard_kernel; "
            "guard_kernel(); print('ok', flush=True); time.sleep(120)" % str(rd/".kernel.lock"))
    k = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        assert k.stdout.readline().strip() == "ok"
        r = omind("run", str(p), "--only", "knowledge")
        assert r.returncode == 1 and f"(pid {k.pid}) still holds" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert not (rd/"knowledge"/"done.json").exists()
    finally: k.kill(); k.wait()
