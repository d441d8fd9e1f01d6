"""The benchmark scripts run end to end (tiny sizes) and print their ratios."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("script,args,ratios", [
    ("codi_cost.py", ["--batch-size", "2", "--repeats", "1", "--n-latent", "2"], ["CODI / CoT", "thought / token"]),
    ("coconut_cost.py", ["--batch-size", "2", "--repeats", "1"], ["Coconut / CoT"]),
    ("decode_speed.py", ["--batch-size", "4", "--questions", "8", "--new-tokens", "6", "--repeats", "1"], []),
])
def test_benchmark_script_prints_ratios(script, args, ratios):
    r = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ratios:
        m = re.search(re.escape(name) + r" = (\d+\.\d+)x", r.stdout)
        assert m and float(m.group(1)) > 0, (name, r.stdout)
    if script == "decode_speed.py":  # the cached batched decoder gives the same tokens as model.generate
        assert re.search(r"ratio \(ours / generate\): \d+\.\d+x\s+identical tokens: True", r.stdout), r.stdout


@pytest.mark.parametrize("script", ["vs_official.py", "parity/make_golden.py"])
def test_official_code_scripts_explain_themselves(script, tmp_path):
    """They need local checkouts of the official repositories: --help says so, a missing one is named."""
    r = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--official-dir" in r.stdout and "facebookresearch/coconut" in r.stdout
    r = subprocess.run([sys.executable, str(BENCH / script), "--official-dir", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and str(tmp_path / "coconut") in r.stderr and "missing" in r.stderr
