"""Bad inputs, one row each: the `omind` command exits non-zero, its one-line message names the place (file and
line, the params key, or the run), and nothing under results/ is corrupted (the committed results are unchanged; a
failing stage leaves no done marker and its manifest entry says `failed`)."""
import hashlib, json, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT/"tests"/"fixtures"/"sources"
CMD = [sys.executable, "-c", "import sys; from omind.pipeline import main; sys.exit(main(sys.argv[1:]))"]

def omind(*args, cwd=ROOT, timeout=600):
    return subprocess.run([*CMD, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)

def tree_hash(d: Path) -> dict:
    "relative path -> content hash of every file under `d`."
    return {str(f.relative_to(d)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.rglob("*")) if f.is_file()} if d.exists() else {}

def params(tmp: Path, body: str, name: str = "bad") -> Path:
    p = tmp/f"{name}.yaml"
    p.write_text(f"extends: {ROOT/'params'/'tiny.yaml'}\nrun: {{name: {name}, results_dir: {tmp/'results'}, figures_dir: {tmp/'figures'}}}\n{body}")
    return p

# ---- rows that fail before any stage runs: (args(tmp) -> argv, cwd(tmp), exit code, [substrings of stderr]) ----
def _p(body):
    return lambda tmp: ["run", str(params(tmp, body))]

def _latin1(tmp):
    p = tmp/"latin1.yaml"; p.write_bytes("run: {name: caf\xe9}\n".encode("latin-1")); return p

CLI_ROWS = {
    "unknown run": (lambda tmp: ["status", "nosuchrun"], None, 1, ["no run 'nosuchrun'", "runs:"]),
    "figures of an unknown run": (lambda tmp: ["figures", "nosuchrun"], None, 1, ["no run 'nosuchrun'"]),
    "run outside the repository": (lambda tmp: ["run", str(ROOT/"params"/"tiny.yaml")], "tmp", 1, ["no nbs/ folder", "inside the omind repository"]),
    "unknown stage": (lambda tmp: ["run", str(ROOT/"params"/"tiny.yaml"), "--only", "reveiw"], None, 2, ["invalid choice: 'reveiw'"]),
    "params typo": (_p("review: {max_regenerationz: 2}\n"), None, 1, ["bad.yaml:3: unknown key 'review.max_regenerationz' (did you mean 'max_regenerations'?)"]),
    "params typo in a list item": (_p("evaluate:\n  public_sets:\n    - {path: tests/fixtures/sources/sad_test.csv, layout: sad, task: classification, answer_index_bsae: 1}\n"),
                                   None, 1, ["bad.yaml:5: unknown key 'evaluate.public_sets.0.answer_index_bsae' (did you mean 'answer_index_base'?)"]),
    "params not valid YAML": (_p("run:\n  seed: [1\n"), None, 1, ["bad.yaml:", "not valid YAML"]),
    "params file in Latin-1": (lambda tmp: ["run", str(_latin1(tmp))], None, 1, ["latin1.yaml: not UTF-8"]),
    "params file missing": (lambda tmp: ["run", str(tmp/"nope.yaml")], None, 1, ["nope.yaml: params file not found"]),
    "--set unknown key": (lambda tmp: ["run", str(ROOT/"params"/"tiny.yaml"), "--set", "train.max_stpes=3"], None, 1,
                          ["--set train.max_stpes=3: unknown key 'train.max_stpes' (did you mean 'max_steps'?)"]),
    "--set without a value": (lambda tmp: ["run", str(ROOT/"params"/"tiny.yaml"), "--set", "train.max_steps"], None, 1, ["--set train.max_steps: expected KEY=VALUE"]),
    "--set into a short list": (lambda tmp: ["run", str(ROOT/"params"/"tiny.yaml"), "--set", "evaluate.candidates.5.name=x"], None, 1,
                                ["--set evaluate.candidates.5.name=x: 'evaluate.candidates' is a list of 2 items"]),
    "missing input file": (_p("knowledge: {triples_files: [no/such/triples.csv]}\n"), None, 1, ["bad.yaml:3: key 'knowledge.triples_files.0': file not found: no/such/triples.csv"]),
    # a source file is checked when the params load, before the knowledge stage spends its minutes
    "missing source file": (_p("synthesis:\n  sources:\n    mcqa:\n      - {path: no/such/medmcqa.jsonl, layout: medmcqa}\n"), None, 1,
                            ["bad.yaml:6: key 'synthesis.sources.mcqa.0.path': file not found: no/such/medmcqa.jsonl"]),
}

@pytest.mark.parametrize("row", list(CLI_ROWS))
def test_cli_bad_input(tmp_path, row):
    args, cwd, code, expected = CLI_ROWS[row]
    before = tree_hash(ROOT/"results")
    r = omind(*args(tmp_path), cwd=tmp_path if cwd == "tmp" else ROOT, timeout=120)
    assert r.returncode == code, (r.returncode, r.stdout[-1500:], r.stderr[-1500:])
    for e in expected: assert e in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert tree_hash(ROOT/"results") == before
    assert not (tmp_path/"results").exists() or not any((tmp_path/"results").rglob("done.json"))


# ---- rows that fail inside a stage (a loader): the stage's notebook run names the file and line ----
KNOWLEDGE_OK = "knowledge: {icd10: false, eval_queries: 5}\n"

def _seeds(family, spec, n=2):
    counts = {"mcqa": 0, "classification": 0, "root_cause": 0, "qa": 0, "conversation": 0, family: n}
    return KNOWLEDGE_OK + f"synthesis:\n  n: {json.dumps(counts)}\n  sources:\n    {family}:\n      - {json.dumps(spec)}\n"

STAGE_ROWS = {
    "empty triples file": ("knowledge", "knowledge: {icd10: false, eval_queries: 5, triples_files: [%s]}\n" % (FIX/"empty.csv"), ["empty.csv"]),
    "Latin-1 triples file": ("knowledge", "knowledge: {icd10: false, eval_queries: 5, triples_files: [%s]}\n" % (FIX/"dreaddit_latin1.csv"), ["dreaddit_latin1.csv:"]),
    "empty seed file": ("synthesis", _seeds("mcqa", {"path": str(FIX/"empty.jsonl"), "layout": "medmcqa"}), ["empty.jsonl"]),
    "Latin-1 seed file": ("synthesis", _seeds("classification", {"path": str(FIX/"dreaddit_latin1.csv"), "layout": "dreaddit"}), ["dreaddit_latin1.csv:"]),
    "broken JSONL line": ("synthesis", _seeds("mcqa", {"path": str(FIX/"broken.jsonl"), "layout": "medmcqa"}), ["broken.jsonl:"]),
    "MedMCQA cop 4 read 0-based": ("synthesis", _seeds("mcqa", {"path": str(FIX/"medmcqa_original.jsonl"), "layout": "medmcqa", "answer_index_base": 0}),
                                   ["medmcqa_original.jsonl:4", "answer 4 is out of range", "answer_index_base"]),
    "MedMCQA answer base undecidable": ("synthesis", _seeds("mcqa", {"path": str(FIX/"medmcqa_ambiguous.jsonl"), "layout": "medmcqa"}),
                                        ["medmcqa_ambiguous.jsonl", "answer_index_base"]),
}

@pytest.fixture(scope="module")
def knowledge_done(tmp_path_factory):
    "A run folder whose knowledge stage has finished (the seed rows fail in synthesis, after it)."
    tmp = tmp_path_factory.mktemp("bad")
    r = omind("run", str(params(tmp, KNOWLEDGE_OK)), "--only", "knowledge")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return tmp

@pytest.mark.parametrize("row", list(STAGE_ROWS))
def test_loader_bad_input(knowledge_done, tmp_path, row):
    stage, body, expected = STAGE_ROWS[row]
    for f in [x for x in expected if x.endswith((".csv", ".jsonl", ".csv:", ".jsonl:"))]:
        if not (FIX/f.rstrip(":")).exists(): pytest.skip(f"fixture {f} not written yet")
    tmp = knowledge_done if stage != "knowledge" else tmp_path
    before = tree_hash(ROOT/"results")
    kb_before = tree_hash(tmp/"results"/"bad"/"knowledge") if stage != "knowledge" else None
    r = omind("run", str(params(tmp, body)), "--only", stage)
    assert r.returncode == 1, (r.stdout[-1500:], r.stderr[-1500:])
    assert f"stage '{stage}' failed" in r.stderr
    for e in expected: assert e in r.stderr, r.stderr[-2000:]
    assert tree_hash(ROOT/"results") == before
    run = tmp/"results"/"bad"
    assert not (run/stage/"done.json").exists()
    assert json.loads((run/"manifest.json").read_text())["stages"][stage]["status"] == "failed"
    if kb_before is not None: assert tree_hash(run/"knowledge") == kb_before       # upstream outputs untouched
