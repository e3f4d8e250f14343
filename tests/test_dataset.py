"Integration tests of the dataset stage: a standard folder (load_dataset per config, trl sft, DPO on the preference config), TRL accepts the records as they are, splits are deterministic, bad input."
import json
from pathlib import Path

import pytest

from omind.core import load_params, run_dir, atomic_write, read_json
from omind.stages import finish_stage
from omind.dataset import (run_dataset, load_splits, features, to_row, DatasetParams, SPLITS, split_file, provenance_of,
                           save_preference, preference_features, preference_file)

TASKS = ("mcqa", "classification", "root_cause", "qa", "conversation")


def reviewed(i, task, kept=True):
    user = [{"role": "user", "content": f"Question {i} about {task}?"}]
    msgs = [{"role": "system", "content": "You are a careful mental-health educator."}, *user,
            {"role": "assistant", "content": f"Answer {i}: depression lowers mood."}]
    if task == "conversation":
        msgs += [{"role": "user", "content": "And then?"}, {"role": "assistant", "content": "Sleep and routine help."}]
    return {"id": f"{task}-{i}", "task": task, "seed": {"i": i}, "query": "q",
            "retrieved": [{"id": "t1", "score": 0.7, "text": "T"}, {"id": "t2", "score": 0.5, "text": "U"}],
            "evidence": [{"id": "t1", "text": "Major depressive disorder has symptom low mood."}], "prune": {"status": "ok", "raw": "F1"},
            "messages": msgs, "label": {"mcqa": "B", "classification": "depression", "root_cause": "work"}.get(task, ""),
            "options": ["A", "B", "C", "D"] if task == "mcqa" else [], "cited": ["t1"], "teacher": "embedded:tiny-random",
            "prompt_hash": "abc", "status": "ok", "error": "",
            "draft_messages": msgs[:-1] + [{"role": "assistant", "content": f"Draft {i}, with a wrong claim."}],
            "review": {"sentences": [{"text": "Wrong claim.", "turn": 2, "nli": {"entailment": 0.0, "neutral": 0.1, "contradiction": 0.9}, "action": "removed"}],
                       "regenerations": 0, "actions": [{"stage": "nli", "action": "remove_sentence", "reason": "contradiction > 0.8",
                                                        "scores": {"entailment": 0.0, "neutral": 0.1, "contradiction": 0.9}}]},
            "kept": kept, "drop_reason": "" if kept else "refusal"}


