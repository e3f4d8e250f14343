"Tests of omind.push on a real dataset folder and real PEFT adapters; the Hub is replaced by a fake HfApi that keeps what it is given."
import json, shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from omind.core import load_params, run_dir, atomic_write, atomic_write_json
from omind.stages import finish_stage
from omind.dataset import run_dataset, split_file, SPLITS
import omind.push as push
from omind.push import push_run, push_plan, PushError

BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def reviewed(i, task):
    msgs = [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]
    return {"id": f"{task}-{i}", "task": task, "messages": msgs, "draft_messages": msgs, "label": "B" if task == "mcqa" else "",
            "options": ["A", "B", "C", "D"] if task == "mcqa" else [], "evidence": [{"id": "t1", "text": "Fact."}],
            "teacher": "tiny", "kept": True, "drop_reason": "", "review": {}}


def save_adapter(dest: Path):
    "A real (tiny) LoRA adapter folder as the train stage leaves it, base recorded as a local folder."
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from omind.model_store import tiny_model_dir
    m = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir()), LoraConfig(r=2, target_modules=["q_proj"]))
    m.save_pretrained(str(dest)); AutoTokenizer.from_pretrained(tiny_model_dir()).save_pretrained(str(dest))
    (dest/"training_args.bin").write_bytes(b"pickle")
    c = json.loads((dest/"adapter_config.json").read_text()); c["base_model_name_or_path"] = str(tiny_model_dir())
    (dest/"adapter_config.json").write_text(json.dumps(c))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "A run folder with the dataset stage really run and the train stage's two adapters."
    tmp = tmp_path_factory.mktemp("push")
    P = load_params(None, {"run": {"name": "r", "results_dir": str(tmp)}})
    atomic_write(run_dir(P, "review")/"reviewed.jsonl", "".join(json.dumps(reviewed(i, t)) + "\n" for t in ("qa", "mcqa") for i in range(20)))
    finish_stage(P, "review")
    run_dataset(P)
    tr = run_dir(P, "train")
    for ph in ("sft", "dpo"): save_adapter(tr/ph/"adapter")
    atomic_write_json(tr/"done.json", {"stage": "train", "final_adapter": "train/dpo/adapter"})
    return run_dir(P)


class FakeHub:
    "Stands in for huggingface_hub.HfApi: records calls, keeps a copy of every uploaded folder per repo."
    def __init__(self, tmp: Path, public=()):
        self.tmp, self.public, self.calls, self.trees, self.tokens = tmp, set(public), [], {}, []
    def __call__(self, token=None):
        self.tokens.append(token); return self
    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw)); return f"https://huggingface.co/{repo_id}"
    def repo_info(self, repo_id, **kw):
        return SimpleNamespace(private=repo_id not in self.public)
    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw["repo_id"], {k: v for k, v in kw.items() if k not in ("repo_id", "folder_path")}))
        dest = self.tmp/kw["repo_id"].replace("/", "__")
        shutil.rmtree(dest, ignore_errors=True); shutil.copytree(kw["folder_path"], dest)
        self.trees[kw["repo_id"]] = dest
        return SimpleNamespace(oid="c0ffee", commit_url="https://huggingface.co/x/commit/c0ffee")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path/"hub")
    monkeypatch.setattr(push, "HfApi", fake)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path/"no-saved-token"))   # no `hf auth login` of this machine
    return fake


def test_dry_run_lists_the_files(run, hub):
    p = push_run(run, "lab/omind-data", "lab/omind-adapters", dry_run=True)
    assert p["dry_run"] and p["token"] is None and hub.calls == [] and hub.tokens == []
    assert p["dataset"]["files"] == sorted(["README.md", *(split_file(s, t) for s in SPLITS for t in ("mcqa", "qa"))])
    assert p["dataset"]["folder"] == str(run/"dataset"/"hf") and p["dataset"]["repo_type"] == "dataset"
    A = p["adapters"]
    assert (A["repo"], A["repo_type"], A["final"], list(A["phases"])) == ("lab/omind-adapters", "model", "dpo", ["sft", "dpo"])
    for ph in ("sft", "dpo"):
        assert {f"{ph}/adapter_config.json", f"{ph}/adapter_model.safetensors", f"{ph}/tokenizer.json"} <= set(A["files"])
        assert f"{ph}/training_args.bin" not in A["files"]
    assert "README.md" in A["files"]
    assert any("not a Hub id" in w for w in p["warnings"])                 # the base is a local folder
    assert push_run(run, "lab/omind-data", dry_run=True)["adapters"] is None


