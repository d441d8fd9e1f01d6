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
    for e in plain["test"]:  # only x*1 (an identity) restates its input: the answer never depends on it
        assert e.meta["critical"] == [not (op == "*" and b == 1) for op, b in zip(e.meta["ops"], e.meta["operands"])]
    first = generate_splits(TaskConfig(n_train=50, n_valid=10, n_test=20, distractors=1))["test"]
    for ex in first:  # the default place: before the chain begins
        assert ex.meta["critical"][0] is False and ex.question.startswith("(") and ex.meta["parents"][:2] == [[], []]
    s = generate_splits(TaskConfig(n_train=50, n_valid=10, n_test=40, distractors=1, distractor_at="random"))
    for ex in s["test"]:
        assert len(ex.steps) == 5 and ex.meta["n_steps"] == 5 and step_criticality(ex) == ex.meta["critical"]
        j = ex.meta["step_kinds"].index("distractor")
        assert ex.meta["critical"][j] is False
        assert ex.meta["step_kinds"][j] == "distractor" and j > 0  # never before the first main step
        lhs = ex.steps[j].split("=")[0]
        assert f"({lhs})" in ex.question  # written where it happens, in brackets
        # the answer is the main chain alone: dropping the distractor from the question changes nothing
        main = [(op, b) for op, b in zip(ex.meta["ops"], ex.meta["operands"])]
        again = make_problem(ex.meta["start"], main, TaskConfig())
        assert again.answer == ex.answer and again.question == ex.question.replace(f"({lhs})", "")
        # the step after the distractor reads the step before it
        if j + 1 < len(ex.steps) and ex.meta["step_kinds"][j - 1] == "main":
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


def test_identity_steps_restate_their_input_and_are_non_critical():
    s = generate_splits(TaskConfig(n_train=50, n_valid=10, n_test=200, identity_prob=0.3))["test"]
    n_identity = 0
    for ex in s:
        ops = list(zip(ex.meta["ops"], ex.meta["operands"]))
        ident = [(op, b) in (("+", 0), ("-", 0), ("*", 1)) for op, b in ops]
        n_identity += sum(ident)
        assert ex.meta["critical"] == [not i for i in ident]
        # the answer is the chain without its identity steps
        rest = [o for o, i in zip(ops, ident) if not i]
        assert make_problem(ex.meta["start"], rest, TaskConfig()).answer == ex.answer
        for j, i in enumerate(ident):  # identity steps write "v op b = v"
            if i:
                lhs, res = ex.steps[j].split("=")
                assert lhs[: -2] == res
    assert 0.2 < n_identity / (4 * len(s)) < 0.45


def test_restatements_are_never_read():
    from latentreason.data.criticality import step_criticality
    from latentreason.data.example import Example

    # GSM8k-Aug test line: the answer restated at the end; the value comes from step 1
    steps = ["<<5000*(2.5/100)=125>>", "<<8000*(1.2/100)=96>>", "<<125=125>>"]
    assert step_criticality(Example("q", steps, "125")) == [True, False, False]
    assert step_criticality(Example("q", ["<<2+3=5>>", "<<5*1=5>>", "<<5+1=6>>"], "6")) == [True, False, True]


def test_train_step_weights_skew_only_the_train_split():
    import pytest

    from latentreason.errors import ConfigError

    base = dict(n_steps=6, min_steps=1, n_train=3000, n_valid=300, n_test=300, seed=1)
    plain = generate_splits(TaskConfig(**base))
    skew = generate_splits(TaskConfig(**base, train_step_weights=[1, 1, 1, 1, 4, 4]))
    assert [e.question for e in skew["test"]] == [e.question for e in plain["test"]]  # valid/test unchanged
    assert [e.question for e in skew["valid"]] == [e.question for e in plain["valid"]]
    long = lambda exs: sum(e.meta["n_steps"] >= 5 for e in exs) / len(exs)  # noqa: E731
    assert 0.25 < long(plain["train"]) < 0.42 and 0.6 < long(skew["train"]) < 0.73  # 2/6 vs 8/12
    for bad in ([1, 1], [1, 1, 1, 1, 1, -1], [0] * 6):
        with pytest.raises(ConfigError, match="train_step_weights"):
            generate_splits(TaskConfig(**base, train_step_weights=bad))
    with pytest.raises(ConfigError, match="train_step_weights"):
        generate_splits(TaskConfig(n_steps=4, train_step_weights=[1]))