def make_run(tmp, recs, seed=0, name="t", dataset=None):
    P = load_params(None, {"run": {"name": name, "results_dir": str(tmp), "seed": seed}, "dataset": dataset or {}})
    atomic_write(run_dir(P, "knowledge")/"triples.jsonl", json.dumps({"id": "t1", "text": "T", "source": "https://www.nimh.nih.gov/x"}) + "\n")
    rd = run_dir(P, "review")
    atomic_write(rd/"reviewed.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
    atomic_write(rd/"funnel.csv", "task,seeded,generated,after_review,kept\nqa,30,30,30,30\n")
    finish_stage(P, "review")
    return P


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ds")
    recs = [reviewed(i, t) for t in TASKS for i in range(30)] + [reviewed(99, "qa", kept=False)]
    P = make_run(tmp, recs)
    return P, run_dataset(P)


def test_splits_and_columns(built):
    P, s = built
    dd = load_splits(run_dir(P, "dataset")/"hf")
    assert set(dd) == set(SPLITS)
    assert sum(len(dd[x]) for x in SPLITS) == 150 == s["n"]          # the dropped sample is not in the dataset
    for x in SPLITS:
        assert dd[x].column_names == ["id", "task", "messages", "label", "options", "draft_messages", "evidence", "provenance"]
    for t in TASKS:                                                  # stratified: every task in every split
        for x in SPLITS: assert t in set(dd[x]["task"]), (t, x)
    ex = next(r for r in dd["train"] if r["task"] == "mcqa")
    assert ex["label"] == "B" and ex["options"] == ["A", "B", "C", "D"]
    assert isinstance(ex["provenance"], dict) and set(ex["provenance"]) == set(features()["provenance"])   # a typed struct
    assert isinstance(ex["provenance"]["seed"], str)                 # family-specific keys: a JSON string inside it
    prov = provenance_of(ex)
    assert prov["seed"] == {"i": int(ex["id"].split("-")[1])}
    assert prov["retrieved"] == [{"id": "t1", "score": 0.7}, {"id": "t2", "score": 0.5}]
    assert prov["teacher"] == "embedded:tiny-random" and prov["prompt_hash"] == "abc" and prov["evidence_ids"] == ["t1"]
    assert prov["review"]["actions"][0]["scores"]["contradiction"] == 0.9
    assert ex["draft_messages"][-1]["content"].startswith("Draft")
    ids = [i for x in SPLITS for i in dd[x]["id"]]
    assert len(ids) == len(set(ids))                                 # no sample in two splits


def test_card_and_stats(built):
    P, s = built
    card = (run_dir(P, "dataset")/"hf"/"README.md").read_text()
    for frag in ("license:", "## Splits and tasks", "| mcqa", "## Funnel", "## Sources and licences", "## Generation settings", "embedded:tiny-random",
                 "https://www.nimh.nih.gov/x (150 evidence uses)"):
        assert frag in card, frag
    st = read_json(run_dir(P, "dataset")/"stats.json")
    assert st["n"] == 150 and st["tasks"]["conversation"]["mean_user_turns"] == 2
    assert st["tasks"]["qa"]["changed_by_review"] == 30


def test_trl_accepts_records_as_they_are(built):
    "Records go into TRL's SFTTrainer unchanged (conversational format, tokenised with the chat template) and train a step."
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    from trl.data_utils import is_conversational, apply_chat_template
    from omind.model_store import tiny_model_dir
    P, _ = built
    dd = load_splits(run_dir(P, "dataset")/"hf")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir())
    ex = dd["train"][0]
    assert is_conversational(ex)
    assert ex["messages"][-1]["content"] in apply_chat_template({"messages": ex["messages"]}, tok)["text"]
    train = dd["train"].select(range(4)).select_columns(["messages"])
    cfg = SFTConfig(output_dir=str(P.run.results_dir) + "/sft", max_steps=1, per_device_train_batch_size=2, report_to=[],
                    save_strategy="no", logging_steps=1, use_cpu=True, max_length=128)
    tr = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir()), args=cfg, train_dataset=train, processing_class=tok)
    assert "input_ids" in tr.train_dataset.column_names
    out = tr.train()
    assert out.global_step == 1


def test_deterministic_by_seed(tmp_path):
    recs = [reviewed(i, t) for t in ("qa", "mcqa") for i in range(40)]
    def splits(seed, name, order=1):
        P = make_run(tmp_path, recs[::order], seed=seed, name=name)
        run_dataset(P)
        dd = load_splits(run_dir(P, "dataset")/"hf")
        return {x: dd[x]["id"] for x in SPLITS}
    a, b, c = splits(0, "a"), splits(0, "b", order=-1), splits(1, "c")
    assert a == b                                                    # same seed, any input order: same splits
    assert a != c


def test_no_kept_samples_gives_empty_splits_with_schema(tmp_path):
    P = make_run(tmp_path, [reviewed(1, "qa", kept=False)])
    s = run_dataset(P)
    dd = load_splits(run_dir(P, "dataset")/"hf")
    assert s["n"] == 0 and all(len(dd[x]) == 0 for x in SPLITS)
    assert "messages" in dd["train"].column_names


def test_missing_review_stage(tmp_path):
    P = load_params(None, {"run": {"name": "t", "results_dir": str(tmp_path)}})
    with pytest.raises(FileNotFoundError, match="review"): run_dataset(P)


