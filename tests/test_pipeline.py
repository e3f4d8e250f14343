"""End-to-end pipeline tests on params/tiny.yaml (tiny random model in every role), around one finished run:
a full run, a rerun that skips every stage, SIGKILL at several points then resume with identical results, what
makes a stage out of date (a markdown edit: nothing; an edit to omind/llm.py: every stage that imports it) and
`--force --only review`. The runs that fail or are stopped on purpose are in test_pipeline_errors.py."""
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
    # the held-out set synthesis reserved is what evaluate scored (in-template and transfer items), and training recall was measured
    held = [json.loads(l) for l in (run/"synthesis"/"heldout.jsonl").read_text().splitlines()]
    n_core = {(r["model"], r["set"]): r["n"] for r in rep["core"] if r["method"] in ("letter_calibrated", "label_calibrated")}
    assert n_core[("base", "heldout_kb")] + n_core.get(("base", "transfer_kb"), 0) <= len(held) and n_core[("base", "transfer_kb")] == 4
    assert rep["training_control"]["sft"]["status"] in ("passed", "failed", "unmeasured") and rep["core_null_control"]["passed"] is True

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


def test_interactive_stage_refuses_without_upstream_and_run_recomputes_stale_stages(full_run, tmp_path):
    """The sequence a notebook user once hit: evaluate run from its notebook on a run whose upstream stages are missing
    (now refused, naming them, writing nothing); and evaluate and figures finished against an unfinished train stage
    (as that notebook could write them before): `omind run` recomputes both, and the report names the trained adapter."""
    from omind.core import get_stage
    from omind.pipeline import execute_stage, StageFailed
    fresh = params(tmp_path, "fresh")
    out_nb = tmp_path/"executed"/"08_evaluate.ipynb"
    with pytest.raises(StageFailed) as e:              # a kernel started outside `omind run`, as JupyterLab starts one
        execute_stage(get_stage("evaluate"), fresh, out_nb, ROOT/"nbs", progress=False)
    msg = str(e.value)
    assert "UpstreamMissing" in msg and "'knowledge', 'dataset', 'train', 'benchmark'" in msg, msg
    assert "omind run" in msg and "--only knowledge" in msg, msg
    assert not (tmp_path/"results").exists() and not (tmp_path/"figures").exists()       # nothing written
    text = out_nb.read_text()
    assert "stage 'evaluate' of run 'fresh'" in text and "run from this notebook" in text
    assert str(tmp_path) not in text and str(ROOT) not in text

    tmp, p, _ = full_run
    run = tmp/"results"/"tiny"
    from omind.core import read_json, atomic_write_json, stable_hash
    ev, fig = read_json(run/"evaluate"/"done.json"), read_json(run/"figures"/"done.json")
    # evaluate as finished before training had: no train in its record, the prompted fallback in its report
    up, lin = dict(ev["upstream"]), dict(ev["upstream_lineage"]); up.pop("train"); lin.pop("train")
    stale_lineage = stable_hash({"key": ev["key"], "upstream": lin})
    atomic_write_json(run/"evaluate"/"done.json", {**ev, "upstream": up, "upstream_lineage": lin, "lineage": stale_lineage})
    atomic_write_json(run/"figures"/"done.json", {**fig, "upstream": {**fig["upstream"]}, "upstream_lineage": {**fig["upstream_lineage"], "evaluate": stale_lineage}})
    rep = read_json(run/"evaluate"/"report.json")
    atomic_write_json(run/"evaluate"/"report.json", {**rep, "models": [{**m, "model": "embedded:tiny-random"} for m in rep["models"]]})
    r = omind("run", str(p))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "evaluate   out of date: 'train' had not finished when it ran" in r.stdout, r.stdout[-3000:]
    assert "figures    out of date: 'evaluate' was recomputed" in r.stdout, r.stdout[-3000:]
    assert r.stdout.count("up to date, skipped") == 7, r.stdout[-3000:]
    sft = next(m for m in read_json(run/"evaluate"/"report.json")["models"] if m["name"] == "sft")
    assert sft["model"].endswith("sft/adapter"), sft
    assert read_json(run/"evaluate"/"done.json")["upstream"].get("train") == read_json(run/"train"/"done.json")["key"]
    assert sorted((run/"set-aside").glob("evaluate-*"))                   # the stale outputs, kept aside
    r = omind("run", str(p))
    assert r.returncode == 0 and r.stdout.count("up to date, skipped") == 9, r.stdout[-3000:]


def test_rerun_of_up_to_date_stage_keeps_recorded_time_and_usage(full_run, monkeypatch):
    """Running an up-to-date stage again keeps the seconds and LLM usage its run recorded: synthesis called again in this
    process (as its notebook does) rewrites nothing; and a stage opened again while up to date (`open_stage` ...
    `finish_stage`, what a stage function without its own up-to-date check does) keeps the recorded usage, time and
    finishing time, whatever usage this process reports, and says when it was rechecked."""
    from omind.core import load_params, read_json
    from omind.stages import stage_done, open_stage, finish_stage
    from omind.synthesis import run_synthesis
    tmp, p, _ = full_run
    monkeypatch.chdir(ROOT)
    d = tmp/"results"/"tiny"/"synthesis"
    P = load_params(p)
    assert stage_done(P, "synthesis") and stage_done(P, "review")
    done0, summ0 = read_json(d/"done.json"), read_json(d/"summary.json")
    assert done0.get("usage") and summ0.get("usage") and summ0.get("seconds") is not None
    files0 = {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in d.iterdir() if f.is_file()}
    run_synthesis(P)
    assert {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in d.iterdir() if f.is_file()} == files0   # nothing rewritten
    open_stage(P, "synthesis")
    finish_stage(P, "synthesis", n=done0["n"], usage={"teacher": {"calls": 1, "prompt_tokens": 1, "completion_tokens": 1, "seconds": 0.1}})
    done1, summ1 = read_json(d/"done.json"), read_json(d/"summary.json")
    assert (done1["usage"], done1["finished"]) == (done0["usage"], done0["finished"]) and "rechecked" in done1
    assert (summ1["usage"], summ1["seconds"]) == (summ0["usage"], summ0["seconds"])
    assert stage_done(P, "synthesis") and stage_done(P, "review")         # nothing downstream goes out of date


def test_executed_notebooks_name_no_machine_path(full_run):
    "The executed notebooks of a run (published with it) name no folder of this machine: no home, repository root or /tmp."
    tmp, _, _ = full_run
    nbs = sorted((tmp/"results"/"tiny"/"notebooks").glob("*.ipynb"))
    assert len(nbs) >= 9
    bad = [str(ROOT), str(tmp), str(Path.home()) + "/", "/tmp/", "site-packages/tqdm/auto.py:21: TqdmWarning"]
    for f in nbs:
        text = f.read_text()
        found = [b for b in bad if b in text]
        assert not found, (f.name, found)
        meta = json.loads(text)["metadata"]["papermill"]
        assert meta["input_path"] == f"nbs/{f.name}" and not meta["output_path"].startswith("/"), meta
