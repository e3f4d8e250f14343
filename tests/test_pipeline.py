"""End-to-end pipeline tests on params/tiny.yaml (tiny random model in every role):
a full run, a rerun that skips every stage, SIGKILL at several points then resume with identical results,
and clear errors for a missing upstream stage and a failing cell."""
import json, os, re, signal, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = re.compile(r"(time|seconds|elapsed|started|ended|created|duration|_at$|^date$)", re.I)

def params(tmp, name="tiny", extra=""):
    p = tmp/f"{name}.yaml"
    p.write_text(f"extends: {ROOT/'params'/'tiny.yaml'}\nrun: {{name: {name}, results_dir: {tmp/'results'}, figures_dir: {tmp/'figures'}}}\n{extra}")
    return p

def omind_cmd(*args):
    return [sys.executable, "-c", "import sys; from omind.pipeline import main; sys.exit(main(sys.argv[1:]))", *args]

def omind(*args, timeout=900):
    return subprocess.run(omind_cmd(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)

def _clean(o):
    if isinstance(o, dict): return {k: _clean(v) for k, v in o.items() if not VOLATILE.search(k)}
    if isinstance(o, list): return [_clean(v) for v in o]
    return o

def snapshot(run: Path) -> dict:
    "Everything a run produced that must not depend on interruptions: JSONL records and the dataset."
    snap = {}
    for f in sorted(run.rglob("*.jsonl")):
        if "cache" in f.parts or "notebooks" in f.parts: continue
        recs = [_clean(json.loads(l)) for l in f.read_text().splitlines() if l.strip()]
        snap[str(f.relative_to(run))] = sorted(recs, key=lambda r: json.dumps(r, sort_keys=True))
    hf = run/"dataset"/"hf"
    if hf.exists():
        from datasets import load_from_disk
        dd = load_from_disk(str(hf))
        snap["dataset"] = {s: sorted(json.dumps(_clean(r), sort_keys=True) for r in dd[s]) for s in dd}
    return snap

@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    p = params(tmp)
    t = time.time(); r = omind("run", str(p)); secs = time.time() - t
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, p, secs

def test_full_run_then_everything_skipped(full_run):
    tmp, p, secs = full_run
    run = tmp/"results"/"tiny"
    man = json.loads((run/"manifest.json").read_text())
    from omind.pipeline import available_stages
    names = [s.name for s in available_stages()]
    assert [n for n in names if man["stages"].get(n, {}).get("status") != "done"] == []
    for n in names: assert (run/"notebooks"/next(s.notebook for s in available_stages() if s.name == n)).exists()
    t = time.time(); r = omind("run", str(p)); again = time.time() - t
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("up to date, skipped") == len(names), r.stdout[-2000:]
    assert again < 60, again
    r = omind("status", str(run)); assert r.returncode == 0 and "done" in r.stdout

def test_sigkill_at_several_points_then_resume(full_run, tmp_path):
    tmp0, _, secs = full_run
    p = params(tmp_path)
    for frac in (0.15, 0.45, 0.75):                  # kill at three points of a run, resuming each time
        proc = subprocess.Popen(omind_cmd("run", str(p)), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try: proc.wait(timeout=max(5, secs*frac))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL); proc.wait()
        time.sleep(2)                                # the orphaned kernel notices its parent is gone and exits
    r = omind("run", str(p))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    a, b = snapshot(tmp0/"results"/"tiny"), snapshot(tmp_path/"results"/"tiny")
    assert a.keys() == b.keys()
    for k in a: assert a[k] == b[k], f"{k} differs after kill-and-resume"

def test_missing_upstream_stage(tmp_path):
    r = omind("run", str(params(tmp_path)), "--only", "dataset")
    assert r.returncode == 1 and "needs stage 'review'" in r.stderr and "Traceback" not in r.stderr

def test_unknown_stage(tmp_path):
    r = omind("run", str(params(tmp_path)), "--only", "trainn")
    assert r.returncode == 1 and "unknown stage 'trainn'" in r.stderr

def test_failing_cell_names_notebook_and_cell(tmp_path):
    "A stage that raises gives the executed notebook, the cell and the error, and a non-zero exit."
    p = params(tmp_path, extra=f"knowledge: {{triples_files: [{ROOT/'tests'/'fixtures'/'bad_triples.csv'}]}}\n")
    r = omind("run", str(p), "--only", "knowledge")
    assert r.returncode == 1, r.stderr
    assert "stage 'knowledge' failed in" in r.stderr and "02_knowledge.ipynb" in r.stderr and "cell" in r.stderr
    assert "bad_triples.csv:3" in r.stderr and "expected 4 columns, got 2" in r.stderr
    man = json.loads((tmp_path/"results"/"tiny"/"manifest.json").read_text())
    assert man["stages"]["knowledge"]["status"] == "failed"
