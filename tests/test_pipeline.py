"""End-to-end pipeline tests around one finished run of params/paper-mini.yaml (the paper's recipe in miniature: small
local copies of every source set in its published layout, a UMLS-format folder and text notes as the knowledge, the
tiny random model in every LLM role, a tiny NLI classifier, two rejected answers per DPO instance): a full run through
the figures, every family fed by the paper's sources, a rerun that skips every stage, what makes a stage out of date (a
markdown edit: nothing; an edit to omind/llm.py: every stage that imports it) and `--force --only review`. The run is
the session fixture `mini_reference` (tests/conftest.py), which test_pipeline_resume.py compares a killed-and-resumed
run with: the suite runs the pipeline end to end once, and once more killed and resumed (params/tiny.yaml's stages run
one by one in the other test files). The runs that fail or are stopped on purpose are in test_pipeline_errors.py."""
import json, os, re, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest
from omind.core import load_params

from pipeline_run import ROOT, mini_params as params, omind_cmd, omind, _clean

@pytest.fixture(scope="module")
def full_run(mini_reference):
    "(folder, params file, seconds) of the finished paper-mini run this file checks and changes (shared with test_pipeline_resume.py)."
    return mini_reference["tmp"], mini_reference["params"], mini_reference["secs"]

def test_full_run_then_everything_skipped(full_run):
    tmp, p, secs = full_run
    run = tmp/"results"/"mini"
    man = json.loads((run/"manifest.json").read_text())
    from omind.runner import available_stages
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
    n_transfer = load_params(p).synthesis.heldout.n_transfer
    assert n_transfer > 0 and n_core[("base", "transfer_kb")] == n_transfer
    assert n_core[("base", "heldout_kb")] + n_core[("base", "transfer_kb")] <= len(held)
    assert rep["training_control"]["sft"]["status"] in ("passed", "failed", "unmeasured") and rep["core_null_control"]["passed"] is True

def project_copy(tmp: Path) -> Path:
    """A copy of the project's code (omind/, nbs/, settings.ini): `python -c` run there imports this copy of omind. The
    test fixtures come too: params/paper-mini.yaml names its source sets by paths relative to the repository."""
    for f in ("omind", "nbs", "tests/fixtures"):
        shutil.copytree(ROOT/f, tmp/f, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
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
    run = tmp/"results"/"mini"
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
    from omind.runner import execute_stage, StageFailed
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
    run = tmp/"results"/"mini"
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
    d = tmp/"results"/"mini"/"synthesis"
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
    nbs = sorted((tmp/"results"/"mini"/"notebooks").glob("*.ipynb"))
    assert len(nbs) >= 9
    bad = [str(ROOT), str(tmp), str(Path.home()) + "/", "/tmp/", "site-packages/tqdm/auto.py:21: TqdmWarning"]
    for f in nbs:
        text = f.read_text()
        found = [b for b in bad if b in text]
        assert not found, (f.name, found)
        meta = json.loads(text)["metadata"]["papermill"]
        assert meta["input_path"] == f"nbs/{f.name}" and not meta["output_path"].startswith("/"), meta


# ---- the paper's recipe in miniature: what params/paper-mini.yaml must reach, on the same finished run ----------------

def test_every_stage_done_through_figures(full_run):
    tmp, _, _ = full_run
    run, figs = tmp/"results"/"mini", tmp/"figures"/"mini"
    man = json.loads((run/"manifest.json").read_text())
    assert man["stages"] and all(s.get("status") == "done" for s in man["stages"].values()), man["stages"]
    assert figs.exists() and any(figs.iterdir())

def test_every_family_fed_by_its_paper_sources(full_run):
    tmp, _, _ = full_run
    paper = load_params(ROOT/"params"/"paper.yaml", check_paths=False).synthesis.sources
    rep = json.loads((tmp/"results"/"mini"/"synthesis"/"summary.json").read_text())["seed_report"]
    for fam, specs in paper.items():
        got = {s["source"]: s["seeded"] for s in rep[fam]["sources"]}
        assert set(got) == {s.label for s in specs}, (fam, got)                 # the same sets as the paper's recipe
        assert all(v > 0 for v in got.values()), (fam, got)
        assert rep[fam]["requested"] > 0 and rep[fam]["seeded"] > sum(got.values())   # and knowledge-base samples besides

def test_knowledge_from_umls_and_text(full_run):
    tmp, _, _ = full_run
    c = json.loads((tmp/"results"/"mini"/"knowledge"/"summary.json").read_text())["counts"]
    assert c["triples_by_origin"].get("umls", 0) > 0 and c["entities_by_type"].get("umls", 0) > 0, c
    from omind.kb_build import KnowledgeParams, build_knowledge
    curated = build_knowledge(KnowledgeParams(icd10=False))
    assert c["chunks"] > len(curated.chunks), c                                   # the text notes were chunked in

def test_review_used_the_nli_classifier(full_run):
    tmp, _, _ = full_run
    s = json.loads((tmp/"results"/"mini"/"review"/"summary.json").read_text())
    assert s.get("nli") == "embedded:tiny-random-nli", s.get("nli")

def test_two_rejected_answers_per_dpo_instance(full_run):
    tmp, _, _ = full_run
    run = tmp/"results"/"mini"
    s = json.loads((run/"rejected"/"summary.json").read_text())
    assert s["answers_per_prompt"] == 2 and s["n_rows"] > 0 and s["n_answers"] == 2 * s["n_rows"], s
    pairs = [json.loads(l) for l in (run/"train"/"dpo"/"pairs.jsonl").read_text().splitlines() if l.strip()]
    assert pairs and {p["source"] for p in pairs} <= {"base", "base2"}                # DPO trained on the student's answers
