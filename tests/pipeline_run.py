"""Helpers of the pipeline tests (test_pipeline.py, test_pipeline_resume.py, test_pipeline_errors.py, test_tracking.py):
params files that extend params/tiny.yaml or params/paper-mini.yaml, the `omind` command in a subprocess, and the snapshot of what a run produced."""
import json, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = re.compile(r"(time|seconds|elapsed|started|ended|created|duration|_at$|^date$)", re.I)

TINY = ROOT/"params"/"tiny.yaml"                  # the default base of a test's params file
MINI = ROOT/"params"/"paper-mini.yaml"            # the base of the end-to-end runs (test_pipeline.py, test_pipeline_resume.py)

def params(tmp, name="tiny", extra="", base=TINY):
    "A params file under `tmp` that extends `base`, writing its run under `tmp`, plus `extra` YAML."
    p = tmp/f"{name}.yaml"
    p.write_text(f"extends: {base}\nrun: {{name: {name}, results_dir: {tmp/'results'}, figures_dir: {tmp/'figures'}}}\n{extra}")
    return p

def mini_params(tmp, name="mini", extra=""):
    "A params file under `tmp` that extends params/paper-mini.yaml."
    return params(tmp, name, extra, MINI)

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


def run_reference(tmp: Path) -> dict:
    """One uninterrupted run of paper-mini under `tmp`, then the snapshot of its records taken at once (the tests that
    share the run change it afterwards), saved beside it as JSON. Returns what `load_reference` returns."""
    import time
    p = mini_params(tmp)
    t = time.time(); r = omind("run", str(p)); secs = time.time() - t
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (tmp/"reference.json").write_text(json.dumps({"secs": secs, "snapshot": snapshot(tmp/"results"/"mini")}))
    return load_reference(tmp)

def load_reference(tmp: Path):
    "The finished reference run under `tmp`: its folder, params file, seconds and snapshot; None when it is not there."
    f = tmp/"reference.json"
    if not f.exists(): return None
    ref = json.loads(f.read_text())
    return {"tmp": tmp, "params": tmp/"mini.yaml", "secs": ref["secs"], "snapshot": ref["snapshot"]}
