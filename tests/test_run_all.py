"""bench/run_all.py: the generated BENCHMARKS.md section, failing benchmarks, met/MISSED (no benchmark runs)."""

import json
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import common  # noqa: E402
import run_all  # noqa: E402

DOC = ("# Benchmarks and experiments\n\nFirst paragraph, which stays\non two lines.\n\n## Face cropping\n\n"
       "| a | b |\n|---|---|\n| 1 | 2 |\n\nOld dated figures   with trailing spaces   \n\n## End\n")


def report(benches, quick=True):
    return {"command": "python bench/run_all.py --quick", "date": "2026-11-25T06:00:00+00:00", "quick": quick,
            "git_commit": "abc1234", "machine": {"cores": 2, "cpu": "AMD EPYC", "ram_gib": 23.5},
            "versions": {"python": "3.11.9", "tensorflow": "2.21.0", "keras": "3.15.0", "opencv": "4.14.0",
                         "numpy": "2.3.0", "efr": "0.1.0"},
            "load_before": [0.5, 0.6, 0.7], "load_after": [1.5, 1.0, 0.8], "benches": benches}


def ok_entry(name, targets, rows=()):
    return {"name": name, "command": f"python bench/bench_{name}.py", "status": "ok", "seconds": 1.0,
            "started": "2026-11-25T06:00:00+00:00", "load_before": [0.5, 0.5, 0.5], "load_after": [0.6, 0.5, 0.5],
            "result": common.result(name, f"python bench/bench_{name}.py", rows, targets, ["a note"])}


