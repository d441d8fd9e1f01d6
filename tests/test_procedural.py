from hypothesis import given, settings
from hypothesis import strategies as st

from latentreason.data.procedural import TaskConfig, generate_splits, make_problem


def test_deterministic_and_disjoint():
    cfg = TaskConfig(n_train=3000, n_valid=200, n_test=300, seed=3)
    a, b = generate_splits(cfg), generate_splits(TaskConfig(n_train=3000, n_valid=200, n_test=300, seed=3))
    for split in ("train", "valid", "test"):
        assert [e.question for e in a[split]] == [e.question for e in b[split]]
    qs = {s: {e.question for e in a[s]} for s in a}
    assert not qs["train"] & qs["test"] and not qs["train"] & qs["valid"] and not qs["valid"] & qs["test"]
    assert len(qs["test"]) == 300 and len(qs["valid"]) == 200
    c = generate_splits(TaskConfig(n_train=3000, n_valid=200, n_test=300, seed=4))
    assert [e.question for e in c["test"]] != [e.question for e in a["test"]]


@settings(max_examples=50, deadline=None)
@given(
    start=st.integers(0, 9),
    ops=st.lists(st.tuples(st.sampled_from("+-*"), st.integers(1, 9)), min_size=1, max_size=6),
)
def test_steps_compute_the_answer(start, ops):
    ex = make_problem(start, ops, TaskConfig(step_format="equation"))
    v = start
    for (op, b), step in zip(ops, ex.steps):
        new = eval(f"({v}{op}{b}) % 10")
        assert step == f"<<{v}{op}{b}={new}>>"
        v = new
    assert ex.answer == str(v) and ex.meta["n_steps"] == len(ops)


def test_knobs():
    s = generate_splits(TaskConfig(n_steps=6, min_steps=1, n_train=600, n_valid=50, n_test=50, wording="words", step_format="plain"))
    counts = {e.meta["n_steps"] for e in s["train"]}
    assert counts == {1, 2, 3, 4, 5, 6}
    ex = s["test"][0]
    assert ex.question.startswith("Start with") and "<<" not in ex.steps[0]
