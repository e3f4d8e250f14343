"""One held-out set for every variant: the items synthesis reserves depend on the knowledge base and
synthesis.heldout alone, never on what a variant changes (run seed, retrieval, review, DPO), and no variant's
seeds teach one of them."""
import pytest
from omind.core import load_params, project_root
from omind.heldout import reserve_heldout, reserved_keys, conflicts
from omind.synthesis import make_seeds
from omind.testing import toy_knowledge

ROOT = project_root()
VARIANTS = [(), ("run.seed=3",), ("synthesis.retrieval=false",), ("review.enabled=false",), ("train.dpo=false",)]


@pytest.fixture(scope="module")
def kb():
    import yaml
    from omind.kb_build import data_dir
    return toy_knowledge(tuple(c["id"] for c in yaml.safe_load((data_dir()/"conditions.yaml").read_text())["conditions"]))


def test_every_variant_reserves_the_same_items_and_never_trains_on_them(kb):
    sets = ["synthesis.heldout={n_mcqa: 60, n_classification: 30, n_transfer: 30}",
            "synthesis.n={mcqa: 40, classification: 20, root_cause: 4, qa: 6, conversation: 6}"]
    held = {}
    for v in VARIANTS:
        P = load_params(ROOT/"params"/"tiny.yaml", sets=sets + list(v))
        held[v] = reserve_heldout(kb, P.synthesis.heldout)
        K = reserved_keys(held[v])
        seeds, rep = make_seeds(kb, P.synthesis, P.run.seed, verbose=False, reserved=K)
        assert not [s["id"] for ss in seeds.values() for s in ss if conflicts(s, K, kb)], v
        assert {f: len(ss) for f, ss in seeds.items()} == P.synthesis.n, v           # dropped seeds were replaced
    first = held[VARIANTS[0]]
    assert len(first) == 120 and all(h == first for h in held.values())
    # without the reservation the unreserved seeds would teach some of them: the check can fail
    P = load_params(ROOT/"params"/"tiny.yaml", sets=sets)
    plain, _ = make_seeds(kb, P.synthesis, P.run.seed, verbose=False)
    assert any(conflicts(s, reserved_keys(first), kb) for ss in plain.values() for s in ss)
