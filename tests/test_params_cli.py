"A malformed params file fails fast, through the `omind` command, with one message naming the file and the key."
import subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
OMIND = [sys.executable, "-m", "omind.pipeline"]

def omind(*args, cwd=ROOT):
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", "import sys; from omind.pipeline import main; sys.exit(main(sys.argv[1:]))", *args],
                       cwd=cwd, capture_output=True, text=True, timeout=60)
    return r, time.perf_counter() - t

CASES = {
    "unknown key": ("extends: {smoke}\nrun: {{name: x, seeed: 3}}\n", "bad.yaml:2: unknown key 'run.seeed' (did you mean 'seed'?)"),
    "typo in a list item": ("extends: {smoke}\nevaluate:\n  public_sets:\n    - {{path: x.csv, layout: mmlu, task: mcqa, answer_index_bsae: 1}}\n",
                            "bad.yaml:4: unknown key 'evaluate.public_sets.0.answer_index_bsae' (did you mean 'answer_index_base'?)"),
    "not valid YAML": ("extends: {smoke}\nrun:\n  name: x\n   seed: 3\n", "bad.yaml:4: not valid YAML"),
    "unknown section": ("extends: {smoke}\ntrian: {{}}\n", "unknown key 'trian' (did you mean 'train'?)"),
    "wrong type": ("extends: {smoke}\nrun: {{seed: three}}\n", "bad.yaml:2: key 'run.seed'"),
    "wrong type in a model": ("extends: {smoke}\nmodels: {{teacher: {{batch_size: many}}}}\n", "key 'models.teacher.batch_size'"),
    "missing path": ("extends: {smoke}\ntrain: {{chat_template_file: /no/such/template.jinja}}\n", "key 'train.chat_template_file': file not found"),
    "missing extends": ("extends: no-such-parent.yaml\n", "key 'extends': params file not found"),
}

@pytest.mark.parametrize("case", list(CASES))
def test_bad_params_fail_fast_with_the_key(tmp_path, case):
    text, expected = CASES[case]
    p = tmp_path/"bad.yaml"; p.write_text(text.format(smoke=ROOT/"params"/"smoke.yaml"))
    r, secs = omind("run", str(p))
    assert r.returncode == 1, r.stderr
    assert expected in r.stderr and str(p) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert secs < 5, f"took {secs:.1f} s"

def test_every_params_file_loads():
    from omind.core import load_params
    files = sorted(f for f in (ROOT/"params").glob("*.yaml") if not f.name.endswith("-sweep.yaml"))   # sweep files: omind.sweep
    assert {"smoke.yaml", "tiny.yaml"} <= {f.name for f in files}
    for f in files: load_params(f, check_paths=False)

def test_missing_run_params_file():
    r, _ = omind("run", "params/does-not-exist.yaml")
    assert r.returncode == 1 and "params file not found" in r.stderr


def test_set_overrides_are_validated_like_the_file(tmp_path):
    r, _ = omind("run", "params/tiny.yaml", "--set", "train.max_stpes=10")
    assert r.returncode == 1 and "--set train.max_stpes=10: unknown key 'train.max_stpes' (did you mean 'max_steps'?)" in r.stderr, r.stderr
    r, _ = omind("run", "params/tiny.yaml", "--set", "train.max_steps=many")
    assert r.returncode == 1 and "--set train.max_steps=many: key 'train.max_steps'" in r.stderr, r.stderr
    r, _ = omind("run", "params/tiny.yaml", "--set", "train.max_steps")
    assert r.returncode == 1 and "expected KEY=VALUE" in r.stderr, r.stderr

def test_set_override_runs_and_is_recorded(tmp_path):
    import json, yaml
    p = tmp_path/"t.yaml"
    p.write_text(f"extends: {ROOT/'params'/'tiny.yaml'}\nrun: {{name: t, results_dir: {tmp_path/'results'}, figures_dir: {tmp_path/'figures'}}}\n")
    r = subprocess.run([sys.executable, "-c", "import sys; from omind.pipeline import main; sys.exit(main(sys.argv[1:]))",
                        "run", str(p), "--only", "knowledge", "--set", "knowledge.eval_queries=7", "--set", "run.seed=3"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    run = tmp_path/"results"/"t"
    man = json.loads((run/"manifest.json").read_text())
    assert man["sets"] == ["knowledge.eval_queries=7", "run.seed=3"] and man["params"]["knowledge"]["eval_queries"] == 7
    assert yaml.safe_load((run/"params.yaml").read_text())["knowledge"]["eval_queries"] == 7   # what the notebook read
    assert json.loads((run/"knowledge"/"summary.json").read_text())["eval_queries"] <= 7

def test_version_and_stage_choices():
    r, _ = omind("--version")
    assert r.returncode == 0 and r.stdout.startswith("omind "), r.stdout + r.stderr
    r, _ = omind("run", "--help")
    assert r.returncode == 0
    for st in ("knowledge", "synthesis", "review", "dataset", "train", "benchmark", "evaluate", "figures"): assert st in r.stdout

def test_set_synthesis_count_runs_and_is_recorded(tmp_path):
    """`omind run params/tiny.yaml --set synthesis.n.mcqa=3`: the synthesis stage seeds 3 MCQA items, the manifest records
    the override and the stage's LLM usage. A source path relative to the repository (the one rule for params paths)
    still resolves when `--set` makes the notebooks read the run folder's params.yaml, and a shortfall allowed by
    `allow_shortfall` is printed on the terminal, not only in the executed notebook."""
    import json
    p = tmp_path/"t.yaml"
    p.write_text(f"extends: {ROOT/'params'/'tiny.yaml'}\nrun: {{name: t, results_dir: {tmp_path/'results'}, figures_dir: {tmp_path/'figures'}}}\n"
                 "synthesis:\n  n: {classification: 0, root_cause: 0, qa: 0, conversation: 0}\n"
                 "  sources:\n    mcqa:\n      - {path: tests/fixtures/sources/medmcqa_original.jsonl, layout: medmcqa, n: 50, allow_shortfall: true}\n")
    run = lambda *a: subprocess.run([sys.executable, "-c", "import sys; from omind.pipeline import main; sys.exit(main(sys.argv[1:]))", "run", str(p), *a],
                                    cwd=ROOT, capture_output=True, text=True, timeout=900)
    r = run("--only", "knowledge")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = run("--only", "synthesis", "--set", "synthesis.n.mcqa=3")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    d = tmp_path/"results"/"t"
    man = json.loads((d/"manifest.json").read_text())
    assert man["sets"] == ["synthesis.n.mcqa=3"] and man["params"]["synthesis"]["n"]["mcqa"] == 3
    summ = json.loads((d/"synthesis"/"summary.json").read_text())
    src = summ["seed_report"]["mcqa"]["sources"][0]
    assert 0 < src["seeded"] < 50 and src["shortfall"] == 50 - src["seeded"]
    assert summ["seeded"]["mcqa"] == 3 + src["seeded"]
    assert f"synthesis  WARNING: mcqa: source" in r.stdout and f"SHORTFALL {src['shortfall']}" in r.stdout, r.stdout[-2000:]
    u = man["stages"]["synthesis"]["usage"]["teacher"]          # the tiny model counts its own tokens
    assert u["calls"] > 0 and u["prompt_tokens"] > 0 and summ["usage"]["teacher"] == u
    assert "synthesis chunks" in r.stderr                      # progress inside the stage reaches the terminal
