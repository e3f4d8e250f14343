"""Judge throughput: rubric items judged per second by the embedded judge (SmolLM2-135M, transformers, CPU).

Builds rubric-judging prompts from the shipped seed benchmark (each evaluated turn's gold history, a fixed
counsellor reply, each rubric item) and judges them without the response cache, batched, in each scheme:
`score` mode (one forward pass per prompt over the allowed answers) and `generate` mode (a few tokens + strict
parse, one retry). Prints items/s per scheme and mode.

    .venv/bin/python benchmarks/judge_bench.py [--n 48] [--threads 2] [--model embedded:smollm2-135m-instruct] [--modes score,generate] [--unshared]
"""
import argparse, time

from omind.benchmark_format import load_benchmark, iter_eval_turns
from omind.judge import judge_batch, render_conversation, rubric_prompt, get_scheme
from omind.backends import make_llm
from omind.core import ModelSpec

REPLY = ("I'm really sorry you're going through this; it sounds exhausting. Could you tell me more about how you've been "
         "sleeping and whether you have had thoughts of harming yourself? If you ever feel unsafe, call or text 988 in "
         "the US, or your local emergency number.")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48, help="rubric items per scheme")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--modes", default="score,generate")
    ap.add_argument("--schemes", default="binary,ten,likert", help="registered rubric schemes (omind.judge.SCHEMES)")
    ap.add_argument("--unshared", action="store_true", help="also time score mode without the shared KV prefix")
    a = ap.parse_args()
    import torch; torch.set_num_threads(a.threads)
    items = []
    for inst in load_benchmark(None)["instances"]:
        for _, hist, rub in iter_eval_turns(inst):
            for it in rub: items.append((render_conversation(hist), it["text"]))
    items = items[:a.n]
    judge = make_llm(ModelSpec(model=a.model, batch_size=a.batch_size))     # no cache: every call is computed
    print(f"judge {a.model}, {a.threads} threads, batch {a.batch_size}, {len(items)} items per scheme")
    for mode in a.modes.split(","):
        for sch in a.schemes.split(","):
            convs = [rubric_prompt(sch, ctx, REPLY, item) for ctx, item in items]
            t = time.time(); res = judge_batch(judge, convs, sch, mode=mode, max_new_tokens=4); dt = time.time() - t
            missing = sum(r["value"] is None for r in res); retried = sum(r["retried"] for r in res)
            print(f"{mode:8s} {sch:6s}: {len(convs) / dt:6.2f} items/s ({dt:.1f} s; missing {missing}, retried {retried})", flush=True)
            if mode == "score" and a.unshared:
                t = time.time(); judge.score_choices(convs, get_scheme(sch).labels, min_shared=0); dt = time.time() - t
                print(f"{'(no shared prefix)':17s}: {len(convs) / dt:6.2f} items/s ({dt:.1f} s)", flush=True)

if __name__ == "__main__":
    main()
