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
    "unknown key": ("extends: {smoke}\nrun: {{name: x, seeed: 3}}\n", "unknown key 'run.seeed' (did you mean 'seed'?)"),
    "unknown section": ("extends: {smoke}\ntrian: {{}}\n", "unknown key 'trian' (did you mean 'train'?)"),
    "wrong type": ("extends: {smoke}\nrun: {{seed: three}}\n", "key 'run.seed'"),
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
    files = sorted((ROOT/"params").glob("*.yaml"))
    assert {"smoke.yaml", "tiny.yaml"} <= {f.name for f in files}
    for f in files: load_params(f, check_paths=False)

def test_missing_run_params_file():
    r, _ = omind("run", "params/does-not-exist.yaml")
    assert r.returncode == 1 and "params file not found" in r.stderr
