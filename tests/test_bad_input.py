"""The bad-input matrix: every case goes through the real CLI and must give one ``error:`` line
that says what and where, a non-zero exit status, no traceback, and leave no partial output.

Most cases call ``latentreason.cli.main([...])`` in-process (what ``python -m latentreason``
runs) and catch its ``SystemExit``; a few run the real ``python -m latentreason`` subprocess,
one of them with ``--debug`` to check the traceback is shown there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from helpers import cli_process, run_cli
from latentreason.cli import main
from latentreason.training.checkpoint import load_method, save_method

TINY = ["--set", "model.n_layer=1", "--set", "model.n_embd=32", "--set", "model.n_head=2",
        "--set", "data.task.n_train=64", "--set", "data.task.n_valid=4", "--set", "data.task.n_test=4",
        "--no-progress"]
SRC = Path(__file__).resolve().parents[1] / "src" / "latentreason"


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_one_line_error(code: int, err: str, *needles: str, status: int = 2) -> str:
    assert code == status, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("error:", "interrupted:"))]
    assert len(errors) == 1 and lines[-1] == errors[0], f"expected one error line at the end, got:\n{err}"
    for n in needles:
        assert n in errors[0], f"{n!r} not in {errors[0]!r}"
    return errors[0]


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


MESSAGES: dict[str, str] = {}  # case -> the error line


def record(case: str, line: str) -> None:
    MESSAGES[case] = line


@pytest.fixture(scope="module", autouse=True)
def _print_messages():
    """After the module: every error line seen (visible with ``pytest -s``; also in $LR_BAD_INPUT_LOG)."""
    yield
    text = "".join(f"{case:28s} {line}\n" for case, line in sorted(MESSAGES.items()))
    print("\n" + text)
    if os.environ.get("LR_BAD_INPUT_LOG"):
        Path(os.environ["LR_BAD_INPUT_LOG"]).write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real (tiny) training run: model/, checkpoints/step-1 and step-2, metrics, results."""
    out = tmp_path_factory.mktemp("run") / "cot"
    main(["train", "--method", "cot", "--out", str(out), "--max-steps", "2", "--batch-size", "8",
          "--set", "train.save_every=1", "--set", "train.keep_checkpoints=5", *TINY])
    assert (out / "model" / "method.json").is_file() and (out / "checkpoints" / "step-00000001").is_dir()
    return out


@pytest.fixture(scope="module")
def codi_ckpt(tmp_path_factory) -> Path:
    """A CODI checkpoint (with its projection in extra.safetensors), saved without training."""
    from latentreason.training.api import build_method
    from latentreason.training.run_config import load_run_config

    cfg = load_run_config(overrides=["method=codi", "model.n_layer=1", "model.n_embd=32", "model.n_head=2",
                                     "method_args.n_latent=2"])
    d = tmp_path_factory.mktemp("codi") / "ck"
    save_method(build_method(cfg), d)
    assert (d / "extra.safetensors").is_file()
    return d


