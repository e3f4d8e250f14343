"""End-to-end pipeline tests on params/tiny.yaml (tiny random model in every role):
a full run, a rerun that skips every stage, SIGKILL at several points then resume with identical results,
clear errors for a missing upstream stage and a failing cell, what makes a stage out of date (a markdown edit:
nothing; an edit to omind/llm.py: every stage that imports it), `--force --only review`, and a stage kernel that
dies with `omind run`."""
import json, os, re, shutil, signal, subprocess, sys, time
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
        if "cache" in f.parts or "notebooks" in f.parts or "set-aside" in f.parts: continue
        recs = [_clean(json.loads(l)) for l in f.read_text().splitlines() if l.strip()]
        snap[str(f.relative_to(run))] = sorted(recs, key=lambda r: json.dumps(r, sort_keys=True))
    hf = run/"dataset"/"hf"
    if hf.exists():
        from datasets import load_dataset
        dd = load_dataset(str(hf))                   # the dataset folder is a standard Hugging Face dataset (Parquet + card)
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
    from omind.push import find_machine_paths, machine_paths           # what `omind push` would publish names no path of this machine
    assert find_machine_paths(run/"dataset"/"hf", machine_paths(tmp)) == []
    rep = json.loads((run/"evaluate"/"report.json").read_text())
    assert rep["models"] and not [m["model"] for m in rep["models"] if str(m["model"]).startswith("/")]
    assert not any(p.startswith("/") for p in json.loads((run/"knowledge"/"summary.json").read_text()).get("paths", []))

def test_sigkill_at_several_points_then_resume(full_run, tmp_path):
    tmp0, _, secs = full_run
    p = params(tmp_path)
    for frac in (0.15, 0.45, 0.75):                  # kill at three points of a run, resuming each time
        proc = subprocess.Popen(omind_cmd("run", str(p)), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try: proc.wait(timeout=max(5, secs*frac))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL); proc.wait()
        time.sleep(2)                                # the orphaned kernel notices its parent is gone and exits
        st = omind("status", str(tmp_path/"results"/"tiny"))
        assert " running " not in st.stdout, st.stdout    # nothing runs any more: a stage it was in reads "interrupted"
    r = omind("run", str(p))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    a, b = snapshot(tmp0/"results"/"tiny"), snapshot(tmp_path/"results"/"tiny")
    assert a.keys() == b.keys()
    for k in a: assert a[k] == b[k], f"{k} differs after kill-and-resume"

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


def project_copy(tmp: Path) -> Path:
    "A copy of the project's code (omind/, nbs/, settings.ini): `python -c` run there imports this copy of omind."
    for f in ("omind", "nbs"): shutil.copytree(ROOT/f, tmp/f, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    shutil.copy(ROOT/"settings.ini", tmp)
    return tmp

def up_to_date(cwd: Path, p: Path) -> dict:
    "stage -> whether it is up to date, computed by the omind found from `cwd`."
    code = ("import json, omind; from omind.core import *; from omind.stages import *; P = load_params(%r)\n"
            "print(json.dumps({'file': omind.__file__, 'done': {n: stage_done(P, n) for n in STAGE_NAMES}, "
            "'llm': [n for n in STAGE_NAMES if 'omind.llm' in stage_modules(n)]}))" % str(p))
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).resolve().is_relative_to(cwd.resolve()), out["file"]
    return out

def test_markdown_edit_keeps_stages_and_llm_edit_invalidates_its_users(full_run, tmp_path):
    tmp, p, _ = full_run
    proj = project_copy(tmp_path/"proj")
    before = up_to_date(proj, p)
    assert all(before["done"].values()), before
    nb = json.loads((proj/"nbs"/"04_review.ipynb").read_text())
    md = next(c for c in nb["cells"] if c["cell_type"] == "markdown" and "".join(c["source"]).strip())
    md["source"] = ["A typo fixd in the prose. "] + list(md["source"])
    (proj/"nbs"/"04_review.ipynb").write_text(json.dumps(nb, indent=1))
    assert all(up_to_date(proj, p)["done"].values())
    r = subprocess.run(omind_cmd("run", str(p)), cwd=proj, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.count("up to date, skipped") == len(before["done"]), r.stdout[-2000:] + r.stderr[-2000:]
    with open(proj/"omind"/"llm.py", "a") as f: f.write("\n\nLLM_EDITED = True\n")
    after = up_to_date(proj, p)
    users = set(before["llm"])
    assert {"synthesis", "review", "train", "evaluate"} <= users, users
    stale = {n for n, ok in after["done"].items() if not ok}
    assert users <= stale, (users, stale)
    from omind.core import STAGES
    downstream = {s.name for s in STAGES if set(s.needs) & stale}
    assert stale <= users | downstream, (stale, users)

def test_force_only_review_recomputes(full_run):
    tmp, p, _ = full_run
    run = tmp/"results"/"tiny"
    done0 = json.loads((run/"review"/"done.json").read_text())
    time.sleep(1.1)                                  # finished times have one-second resolution
    r = omind("run", str(p), "--force", "--only", "review")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "set aside by --force" in r.stdout and "response cache" in r.stdout, r.stdout[-2000:]
    done1 = json.loads((run/"review"/"done.json").read_text())
    assert done1["finished"] > done0["finished"] and done1["key"] == done0["key"]
    aside = sorted((run/"set-aside").glob("review-*"))
    assert aside and (aside[-1]/"done.json").exists() and (aside[-1]/"reviewed.jsonl").exists()
    a = [json.loads(l) for l in (aside[-1]/"reviewed.jsonl").read_text().splitlines()]
    b = [json.loads(l) for l in (run/"review"/"reviewed.jsonl").read_text().splitlines()]
    assert _clean(sorted(a, key=lambda x: x["id"])) == _clean(sorted(b, key=lambda x: x["id"]))   # recomputed, same result
    man = json.loads((run/"manifest.json").read_text())
    assert man["stages"]["review"]["forced"] is True and man["stages"]["review"]["status"] == "done"
    r = omind("run", str(p))                         # review's key is unchanged: nothing downstream reruns
    assert r.returncode == 0 and r.stdout.count("up to date, skipped") == len(man["stages"]), r.stdout[-2000:]

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
    code = ("import os, time; os.environ['OMIND_KERNEL_LOCK'] = %r; from omind.pipeline import guard_kernel; "
            "guard_kernel(); print('ok', flush=True); time.sleep(120)" % str(rd/".kernel.lock"))
    k = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        assert k.stdout.readline().strip() == "ok"
        r = omind("run", str(p), "--only", "knowledge")
        assert r.returncode == 1 and f"(pid {k.pid}) still holds" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert not (rd/"knowledge"/"done.json").exists()
    finally: k.kill(); k.wait()
