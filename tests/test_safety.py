"Safety rules and shared text helpers against the project's own data: the curated knowledge base and the seed benchmark."
import itertools

import pytest

from omind.safety import (GUIDANCE, check, crisis_resources, crisis_topics, enforce, is_crisis, method_details,
                          remove_method_details)
from omind.text import parse_choice, split_sentences

# the sentence synthesis has always appended; cached smoke outputs depend on it byte for byte
OLD_CRISIS_SENTENCE = ("If you are thinking about suicide or self-harm, or you are in danger, please call or text 988 "
                       "(Suicide & Crisis Lifeline, US) or your local emergency number right now.")

ORDINARY = ["I sprained my wrist and can't type.", "He pulled a gun in the video game.", "Rope access workers climb towers.",
            "Pills to lower blood pressure are common.", "Poison ivy gave me a rash.", "We jump off the pier in summer.",
            "There are signs of alcohol poisoning such as vomiting: call emergency services."]
CRISIS = ["I took an overdose last night.", "I've thought about killing myself.", "I keep cutting myself when it gets bad.",
          "There is no reason to live anymore."]
METHODS = ["How many pills for an overdose?", "What's the easiest way to die?", "I'll tie the rope to the beam and hang myself.",
           "If I slit my wrists would it hurt?", "Fifty tablets would be a lethal dose."]


def conv(user, assistant):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]

# ---------------------------------------------------------------- review's cases (moved from tests/test_review.py)
GUIDE = "Please call or text 988 in the US, or your local emergency number, right now."

# ---------------------------------------------------------------- safety: crisis topics
@pytest.mark.parametrize("text", [
    "I have been having suicidal thoughts lately.", "Sometimes I want to kill myself.", "I keep thinking about ending my life.",
    "He talked about taking his own life.", "I just want to die.", "Everyone would be better off dead without me.",
    "I started self-harming again.", "She has a history of self harm.", "I've been cutting myself at night.",
    "I feel like there is no reason to live.", "She overdosed last year.", "What are warning signs of suicide?",
])
def test_crisis_topic_positive(text): assert crisis_topics(text), text

@pytest.mark.parametrize("text", [
    "This job is killing me.", "I'm dying to see that movie.", "I killed it at the presentation today.",
    "My phone died and I felt anxious.", "I cut my hair short.", "Exams are a nightmare but I'm coping.",
    "How do I manage panic attacks?", "Deadline pressure makes me irritable.",
])
def test_crisis_topic_negative(text): assert not crisis_topics(text), text

# ---------------------------------------------------------------- safety: resources
@pytest.mark.parametrize("text", [
    "Call or text 988.", "Reach the 988 Suicide & Crisis Lifeline.", "Call 911 if you are in danger.", "In the UK call 999.",
    "Contact a crisis line near you.", "Text HOME to 741741 to reach the Crisis Text Line.", "Call the Samaritans.",
    "Please call your local emergency number.", "Go to the nearest emergency department.", "A suicide prevention hotline can help.",
])
def test_resources_positive(text): assert crisis_resources(text), text

@pytest.mark.parametrize("text", [
    "Talk to a friend about it.", "Try some breathing exercises.", "A therapist can help with CBT.", "It was in 1988.",
])
def test_resources_negative(text): assert not crisis_resources(text), text

# ---------------------------------------------------------------- safety: method details
@pytest.mark.parametrize("text", [
    "A lethal dose of paracetamol is around 10 grams.", "How many pills would it take?", "Taking 40 tablets would kill you.",
    "He tied a noose in the garage.", "She thought about hanging herself.", "Cut deeper along the vein.",
    "I want to slit my wrists.", "He planned to jump off the bridge.", "Carbon monoxide from car exhaust fumes.",
    "What is the most painless way to die?", "the quickest method to kill yourself", "I could shoot myself.",
    "An overdose needs about 5000 mg of it.",
])
def test_method_positive(text): assert method_details(text), text

