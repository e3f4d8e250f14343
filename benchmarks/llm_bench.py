"""Generation speed of the local transformers backend on the embedded default (SmolLM2-135M-Instruct).

Prints generated tokens/s for: one request at a time, the batched backend at its default batch size, and a
warm-cache rerun of the same requests. Run: .venv/bin/python benchmarks/llm_bench.py [--n 64] [--max-new 64]
"""
import argparse, os, tempfile, time
from omind.core import ModelSpec
from omind.llm_local import TransformersLLM
from omind.llm_cache import CachedLLM
from omind.llm import GenConfig

TOPICS = ["sleep problems", "panic attacks", "low mood after a breakup", "exam stress", "grief", "social anxiety",
          "burnout at work", "intrusive thoughts", "loneliness", "anger at family", "trouble concentrating", "self-esteem",
          "worry about health", "nightmares after an accident", "eating habits", "drinking too much"]

def prompts(n):
    return [[{"role": "user", "content": f"In two or three sentences, what can someone do about {TOPICS[i % len(TOPICS)]}? (case {i})"}] for i in range(n)]

def run(llm, convs, cfg):
    t = time.perf_counter(); outs = llm.chat(convs, cfg); dt = time.perf_counter() - t
    toks = llm.count_tokens(outs) if hasattr(llm, "count_tokens") else llm.llm.count_tokens(outs)
    return toks, dt

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=64); ap.add_argument("--single", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=64); ap.add_argument("--batch-size", type=int, default=ModelSpec().batch_size)
    a = ap.parse_args()
    import torch
    print(f"torch threads: {torch.get_num_threads()}, cores: {os.cpu_count()}, batch size: {a.batch_size}, max_new_tokens: {a.max_new}")
    llm = TransformersLLM("embedded:smollm2-135m-instruct", batch_size=a.batch_size)
    cfg = GenConfig(max_new_tokens=a.max_new)
    llm.chat(prompts(2), GenConfig(max_new_tokens=4))                               # warm-up
    single = TransformersLLM(llm.name, batch_size=1, model_obj=llm.model, tokenizer=llm.tok)     # same weights, one at a time
    toks, dt = run(single, prompts(a.single), cfg)
    print(f"one request at a time : {a.single:4d} requests {toks:6d} tokens {dt:7.1f} s  {toks/dt:7.1f} tok/s")
    convs = prompts(a.n)
    with tempfile.TemporaryDirectory() as d:
        cl = CachedLLM(llm, os.path.join(d, "cache.sqlite"))
        toks, cold = run(cl, convs, cfg)
        print(f"batched (bs={a.batch_size:3d})      : {a.n:4d} requests {toks:6d} tokens {cold:7.1f} s  {toks/cold:7.1f} tok/s")
        toks2, warm = run(cl, convs, cfg)
        assert toks2 == toks
        print(f"warm-cache rerun      : {a.n:4d} requests {toks2:6d} tokens {warm:7.3f} s  {toks2/warm:7.0f} tok/s  ({cold/warm:.0f}x faster than cold)")

if __name__ == "__main__": main()
