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
    from omind.model_store import tiny_model_dir
    from omind.trainers import sft_trainer, label_spans
    from omind.train_params import TrainParams
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
    from omind.trainers import last_checkpoint
    from omind.testing import write_toy_dataset
    tmp = tmp_path_factory.mktemp("train")
    pf = _params(tmp, "kill", max_steps=12, save_steps=4, learning_rate=3e-2, batch_size=2, warmup=0)
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
    assert m["sft"]["global_step"] == 12
    steps = [h["step"] for h in read_json(out/"sft"/"log.json") if "loss" in h]
    assert steps == list(range(1, 13))                          # every step logged exactly once across the two runs
    assert (out/"done.json").exists()


def test_resumed_summary_equals_uninterrupted(resumed_run, tmp_path):
    "The summary of a killed-and-resumed run is that of an uninterrupted one: mean loss over all steps, tokens, speed, loss.csv."
    import pandas as pd
    from omind.core import load_params, read_json, run_dir
    from omind.testing import write_toy_dataset
    P, out, _ = resumed_run
    pf = _params(tmp_path, "straight", max_steps=12, save_steps=4, learning_rate=3e-2, batch_size=2, warmup=0)
    write_toy_dataset(load_params(pf), 24)
    r = subprocess.run([sys.executable, "-m", "omind.train", str(pf), "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    a, b = read_json(out/"sft"/"metrics.json"), read_json(run_dir(load_params(pf), "train")/"sft"/"metrics.json")
    assert a["resumed_from"] and not b["resumed_from"]
    assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4) and a["train_loss"] > 0
    assert (a["trained_tokens"], a["global_step"]) == (b["trained_tokens"], b["global_step"])
    assert a["tokens_per_s"] and b["tokens_per_s"]                    # the speed of the steps each process trained
    la, lb = (pd.read_csv(d/"sft"/"loss.csv") for d in (out, run_dir(load_params(pf), "train")))
    ka, kb = (l.dropna(subset=["loss"]) for l in (la, lb))
    assert list(ka["num_tokens"]) == list(kb["num_tokens"]) and ka["num_tokens"].is_monotonic_increasing
    assert list(ka["loss"]) == pytest.approx(list(kb["loss"]), abs=1e-4)


def test_adapter_reloads_and_changes_generations(resumed_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from omind.backends import make_llm
    from omind.model_store import tiny_model_dir
    from omind.llm import GenConfig
    P, out, _ = resumed_run
    ad = out/"sft"/"adapter"
    pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir()), str(ad))
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in pm.named_parameters())   # trained, not the zero init
    prompts = [[{"role": "user", "content": f"What are the signs of {c}?"}] for c in ("depression", "insomnia", "OCD", "PTSD")]
    cfg = GenConfig(max_new_tokens=12)
    base, tuned = make_llm("embedded:tiny-random").chat(prompts, cfg), make_llm(str(ad)).chat(prompts, cfg)
    assert base != tuned
    assert make_llm(str(ad)).chat(prompts, cfg) == tuned             # deterministic reload


def test_adapter_names_a_loadable_base_and_summary_keys(resumed_run):
    "adapter_config.json names a real base: the standard PEFT load from it works; summary.json has the held-out keys."
    from peft import PeftModel, AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM
    from omind.core import read_json
    from omind.model_store import tiny_model_dir
    P, out, _ = resumed_run
    ad = out/"sft"/"adapter"
    cfg = read_json(ad/"adapter_config.json")
    assert cfg["base_model_name_or_path"] == str(tiny_model_dir())          # the materialised folder, not "embedded:..."
    pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"]), str(ad))
    assert any("lora_B" in n for n, _ in pm.named_parameters())
    assert AutoPeftModelForCausalLM.from_pretrained(str(ad)) is not None
    s = read_json(out/"summary.json")
    assert s["n_eval"] == 4 and s["heldout_loss_before"] > 0 and s["heldout_loss_after"] > 0
    assert (s["heldout_loss_before"], s["heldout_loss_after"]) == (s["sft"]["heldout_loss_before"], s["sft"]["heldout_loss_after"])
    assert s["heldout_loss_after"] < s["heldout_loss_before"]               # 12 steps at lr 3e-2 on the toy data