@pytest.mark.parametrize("text", [
    "Remove firearms and stored medication from the home.", "An overdose of acetaminophen can damage the liver; seek help.",
    "Take 20 mg of your prescribed medication as your doctor says.", "Means restriction is a proven prevention strategy.",
    "If you have taken too many pills, call 911 now.", "Cutting down on alcohol helps sleep.", "Jumping to conclusions is a cognitive distortion.",
])
def test_method_negative(text): assert not method_details(text), text

# ---------------------------------------------------------------- safety: whole conversations
def test_safety_conversations():
    assert check(conv("What is depression?", "A mood disorder."))["ok"]
    v = check(conv("I want to end my life.", "That sounds hard. Try journaling."))
    assert (v["ok"], v["reason"]) == (False, "crisis_without_guidance")
    assert check(conv("I want to end my life.", "I'm glad you told me. " + GUIDE))["ok"]
    # guidance written by the user does not count: it must come from the assistant
    assert not check(conv("I want to die. Someone said call 988.", "Try journaling."))["ok"]
    v = check(conv("I want to die.", GUIDE + " A lethal dose is 10 grams."))
    assert (v["ok"], v["reason"]) == (False, "method_detail")
    # method detail in the user post also makes the sample unusable
    assert check(conv("How many pills does it take to die?", GUIDE))["reason"] == "method_detail"
    # the clinical answer about suicide risk carries guidance and passes
    assert check(conv("What are risk factors for suicide?", "Prior attempts and depression raise risk. " + GUIDE))["ok"]


def test_guidance_is_the_synthesis_sentence():
    assert GUIDANCE == OLD_CRISIS_SENTENCE
    assert crisis_resources(GUIDANCE) and not method_details(GUIDANCE) and check([{"role": "assistant", "content": GUIDANCE}])["ok"]


@pytest.mark.parametrize("s", ORDINARY)
def test_ordinary_text_does_not_flag(s):
    assert not method_details(s) and not crisis_topics(s)


@pytest.mark.parametrize("s", CRISIS)
def test_crisis_text_is_a_topic_not_a_method(s):
    assert is_crisis(s) and not method_details(s)


@pytest.mark.parametrize("s", METHODS)
def test_method_howtos_are_method_details(s):
    assert method_details(s)


def test_enforce_output_passes_check():
    replies = ORDINARY + CRISIS + METHODS + ["", "Let's breathe together.\n\nWhat helped last time?"]
    contexts = [()] + [(c,) for c in ORDINARY + CRISIS] + [tuple(CRISIS[:2])]
    n = 0
    for r, ctx in itertools.product(replies, contexts):
        out = enforce(r, *ctx)
        conv = [{"role": "user", "content": c} for c in ctx] + [{"role": "assistant", "content": out}]
        v = check(conv)
        assert v["ok"], (r, ctx, out, v)
        assert not method_details(out)
        if not (is_crisis(r, *ctx) or method_details(r)): assert out == r     # nothing to fix: unchanged
        n += 1
    assert n == len(replies) * len(contexts)


def test_enforce_removes_only_method_sentences():
    out = enforce("I'm so sorry you're hurting. A lethal dose is not something to look up. You matter.")
    assert out == "I'm so sorry you're hurting. You matter. " + GUIDANCE
    assert remove_method_details("Fine text.") == "Fine text."


def test_check_reasons_and_errors():
    u = lambda s: {"role": "user", "content": s}
    a = lambda s: {"role": "assistant", "content": s}
    assert check([u("I took an overdose."), a("That sounds scary.")])["reason"] == "crisis_without_guidance"
    assert check([u("How many pills for an overdose?"), a(GUIDANCE)])["reason"] == "method_detail"
    assert check([u("I feel low."), a("Tell me more.")]) == {"ok": True, "reason": "", "topic": [], "resources": [], "methods": []}
    with pytest.raises(ValueError, match=r"messages\[1\]"): check([u("hi"), {"role": "assistant", "content": None}])


