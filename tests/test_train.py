"Train stage integration tests (tiny random model, toy dataset): assistant-only loss mask, kill-and-resume, adapter reload."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, yaml

ROOT = Path(__file__).resolve().parents[1]


def _params(tmp, name, **train):
    p = tmp/f"{name}.yaml"
    p.write_text(yaml.safe_dump({
        "run": {"name": name, "seed": 0, "results_dir": str(tmp/"results"), "figures_dir": str(tmp/"figures")},
        "models": {"default": {"model": "embedded:tiny-random", "batch_size": 8}},
        "train": {"dpo": False, "tensorboard": False, "max_eval_samples": 4, "logging_steps": 1, **train}}))
    return p


def test_assistant_only_loss_mask():
    "Labels cover exactly every assistant turn's content + <|im_end|> of multi-turn conversations, nothing else."
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from omind.llm import tiny_model_dir
    from omind.train import sft_trainer, label_spans, TrainParams
    from omind.testing import toy_dataset
    ds = toy_dataset(12)["train"]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir())
    for pf in (True, False):
        tr = sft_trainer(AutoModelForCausalLM.from_pretrained(tiny_model_dir()), tok, ds,
                         T=TrainParams(max_steps=1, padding_free=pf, tensorboard=False))
        multi = 0
        for rec, ex in zip(ds, tr.train_dataset):
            want = [m["content"] + "<|im_end|>" for m in rec["messages"] if m["role"] == "assistant"]
            multi += len(want) > 1
            assert label_spans(ex["input_ids"], ex["labels"], tok) == want
            # everything outside the spans is system/user text, role headers or newlines
            n_lab = sum(l != -100 for l in ex["labels"])
            assert n_lab == sum(len(tok(w, add_special_tokens=False)["input_ids"]) for w in want)
        assert multi >= 3
        b = tr.data_collator([tr.train_dataset[i] for i in range(6)])
        want = [m["content"] + "<|im_end|>" for r in ds.select(range(6)) for m in r["messages"] if m["role"] == "assistant"]
        got = [s for row in range(b["input_ids"].shape[0]) for s in label_spans(b["input_ids"][row], b["labels"][row], tok)]
        assert got == want


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    "A training run SIGKILLed after its first checkpoint, then rerun to completion with the same command."
    from omind.core import load_params, run_dir
    from omind.train import last_checkpoint
    from omind.testing import write_toy_dataset
    tmp = tmp_path_factory.mktemp("train")
    pf = _params(tmp, "kill", max_steps=24, save_steps=4, learning_rate=3e-2, batch_size=2, warmup=0)
    P = load_params(pf)
    write_toy_dataset(P, 24)
    out = run_dir(P, "train")
    cmd = [sys.executable, "-m", "omind.train", str(pf), "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t0, killed_at = time.time(), None
    while time.time() - t0 < 900:              # generous: a loaded machine starts slowly
        ck = last_checkpoint(out/"sft"/"checkpoints")
        if ck is not None:
            proc.send_signal(signal.SIGKILL); proc.wait(); killed_at = ck; break
        if proc.poll() is not None: break
        time.sleep(0.02)
    log = proc.stdout.read().decode(errors="replace")
    assert killed_at is not None, f"no checkpoint before the run ended:\n{log[-3000:]}"
    assert not (out/"done.json").exists() and not (out/"sft"/"adapter").exists()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return P, out, killed_at


def test_resume_after_kill(resumed_run):
    from omind.core import read_json
    P, out, killed_at = resumed_run
    m = read_json(out/"metrics.json")
    assert m["sft"]["resumed_from"] is not None and int(m["sft"]["resumed_from"].split("-")[1]) >= int(killed_at.name.split("-")[1])
    assert m["sft"]["global_step"] == 24
    steps = [h["step"] for h in read_json(out/"sft"/"log.json") if "loss" in h]
    assert steps == list(range(1, 25))                          # every step logged exactly once across the two runs
    assert (out/"done.json").exists()


def test_adapter_reloads_and_changes_generations(resumed_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from omind.llm import make_llm, tiny_model_dir, GenConfig
    P, out, _ = resumed_run
    ad = out/"sft"/"adapter"
    pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir()), str(ad))
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in pm.named_parameters())   # trained, not the zero init
    prompts = [[{"role": "user", "content": f"What are the signs of {c}?"}] for c in ("depression", "insomnia", "OCD", "PTSD")]
    cfg = GenConfig(max_new_tokens=12)
    base, tuned = make_llm("embedded:tiny-random").chat(prompts, cfg), make_llm(str(ad)).chat(prompts, cfg)
    assert base != tuned
    assert make_llm(str(ad)).chat(prompts, cfg) == tuned             # deterministic reload
