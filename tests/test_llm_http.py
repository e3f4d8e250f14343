"The OpenAI-compatible backend against a real llama.cpp server process (no mocks of the HTTP layer)."
import threading, time
import pytest
from conftest import FAKE_KEY, KEY_ENV, free_port, start_server, stop_server, wait_ready
from omind.llm import OpenAILLM, CachedLLM, GenConfig, EndpointError, label_probs

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

def test_score_labels(llama_server, fake_key):
    url, _ = llama_server
    llm = OpenAILLM("smollm2", url, api_key_env=fake_key)
    res = llm.score(["Answer yes or no: is the sky blue?"], ["yes", "no"])[0]
    assert set(res) == {"yes", "no"} and any(v > -1e9 for v in res.values())
    assert abs(sum(label_probs(res).values()) - 1) < 1e-6

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
