"`omind plan`: calls and tokens per stage and role from a dry run of the stages' code, with counts derivable by hand."
import subprocess, sys
from pathlib import Path
import pytest
from omind.core import load_params
from omind.plan import plan, format_plan, load_prices, with_cost, prompt_tokens

ROOT = Path(__file__).resolve().parents[1]

def omind(*args, timeout=300):
    return subprocess.run([sys.executable, "-c", "import sys; from omind.pipeline import main; sys.exit(main(sys.argv[1:]))", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)

@pytest.fixture(scope="module")
def tiny_plan():
    P = load_params(ROOT/"params"/"tiny.yaml", check_paths=False, sets=[
        "synthesis.retrieval=false", "synthesis.n={mcqa: 3, classification: 2, root_cause: 0, qa: 4, conversation: 2}",
        "synthesis.families.conversation.turns_min=3", "synthesis.families.conversation.turns_max=3", "review.enabled=true", "review.nli_model=''",
        "review.nli_scoring=first_token", "dataset.dpo_share=0.5", "train.dpo.rejected=[base]",
        "evaluate.max_win_explanations=0", "evaluate.max_win_conversations=2", "evaluate.schemes=[binary]",
        "evaluate.judge_mode=generate", "evaluate.max_calibration_cases=6"])
    return P, plan(P)

def rows(df, stage):
    return df[df.stage == stage].set_index("step")

def test_synthesis_calls_by_hand(tiny_plan):
    "No retrieval: MCQA 1 call, QA 1 call, classification 2 (post + explanation), a 3-exchange conversation 6."
    P, df = tiny_plan
    S, syn = P.synthesis, rows(df, "synthesis")
    assert not any(s.startswith("prune") for s in syn.index)                       # retrieval off: no pruning calls
    assert syn.loc["generate (mcqa)", "calls"] == 3
    assert syn.loc["generate (mcqa)", "completion_tokens"] == 3 * S.of("mcqa").explain_max_new_tokens
    assert syn.loc["generate (qa)", "calls"] == 4 and syn.loc["generate (qa)", "completion_tokens"] == 4 * S.max_new_tokens
    assert syn.loc["generate (classification)", "calls"] == 2 * 2
    assert syn.loc["generate (classification)", "completion_tokens"] == 2 * (S.max_new_tokens + S.of("classification").explain_max_new_tokens)
    assert syn.loc["generate (conversation)", "calls"] == 2 * 3 * 2
    assert syn.loc["generate (conversation)", "completion_tokens"] == 2 * 3 * (S.of("conversation").client_max_new_tokens + S.max_new_tokens)
    assert (syn["role"] == "teacher").all() and (syn["prompt_tokens"] > syn["calls"] * 20).all()
    assert "root_cause" not in " ".join(syn.index)                                   # n = 0: nothing planned

def test_prune_adds_one_call_per_item():
    P = load_params(ROOT/"params"/"tiny.yaml", check_paths=False, sets=[
        "synthesis.n={mcqa: 3, classification: 0, root_cause: 0, qa: 0, conversation: 0}", "review.enabled=false"])
    syn = rows(plan(P), "synthesis")
    assert syn.loc["prune (mcqa)", "calls"] == 3 and syn.loc["generate (mcqa)", "calls"] == 3
    assert syn.loc["prune (mcqa)", "completion_tokens"] == 3 * P.synthesis.prune_max_new_tokens

def test_review_rejected_evaluate(tiny_plan):
    P, df = tiny_plan
    rev = rows(df, "review")
    assert set(rev.index) == {"nli (mcqa)", "nli (classification)", "nli (qa)", "nli (conversation)"}
    assert (rev["role"] == "nli").all() and (rev["calls"] >= rev["items"]).all()    # at least one judged sentence per sample
    rej = rows(df, "rejected").loc["rejected answers"]
    n_samples = 3 + 2 + 4 + 2
    assert rej["items"] == round(n_samples * 0.5) == rej["calls"] and rej["role"] == "student"
    ev = rows(df, "evaluate")
    # pairs: 2 candidates x 2 conversations x both orders; generate mode with verdicts that parse: one call each
    assert ev.loc["judge pairs", "calls"] == 2 * 2 * 2 and ev.loc["judge pairs", "completion_tokens"] == 8 * P.evaluate.judge_max_new_tokens
    assert ev.loc["judge calibration", "items"] == 6
    assert {"generate (base)", "generate (sft)", "generate (dpo)", "judge rubric"} <= set(ev.index)

def test_prices_and_format(tiny_plan, tmp_path):
    _, df = tiny_plan
    f = tmp_path/"prices.yaml"; f.write_text("teacher: {prompt_per_1m: 1.0, completion_per_1m: 2.0}\n")
    pr = load_prices(f)
    c = with_cost(df, pr)
    t = c[c.role == "teacher"]
    assert abs(t["cost"].sum() - (t["prompt_tokens"].sum() / 1e6 + 2 * t["completion_tokens"].sum() / 1e6)) < 1e-9
    assert c[c.role == "judge"]["cost"].isna().all()
    text = format_plan(df, pr)
    assert "Totals per role" in text and "SmolLM2 tokenizer" in text and "upper bound" in text
    (tmp_path/"bad.yaml").write_text("teacher: {prompt_per_1m: 1.0, completion_per_m: 2.0}\n")
    with pytest.raises(ValueError, match="bad.yaml: key 'teacher'"): load_prices(tmp_path/"bad.yaml")

def test_prompt_tokens_use_the_chat_template():
    from omind.plan import text_tokens
    assert prompt_tokens("Hello") > text_tokens("Hello") + 3                         # template tokens come on top of the text

def test_paper_plan_exits_0_offline(tmp_path):
    "paper.yaml names Hub models and endpoints that are unreachable here: the plan loads none of them."
    f = tmp_path/"prices.yaml"; f.write_text("meta-llama/Llama-3.1-70B-Instruct: {prompt_per_1m: 0.6, completion_per_1m: 0.8}\n")
    import os
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", "import sys; from omind.pipeline import main; sys.exit(main(sys.argv[1:]))",
                        "plan", "params/paper.yaml", "--prices", str(f), "--csv", str(tmp_path/"plan.csv")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for s in ("synthesis", "review", "evaluate", "teacher", "judge", "Totals per role", "cost"): assert s in r.stdout, s
    import pandas as pd
    df = pd.read_csv(tmp_path/"plan.csv")
    assert df[df.stage == "synthesis"]["calls"].sum() > 50_000                      # ~50k knowledge-base samples, several calls each

def test_plan_bad_params_is_one_line_error(tmp_path):
    p = tmp_path/"bad.yaml"; p.write_text(f"extends: {ROOT/'params'/'tiny.yaml'}\nsynthesis: {{nn: 3}}\n")
    r = omind("plan", str(p))
    assert r.returncode == 1 and "unknown key 'synthesis.nn'" in r.stderr and "Traceback" not in r.stderr