def test_training_args_pass_through_and_validation(tmp_path):
    "Extra TrainingArguments / SFTConfig / DPOConfig fields reach the trainers; unknown or stage-set names are clear errors."
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from omind.core import load_params
    from omind.params_file import ParamsError
    from omind.model_store import tiny_model_dir
    from omind.trainers import sft_trainer
    from omind.train_params import TrainParams
    from omind.testing import toy_dataset
    pf = _params(tmp_path, "ta", training_args={"report_too": ["wandb"]})
    with pytest.raises(ParamsError) as e: load_params(pf)
    assert "training_args" in str(e.value) and "report_too" in str(e.value) and "report_to" in str(e.value)
    with pytest.raises(ParamsError) as e: load_params(_params(tmp_path, "tb", training_args={"max_steps": 3}))
    assert "set by the stage itself" in str(e.value) and "train.max_steps" in str(e.value)
    P = load_params(_params(tmp_path, "tc", training_args={"report_to": [], "optim": "adafactor", "packing_strategy": "wrapped",
                                                           "label_smoothing": 0.1}))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir())
    tr = sft_trainer(AutoModelForCausalLM.from_pretrained(tiny_model_dir()), tok, toy_dataset(4)["train"], T=P.train.model_copy(update={"max_steps": 1}))
    assert tr.args.optim == "adafactor" and tr.args.packing_strategy == "wrapped" and tr.args.report_to in ([], "none", ["none"])
    assert not hasattr(tr.args, "label_smoothing")                   # a DPOConfig field: DPO only


def _label_rows():
    "Dataset rows of the three choice / label families plus untouched families."
    import json
    from omind.testing import toy_dataset
    opts = ["Major depressive disorder", "Generalized anxiety disorder", "Panic disorder", "Insomnia disorder"]
    rows = []
    for i in range(16):
        g = i % 4
        rows.append({"id": f"mcqa-{i}", "task": "mcqa", "label": "ABCD"[g], "options": opts, "draft_messages": [], "evidence": [],
                     "provenance": "{}", "messages": [{"role": "user", "content": f"Q{i}: which condition fits?"},
                     {"role": "assistant", "content": f"{'ABCD'[g]}. {opts[g]}\nExplanation: {opts[g]} is the one the facts name."}]})
    for task, head, labels in (("classification", "Condition", ["Panic disorder", "Insomnia disorder", "No mental disorder"]),
                               ("root_cause", "Cause", ["work", "family", "money", "health"])):
        for i in range(12):
            lab = labels[i % len(labels)]
            prov = json.dumps({"seed": {"candidates": labels}}) if i % 2 == 0 else "{}"   # odd rows: candidates from the split
            rows.append({"id": f"{task}-{i}", "task": task, "label": lab, "options": [], "draft_messages": [], "evidence": [],
                         "provenance": prov, "messages": [{"role": "user", "content": f"Post {i}. Choose one of: {', '.join(labels)}."},
                         {"role": "assistant", "content": f"{head}: {lab}\nExplanation: the writer's {lab.lower()} is the clear theme."}]})
    rows += [dict(r) for r in toy_dataset(8)["train"]]
    return rows


def test_shuffle_labels_toy():
    "Each choice / label row carries a wrong answer (letter and text), no gold answer remains, other tasks are untouched."
    import re
    from omind.train_data import shuffle_labels
    rows = _label_rows()
    out, counts = shuffle_labels(rows, seed=0)
    assert counts == {"changed": {"mcqa": 16, "classification": 12, "root_cause": 12}, "unchanged": {}}
    for a, b in zip(rows, out):
        if a["task"] in ("mcqa", "classification", "root_cause"):
            assert b["label"] != a["label"]
            reply, old = b["messages"][-1]["content"], a["messages"][-1]["content"]
            gold = a["options"]["ABCD".index(a["label"])] if a["task"] == "mcqa" else a["label"]
            assert not re.search(r"(?<!\w)" + re.escape(gold) + r"(?!\w)", reply, re.I), reply
            wrong = a["options"]["ABCD".index(b["label"])] if a["task"] == "mcqa" else b["label"]
            head = f"{b['label']}. {wrong}" if a["task"] == "mcqa" else f"{old.split(':')[0]}: {wrong}"
            assert reply.startswith(head + "\n"), reply
            # everything else in the reply is unchanged: swapping back gives the original
            back = re.sub(re.escape(wrong), lambda m: gold.lower() if m.group(0).islower() else gold, reply, flags=re.I)
            if a["task"] == "mcqa": back = a["label"] + back[1:]
            assert back == old
            assert b["messages"][:-1] == a["messages"][:-1]
        else:
            assert b == a
    assert shuffle_labels(rows, seed=0) == (out, counts) and shuffle_labels(rows, seed=1)[0] != out


