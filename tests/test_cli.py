"""The `eugen` command line: subcommand dispatch, the layer benchmark's JSON, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from eugen_nerf.cli import main


def test_bench_layers_writes_json(tmp_path, capsys, load_busy):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "layers",
            "--points",
            "2048",
            "--orders",
            "1",
            "2",
            "--num-features",
            "8",
            "--repeats",
            "1",
            "--train-points",
            "256",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads(out.read_text())
    assert [(r["order"], r["num_features"]) for r in results["layers"]] == [(1, 8), (2, 8)]
    for row in results["layers"]:
        assert set(row) >= {"order", "num_features", "ms_dense", "ms_eugen", "speedup", "flop_ratio"}
        assert row["ms_dense"] > 0 and row["ms_eugen"] > 0 and row["flop_ratio"] > 1
        for name in ("dense", "eugen"):  # the repeats' spread brackets their median
            low, high = row[f"ms_{name}_range"]
            assert low <= row[f"ms_{name}"] <= high
    mlp = results["mlp"]
    assert set(mlp) >= {
        "order",
        "num_features",
        "ms_dense",
        "ms_unbundled",
        "ms_bundled",
        "speedup_unbundled",
        "speedup_bundled",
    }
    assert mlp["bundled_relative_difference"] < 1e-4
    assert load_busy(results["machine_load"]) == results["noisy"]
    printed = capsys.readouterr().out
    assert "EUGen bundled" in printed and ("NOISY" in printed) == bool(results["noisy"])


def test_bad_flag_value_is_one_line_error(capsys):
    assert main(["bench", "layers", "--points", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--points" in err


def test_unknown_commands():
    assert main(["nope"]) == 2
    assert main(["bench", "nope"]) == 2
    assert main(["--help"]) == 0


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "eugen_nerf.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "eugen bench layers" in proc.stdout
