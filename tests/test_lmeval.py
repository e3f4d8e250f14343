"""omind's core scorer against lm-evaluation-harness on the tiny random model and a random LoRA adapter on it: the same
items, prompts and choices, compared item by item (raw log-likelihood methods must agree; calibrated ones agree once
omind's prior removal is applied to lm-eval's numbers)."""
import json
import pytest

pytest.importorskip("lm_eval", reason="lm-evaluation-harness not installed (pip install -e '.[lmeval]')")

from omind.core_eval import heldout_items, prediction_rows, score_items
from omind.llm_local import TransformersLLM
from omind.model_store import tiny_model_dir
from omind.lmeval import lmeval_check
from omind.pipeline import main
from omind.testing import toy_knowledge

@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    "A LoRA adapter with random (non-zero) weights on the tiny model, so the adapted model differs from its base."
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    m = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir()),
                       LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    d = tmp_path_factory.mktemp("adapter")
    m.save_pretrained(d)
    assert json.loads((d/"adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir())
    return d

def test_lmeval_agrees_with_omind_item_by_item(tmp_path, adapter):
    kb = toy_knowledge()
    items = heldout_items(kb, "mcqa", 8, 3) + heldout_items(kb, "classification", 8, 3)
    models = [{"name": "base", "model": str(tiny_model_dir()), "system_prompt": None},
              {"name": "lora", "model": str(adapter), "system_prompt": "Answer briefly."}]
    rows, recs = [], []
    for m in models:
        llm = TransformersLLM(m["model"], batch_size=8)
        from omind.eval_candidates import with_system
        r = score_items(llm, [{**it, "messages": with_system(it["messages"], m["system_prompt"])} for it in items],
                        progress=False, option_text=False)
        rows += prediction_rows(m["name"], r); recs += [{**x, "model": m["name"]} for x in r]
    res = lmeval_check(items, models, rows, tmp_path, omind_records=recs, batch_size=8)
    t = res["table"]
    assert set(t.model) == {"base", "lora"} and set(t.method) == {"letter_raw", "letter_calibrated", "label_ll", "label_calibrated"}
    assert (t.n == 8).all()
    # the same numbers: centred log-likelihoods of every choice agree to float precision
    assert (t.max_abs_delta_loglik < 1e-3).all(), t[["model", "task", "max_abs_delta_loglik"]]
    # the same answers: at most one item in 100 differs (here: none of 8 per group), raw and with omind's prior removal
    assert (t.n_disagree <= t.n // 100).all(), t[["model", "task", "method", "n_disagree"]]
    raw = t[t.method.isin(["letter_raw", "label_ll"])]
    assert (raw.lmeval_acc == raw.omind_acc).all()                       # lm-eval's own acc is the raw argmax
    assert (tmp_path/"tasks"/"lora").is_dir() and (tmp_path/"samples"/"lora.jsonl").exists()
    # the adapter changes the model's scores (else the check would prove nothing about peft=)
    by = {(r["model"], r["id"]): r["letter_logprobs"] or r["label_logprobs"] for r in recs}
    assert max(abs(by[("base", it["id"])][k] - by[("lora", it["id"])][k]) for it in items for k in by[("base", it["id"])]) > 1e-3

def test_cli_lm_eval_needs_a_run(capsys):
    assert main(["lm-eval", "no-such-run-xyz"]) == 1
    assert "no run 'no-such-run-xyz'" in capsys.readouterr().err
