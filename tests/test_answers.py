import pytest

from latentreason.data.answers import extract_span, is_correct, judge, parse_number


@pytest.mark.parametrize(
    "text,expected",
    [
        ("<<2+1=3>> #### 3", 3.0),
        ("#### 1,000,000", 1000000.0),
        ("The answer is: $1,234.50", 1234.5),
        ("#### -10", -10.0),
        ("#### \u221210", -10.0),  # unicode minus
        ("#### 18.", 18.0),
        ("#### .5", 0.5),
        ("#### 2.0107e-06", 2.0107e-06),
        ("#### 12%", 12.0),
        ("so \\boxed{42} done", 42.0),
        ("no number here", None),
        ("### 7", 7.0),
    ],
)
def test_parse(text, expected):
    assert parse_number(extract_span(text)) == expected


def test_last_marker_wins_and_longest_marker():
    assert extract_span("#### 1 then #### 2") == "2"
    assert extract_span("a ### 5") == "5"
    assert extract_span("x #### 9") == "9"  # not "# 9" from the '###' marker


@pytest.mark.parametrize(
    "out,gold,ok",
    [
        ("#### 18", "18", True),
        ("#### 18.0", "18", True),
        ("#### 18.00", "18", True),
        ("#### 18.", "18", True),
        ("#### $2,125", "2,125", True),
        ("#### 3244047.1", "3244047.0999999996", True),
        ("#### 17", "18", False),
        ("#### -10", "10", False),
        ("#### 1e3", "1000", True),
        ("####", "1", False),
    ],
)
def test_numeric_comparison(out, gold, ok):
    assert is_correct(out, gold) is ok


def test_round_mode_and_parity_modes():
    assert not is_correct("#### 0.3333", "0.333333333", mode="tolerant")
    assert is_correct("#### 0.3333", "0.333333333", mode="round:3")
    assert is_correct("#### 1,000", "1000", mode="icot")
    assert not is_correct("#### 1000.0", "1000", mode="icot")  # exact string
    assert is_correct("so 12 then 1,000", "1000", mode="codi")


def test_non_numeric_types():
    assert is_correct("### Polly is a rempus.", "Polly is a rempus.", answer_type="text")
    assert not is_correct("### Polly is a worpus.", "Polly is a rempus.", answer_type="text")
    assert is_correct("### true", "True", answer_type="bool")
    assert not is_correct("### False", "True", answer_type="bool")
    assert is_correct("### B", "B:house", answer_type="choice")
    assert is_correct("### house", "B:house", answer_type="choice")


def test_math_verify():
    assert is_correct("The answer is \\boxed{\\frac{1}{2}}", "0.5", answer_type="math")
    assert not is_correct("\\boxed{3}", "0.5", answer_type="math")


def test_unparseable_is_counted():
    j = judge("I do not know", "4")
    assert not j.correct and not j.parsed
