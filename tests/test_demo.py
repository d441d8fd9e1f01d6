import json

from latentreason.evaluation.demo import run_demo


def test_quick_demo_writes_results_and_reuses(tmp_path):
    res = run_demo(tmp_path / "demo", quick=True, progress=False)
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    for name in ("cot", "nocot"):
        row = saved["methods"][name]
        for k in ("accuracy", "n", "mean_reasoning_tokens", "mean_generated_tokens", "latency_ms_per_question",
                  "batch_size", "train_seconds", "speedup_vs_cot"):
            assert k in row, k
        assert (tmp_path / "demo" / name / "model" / "method.json").exists()
    assert saved["methods"]["cot"]["mean_reasoning_tokens"] > saved["methods"]["nocot"]["mean_reasoning_tokens"] == 0
    assert saved["task"]["name"] == "modchain" and "torch" in saved["env"]
    # a second run reuses the finished methods (no retraining: same train_seconds)
    again = run_demo(tmp_path / "demo", quick=True, progress=False)
    assert again["methods"]["cot"]["train_seconds"] == res["methods"]["cot"]["train_seconds"]