def test_bad_dataset_params():
    from omind.params_file import ParamsError
    with pytest.raises(ParamsError, match="dataset.dpo_share"): load_params(None, {"dataset": {"dpo_share": -0.1}})


def test_sixth_family_through_review_into_dataset(tmp_path, sixth_family):
    "A family registered with one call is synthesised on the tiny model, reviewed (funnel, verdicts) and lands in the DatasetDict and its card."
    import pandas as pd
    from omind.synthesis import run_synthesis
    from omind.review import run_review
    from omind.testing import toy_knowledge, ToyRetriever
    from omind.core import read_jsonl
    name = sixth_family.name
    P = load_params(None, {"run": {"name": "t6", "results_dir": str(tmp_path)},
                           "models": {"default": {"model": "embedded:tiny-random", "batch_size": 8}},
                           "synthesis": {"n": {**{t: 0 for t in TASKS}, name: 6}, "max_new_tokens": 12, "explain_max_new_tokens": 12,
                                         "prune_max_new_tokens": 6, "chunk_size": 6},
                           "review": {"chunk_size": 4, "max_regenerations": 0, "nli_scoring": "first_token"}})
    kb = toy_knowledge()
    run_synthesis(P, kb=kb, retriever=ToyRetriever(kb), progress=False)
    ok = [r["id"] for r in read_jsonl(run_dir(P, "synthesis")/"samples.jsonl") if r["task"] == name and r["status"] == "ok"]
    assert ok, "the tiny model wrote no well-formed sample of the sixth family"
    s = run_review(P)
    rv = {r["id"]: r for r in read_jsonl(run_dir(P, "review")/"reviewed.jsonl")}
    assert all(rv[i]["drop_reason"] not in ("invalid", "unknown_task") for i in ok)          # validated by its own family
    assert all(any(x["nli"] for x in rv[i]["review"]["sentences"]) for i in ok)              # judged sentence by sentence
    f = pd.read_csv(run_dir(P, "review")/"funnel.csv").set_index("task")
    assert f.loc[name, "seeded"] == 6 and f.loc[name, "generated"] == len(ok)
    assert name in set(pd.read_csv(run_dir(P, "review")/"nli_verdicts.csv")["task"])
    kept = sorted(i for i, r in rv.items() if r["kept"])
    assert kept and s["kept_by_task"] == {name: len(kept)}
    d = run_dataset(P)
    dd = load_splits(run_dir(P, "dataset")/"hf")
    assert sorted(i for x in SPLITS for i in dd[x]["id"]) == kept and d["by_task"] == {name: len(kept)}
    ex = next(r for x in SPLITS for r in dd[x])
    assert ex["task"] == name and ex["label"] in ("Yes", "No")
    card = (run_dir(P, "dataset")/"hf"/"README.md").read_text()
    assert f"| {name}" in card and f"`{name}` {sixth_family.title}" in card
    assert name in read_json(run_dir(P, "dataset")/"stats.json")["tasks"]


def test_standard_folder_round_trip(built):
    "`datasets.load_dataset(path)` reads the folder as it is: every split, the exact features, the rows written."
    from datasets import load_dataset
    from omind.core import read_jsonl
    P, s = built
    hf = run_dir(P, "dataset")/"hf"
    assert sorted(str(p.relative_to(hf)) for p in hf.rglob("*") if p.is_file()) == sorted(["README.md", *(split_file(x, t) for x in SPLITS for t in TASKS)])
    assert not (run_dir(P, "dataset")/"README.md").exists()               # one card, inside the folder
    ld = load_dataset(str(hf))
    assert list(ld) == list(SPLITS)
    written = {r["id"]: to_row(r, P.dataset) for r in read_jsonl(run_dir(P, "review")/"reviewed.jsonl") if r["kept"]}
    for x in SPLITS:
        assert ld[x].features == features()
        assert len(ld[x]) == s[x]
        for row in ld[x]: assert row == written[row["id"]], row["id"]       # messages, options, label, ... exactly
    assert sum(len(ld[x]) for x in SPLITS) == len(written)
    ours = load_splits(hf)
    assert {x: ours[x]["id"] for x in SPLITS} == {x: ld[x]["id"] for x in SPLITS}


