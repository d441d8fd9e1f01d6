import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from helpers import cli_process, run_cli
from latentreason.cli import app

runner = CliRunner()


@pytest.mark.parametrize("cmd", [[], ["train"], ["eval"], ["demo"], ["data", "show"], ["data", "list"], ["methods"]])
def test_help(cmd):
    r = runner.invoke(app, [*cmd, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output
    if cmd in (["train"], ["eval"], ["data", "show"]):
        assert "latentreason " in r.output  # examples in the help text


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "latentreason", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "demo" in r.stdout


def test_data_show_fixture(fixtures):
    r = runner.invoke(app, ["data", "show", str(fixtures / "gsm8k_aug.txt"), "--limit", "2"])
    assert r.exit_code == 0, r.output
    assert "<<2/2=1>>" in r.output and "3 examples (2 shown)" in r.output


def test_data_show_json(fixtures):
    r = runner.invoke(app, ["data", "show", str(fixtures / "prontoqa.json"), "--json", "--limit", "0"])
    lines = [json.loads(x) for x in r.output.strip().splitlines()]
    assert [x["answer"] for x in lines] == ["False", "True"] and set(lines[0]) == {"question", "steps", "answer"}


def test_data_show_shared(shared_data):
    r = runner.invoke(app, ["data", "show", str(shared_data / "gsm8k_aug" / "test.txt"), "--limit", "2", "--json"])
    rows = [json.loads(x) for x in r.output.strip().splitlines()]
    assert rows[0]["answer"] == "18" and rows[0]["steps"] == ["<<16-3-4=9>>", "<<9*2=18>>"]
    r = runner.invoke(app, ["data", "show", str(shared_data / "gsm8k" / "test.jsonl"), "--limit", "2", "--json"])
    rows = [json.loads(x) for x in r.output.strip().splitlines()]
    assert rows[0]["answer"] == "18" and len(rows) == 2


def test_bad_input_one_line_error_no_traceback(fixtures, tmp_path):
    r = cli_process("data", "show", str(fixtures / "malformed_aug.txt"), "--format", "gsm8k_aug")
    assert r.returncode == 2
    assert "malformed_aug.txt:2" in r.stderr and "Traceback" not in r.stderr
    assert len([line for line in r.stderr.strip().splitlines() if line.strip()]) == 1
    r = cli_process("data", "show", "nonesuch")
    assert r.returncode == 2 and "valid names:" in r.stderr
    r = cli_process("train", "--method", "nope", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "valid methods: " in r.stderr and "Traceback" not in r.stderr
    r = cli_process("--debug", "data", "show", "nonesuch")
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_train_eval_cli_roundtrip(tmp_path, fixtures, capsys):
    run = tmp_path / "run"
    r = cli_process("train", "--method", "cot", "--out", str(run), "--max-steps", "5", "--batch-size", "16", "--no-progress",
             "--set", "model.n_layer=1", "--set", "model.n_embd=32", "--set", "model.n_head=2", "--set", "model.n_positions=512",
             "--set", "data.task.n_train=200", "--set", "data.task.n_valid=10", "--set", "data.task.n_test=10")
    assert r.returncode == 0, r.stderr
    res = json.loads((run / "results.json").read_text())
    assert res["test"]["n"] == 10
    # a GSM8K file the byte tokenizer has never seen still runs
    r = cli_process("eval", "--checkpoint", str(run), "--dataset", str(fixtures / "gsm8k.jsonl"), "--batch-size", "2",
             "--max-new-tokens", "8", "--no-progress")
    assert r.returncode == 0, r.stderr
    out = json.loads((run / "eval-gsm8k-test.json").read_text())
    assert out["metrics"]["n"] == 2 and len(out["records"]) == 2
    # --compile: the same answers through the compiled decode path
    r = cli_process("eval", "--checkpoint", str(run), "--dataset", str(fixtures / "gsm8k.jsonl"), "--batch-size", "2",
             "--max-new-tokens", "8", "--no-progress", "--compile")
    assert r.returncode == 0, r.stderr
    compiled = json.loads((run / "eval-gsm8k-test.json").read_text())
    assert [(x["output"], x["forward_passes"]) for x in compiled["records"]] == \
        [(x["output"], x["forward_passes"]) for x in out["records"]]
    # SVAMP / GSM-Hard style files with questions too long for a 128-position model: the evaluation finishes,
    # counts them as too_long and wrong (as the demo's --eval-set does), or skips them with --too-long skip
    small = tmp_path / "small"
    code, err = run_cli(capsys, "train", "--method", "nocot", "--out", small, "--max-steps", "1", "--batch-size", "4",
                      "--no-progress", "--set", "model.n_layer=1", "--set", "model.n_embd=32", "--set", "model.n_head=2",
                      "--set", "model.n_positions=128", "--set", "data.task.n_train=20", "--set", "data.task.n_valid=4",
                      "--set", "data.task.n_test=4")
    assert code == 0, err
    from latentreason.data.registry import load_dataset
    from latentreason.training.checkpoint import load_method

    method = load_method(small)
    for name, fixture in (("svamp", "svamp.json"), ("gsmhard", "gsmhard.jsonl")):
        exs = load_dataset(str(fixtures / fixture), "test")
        # positions needed before the answer, computed independently: the prompt (No-CoT reserves nothing else)
        long_ = [len(method.serializer.tokenize([e])[0].prompt) + 1 > 128 for e in exs]
        assert any(long_), name
        for policy in ("count", "skip"):
            out_file = tmp_path / f"{name}-{policy}.json"
            code, err = run_cli(capsys, "eval", "--checkpoint", small, "--dataset", fixtures / fixture, "--no-progress",
                              "--max-new-tokens", "4", "--too-long", policy, "--output", out_file)
            assert code == 0, err
            assert f"{sum(long_)} of {len(exs)} questions are too long for the model's context of 128 positions" in err
            res = json.loads(out_file.read_text())
            m = res["metrics"]
            assert m["too_long"] == sum(long_) and m["too_long_policy"] == policy
            assert [bool(rec.get("too_long")) for rec in res["records"]] == long_
            assert all(rec["correct"] is False and rec["output"] is None for rec in res["records"] if rec.get("too_long"))
            assert m["n"] == (len(exs) if policy == "count" else len(exs) - sum(long_))
            assert m["accuracy"] == (m["correct"] / m["n"] if m["n"] else 0.0)
    code, err = run_cli(capsys, "eval", "--checkpoint", small, "--dataset", fixtures / "svamp.json", "--too-long", "drop")
    assert code == 2 and "--too-long must be one of count, skip" in err