def copy_ckpt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- data files
DATA_CASES = [
    # (case id, file name, content, extra args, expected substrings (the file name is added))
    ("malformed-line", "aug.txt", "1+2||<<1+2=3>> #### 3\nno separator here #### 4\n", [], [":2:", "found no '||'"]),
    ("empty-file", "empty.txt", "", [], ["file is empty"]),
    ("blank-lines-only", "blank.txt", "\n  \n\n", [], ["file is empty"]),
    ("latin1-encoding", "latin1.txt", "caf\xe9||<<1+1=2>> #### 2\n".encode("latin-1"), [], [":1:", "not valid UTF-8"]),
    ("utf16-encoding", "utf16.txt", "1+1||<<1+1=2>> #### 2\n".encode("utf-16"), [], ["not valid UTF-8"]),
    ("unknown-format", "aug2.txt", "1+2||<<1+2=3>> #### 3\n", ["--format", "bogus"], ["unknown data format 'bogus'"]),
    ("undetectable-format", "plain.txt", "just some prose\nand more\n", [], [":1:", "cannot tell the format"]),
    ("missing-answer-marker", "nomark.txt", "1+2||<<1+2=3>> 3\n", [], [":1:", "no '####' answer marker"]),
    ("empty-answer", "emptyans.txt", "1+2||<<1+2=3>> ####   \n", [], [":1:", "empty answer"]),
    ("aug-answer-not-number", "abc.txt", "1+2||<<1+2=3>> #### three\n", [], [":1:", "'three' is not a number"]),
    ("gsm8k-answer-not-number", "g.jsonl", '{"question": "q?", "answer": "so\\n#### twelve"}\n', [],
     [":1:", "'twelve' is not a number"]),
    ("gsm8k-no-marker", "g2.jsonl", '{"question": "q?", "answer": "12"}\n', [], [":1:", "no '####' marker"]),
    ("jsonl-invalid-json", "bad.jsonl", '{"question": "q?", "answer": "#### 1"}\n{"question": \n', [],
     [":2:", "invalid JSON"]),
    ("jsonl-missing-key", "mk.jsonl", '{"question": "q?", "steps": []}\n', [], [":1:", "key 'answer' should be"]),
    ("records-answer-not-number", "rec.jsonl", '{"question": "q?", "steps": ["a"], "answer": "blue"}\n', [],
     [":1:", "'blue' is not a number"]),
    ("icot-answer-not-digits", "mult.txt", "1 2 * 3 4||3 6 + 0 3 #### 3 x 1\n", ["--format", "icot_mult"],
     [":1:", "not space-separated digits"]),
    ("prontoqa-answer", "p.json", '[{"question": "Is A?", "steps": ["A"], "answer": "Maybe"}]', ["--format", "prontoqa"],
     ["item 0", "'True' or 'False'"]),
    ("svamp-answer-type", "s.json", '[{"Body": "b", "Question": "q", "Answer": "five"}]', [],
     ["item 0", "key 'Answer' should be int or float, got str"]),
    ("cqa-answer-key", "cqa.jsonl",
     '{"answerKey": "Z", "id": "x", "question": {"stem": "s", "choices": [{"label": "A", "text": "a"}]}}\n', [],
     [":1:", "answerKey 'Z' is not one of the choice labels"]),
    ("truncated-json-array", "t.json", '[{"question": "q", "steps": [], "answer": "True"},', [], ["invalid JSON"]),
]