def test_card_metadata(built):
    "The card's YAML (read with huggingface_hub.DatasetCard) has the licence with its name, tasks, language, configs and features."
    from huggingface_hub import DatasetCard
    from datasets.info import DatasetInfosDict
    P, s = built
    card = DatasetCard.load(run_dir(P, "dataset")/"hf"/"README.md")
    d = card.data
    assert (d.license, d.license_name, d.language, d.size_categories) == ("other", "omind-synthetic-data", ["en"], ["n<1K"])
    assert "text-generation" in d.task_categories and "mental-health" in d.tags
    fams = sorted(TASKS)
    configs = {c["config_name"]: c for c in d.configs}
    assert configs == {"default": {"config_name": "default", "default": True, "data_files": [{"split": x, "path": [split_file(x, t) for t in fams]} for x in SPLITS]},
                       **{t: {"config_name": t, "data_files": [{"split": x, "path": split_file(x, t)} for x in SPLITS]} for t in fams}}
    infos = DatasetInfosDict.from_dataset_card_data(d)
    assert sorted(infos) == sorted(["default", *fams])
    assert all(i.features == features() for i in infos.values())
    assert {k: v.num_examples for k, v in infos["default"].splits.items()} == {x: s[x] for x in SPLITS}
    assert sum(infos[t].splits["train"].num_examples for t in fams) == s["train"]
    assert "## Funnel" in card.text and "Licence of this dataset: `other` (omind-synthetic-data)" in card.text


def test_card_licence_from_params(tmp_path):
    "A Hub licence id is written as it is, without license_name; 'other' without a name is refused at params load."
    from huggingface_hub import DatasetCard
    from omind.params_file import ParamsError
    P = make_run(tmp_path, [reviewed(i, "qa") for i in range(6)], dataset={"license": "cc-by-4.0"})
    run_dataset(P)
    d = DatasetCard.load(run_dir(P, "dataset")/"hf"/"README.md").data
    assert d.license == "cc-by-4.0" and d.get("license_name") is None
    with pytest.raises(ParamsError, match="license_name"): load_params(None, {"dataset": {"license_name": None}})


def test_empty_split_left_out_and_restored(tmp_path):
    "A split without rows has no file (datasets cannot build it from 0 rows); load_splits gives it back empty."
    from datasets import load_dataset
    P = make_run(tmp_path, [reviewed(i, "qa") for i in range(10)], dataset={"dpo_share": 0.0})
    s = run_dataset(P)
    hf = run_dir(P, "dataset")/"hf"
    assert s["dpo"] == 0 and not (hf/split_file("dpo", "qa")).exists()
    assert "dpo" not in load_dataset(str(hf))
    dd = load_splits(hf)
    assert len(dd["dpo"]) == 0 and dd["dpo"].features == features()
    assert "| qa" in (hf/"README.md").read_text()


def test_trl_sft_cli_reads_the_folder(built, tmp_path):
    "`trl sft --dataset_name <folder>` (TRL's own script, its own argument parser) loads the folder and trains a step."
    from trl.scripts.sft import make_parser, main
    from omind.model_store import tiny_model_dir
    P, _ = built
    argv = ["--model_name_or_path", str(tiny_model_dir()), "--dataset_name", str(run_dir(P, "dataset")/"hf"),
            "--output_dir", str(tmp_path/"out"), "--max_steps", "1", "--per_device_train_batch_size", "2",
            "--max_length", "64", "--report_to", "none", "--save_strategy", "no", "--use_cpu", "true", "--logging_steps", "1"]
    main(*make_parser().parse_args_and_config(args=argv))
    assert (tmp_path/"out"/"config.json").exists() or (tmp_path/"out"/"model.safetensors").exists()


