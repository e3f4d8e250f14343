"The OpenAI-compatible backend against a real llama.cpp server process (no mocks of the HTTP layer)."
import math, threading, time
import pytest
from conftest import FAKE_KEY, KEY_ENV, free_port, start_server, stop_server, wait_ready
from omind.llm import OpenAILLM, CachedLLM, GenConfig, EndpointError, label_probs, embedded_model_dir

def test_chat_batch(llama_server, fake_key):
    url, _ = llama_server
    llm = OpenAILLM("smollm2", url, api_key_env=fake_key, max_concurrency=2)
    outs = llm.chat(["What is 2+2?", [{"role": "user", "content": "Name a colour."}]], GenConfig(max_new_tokens=8))
    assert len(outs) == 2 and all(isinstance(o, str) and o for o in outs)

def test_wrong_key_is_clear_and_not_leaked(llama_server, monkeypatch):
    url, _ = llama_server
    monkeypatch.setenv("OMIND_WRONG_KEY", "sk-omind-WRONG-0000000000")
    llm = OpenAILLM("smollm2", url, api_key_env="OMIND_WRONG_KEY", max_retries=0)
    with pytest.raises(EndpointError) as e: llm.chat(["hi"], GenConfig(max_new_tokens=2))
    assert "401" in str(e.value) and "WRONG-0000" not in str(e.value)

def test_score_next_token(llama_server, fake_key):
    url, _ = llama_server
    llm = OpenAILLM("smollm2", url, api_key_env=fake_key)
    res = llm.score_next_token(["Answer yes or no: is the sky blue?"], ["yes", "no"])[0]
    assert set(res) == {"yes", "no"} and any(v > -1e9 for v in res.values())
    assert abs(sum(label_probs(res).values()) - 1) < 1e-6
    with pytest.raises(ValueError, match="score_choices"): llm.score_next_token(["Rate it 0-10."], ["1", "10"])

TEN = [str(i) for i in range(11)]

def test_score_choices_over_http(llama_server, fake_key, tmp_path):
    "Multi-token choices via /completions with echo: '1' and '10' do not tie, and the decomposition holds."
    url, _ = llama_server
    llm = OpenAILLM("smollm2", url, api_key_env=fake_key, tokenizer=str(embedded_model_dir()))
    conv = [{"role": "user", "content": "On a scale from 0 to 10, how bright is the sun? Answer with one number."}]
    res = llm.score_choices([conv, "Is the sky blue? yes or no"], TEN + ["yes", "no"])
    assert len(res) == 2 and list(res[0]) == TEN + ["yes", "no"]
    assert all(-1e9 < v < 0 for r in res for v in r.values())
    assert res[0]["1"] != res[0]["10"]
    # P("1" ends) + P("10") = P(first token "1"), read from a call where nothing continues "1"
    p1 = llm.score_choices([conv], ["1", "2"])[0]["1"]
    assert abs(math.exp(res[0]["1"]) + math.exp(res[0]["10"]) - math.exp(p1)) < 1e-3
    nz = llm.score_choices([conv], ["10"], normalize=True)[0]["10"]
    assert abs(nz - llm.score_choices([conv], ["10"])[0]["10"] / 2) < 1e-4       # "10" is two tokens for SmolLM2
    cl = CachedLLM(llm, tmp_path/"c.sqlite")                                          # cached like generation
    assert cl.score_choices([conv], TEN) == cl.score_choices([conv], TEN) and cl.stats == {"hits": 1, "misses": 1}

def test_score_choices_needs_tokenizer(llama_server, fake_key):
    url, _ = llama_server
    with pytest.raises(ValueError, match="tokenizer"):
        OpenAILLM("smollm2", url, api_key_env=fake_key).score_choices(["hi"], ["yes", "no"])

def test_cache_makes_no_second_call(llama_server, fake_key, tmp_path):
    url, _ = llama_server
    cl = CachedLLM(OpenAILLM("smollm2", url, api_key_env=fake_key), tmp_path/"c.sqlite")
    a = cl.chat(["Say hello."], GenConfig(max_new_tokens=6)); b = cl.chat(["Say hello."], GenConfig(max_new_tokens=6))
    assert a == b and cl.stats == {"hits": 1, "misses": 1}
    assert FAKE_KEY.encode() not in (tmp_path/"c.sqlite").read_bytes()

def test_endpoint_down_then_up(tmp_path, fake_key):
    "A request sent while the server is down succeeds once it comes up (retries with backoff)."
    port = free_port()
    llm = OpenAILLM("smollm2", f"http://127.0.0.1:{port}/v1", api_key_env=fake_key, max_retries=10, backoff=0.5, max_backoff=4)
    out, err = {}, {}
    def call():
        try: out["r"] = llm.chat(["Say hi."], GenConfig(max_new_tokens=4))
        except Exception as e: err["e"] = e
    t = threading.Thread(target=call); t.start()
    time.sleep(2.0)                                   # the first attempts hit a closed port
    assert t.is_alive() and not out
    proc = start_server(port, tmp_path/"server.log")
    try:
        t.join(120)
        assert not err, err
        assert out["r"] and isinstance(out["r"][0], str)
    finally: stop_server(proc)

def test_endpoint_down_gives_clear_error(fake_key):
    llm = OpenAILLM("smollm2", f"http://127.0.0.1:{free_port()}/v1", api_key_env=fake_key, max_retries=2, backoff=0.01)
    with pytest.raises(EndpointError, match="failed after 2 retries: ConnectError"): llm.chat(["hi"])
