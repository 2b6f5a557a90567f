"""The estimated-start benchmark on a short replay: estimates made at arrival against the real starts."""

from __future__ import annotations

import json
import subprocess
import sys

from spillover.simulations.bench_estimates import main, stats


def test_the_estimate_beats_now_for_jobs_that_wait_and_is_exact_for_jobs_placed_at_once(tmp_path):
    assert main(["--limit", "150", "--errors", "0", "--workers", "1", "--out", str(tmp_path)]) == 0
    [run] = json.loads((tmp_path / "results.json").read_text())
    waiting, placed = run["groups"]["waiting"], run["groups"]["placed at once"]
    assert waiting["jobs"] > 5 and placed["jobs"] > 50
    assert waiting["spillover"]["median_h"] < waiting["now"]["median_h"]
    assert waiting["spillover"]["mean_h"] < waiting["now"]["mean_h"]
    assert placed["spillover"]["p90_h"] == 0.0  # the reference pools boot at once: started when the plan said
    assert run["place_right"] > 0.9
    assert "| exact | waiting" in (tmp_path / "summary.md").read_text()


def test_stats_are_absolute_errors_with_a_signed_median():
    s = stats([-3600.0, 0.0, 1800.0, 7200.0, 36000.0])
    assert s["median_h"] == 1.0 and s["p90_h"] == 10.0 and s["bias_h"] == 0.5 and s["within_15min"] == 0.2


def test_a_bad_error_list_is_refused_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "spillover.simulations.bench_estimates", "--errors", "0,1.5",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("--errors: comma-separated numbers in [0, 1) (got '0,1.5')")
    assert not (tmp_path / "results.json").exists()