@pytest.mark.parametrize("case,name,content,extra,needles", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_file(capsys, tmp_path, case, name, content, extra, needles):
    f = write(tmp_path / name, content)
    code, err = run_cli(capsys, "data", "show", f, *extra)
    record(case, assert_one_line_error(code, err, name, *needles))


def test_bad_data_through_train_leaves_nothing(capsys, tmp_path):
    f = write(tmp_path / "aug.txt", "1+2||<<1+2=3>> #### 3\nno separator #### 4\n")
    out = tmp_path / "out"
    code, err = run_cli(capsys, "train", "--dataset", f, "--out", out, "--max-steps", "1", *TINY)
    record("train-malformed-data", assert_one_line_error(code, err, "aug.txt:2:"))
    assert not out.exists()  # nothing was created for a run that never started


def test_bad_data_through_eval_writes_no_results(capsys, tmp_path, run_dir):
    ck = copy_ckpt(run_dir / "model", tmp_path / "ck")
    before = listing(ck)
    f = write(tmp_path / "latin1.txt", "caf\xe9||<<1+1=2>> #### 2\n".encode("latin-1"))
    code, err = run_cli(capsys, "eval", "--checkpoint", ck, "--dataset", f, "--no-progress")
    record("eval-wrong-encoding", assert_one_line_error(code, err, "latin1.txt:1", "not valid UTF-8"))
    assert listing(ck) == before


# --------------------------------------------------------------------------- configs
def test_yaml_unknown_key_names_file_and_line(capsys, tmp_path):
    cfg = write(tmp_path / "cfg.yaml", "method: cot\ntrain:\n  lr: 0.001\n  lrr: 3\n")
    code, err = run_cli(capsys, "train", "--config", cfg, "--out", tmp_path / "o", *TINY)
    record("yaml-unknown-key", assert_one_line_error(code, err, "cfg.yaml:4:", "train.lrr: unknown key", "valid keys"))
    assert not (tmp_path / "o").exists()


def test_yaml_wrong_type_names_file_and_line(capsys, tmp_path):
    cfg = write(tmp_path / "cfg.yaml", "method: cot\ntrain:\n  batch_size: lots\n")
    code, err = run_cli(capsys, "train", "--config", cfg, "--out", tmp_path / "o", *TINY)
    record("yaml-wrong-type", assert_one_line_error(code, err, "cfg.yaml:3:", "train.batch_size: expected an integer, got 'lots'"))


def test_yaml_syntax_error(capsys, tmp_path):
    cfg = write(tmp_path / "cfg.yaml", "method: cot\ntrain: [unclosed\n")
    code, err = run_cli(capsys, "train", "--config", cfg, "--out", tmp_path / "o", *TINY)
    record("yaml-syntax", assert_one_line_error(code, err, "cfg.yaml:", "invalid YAML"))


def test_yaml_top_level_not_a_mapping(capsys, tmp_path):
    cfg = write(tmp_path / "cfg.yaml", "- a\n- b\n")
    code, err = run_cli(capsys, "train", "--config", cfg, "--out", tmp_path / "o", *TINY)
    record("yaml-not-mapping", assert_one_line_error(code, err, "cfg.yaml", "expected a mapping at the top level"))


def test_config_file_missing(capsys, tmp_path):
    code, err = run_cli(capsys, "train", "--config", tmp_path / "nope.yaml", "--out", tmp_path / "o", *TINY)
    record("config-missing", assert_one_line_error(code, err, "nope.yaml", "config file not found"))


SET_CASES = [
    ("set-unknown-key", ["--set", "train.lrr=1"], ["--set train.lrr=1", "train.lrr: unknown key"]),
    ("set-wrong-type", ["--set", "train.batch_size=abc"], ["--set train.batch_size=abc", "expected an integer"]),
    ("set-bool-type", ["--set", "model.trust_remote_code=maybe"], ["model.trust_remote_code: expected true or false"]),
    ("set-no-equals", ["--set", "train.lr"], ["override 'train.lr'", "expected KEY=VALUE"]),
    ("set-section-scalar", ["--set", "train=3"], ["--set train=3", "train: expected a mapping"]),
    ("unknown-method", ["--method", "nope"], ["unknown method 'nope'", "valid methods:", "cot"]),
    ("unknown-method-arg", ["--set", "method_args.bogus=1"], ["method_args.bogus: unknown key"]),
    ("unknown-dataset", ["--dataset", "nonesuch"], ["unknown data set 'nonesuch'", "valid names:"]),
    ("dataset-file-missing", ["--dataset", "no/such/file.txt"], ["no/such/file.txt: file not found"]),
    ("batch-size-0", ["--batch-size", "0"], ["train.batch_size must be >= 1, got 0"]),
    ("batch-not-multiple", ["--batch-size", "8", "--set", "train.micro_batch_size=3"],
     ["train.batch_size (8) must be a multiple of train.micro_batch_size (3)"]),
    ("negative-n-latent", ["--method", "codi", "--set", "method_args.n_latent=-1"], ["method_args.n_latent must be >= 0, got -1"]),
    # the method's options are checked before any data is read: the missing file is not what the error names
    ("method-args-before-data", ["--method", "codi", "--set", "method_args.n_latent=-1", "--dataset", "no/such/file.txt"],
     ["method_args.n_latent must be >= 0, got -1"]),
    ("lr-not-finite", ["--lr", "nan"], ["train.lr must be a finite number"]),
    ("bad-distributed", ["--set", "train.distributed=mpi"], ["train.distributed must be auto, ddp or fsdp"]),
    ("bad-device", ["--set", "train.device=gpu0"], ["train.device must be auto, cpu, cuda or cuda:N"]),
    ("n-embd-not-divisible", ["--set", "model.n_embd=33"], ["model.n_embd (33) must be divisible by model.n_head (2)"]),
]


@pytest.mark.parametrize("case,args,needles", SET_CASES, ids=[c[0] for c in SET_CASES])
def test_bad_train_option(capsys, tmp_path, case, args, needles):
    out = tmp_path / "o"
    code, err = run_cli(capsys, "train", "--out", out, "--max-steps", "1", *TINY, *args)
    record(case, assert_one_line_error(code, err, *needles))
    assert not out.exists()


def test_model_path_that_does_not_exist_is_not_downloaded(capsys, tmp_path, monkeypatch):
    import huggingface_hub

    def no_download(*a, **k):  # any attempt to reach the Hub fails the test
        raise AssertionError("tried to download")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    missing = tmp_path / "models" / "my-gpt2"
    code, err = run_cli(capsys, "train", "--model", missing, "--out", tmp_path / "o", "--max-steps", "1", *TINY)
    record("model-path-missing", assert_one_line_error(code, err, f"model.name {str(missing)!r}", "no such directory"))
    code, err = run_cli(capsys, "train", "--model", "./not-here", "--out", tmp_path / "o", "--max-steps", "1", *TINY)
    assert_one_line_error(code, err, "'./not-here'", "no such directory")
    (tmp_path / "emptymodel").mkdir()
    code, err = run_cli(capsys, "train", "--model", tmp_path / "emptymodel", "--out", tmp_path / "o", "--max-steps", "1", *TINY)
    record("model-dir-without-config", assert_one_line_error(code, err, "emptymodel", "no config.json"))
    assert not (tmp_path / "o").exists()


def test_data_dir_and_init_from_paths_are_checked(capsys, tmp_path):
    code, err = run_cli(capsys, "train", "--dataset", "gsm8k", "--data-dir", tmp_path / "nodata", "--out", tmp_path / "o", *TINY)
    record("data-dir-missing", assert_one_line_error(code, err, "nodata", "--data-dir / data.data_dir", "does not exist"))
    code, err = run_cli(capsys, "train", "--init-from", tmp_path / "noinit", "--out", tmp_path / "o", *TINY)
    record("init-from-missing", assert_one_line_error(code, err, "init_from:", "noinit", "does not exist"))
    code, err = run_cli(capsys, "train", "--set", f"data.test_path={tmp_path / 'nt.jsonl'}", "--out", tmp_path / "o", *TINY)
    record("test-path-missing", assert_one_line_error(code, err, "data.test_path", "nt.jsonl", "file not found"))
    assert not (tmp_path / "o").exists()


def test_sequence_longer_than_context(capsys, tmp_path):
    out = tmp_path / "o"
    code, err = run_cli(capsys, "train", "--out", out, "--max-steps", "1", *TINY, "--set", "model.n_positions=16")
    record("sequence-too-long", assert_one_line_error(code, err, "training data: example 0 is", "context of 16 positions"))
    assert not out.exists()


def test_test_question_longer_than_context_fails_before_training(capsys, tmp_path):
    long_q = "What is 1+1? " + "padding words " * 12
    test = write(tmp_path / "t.jsonl", json.dumps({"question": long_q, "answer": "so\n#### 2"}) + "\n")
    out = tmp_path / "o"
    code, err = run_cli(capsys, "train", "--out", out, "--max-steps", "1", *TINY, "--set", "model.n_positions=64",
                        "--set", f"data.test_path={test}")
    record("test-question-too-long", assert_one_line_error(code, err, "test data: question 0", "context of 64 positions"))
    assert not out.exists()  # refused before training: no model/ without results


# --------------------------------------------------------------------------- output locations
def test_output_dir_under_a_regular_file(capsys, tmp_path):
    blocker = write(tmp_path / "blocker", "I am a file")
    out = blocker / "run"
    code, err = run_cli(capsys, "train", "--out", out, "--max-steps", "1", *TINY)
    record("out-dir-unwritable", assert_one_line_error(code, err, str(out), "is a file, not a directory"))
    assert blocker.read_text() == "I am a file" and listing(tmp_path) == ["blocker"]
    code, err = run_cli(capsys, "train", "--out", blocker, "--max-steps", "1", *TINY)
    record("out-dir-is-a-file", assert_one_line_error(code, err, "exists and is not a directory"))


def test_eval_output_not_writable_fails_before_evaluating(capsys, tmp_path, run_dir):
    blocker = write(tmp_path / "blocker", "x")
    code, err = run_cli(capsys, "eval", "--checkpoint", run_dir, "--output", blocker / "res.json", "--limit", "2", "--no-progress")
    record("eval-output-unwritable", assert_one_line_error(code, err, "blocker", "is not a directory"))
    assert listing(tmp_path) == ["blocker"]


# --------------------------------------------------------------------------- checkpoints
def test_eval_checkpoint_missing(capsys, tmp_path):
    code, err = run_cli(capsys, "eval", "--checkpoint", tmp_path / "nock", "--no-progress")
    record("checkpoint-missing", assert_one_line_error(code, err, "nock", "does not exist"))


def test_eval_expects_another_method(capsys, run_dir):
    code, err = run_cli(capsys, "eval", "--checkpoint", run_dir, "--method", "codi", "--no-progress")
    record("eval-method-mismatch", assert_one_line_error(code, err, "checkpoint is of method 'cot', expected 'codi'"))
    assert not list(run_dir.glob("eval-*.json"))


def test_resume_with_another_method(capsys, tmp_path, run_dir):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = {p: (run / p).stat().st_mtime_ns for p in listing(run) if (run / p).is_file()}
    code, err = run_cli(capsys, "train", "--out", run, "--resume", "--method", "nocot", "--max-steps", "3", *TINY)
    record("resume-other-method", assert_one_line_error(code, err, "step-00000002", "cannot resume with a different configuration",
                                                         "method: 'cot' in the checkpoint, 'nocot' now"))
    after = {p: (run / p).stat().st_mtime_ns for p in listing(run) if (run / p).is_file()}
    assert after == before  # the run it refused to resume is untouched


def test_resume_with_another_batch_size(capsys, tmp_path, run_dir):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    code, err = run_cli(capsys, "train", "--out", run, "--resume", "--batch-size", "4", "--max-steps", "3", "--no-progress")
    record("resume-other-batch", assert_one_line_error(code, err, "cannot resume with a different configuration",
                                                        "train.batch_size: 8 in the checkpoint, 4 now"))
    assert (run / "model" / "method.json").is_file()


def test_codi_checkpoint_without_extra_weights(capsys, tmp_path, codi_ckpt):
    ck = copy_ckpt(codi_ckpt, tmp_path / "ck")
    (ck / "extra.safetensors").unlink()
    code, err = run_cli(capsys, "eval", "--checkpoint", ck, "--limit", "2", "--no-progress")
    record("codi-missing-extra", assert_one_line_error(code, err, "ck", "missing extra.safetensors with weights of projection"))
    assert listing(ck) == sorted(p for p in listing(codi_ckpt) if p != "extra.safetensors")


def test_cot_checkpoint_with_foreign_extra_weights(capsys, tmp_path, run_dir, codi_ckpt):
    ck = copy_ckpt(run_dir / "model", tmp_path / "ck")
    shutil.copy(codi_ckpt / "extra.safetensors", ck / "extra.safetensors")
    code, err = run_cli(capsys, "eval", "--checkpoint", ck, "--limit", "2", "--no-progress")
    record("foreign-extra-weights", assert_one_line_error(code, err, "extra.safetensors", "does not use"))


def _edit_config(ck: Path, **changes) -> None:
    c = json.loads((ck / "config.json").read_text())
    for k, v in changes.items():
        c[k] = v(c[k]) if callable(v) else v
    (ck / "config.json").write_text(json.dumps(c))


def test_vocabulary_larger_than_weights(capsys, tmp_path, run_dir):
    ck = copy_ckpt(run_dir / "model", tmp_path / "ck")
    _edit_config(ck, vocab_size=lambda v: v + 5)  # the embedding rows on disk no longer match
    code, err = run_cli(capsys, "eval", "--checkpoint", ck, "--limit", "2", "--no-progress")
    line = assert_one_line_error(code, err, str(ck), "strict load failed", "mismatched keys")
    assert re.search(r"wte\.weight \((\d+), 32\) on disk vs \((\d+), 32\) from config.json", line), line
    record("vocab-rows-mismatch", line)


def test_tokenizer_larger_than_vocabulary(capsys, tmp_path, run_dir):
    ck = copy_ckpt(run_dir / "model", tmp_path / "ck")
    _edit_config(ck, vocab_size=100)
    code, err = run_cli(capsys, "eval", "--checkpoint", ck, "--limit", "2", "--no-progress")
    record("tokenizer-vs-vocab", assert_one_line_error(code, err, "tokenizer has", "vocabulary has 100 rows"))


def test_shape_mismatch(capsys, tmp_path, run_dir):
    ck = copy_ckpt(run_dir / "model", tmp_path / "ck")
    _edit_config(ck, n_embd=64)
    code, err = run_cli(capsys, "eval", "--checkpoint", ck, "--limit", "2", "--no-progress")
    line = assert_one_line_error(code, err, str(ck), "strict load failed", "mismatched keys")
    assert re.search(r"\(32, 96\) on disk vs \(64, 192\) from config.json", line), line
    record("shape-mismatch", line)


def test_truncated_safetensors(capsys, tmp_path, run_dir):
    ck = copy_ckpt(run_dir / "model", tmp_path / "ck")
    f = ck / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    code, err = run_cli(capsys, "eval", "--checkpoint", ck, "--limit", "2", "--no-progress")
    record("truncated-safetensors", assert_one_line_error(code, err, str(ck), "cannot load model weights"))
    assert not list(ck.glob("eval-*.json"))


def test_truncated_optimizer_state_on_resume(capsys, tmp_path, run_dir):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for d in (run / "checkpoints").iterdir():
        f = d / "optimizer.safetensors"
        f.write_bytes(f.read_bytes()[:100])
    code, err = run_cli(capsys, "train", "--out", run, "--resume", "--max-steps", "3", "--no-progress")
    record("truncated-optimizer", assert_one_line_error(code, err, "step-00000002", "unreadable training state"))


def test_corrupt_method_json(capsys, tmp_path, run_dir):
    ck = copy_ckpt(run_dir / "model", tmp_path / "ck")
    (ck / "method.json").write_text('{"method": "cot", ')
    code, err = run_cli(capsys, "eval", "--checkpoint", ck, "--no-progress")
    record("corrupt-method-json", assert_one_line_error(code, err, "method.json", "unreadable"))


def test_eval_bad_options(capsys, run_dir):
    code, err = run_cli(capsys, "eval", "--checkpoint", run_dir, "--batch-size", "0", "--no-progress")
    record("eval-batch-size-0", assert_one_line_error(code, err, "--batch-size must be >= 1, got 0"))
    code, err = run_cli(capsys, "eval", "--checkpoint", run_dir, "--limit", "-1", "--no-progress")
    record("eval-negative-limit", assert_one_line_error(code, err, "--limit must be >= 0, got -1"))
    code, err = run_cli(capsys, "eval", "--checkpoint", run_dir, "--split", "dev", "--no-progress")
    record("unknown-split", assert_one_line_error(code, err, "unknown split 'dev'", "valid splits"))
    code, err = run_cli(capsys, "eval", "--checkpoint", run_dir, "--set", "method_args.n_latent=2", "--no-progress")
    record("eval-unknown-method-option", assert_one_line_error(code, err, "n_latent", "unknown key"))
    code, err = run_cli(capsys, "eval", "--checkpoint", run_dir, "--set", "n_latent=2", "--no-progress")
    record("eval-set-spelling", assert_one_line_error(code, err, "--set n_latent=2", "spelled as in train",
                                                       "--set method_args.n_latent="))
    assert not list(run_dir.glob("eval-*.json"))


# --------------------------------------------------------------------------- training failures
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(capsys, tmp_path):
    out = tmp_path / "o"
    code, err = run_cli(capsys, "train", "--out", out, "--max-steps", "6", "--batch-size", "8", "--lr", "1e30",
                        "--set", "train.warmup_steps=0", "--set", "train.save_every=1", "--set", "train.grad_clip=0",
                        "--set", "train.log_every=1", *TINY)
    line = assert_one_line_error(code, err, "non-finite loss", "at step 2", "before updating the weights",
                                 "last good checkpoint:", "step-00000001")
    record("non-finite-loss", line)
    assert not (out / "model").exists() and not (out / "results.json").exists() and not (out / "predictions.json").exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000001"]
    m = load_method(out / "checkpoints" / "step-00000001")  # the checkpoint left behind loads, finite
    assert all(torch.isfinite(p).all() for p in m.parameters())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["type"] == "train"] == [1]


