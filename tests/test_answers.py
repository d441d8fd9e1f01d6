import pytest

from latentreason.data.answers import extract_span, is_correct, judge, locate_answer, parse_number


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


# ---------------------------------------------------------------------------------------------------
# Real-looking outputs of GSM8K / GSM8k-Aug, SVAMP, GSM-Hard and MultiArith style models:
# (style, model output, gold, mode, correct?, prediction read). After a marker or inside \boxed{} the
# FIRST number counts (GSM8K's convention); without either, the LAST number of the output (SPEC §2.8 r. 3).
REAL_OUTPUTS = [
    ("gsm8k", "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day "
              "at the farmer\u2019s market.\n#### 18", "18", "tolerant", True, "18"),
    ("gsm8k", "She earns 9 an hour, so 2 hours pay 18.\n#### 18 dollars for 2 hours", "18", "tolerant", True, "18"),
    ("gsm8k", "#### 5-3", "5", "tolerant", True, "5"),
    ("gsm8k", "#### 5-3", "2", "tolerant", False, "5"),
    ("gsm8k", "He earns 12 * 5 = $<<12*5=60>>60.\n#### $60", "60", "tolerant", True, "60"),
    ("gsm8k", "The truck carries 1,200 + 300 = <<1200+300=1500>>1,500 pounds.\n#### 1,500", "1500", "tolerant", True, "1500"),
    ("gsm8k", "#### 1,500 pounds and 20 ounces", "1500", "tolerant", True, "1500"),
    ("gsm8k", "Each ticket is 15 / 2 = $7.50.\n#### 7.50", "7.5", "tolerant", True, "7.5"),
    ("gsm8k", "#### 0.5 of the pie, i.e. 1/2", "0.5", "tolerant", True, "0.5"),
    ("gsm8k", "Three of four slices are left.\n#### 3/4", "0.75", "tolerant", True, "0.75"),
    ("gsm8k", "The temperature drops 20 degrees from 8.\n#### -12 degrees", "-12", "tolerant", True, "-12"),
    ("gsm8k", "#### \u221212", "-12", "tolerant", True, "-12"),
    ("gsm8k", "#### 20%", "20", "tolerant", True, "20"),
    ("gsm8k", "So the answer is 18.\n#### 18.", "18", "tolerant", True, "18"),
    ("gsm8k", "She has 3 apples, buys 5 more.\n#### 8 apples in total, 3 of them red", "8", "tolerant", True, "8"),
    ("gsm8k", "#### 17", "18", "tolerant", False, "17"),
    ("gsm8k_aug", "<<600*30/100=180>> <<600*10/100=60>> <<180+60=240>> <<600-240=360>> #### 360", "360", "tolerant",
     True, "360"),
    ("gsm8k_aug", "<<16-3-4=9>> <<9*2=18>> #### 18 #### 19", "18", "tolerant", False, "19"),  # the last marker counts
    ("coconut", "<<3*4=12>>\n<<12+2=14>>\n### 14", "14", "tolerant", True, "14"),
    ("codi", "The answer is: 42", "42", "tolerant", True, "42"),
    ("codi", "The answer is: 42.0", "42", "tolerant", True, "42"),
    ("no marker", "So she needs 4 + 5 = 9 cups", "9", "tolerant", True, "9"),
    ("no marker", "9 cups, because 4 + 5", "9", "tolerant", False, "5"),
    ("boxed", "Thus the number of apples is \\boxed{12}, not 13.", "12", "tolerant", True, "12"),
    ("gsm8k", "#### 1e3", "1000", "tolerant", True, "1000"),
    ("svamp", "Jack had 8 pens and gave away 3.\nThe answer is: 5", "5.0", "tolerant", True, "5"),
    ("svamp", "#### 5.0", "5.0", "tolerant", True, "5"),
    ("svamp", "#### 2.5 hours", "2.5", "tolerant", True, "2.5"),
    ("svamp", "#### 14 more cookies than crackers", "14.0", "tolerant", True, "14"),
    ("svamp", "The answer is: 7 more marbles (12 - 5)", "7.0", "tolerant", True, "7"),
    ("gsm_hard", "#### 3244047.1", "3244047.0999999996", "tolerant", True, "3244047.1"),
    ("gsm_hard", "#### -3244047", "-3244047.0", "tolerant", True, "-3244047"),
    ("gsm_hard", "#### 2,125,000 dollars", "2125000.0", "tolerant", True, "2125000"),
    ("gsm_hard", "#### 0.3333", "0.3333333333", "tolerant", False, "0.3333"),
    ("gsm_hard", "#### 0.3333", "0.3333333333", "round:3", True, "0.3333"),
    ("gsm_hard", "#### 5916666.666666667 eggs", "5916666.666666667", "tolerant", True, "5916666.666666667"),
    ("multiarith", "There are 6 tables with 9 chairs each: 6 * 9 = 54.\n#### 54 chairs", "54", "tolerant", True, "54"),
    ("multiarith", "#### 54 chairs at 6 tables", "6", "tolerant", False, "54"),
    ("multiarith", "The answer is: 63 pictures", "63", "tolerant", True, "63"),
    ("multiarith", "#### 0", "0", "tolerant", True, "0"),
]


@pytest.mark.parametrize("style,out,gold,mode,ok,pred", REAL_OUTPUTS, ids=[f"{r[0]}-{i}" for i, r in enumerate(REAL_OUTPUTS)])
def test_real_looking_outputs(style, out, gold, mode, ok, pred):
    j = judge(out, gold, mode=mode)
    assert (j.correct, j.parsed, j.prediction) == (ok, True, pred)


@pytest.mark.parametrize("out", ["#### none of them", "####", "#### 1/0", "I do not know"])
def test_no_number_is_unparseable(out):
    j = judge(out, "0")
    assert not j.correct and not j.parsed


def test_first_number_after_marker_last_in_whole_output():
    assert locate_answer("a #### 18 b 2") == ("18 b 2", "marker")
    assert locate_answer("x \\boxed{3+4} y") == ("3+4", "boxed")
    assert locate_answer(" 1 and 2 ") == ("1 and 2", "output")
    assert parse_number("18 dollars for 2 hours") == 18.0
    assert parse_number("18 dollars for 2 hours", "last") == 2.0
    assert parse_number("5-3") == 5.0 and parse_number("5-3", "last") == -3.0


def test_parity_modes_keep_their_repositories_rules():
    # iCoT / Coconut compare the exact string after the marker; CODI the last number of the whole output
    assert not is_correct("#### 18 dollars for 2 hours", "18", mode="icot")
    assert is_correct("### 18", "18", mode="coconut")
    assert not is_correct("The answer is: 18 dollars for 2 hours", "18", mode="codi")
    assert is_correct("The answer is: 2 hours, 18", "18", mode="codi")


def test_math_expression_gold_uses_math_verify():
    assert is_correct("#### \\frac{1}{3}", "\\frac{1}{3}")  # a number data set with an expression gold
    assert is_correct("The answer is \\boxed{2\\sqrt{3}}", "2\\sqrt{3}", answer_type="math")
    assert not is_correct("The answer is \\boxed{3\\sqrt{2}}", "2\\sqrt{3}", answer_type="math")
    assert is_correct("#### 0.75", "3/4")  # a fraction gold is a number