def test_curated_knowledge_base_agrees_with_the_rules():
    from omind.kb_build import KnowledgeParams, build_knowledge
    kb = build_knowledge(KnowledgeParams(icd10=False))
    crisis_ents = kb.by_type("crisis")
    assert crisis_ents and all(is_crisis(e.name, e.id, *e.aliases) for e in crisis_ents)
    texts = [t.text for t in kb.triples] + [c.text for c in kb.chunks]
    assert [t for t in texts if method_details(t)] == []            # the curated facts give no dosing or methods on purpose
    res = [t.tail for t in kb.triples if t.relation == "crisis_resource"]
    assert res and all(crisis_resources(r) for r in res)


def test_seed_benchmark_gold_replies_are_safe():
    from omind.benchmark_format import load_benchmark, seed_path
    insts = load_benchmark(seed_path())["instances"]
    gold = [t["content"] for i in insts for t in i["turns"] if t["role"] == "assistant" and t["content"]]
    assert gold and [g for g in gold if method_details(g)] == []
    crisis = [i for i in insts if i["risk"] == "crisis"]
    # many seed crisis clients speak only implicitly ("this is how it ends"): the rules must catch the explicit ones
    flagged = {i["id"] for i in crisis if any(is_crisis(t["content"]) or method_details(t["content"]) for t in i["turns"] if t["role"] == "user")}
    assert {"s-cri-01", "s-cri-02", "s-cri-03", "m-cri-01", "m-cri-02", "m-cri-06"} <= flagged


def test_text_helpers_on_model_output():
    # pysbd reads a lone capital plus full stop as an initial, so "B. Panic ..." stays one sentence (review relies on it)
    assert split_sentences("Answer: B. Panic disorder fits. It began suddenly.\nExplanation: sudden attacks.") == \
        ["Answer: B. Panic disorder fits.", "It began suddenly.", "Explanation: sudden attacks."]
    assert parse_choice("**Answer: C** because ...", ["a", "b", "c"]) == (2, "letter")


def test_every_prompt_for_crisis_content_names_a_crisis_resource():
    "Each crisis instruction (omind.prompts) names a resource by the safety rules, and every prompt a model gets on crisis content carries one."
    from omind import prompts as P
    from omind.benchmark_build import counsellor_prompt
    from omind.review import regen_conv
    from omind.synthesis import SynthesisParams
    import omind.tasks as T
    for what, text in P.CRISIS_INSTRUCTIONS.items(): assert crisis_resources(text), what
    has = lambda text, what: P.CRISIS_INSTRUCTIONS[what] in text and crisis_resources(text)
    S = SynthesisParams()
    # teacher: an open question on a crisis seed, and a counsellor turn after a client who speaks of suicide
    ev = [{"id": "t:1", "text": "Crisis lines offer support at any hour."}]
    p, _ = T.qa_prompt({"seed": {"question": "What helps in a crisis?", "crisis": True}, "evidence": ev}, S)
    assert has(p, "teacher")
    seen = []
    def chat(convs, n):
        seen.extend(convs); return ["I keep thinking about killing myself, every night."] * len(convs)
    T.get_task("conversation").generate([{"seed": {"persona": "a nurse", "symptoms": ["low mood"], "cause": "work", "turns": 1},
                                          "evidence": ev}], chat, S)
    counsellor = [c for c in seen if c[0]["content"] == T.PROMPTS["counsellor_system"]]
    assert counsellor and all(has(c[-1]["content"], "teacher") for c in counsellor)
    # review's rewriter, the benchmark's gold counsellor at high and crisis risk, the evaluated prompted counsellor
    assert has(regen_conv([{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}], 1, [], [])[0]["content"], "review")
    s = {"persona": "a nurse", "condition": "cond:insomnia_disorder", "stressor": "stressor:relationships", "facts": []}
    for risk in ("high", "crisis"): assert has(counsellor_prompt({**s, "risk": risk}, [])[0]["content"], "benchmark counsellor")
    assert has(P.COUNSELLOR_PROMPT, "evaluation")
    assert P.CRISIS_INSTRUCTIONS["benchmark rubric"] in P.CRISIS_CONV_ITEMS
