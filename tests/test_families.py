"""A task family owns its behaviour: outside `omind/tasks/`, no module names a family ("mcqa", "classification",
"root_cause", "qa", "conversation") as a string literal; it asks the registry (`omind.tasks`) instead. Only whole
STRING tokens count (Python's tokenize), so a word inside a longer string, a docstring or a comment does not."""
import ast, io, tokenize
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"mcqa", "classification", "root_cause", "qa", "conversation"}

# (module, count) still allowed, and exactly that many (a removed one must be taken off the list). HOMONYMS use the
# word for something that is not a registry lookup and cannot change without changing a file or params format (a rubric
# or NLL level, a source item kind or layout name, a null-control set name, a reply job's kind in its key). PENDING
# name the family and are still to go; this list only shrinks.
HOMONYMS = {
    "benchmark_build": 2,   # "conversation": the benchmark's per-conversation rubric level
    "eval_figures": 2,      # "conversation": the gold-turn NLL / rubric level
    "eval_nll": 1,          # "conversation": the gold-turn NLL level
    "eval_rubric": 2,       # "conversation": the rubric level
    "eval_controls": 3,     # "qa": the name of a null-control set in params (`evaluate.controls.null_sets: [qa, turns]`)
    "evaluate": 1,          # "qa": the same null-set name
    "eval_wins": 2,         # "qa": the kind of a reply job in its key (`<model>|qa|<id>`), a file format
    "eval_jobs": 1,         # "qa": the same reply-job kind (`JobRef(model, "qa", (id,))`, written `<model>|qa|<id>`)
    "plan": 4,              # "qa": the null-set name, and the reply-job kind in job keys
    "sources": 21,          # an omind.sources item kind ("mcqa", "qa", "conversation", beside "post") and the generic
                            # layouts named after it; a family's `source_kind` names the kind it takes (sources sits below tasks)
}
PENDING = {}                # none left; a new one fails the test below


def family_literals(src: str) -> int:
    "How many STRING tokens of `src` are exactly a built-in family name."
    n = 0
    for t in tokenize.generate_tokens(io.StringIO(src).readline):
        if t.type != tokenize.STRING: continue
        try: v = ast.literal_eval(t.string)
        except (ValueError, SyntaxError): continue                    # f-strings and the like are not a bare name
        n += v in FAMILIES
    return n


def counts(pkg: Path = ROOT/"omind") -> Counter:
    "module -> family-name literals, for omind/*.py outside the tasks package (nbdev's `_modidx` is an index, not code)."
    return Counter({f.stem: c for f in sorted(pkg.glob("*.py")) if f.stem != "_modidx"
                    and (c := family_literals(f.read_text(encoding="utf-8")))})


def test_the_counter_sees_only_whole_string_tokens():
    src = 'a = "mcqa"  # "qa" in a comment\nb = f"{x}qa"\nc = "mcqa items"\nd = \'root_cause\'\n"""conversation"""\n'
    assert family_literals(src) == 3                                   # "mcqa", 'root_cause' and the bare docstring


def test_no_new_family_literals_outside_the_tasks_package():
    allowed = Counter(HOMONYMS) + Counter(PENDING)
    got = counts()
    new = {m: (c, allowed.get(m, 0)) for m, c in got.items() if c > allowed.get(m, 0)}
    assert not new, f"family names as string literals outside omind/tasks (module: (found, allowed)): {new}; ask the registry instead"
    stale = {m: (got.get(m, 0), c) for m, c in allowed.items() if got.get(m, 0) < c}
    assert not stale, f"fewer family literals than allowed (module: (found, allowed)): {stale}; shrink the allow-list"


def test_the_families_themselves_are_registered():
    from omind.tasks import task_names
    assert task_names()[:5] == ["mcqa", "classification", "root_cause", "qa", "conversation"]
