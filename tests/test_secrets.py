"An API key given through the environment appears in no file under results/ and in no executed notebook."
import subprocess, sys
from pathlib import Path
from conftest import FAKE_KEY, KEY_ENV

ROOT = Path(__file__).resolve().parents[1]

def test_api_key_never_written(llama_server, fake_key, tmp_path):
    url, _ = llama_server
    p = tmp_path/"secret.yaml"
    p.write_text(f"extends: {ROOT/'params'/'tiny.yaml'}\n"
                 f"run: {{name: secret, results_dir: {tmp_path/'results'}, figures_dir: {tmp_path/'figures'}}}\n"
                 f"models:\n  teacher: {{backend: openai, base_url: '{url}', model: smollm2, api_key_env: {KEY_ENV}, max_concurrency: 2}}\n")
    outs = []
    for stage in ("knowledge", "synthesis"):
        r = subprocess.run([sys.executable, "-c", "import sys; from omind.pipeline import main; sys.exit(main(sys.argv[1:]))",
                            "run", str(p), "--only", stage, "--log-output"], cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        outs.append(r.stdout + r.stderr)
    files = [f for f in (tmp_path/"results").rglob("*") if f.is_file()]
    assert any(f.suffix == ".ipynb" for f in files) and any(f.name == "manifest.json" for f in files)
    assert (tmp_path/"results"/"secret"/"synthesis"/"done.json").exists()
    leaks = [str(f) for f in files if FAKE_KEY.encode() in f.read_bytes()]
    assert leaks == [], leaks
    assert all(FAKE_KEY not in o for o in outs)
    # the key's NAME is recorded (that is how a rerun finds it), its value never
    assert KEY_ENV in (tmp_path/"results"/"secret"/"manifest.json").read_text()