def test_push_calls_and_what_arrives(run, hub):
    "create_repo / upload_folder get the right arguments; what arrives loads with load_dataset and PeftModel (subfolder)."
    from datasets import load_dataset
    p = push_run(run, "lab/omind-data", "lab/omind-adapters", token="hf_not_a_real_token", base_model=BASE)
    assert hub.tokens == ["hf_not_a_real_token"] and "hf_not_a_real_token" not in json.dumps(p)
    assert [c[:2] for c in hub.calls] == [("create_repo", "lab/omind-data"), ("create_repo", "lab/omind-adapters"),
                                         ("upload_folder", "lab/omind-data"), ("upload_folder", "lab/omind-adapters")]
    assert hub.calls[0][2] == {"repo_type": "dataset", "private": True, "exist_ok": True}
    assert hub.calls[1][2] == {"repo_type": "model", "private": True, "exist_ok": True}
    assert hub.calls[2][2]["repo_type"] == "dataset" and hub.calls[2][2]["delete_patterns"] == ["data/*", "preference/*"]
    assert hub.calls[3][2]["repo_type"] == "model"
    assert p["dataset"]["commit"] == "c0ffee" and p["adapters"]["url"] == "https://huggingface.co/lab/omind-adapters"
    ds = load_dataset(str(hub.trees["lab/omind-data"]))                    # the repo's tree is a loadable dataset
    assert list(ds) == list(SPLITS) and sum(map(len, ds.values())) == 40
    tree = hub.trees["lab/omind-adapters"]
    assert sorted(str(f.relative_to(tree)) for f in tree.rglob("*") if f.is_file()) == sorted(p["adapters"]["files"])
    card = (tree/"README.md").read_text()
    assert f"base_model: {BASE}" in card and "- lab/omind-data" in card and 'subfolder="dpo"' in card
    for ph in ("sft", "dpo"):                                              # the uploaded config names the Hub base ...
        assert json.loads((tree/ph/"adapter_config.json").read_text())["base_model_name_or_path"] == BASE
        assert json.loads((run/"train"/ph/"adapter"/"adapter_config.json").read_text())["base_model_name_or_path"] != BASE
    from peft import PeftModel                                             # ... and the adapter loads from its subfolder
    from transformers import AutoModelForCausalLM
    from omind.model_store import tiny_model_dir
    m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir()), str(tree), subfolder="dpo")
    assert m.peft_config["default"].r == 2


def test_token_from_env_and_public(run, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    p = push_run(run, "lab/omind-data", private=False)
    assert hub.tokens == ["hf_from_env"] and p["token"] == "HF_TOKEN" and p["adapters"] is None
    assert hub.calls[0][2]["private"] is False and [c[0] for c in hub.calls] == ["create_repo", "upload_folder"]


def test_token_saved_by_login_is_used(run, hub, tmp_path, monkeypatch):
    "`omind push --help` promises that a token saved by `hf auth login` works: it does (huggingface_hub.get_token)."
    from huggingface_hub import constants
    (tmp_path/"saved-token").write_text("hf_from_login\n")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path/"saved-token"))
    p = push_run(run, "lab/omind-data")
    assert hub.tokens == ["hf_from_login"] and p["token"] == "login"


def test_no_token_names_hf_token(run, hub):
    with pytest.raises(PushError, match="HF_TOKEN"): push_run(run, "lab/omind-data")
    assert hub.calls == [] and hub.tokens == []


def test_offline_is_a_clear_error(run, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PushError, match="HF_HUB_OFFLINE"): push_run(run, "lab/omind-data", token="t")
    assert hub.calls == []


def test_private_push_into_public_repo_refused(run, hub):
    hub.public = {"lab/omind-data"}
    with pytest.raises(PushError, match="exists and is public"): push_run(run, "lab/omind-data", token="t")
    assert [c[0] for c in hub.calls] == ["create_repo"]                    # nothing uploaded