# --------------------------------------------------------------------------- the real process
def test_subprocess_error_is_one_line_and_debug_shows_traceback(tmp_path):
    f = write(tmp_path / "aug.txt", "1+2||<<1+2=3>> #### 3\nno separator #### 4\n")
    r = cli_process("data", "show", f)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {f}:2: expected 'question||cot #### answer', found no '||'"]
    r = cli_process("--debug", "data", "show", f)
    assert r.returncode != 0 and "Traceback" in r.stderr and "DataError" in r.stderr
    # a message longer than the console is not wrapped onto several lines
    r = cli_process("train", "--out", tmp_path / "o", "--set", "train.lrr=1")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and len(lines[0]) > 200, r.stderr
    assert lines[0].startswith("error: --set train.lrr=1: train.lrr: unknown key; valid keys of train: lr, ")
    assert not (tmp_path / "o").exists()


def test_subprocess_unknown_option_is_a_usage_error(tmp_path):
    r = cli_process("train", "--no-such-option")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "No such option" in r.stderr


# --------------------------------------------------------------------------- safety (static)
def test_no_unsafe_deserialisation_and_no_implicit_remote_code():
    offenders = []
    for f in SRC.rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        for i, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\bimport pickle\b|\bpickle\.|\bcloudpickle\b|\bdill\b", code):
                offenders.append(f"{f.name}:{i}: pickle")
            if "torch.load(" in code and "weights_only=True" not in code:
                offenders.append(f"{f.name}:{i}: torch.load without weights_only=True")
            if re.search(r"trust_remote_code\s*=\s*True", code):
                offenders.append(f"{f.name}:{i}: trust_remote_code=True")
    assert not offenders, offenders
    from latentreason.models.backbone import ModelConfig

    assert ModelConfig().trust_remote_code is False
