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


def test_distractor_steps_are_non_critical_and_change_nothing():
    from latentreason.data.criticality import step_criticality

    plain = generate_splits(TaskConfig(n_train=50, n_valid=10, n_test=20))
    assert plain["test"][0].question == "4+7*8+2-5"  # distractors=0 draws exactly what it always drew
    assert all(e.meta["critical"] == [True] * 4 for e in plain["test"])  # x*1 too: the answer reads its result
    first = generate_splits(TaskConfig(n_train=50, n_valid=10, n_test=20, distractors=1))["test"]
    for ex in first:  # the default place: before the chain begins
        assert ex.meta["critical"] == [False, True, True, True, True] and ex.question.startswith("(")
        assert ex.meta["parents"] == [[], [], [1], [2], [3]]
    s = generate_splits(TaskConfig(n_train=50, n_valid=10, n_test=40, distractors=1, distractor_at="random"))
    for ex in s["test"]:
        assert len(ex.steps) == 5 and ex.meta["n_steps"] == 5
        assert ex.meta["critical"].count(False) == 1 and step_criticality(ex) == ex.meta["critical"]
        j = ex.meta["critical"].index(False)
        assert ex.meta["step_kinds"][j] == "distractor" and j > 0  # never before the first main step
        lhs = ex.steps[j].split("=")[0]
        assert f"({lhs})" in ex.question  # written where it happens, in brackets
        # the answer is the main chain alone: dropping the distractor from the question changes nothing
        main = [(op, b) for op, b in zip(ex.meta["ops"], ex.meta["operands"])]
        again = make_problem(ex.meta["start"], main, TaskConfig())
        assert again.answer == ex.answer and again.question == ex.question.replace(f"({lhs})", "")
        # the step after the distractor reads the main step before it
        if j + 1 < len(ex.steps):
            assert ex.meta["parents"][j + 1] == [j - 1]


def test_equation_chain_criticality_from_the_dependency_graph():
    from latentreason.data.criticality import equation_dag, reaches_answer, step_criticality
    from latentreason.data.example import Example

    # GSM8k-Aug test line: both steps feed the answer
    assert step_criticality(Example("q", ["<<16-3-4=9>>", "<<9*2=18>>"], "18")) == [True, True]
    # a computed value nothing reads is not critical; a "-" inside an expression is an operator
    steps = ["<<80000+50000=130000>>", "<<80000*1.5=120000>>", "<<120000+80000=200000>>", "<<200000-130000=70000>>"]
    assert step_criticality(Example("q", steps, "70000")) == [True, True, True, True]
    steps = ["<<30-20=10>>", "<<50000*50*.01=25000>>"]
    assert step_criticality(Example("q", steps, "25000")) == [False, True]
    parents, answer = equation_dag(["<<2*3=6>>", "<<6+4=10>>", "<<5*5=25>>"], "10")
    assert parents == [[], [0], []] and answer == [1] and reaches_answer(parents, answer) == [True, True, False]
    # not an equation chain (natural-language steps) or no step gives the answer: all critical
    assert step_criticality(Example("q", ["She has 3.", "Then 5."], "5")) == [True, True]
    assert step_criticality(Example("q", ["<<1+1=2>>"], "7")) == [True]