# The folder as TRL's trainers take it: a task family's config into SFTTrainer, the `preference` config into
# DPOTrainer, one step each on the tiny model. The same checks run on the committed smoke run's folder (the README's
# call on a fresh clone) when its Parquet files are there.
SMOKE_HF = Path(__file__).resolve().parents[1]/"results"/"smoke"/"dataset"/"hf"


def _with_pairs(P):
    "The built run's dataset folder with the preference pairs the train stage would add (draft answers as rejected)."
    from omind.train_data import dpo_pairs
    hf = run_dir(P, "dataset")/"hf"
    save_preference(hf, dpo_pairs(list(load_splits(hf)["dpo"])))
    return hf


@pytest.fixture(params=["built", "smoke"])
def folder(request):
    if request.param == "smoke":
        if not ((SMOKE_HF/"data").is_dir() and any((SMOKE_HF/"data").rglob("*.parquet"))):
            pytest.skip(f"{SMOKE_HF} has no Parquet files (the committed smoke run's are added after a smoke run)")
        return SMOKE_HF
    return _with_pairs(request.getfixturevalue("built")[0])


def test_family_configs_and_preference_load(folder):
    "Every family named in the card is a config; `default` is their union; `preference` is TRL's preference format."
    from datasets import load_dataset, get_dataset_config_names
    names = get_dataset_config_names(str(folder))
    fams = [c for c in names if c not in ("default", "preference")]
    assert "default" in names and fams and "preference" in names
    default = load_dataset(str(folder))
    for t in fams:
        dd = load_dataset(str(folder), t)
        for x in dd:
            assert set(dd[x]["task"]) == {t} and dd[x].features == default[x].features
    assert sum(len(load_dataset(str(folder), t)["train"]) for t in fams) == len(default["train"])
    pr = load_dataset(str(folder), "preference")
    assert list(pr) == ["train"] and pr["train"].features == preference_features() and len(pr["train"])
    ex = pr["train"][0]
    assert ex["chosen"][0]["role"] == ex["rejected"][0]["role"] == "assistant" and ex["chosen"] != ex["rejected"]
    assert provenance_of(default["train"][0])["review"] is not None


def test_sft_step_on_a_family_config(folder, tmp_path):
    "`load_dataset(folder, <family>)` goes into TRL's SFTTrainer as it is and trains one step."
    from datasets import load_dataset, get_dataset_config_names
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    from omind.model_store import tiny_model_dir
    fam = next(c for c in get_dataset_config_names(str(folder)) if c not in ("default", "preference"))
    train = load_dataset(str(folder), fam, split="train")
    train = train.select(range(min(4, len(train))))
    cfg = SFTConfig(output_dir=str(tmp_path/"sft"), max_steps=1, per_device_train_batch_size=2, report_to=[],
                    save_strategy="no", logging_steps=1, use_cpu=True, max_length=128)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir())
    tr = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir()), args=cfg, train_dataset=train, processing_class=tok)
    assert tr.train().global_step == 1


def test_dpo_step_on_the_preference_config(folder, tmp_path):
    "`load_dataset(folder, 'preference')` goes into TRL's DPOTrainer as it is (a LoRA adapter on the tiny model) and trains one step."
    import math
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from omind.model_store import tiny_model_dir
    pairs = load_dataset(str(folder), "preference", split="train")
    pairs = pairs.select(range(min(4, len(pairs))))
    cfg = DPOConfig(output_dir=str(tmp_path/"dpo"), max_steps=1, per_device_train_batch_size=2, report_to=[],
                    save_strategy="no", logging_steps=1, use_cpu=True, max_length=128)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir())
    tr = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir()), args=cfg, train_dataset=pairs, processing_class=tok,
                    peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    out = tr.train()
    assert out.global_step == 1 and math.isfinite(out.training_loss)