def test_rewriting_between_markers_keeps_the_rest_byte_identical(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_bytes(DOC.encode())
    run_all.write_section(path, run_all.render_section(report([])))
    first = path.read_text()
    assert first.index(run_all.BEGIN) > first.index("on two lines.") and first.index(run_all.END) < first.index(
        "## Face cropping")
    start, stop = first.index(run_all.BEGIN), first.index(run_all.END) + len(run_all.END)
    head, tail = DOC.split("\n\n## Face cropping", 1)
    assert first[:start] == head + "\n\n" and first[stop:] == "\n\n## Face cropping" + tail  # one blank line each side

    section = run_all.render_section(report([ok_entry("crop", [common.target("crop / floor", 0.2, 0.5)])]))
    run_all.write_section(path, section)
    second = path.read_text()
    assert second[:second.index(run_all.BEGIN)] == first[:start]
    assert second[second.index(run_all.END) + len(run_all.END):] == first[stop:]
    assert section in second and "crop / floor" in second
    assert [p.name for p in tmp_path.iterdir()] == ["BENCHMARKS.md"]  # no temporary file left behind
    run_all.write_section(path, section)
    assert path.read_text() == second  # same section, same file


@pytest.mark.parametrize("bad", [f"{run_all.END}\nx\n{run_all.BEGIN}\n", f"{run_all.BEGIN}\nonly the start\n",
                                 f"{run_all.BEGIN}\n{run_all.END}\n{run_all.BEGIN}\n{run_all.END}\n"])
def test_broken_markers_are_refused_and_the_file_is_not_touched(tmp_path, bad):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(DOC + bad)
    with pytest.raises(ValueError):
        run_all.write_section(path, run_all.render_section(report([])))
    assert path.read_text() == DOC + bad


def test_targets_are_rendered_met_or_missed():
    targets = [common.target("efr / original", 6.0, 5), common.target("crop / decoding floor", 0.19, 0.5),
               common.target("peak RSS, 3200 / 200 photos", 1.05, 1.2, "<="),
               common.target("peak RSS grows", 1.5, 1.2, "<="), common.target("no ratio", float("nan"), 1)]
    assert [t["met"] for t in targets] == [True, False, True, False, False]
    text = run_all.render_section(report([ok_entry("crop", targets, [common.row("efr", 97.34, "photos/s")])]))
    lines = text.splitlines()

    def line(name):
        return next(x for x in lines if x.startswith(f"| {name} |"))

    assert line("efr / original").split("|")[2:5] == [" 6.00 ", " >= 5.00 ", " met "]
    assert line("crop / decoding floor").split("|")[2:5] == [" 0.19 ", " >= 0.5 ", " **MISSED** "]
    assert " met " in line("peak RSS, 3200 / 200 photos") and "<= 1.20" in line("peak RSS, 3200 / 200 photos")
    assert "**MISSED**" in line("peak RSS grows") and "**MISSED**" in line("no ratio")
    assert "| crop | crop / decoding floor | 0.19 | >= 0.5 | **MISSED** |" in lines  # the summary table
    assert "| efr | 97.3 | photos/s |  |" in lines
    assert "### crop: `python bench/bench_crop.py`" in lines and "- a note" in lines
    assert "2 cores, AMD EPYC, 23.5 GiB RAM" in text and "tensorflow 2.21.0" in text and "efr 0.1.0" in text
    assert "### augment" in lines and "| augment | not run | | | |" in lines


def test_the_readme_gets_the_same_targets_table_between_its_own_markers():
    readme = f"# EFR\n\n## Speed\n\n{run_all.README_BEGIN}\nold\n{run_all.README_END}\n\n## Next\n"
    data = report([ok_entry("predict", [common.target("faces only: EFR / fer", 1.49, 2.0)])])
    table = run_all.render_readme_table(data)
    new = run_all.replace_section(readme, table, run_all.README_BEGIN, run_all.README_END)
    assert new.startswith("# EFR\n\n## Speed\n\n") and new.endswith("\n\n## Next\n") and "old" not in new
    assert "| predict | faces only: EFR / fer | 1.49 | >= 2.00 | **MISSED** |" in new
    assert "\n".join(run_all.target_table(data)) in run_all.render_section(data)  # the same rows as BENCHMARKS.md


def script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_a_failing_benchmark_is_shown_as_failed_with_its_last_stderr_line(tmp_path):
    crash = script(tmp_path, "crash.py", """\
        import sys
        print("some output")
        sys.stderr.write("progress 1/2\\rprogress 2/2\\nTraceback (most recent call last):\\n"
                         "RuntimeError: out of faces\\n\\n")
        sys.exit(1)
        """)
    no_json_option = script(tmp_path, "old.py", """\
        import argparse
        argparse.ArgumentParser(prog="bench_predict.py").parse_args()
        """)
    silent = script(tmp_path, "silent.py", "pass\n")
    good = script(tmp_path, "good.py", """\
        import json, sys
        path = sys.argv[sys.argv.index("--json") + 1]
        json.dump({"name": "good", "command": "python good.py", "rows": [], "targets": [], "notes": []},
                  open(path, "w"))
        """)
    entries = []
    for path in (crash, no_json_option, silent, good):
        out = tmp_path / path.stem
        argv = [sys.executable, str(path), "--quick", "--json", str(out / "r.json")]
        entries.append(run_all.run_bench(path.stem, argv, out / "r.json", out / "stderr.txt", timeout=60))
    assert entries[0]["status"] == "failed: RuntimeError: out of faces"
    assert entries[1]["status"].startswith("failed: bench_predict.py: error: unrecognized arguments: --quick --json")
    assert entries[2]["status"] == "failed: no JSON written (does the script take --json?)"
    assert entries[3]["status"] == "ok" and entries[3]["result"]["name"] == "good"
    assert entries[3]["command"].endswith("good.py --quick")  # --json PATH is not part of the command shown
    text = run_all.render_section(report(entries[:1]))
    assert "| crop | failed: RuntimeError: out of faces | | | |" not in text  # named by the entry, not the script
    entries[0]["name"] = "predict"
    text = run_all.render_section(report(entries[:1]))
    assert "| predict | failed: RuntimeError: out of faces | | | |" in text
    assert "**failed: RuntimeError: out of faces**" in text
    json.dumps(report(entries))  # the raw results are plain JSON


def test_the_json_helpers_write_the_common_shape(tmp_path):
    data = common.result("x", common.command_line(["--sizes", "1", "--json", "a.json", "--json=b"], "bench/x.py"),
                         [common.row("rate", 12.345678, "photos/s", "detail")], [common.target("r", 0.4, 0.5)])
    assert data["command"] == "python bench/x.py --sizes 1"
    common.write_result(tmp_path / "sub" / "x.json", data)
    assert json.loads((tmp_path / "sub" / "x.json").read_text()) == {
        "name": "x", "command": "python bench/x.py --sizes 1",
        "rows": [{"label": "rate", "value": 12.3457, "unit": "photos/s", "detail": "detail"}],
        "targets": [{"name": "r", "ratio": 0.4, "op": ">=", "target": 0.5, "met": False, "detail": ""}], "notes": []}


def test_figures_from_an_only_rerun_name_both_runs():
    first = {**ok_entry("crop", []), "run": "2026-11-25T06:00:00+00:00", "git_commit": "aaa1111"}
    rerun = {**ok_entry("scaling", []), "run": "2026-11-26T07:00:00+00:00", "git_commit": "bbb2222"}
    mixed = report([first, rerun])
    expected = ("crop from the run of 2026-11-25T06:00:00+00:00 (git aaa1111); "
                "scaling from the run of 2026-11-26T07:00:00+00:00 (git bbb2222)")
    assert expected in run_all.render_section(mixed)
    assert expected in run_all.render_readme_table(mixed)
    single = report([{**ok_entry("crop", []), "run": "2026-11-25T06:00:00+00:00", "git_commit": "abc1234"}])
    assert "more than one run" not in run_all.render_section(single) + run_all.render_readme_table(single)


def test_best_per_call_repeats_short_calls_to_a_round_length_and_keeps_the_fastest(monkeypatch):
    clock = [0.0]
    costs = iter([0.25] + [0.25] * 4 + [0.2] * 4 + [0.3] * 4)  # warm-up, then 3 rounds of 4 calls
    monkeypatch.setattr(common, "time", SimpleNamespace(perf_counter=lambda: clock[0]))  # a clock the calls move

    def call():
        clock[0] += next(costs)

    seconds, calls = common.best_per_call(3, call, min_seconds=1.0)
    assert calls == 4  # the 0.25 s warm-up call: 4 calls fill a 1 s round
    assert seconds == pytest.approx(0.2)  # per call, from the fastest round
    with pytest.raises(StopIteration):  # every cost was used: 1 + 3 x 4 calls, no more
        call()
    clock[0], costs = 0.0, iter([5.0, 4.0, 6.0])
    assert common.best_per_call(2, call, min_seconds=1.0) == (4.0, 1)  # a long call is timed once per round


def test_blazeface_reference_finds_a_synthetic_face_and_not_a_blank_frame(tmp_path):
    import cv2
    import numpy as np

    import bench_crop
    from efr.data.synthetic.render import render_face

    face, blank = tmp_path / "face.jpg", tmp_path / "blank.jpg"
    cv2.imwrite(str(face), render_face(1, "Happy", seed=0, size=(681, 1024)))
    cv2.imwrite(str(blank), np.full((1024, 681, 3), 200, np.uint8))
    bench_crop._init_blazeface()
    assert bench_crop._read_and_blazeface(str(face)) is True
    assert bench_crop._read_and_blazeface(str(blank)) is False


def test_blazeface_stage_adds_what_crop_spends_beyond_decoding_and_detecting():
    import bench_crop

    # crop 50/s and decode + Haar 100/s: 10 ms a photo besides decoding and detecting; BlazeFace 200/s -> 5 + 10 ms
    assert bench_crop.blazeface_stage({"crop": 50.0, "detect": 100.0, "blazeface": 200.0}) == pytest.approx(1 / 0.015)
    assert bench_crop.blazeface_stage({"crop": 120.0, "detect": 100.0, "blazeface": 200.0}) == 200.0  # never below 0