@pytest.mark.parametrize("repo", ["omind-data", "lab/omind data", "a/b/c", "lab/", ""])
def test_malformed_repo_id(run, hub, repo):
    with pytest.raises(ValueError, match="dataset repo"): push_run(run, repo, dry_run=True)
    with pytest.raises(ValueError, match="adapter repo"): push_run(run, "lab/ok", adapter_repo=repo or "x", dry_run=True)


def test_unfinished_run_names_the_stage(tmp_path, hub):
    run = tmp_path/"r"; (run/"dataset").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has not finished stage 'dataset'"): push_run(run, "lab/d", dry_run=True)
    with pytest.raises(FileNotFoundError, match="does not exist"): push_run(tmp_path/"nope", "lab/d", dry_run=True)


def test_adapters_need_the_train_stage(run, hub, tmp_path):
    r2 = tmp_path/"r2"; shutil.copytree(run/"dataset", r2/"dataset")
    push_run(r2, "lab/d", dry_run=True)                                    # the dataset alone is fine
    with pytest.raises(FileNotFoundError, match="has not finished stage 'train'"): push_run(r2, "lab/d", "lab/a", dry_run=True)
    with pytest.raises(ValueError, match="base_model"): push_plan(run, "lab/d", "lab/a", base_model="/local/model")


def test_machine_paths_are_refused(run, hub, tmp_path):
    "A run whose uploads would carry an absolute path of this machine is refused before any network call, naming the file."
    with pytest.raises(PushError) as e: push_run(run, "lab/omind-data", "lab/omind-adapters", token="t")   # adapter configs name a local base
    assert "adapter_config.json contains" in str(e.value) and "--base-model" in str(e.value) and hub.calls == [] and hub.tokens == []
    r2 = tmp_path/"r2"; shutil.copytree(run/"dataset", r2/"dataset")
    card = r2/"dataset"/"hf"/"README.md"; card.write_text(card.read_text() + f"\nmade from {tmp_path}/private/data.csv\n")
    with pytest.raises(PushError, match=r"README\.md contains"): push_run(r2, "lab/omind-data", token="t")
    assert any("would be refused" in w for w in push_run(r2, "lab/omind-data", dry_run=True)["warnings"])   # the dry run says so
    assert hub.calls == []


def test_cards_of_train_and_evaluate_are_uploaded(run, hub, tmp_path):
    "The cards the train stage wrote (and the evaluate stage completed with model-index) arrive as they are; the top card carries the final adapter's results."
    from huggingface_hub import ModelCard
    from omind.adapter_cards import _write_card, card_results
    r2 = tmp_path/"results"/"r"; shutil.copytree(run, r2)
    P = load_params(None, {"run": {"name": "r", "results_dir": str(tmp_path/"results")}})
    for ph in ("sft", "dpo"): _write_card(P, ph, r2/"train"/ph/"adapter", {"n_train": 40, "train_loss": 1.25})
    report = {"models": [{"name": "tuned", "model": "results/r/train/dpo/adapter"}, {"name": "sft", "model": "results/r/train/sft/adapter"}],
              "core": [{"model": m, "set": "heldout_kb", "task": "mcqa", "method": "letter_raw", "n": 40, "accuracy": a, "macro_f1": a}
                       for m, a in (("sft", 0.3), ("tuned", 0.35), ("base", 0.25))]}
    assert len(card_results(P, report)) == 2
    p = push_run(r2, "lab/omind-data", "lab/omind-adapters", token="t", base_model=BASE)
    assert {"README.md", "sft/README.md", "dpo/README.md"} <= set(p["adapters"]["files"])
    tree = hub.trees["lab/omind-adapters"]
    for ph, acc in (("sft", 0.3), ("dpo", 0.35)):                          # each phase's card, its own model's results
        c = ModelCard.load(tree/ph/"README.md")
        assert c.data.eval_results[0].metric_value == acc and '"train_loss": 1.25' in c.text
    top = ModelCard.load(tree/"README.md")
    assert [e.metric_value for e in top.data.eval_results] == [0.35, 0.35] and top.data.base_model == BASE
    assert "\n## Hyperparameters" not in top.text and "### Hyperparameters" in top.text and 'subfolder="dpo"' in top.text
