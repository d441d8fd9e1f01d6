import json

import pytest

from latentreason.data.loaders import detect_format, load_file
from latentreason.data.registry import load_dataset
from latentreason.errors import DataError


def test_gsm8k_aug_equation(fixtures):
    exs = load_file(fixtures / "gsm8k_aug.txt")
    assert detect_format(fixtures / "gsm8k_aug.txt") == "gsm8k_aug"
    assert [e.answer for e in exs] == ["3", "-10", "2,125"]
    assert exs[0].steps == ["<<2/2=1>>", "<<2+1=3>>"]
    assert "  How many bolts" in exs[0].question  # double spaces kept
    assert exs[2].steps == []  # empty CoT
    assert "“twelve”" in exs[1].question


def test_gsm8k_aug_nl(fixtures):
    (ex,) = load_file(fixtures / "gsm8k_aug_nl.txt")
    assert detect_format(fixtures / "gsm8k_aug_nl.txt") == "gsm8k_aug_nl"
    assert ex.answer == "4"
    assert ex.steps[0] == "The annual budget for policing is 32 / 2 = $16 million."
    assert len(ex.steps) == 3 and ex.steps[-1].endswith("public spaces.")


def test_gsm8k_jsonl(fixtures):
    exs = load_file(fixtures / "gsm8k.jsonl")
    assert detect_format(fixtures / "gsm8k.jsonl") == "gsm8k"
    assert exs[0].answer == "18" and len(exs[0].steps) == 2
    assert exs[1].answer == "1000"  # commas removed from the gold


def test_svamp(fixtures):
    exs = load_file(fixtures / "svamp.json")
    assert detect_format(fixtures / "svamp.json") == "svamp"
    assert exs[0].question.startswith("Each pack of dvds") and exs[0].question.endswith("buy each pack?")
    assert " If there is a discount of 25 dollars on each pack How much" in exs[0].question  # Body without final period
    assert [e.answer for e in exs] == ["51", "1", "17"]
    assert exs[2].meta["Type"] == "Common-Divison" and exs[0].meta["ID"] == "chal-1"


def test_gsm_hard(fixtures):
    exs = load_file(fixtures / "gsmhard.jsonl")
    assert detect_format(fixtures / "gsmhard.jsonl") == "gsm_hard"
    assert exs[0].answer == "-9867630"
    assert float(exs[2].answer) == pytest.approx(3244047.1)
    assert float(exs[3].answer) == pytest.approx(2.0107e-06)


@pytest.mark.parametrize("name", ["multiarith.jsonl", "asdiv.jsonl"])
def test_pal_formats_without_final_newline(fixtures, name):
    raw = (fixtures / name).read_bytes()
    assert not raw.endswith(b"\n")
    exs = load_file(fixtures / name)
    assert detect_format(fixtures / name) == "pal"
    assert len(exs) == 2 and exs[0].answer.isdigit()


def test_prosqa_prontoqa(fixtures):
    (p,) = load_file(fixtures / "prosqa.json")
    assert detect_format(fixtures / "prosqa.json") == "prosqa"
    assert p.answer == "Polly is a rempus." and p.meta["target"] == 3 and p.answer_type == "text"
    exs = load_file(fixtures / "prontoqa.json")
    assert detect_format(fixtures / "prontoqa.json") == "prontoqa"
    assert [e.answer for e in exs] == ["False", "True"] and exs[0].answer_type == "bool"
    assert exs[0].meta["chain_concepts"] == ["zumpus", "gorpus"]


def test_multiplication(fixtures):
    (ex,) = load_file(fixtures / "mult_4x4.txt")
    assert detect_format(fixtures / "mult_4x4.txt") == "icot_mult"
    assert ex.answer == "5 5 6 0 8 2 0 1"
    assert ex.steps[1] == "0 0 6 4 9 0 ( 5 5 1 1 1 1 )"


def test_multiplication_generator_matches_rule(fixtures):
    from latentreason.data.multiplication import generate_multiplication, multiplication_line

    (ex,) = load_file(fixtures / "mult_4x4.txt")
    q, steps, ans = multiplication_line(2365, 4347, 4, 4)
    assert (q, steps, ans) == (ex.question, ex.steps, ex.answer)
    gen = generate_multiplication(5, 5, 20, seed=1)
    for g in gen:
        a = int(g.question.split(" * ")[0].replace(" ", "")[::-1])
        b = int(g.question.split(" * ")[1].replace(" ", "")[::-1])
        assert int(g.answer.replace(" ", "")[::-1]) == a * b


def test_commonsenseqa(fixtures):
    (ex,) = load_file(fixtures / "cqa_train_rand_split.jsonl")
    assert ex.answer == "B:house" and ex.answer_type == "choice"
    assert "(A) antique shop" in ex.question


def test_records_jsonl_roundtrip(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text(json.dumps({"question": "1+1", "steps": ["<<1+1=2>>"], "answer": 2}) + "\n")
    (ex,) = load_file(p)
    assert detect_format(p) == "jsonl" and ex.answer == "2" and ex.steps == ["<<1+1=2>>"]


def test_malformed_line_names_file_and_line(fixtures):
    with pytest.raises(DataError) as e:
        load_file(fixtures / "malformed_aug.txt", "gsm8k_aug")
    msg = str(e.value)
    assert "malformed_aug.txt:2" in msg and "'||'" in msg


def test_bad_encoding_names_line(fixtures):
    with pytest.raises(DataError, match=r"latin1.txt:2: not valid UTF-8"):
        load_file(fixtures / "latin1.txt")


def test_bad_json_and_missing_keys(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2"\n')
    with pytest.raises(DataError, match=r"x.jsonl:2: invalid JSON"):
        load_file(p, "gsm8k")
    p.write_text('{"input": "q"}\n')
    with pytest.raises(DataError, match=r"x.jsonl:1: missing key 'target'"):
        load_file(p, "pal")
    p.write_text('{"question": "q", "answer": "no marker"}\n')
    with pytest.raises(DataError, match=r"x.jsonl:1: answer has no '####'"):
        load_file(p, "gsm8k")


def test_empty_and_unknown(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        load_file(p)
    p.write_text("just some text\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_file(p)
    with pytest.raises(DataError, match="unknown data format 'nope'"):
        load_file(p, "nope")
    with pytest.raises(DataError, match="unknown data set 'nonesuch'; valid names:"):
        load_dataset("nonesuch")


def test_named_sets_resolve_against_data_dir(shared_data):
    test = load_dataset("gsm8k_aug", "test", data_dir=shared_data)
    assert len(test) == 1319 and test[0].answer == "18"
    assert len(load_dataset("gsm8k_aug", "train", data_dir=shared_data)) == 6973
    assert len(load_dataset("gsm8k", "test", data_dir=shared_data, limit=10)) == 10
    assert len(load_dataset("prosqa", "test", data_dir=shared_data)) == 500
    assert len(load_dataset("prontoqa", "valid", data_dir=shared_data)) == 200
    assert load_dataset("mult_4x4", "valid", data_dir=shared_data)[0].steps[0] == "5 5 5 6 1"
    with pytest.raises(DataError, match="has no 'train' split"):
        load_dataset("prosqa", "train", data_dir=shared_data)