def test_sft_with_shuffled_labels(tmp_path):
    "train.shuffle_labels: SFT trains on the shuffled rows (validation untouched) and the summary counts them per task."
    from omind.core import load_params, read_json, run_dir
    from omind.dataset import save_splits, features
    from omind.stages import mark_done
    from omind.train import run_train
    import json
    from omind.dataset import to_row, DatasetParams
    struct = lambda p: to_row({"id": "x", "task": "t", "messages": [], "seed": json.loads(p).get("seed")}, DatasetParams())["provenance"]
    rows = [{**{k: r[k] for k in features()}, "provenance": struct(r["provenance"])} for r in _label_rows()]   # as the dataset stage writes them
    P = load_params(_params(tmp_path, "shuf", shuffle_labels=True, max_steps=1, batch_size=8, max_eval_samples=4))
    d = run_dir(P, "dataset")
    save_splits({"train": rows, "validation": rows[:4], "test": rows[:2], "dpo": rows[:2]}, d/"hf", features=features())
    mark_done(d, toy=True)
    s = run_train(P, progress=False)
    assert s["shuffled_labels"] == {"changed": {"mcqa": 16, "classification": 12, "root_cause": 12}, "unchanged": {}}
    assert s["sft"]["shuffled_labels"] == s["shuffled_labels"] and s["n_eval"] == 4
    assert read_json(run_dir(P, "train")/"summary.json")["shuffled_labels"] == s["shuffled_labels"]


def test_rejected_stage_goes_through_the_student_role_and_resumes(tmp_path, monkeypatch):
    "The rejected stage asks llm_for(P, 'student') (a local model or an inference server), logs per chunk, resumes."
    import omind.backends
    from omind.core import load_params, run_dir
    from omind.rejected import run_rejected, read_rejected
    from omind.testing import write_toy_dataset, toy_dataset
    calls = []
    class Fake:
        def chat(self, convs, cfg, progress=False):
            calls.append(len(convs))
            if calls.count(2) == 2 and fail["on"]: raise RuntimeError("server went away")   # the second chunk fails
            return [f"answer to: {c[-1]['content']} ({cfg.max_new_tokens})" for c in convs]
    fail = {"on": True}
    monkeypatch.setattr(omind.backends, "llm_for", lambda P, role: (calls.append(role), Fake())[1])
    pf = _params(tmp_path, "rej")
    import yaml
    raw = yaml.safe_load(pf.read_text()); raw["models"]["student"] = {"backend": "openai", "model": "served-student", "base_url": "http://127.0.0.1:9/v1"}
    raw["rejected"] = {"max_new_tokens": 7, "chunk_size": 2}; pf.write_text(yaml.safe_dump(raw))
    P = load_params(pf)
    write_toy_dataset(P, 24)
    with pytest.raises(RuntimeError): run_rejected(P, progress=False)
    assert calls == ["student", 2, 2]                                  # the student role; one chunk logged, then it failed
    fail["on"] = False
    s = run_rejected(P, progress=False)
    ids = list(toy_dataset(24)["dpo"]["id"])
    assert s["resumed"] == 2 and s["n_answered"] == len(ids) and s["backend"] == "openai"
    got = read_rejected(P, ids)
    dpo = {r["id"]: r for r in toy_dataset(24)["dpo"]}
    assert all(got[i] == f"answer to: {dpo[i]['messages'][-2]['content']} (7)" for i in ids)
