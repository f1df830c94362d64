"""One benchmark command: run every benchmark and rewrite BENCHMARKS.md's current figures.

    python bench/run_all.py                    # full sizes: 26-33 min on 2 cores (data cached)
    python bench/run_all.py --quick            # small sizes: 4 min 52 s on 2 cores, data made from scratch
    python bench/run_all.py --only crop,predict
    python bench/run_all.py --quick --no-write # print the section, leave BENCHMARKS.md alone

Each benchmark (crop, augment, pipeline, memory, predict, scaling, serve, demo) runs as a subprocess
with ``--json PATH`` and writes its result in the shape described in bench/common.py;
its printed output passes through, its stderr goes to bench/out/run_all/<name>.stderr.txt.
A benchmark that fails, times out or writes no JSON (e.g. a script without --json) is
shown as "failed: <its last stderr line>" and the others still run.

The results replace ONE generated section of BENCHMARKS.md, between the lines
``<!-- run_all:begin -->`` and ``<!-- run_all:end -->`` (created after the file's first
paragraph when missing), written atomically; everything outside the markers stays
byte-identical (the dated sections below are history).  The section gives the date,
the machine (cores, CPU model, RAM), the load average before and after, the versions
(python, tensorflow, keras, opencv, numpy, efr), and per benchmark its command, its
figures and its targets (ratio, target, met or MISSED).  The raw results go to
bench/out/run_all.json.

--only NAMES reruns those benchmarks and takes the others from the previous
bench/out/run_all.json (each benchmark shows when it ran and whether it was a quick
run); benchmarks with no result there are listed as "not run".  --no-write prints the
section instead of writing BENCHMARKS.md (bench/out/run_all.json is still written).
--render JSON rewrites the section from a saved run_all.json without running anything.
The exit status is 1 when a benchmark failed (a MISSED target is not a failure), else 0.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import common  # noqa: E402

BEGIN = "<!-- run_all:begin -->"
END = "<!-- run_all:end -->"
HEADING = "## Current figures (`python bench/run_all.py`)"
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
# The README's speed table: the targets only, between its own markers (rewritten when they are there).
README_MD = REPO / "README.md"
README_BEGIN = "<!-- run_all:targets:begin -->"
README_END = "<!-- run_all:targets:end -->"
OUT = BENCH / "out"
RAW_JSON = OUT / "run_all.json"

# name -> (script, arguments of a full run, arguments of a --quick run)
BENCHES = {
    "crop": ("bench_crop.py", ["--subjects", "10", "--repeat", "3", "--floor-subjects", "10", "--floor-rounds", "3"],
             ["--subjects", "3", "--repeat", "1", "--floor-subjects", "4", "--floor-rounds", "3", "--skip-real"]),
    "augment": ("bench_augment.py", ["--repeats", "5"], ["--photos", "50", "--repeats", "2"]),
    "pipeline": ("bench_pipeline.py", ["--images", "320", "--epochs", "1", "--rounds", "4"],
                 ["--images", "64", "--epochs", "1", "--rounds", "2", "--size", "128"]),
    # 128 = 96 Valid/Test images + one batch of 32 for Train
    "memory": ("bench_memory.py", ["--sizes", "500", "5000"], ["--sizes", "128", "256", "--img-size", "64"]),
    # bench_predict.py's size options as the lead's version has them (--faces, --rounds, --original-photos)
    "predict": ("bench_predict.py", ["--photos", "96"],
                ["--photos", "32", "--faces", "320", "--rounds", "2", "--original-photos", "8"]),
    "scaling": ("bench_scaling.py", ["--rounds", "2"], ["--quick"]),
    # efr serve (8 clients, one photo a request) against in-process efr predict on the same photos
    "serve": ("bench_serve.py", ["--photos", "48", "--rounds", "2"], ["--photos", "16", "--rounds", "1"]),
    # the demo from scratch on 5 seeds (about 17 min on 2 busy cores; --write-docs is left to the user)
    "demo": ("demo_seeds.py", [], ["--seeds", "0"]),
}


# ---------------------------------------------------------------------------------------
# Running


def last_line(text):
    """The last non-empty line of ``text`` (progress bars' carriage returns count as line ends)."""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_bench(name, argv, json_path, stderr_path, timeout=None, env=None):
    """Run one benchmark; return its entry for run_all.json (status "ok" or "failed: ...")."""
    json_path, stderr_path = Path(json_path), Path(stderr_path)
    json_path.unlink(missing_ok=True)
    stderr_path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"name": name, "command": common.command_line(argv[2:], argv[1]), "started": common.now_utc(),
             "load_before": common.load_average()}
    started = time.perf_counter()
    with open(stderr_path, "w", encoding="utf-8", errors="replace") as stderr:
        try:
            code = subprocess.run(argv, stderr=stderr, env=env, timeout=timeout, cwd=REPO).returncode
            problem = None
        except subprocess.TimeoutExpired:
            code, problem = None, f"timed out after {timeout:.0f} s"
        except OSError as err:
            code, problem = None, f"could not start: {err}"
    entry["seconds"] = round(time.perf_counter() - started, 1)
    entry["load_after"] = common.load_average()
    entry["result"] = None
    if problem is None:
        if code != 0:
            problem = last_line(stderr_path.read_text(errors="replace")) or f"exit status {code}"
        elif not json_path.is_file():
            problem = "no JSON written (does the script take --json?)"
        else:
            try:
                entry["result"] = json.loads(json_path.read_text())
            except ValueError as err:
                problem = f"unreadable JSON ({err})"
    if problem is not None and len(problem) > 300:
        problem = problem[:297] + "..."
    entry["status"] = "ok" if problem is None else f"failed: {problem}"
    return entry


def bench_argv(name, quick, json_path):
    script, full, small = BENCHES[name]
    return [sys.executable, str(BENCH / script), *(small if quick else full), "--json", str(json_path)]


# ---------------------------------------------------------------------------------------
# Rendering


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def number(value):
    """A figure for a table: 1 decimal from 10 up, 2 from 1 up, 3 significant digits below; text as is."""
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def verdict(target):
    return "met" if target.get("met") else "**MISSED**"


def load_text(load):
    return ", ".join(f"{v:.2f}" for v in load) if load else "unknown"


def markdown_table(head, rule, cells):
    """Lines of a Markdown table (and a blank line after it); nothing for no rows."""
    if not cells:
        return []
    return [head, rule, *("| " + " | ".join(str(c) for c in row) + " |" for row in cells), ""]


def target_table(report):
    """The targets of every benchmark, one Markdown table (BENCHMARKS.md's summary and the README's)."""
    entries = {e["name"]: e for e in report.get("benches", [])}
    summary = []
    for name in BENCHES:
        entry = entries.get(name)
        if entry is None:
            summary.append(f"| {name} | not run | | | |")
        elif entry.get("status") != "ok":
            summary.append(f"| {name} | {cell(entry['status'])} | | | |")
        else:
            for t in entry["result"].get("targets", []):
                summary.append(f"| {name} | {cell(t['name'])} | {number(t.get('ratio'))} | {t['op']} "
                               f"{number(t['target'])} | {verdict(t)} |")
            if not entry["result"].get("targets"):
                summary.append(f"| {name} | (no target) | | | |")
    return ["| benchmark | target | ratio | wanted | result |", "|---|---|---:|---|---|", *summary]


def provenance(report):
    """A sentence naming each run the figures come from, when ``--only`` mixed runs; else ""."""
    runs = {}
    for entry in report.get("benches", []):
        key = (entry.get("run") or report.get("date", "?"), entry.get("git_commit") or report.get("git_commit"))
        runs.setdefault(key, []).append(entry["name"])
    if len(runs) <= 1:
        return ""
    parts = [f"{', '.join(names)} from the run of {date} (git {commit or 'unknown'})"
             for (date, commit), names in sorted(runs.items(), key=lambda item: item[0][0])]
    return "Figures from more than one run (`--only` reran some): " + "; ".join(parts) + "."


def render_readme_table(report):
    """The README's part: the targets table and where it came from, between the README markers."""
    mode = "quick run" if report.get("quick") else "full run"
    mixed = provenance(report)
    return "\n".join([README_BEGIN, *target_table(report), "",
                      f"Generated by `{report.get('command', 'python bench/run_all.py')}` ({mode}, "
                      f"{report.get('date', '?')}, git {report.get('git_commit') or 'unknown'}); figures and commands "
                      f"in BENCHMARKS.md." + (f" {mixed}" if mixed else ""), README_END])


def render_section(report):
    """The generated Markdown section, markers included (no trailing newline after the end marker)."""
    lines = [BEGIN, HEADING, ""]
    mode = "quick run (small sizes; noisier figures)" if report.get("quick") else "full run"
    lines.append(f"Generated by `{report.get('command', 'python bench/run_all.py')}` on {report.get('date', '?')} "
                 f"(git {report.get('git_commit') or 'unknown'}), {mode}. Do not edit between the run_all markers: "
                 "the next run rewrites it. Targets are ratios measured side by side in one process run.")
    mixed = provenance(report)
    if mixed:
        lines += ["", mixed]
    lines.append("")
    m = report.get("machine") or {}
    ram = f"{m['ram_gib']} GiB RAM" if m.get("ram_gib") else "RAM unknown"
    lines.append(f"Machine: {m.get('cores', '?')} cores, {m.get('cpu', 'unknown CPU')}, {ram}; load average "
                 f"(1, 5, 15 min) {load_text(report.get('load_before'))} before, "
                 f"{load_text(report.get('load_after'))} after.")
    v = report.get("versions") or {}
    lines.append("Versions: " + ", ".join(f"{k} {v[k]}" for k in ("python", "tensorflow", "keras", "opencv", "numpy",
                                                                    "efr") if k in v) + ".")
    lines.append("")
    lines += [*target_table(report), ""]
    entries = {e["name"]: e for e in report.get("benches", [])}
    for name in BENCHES:
        entry = entries.get(name)
        lines.append(f"### {name}" + (f": `{entry['command']}`" if entry else ""))
        lines.append("")
        if entry is None:
            lines += ["Not run (`--only` left it out and no earlier result was found).", ""]
            continue
        when = (f"Ran {entry.get('started', '?')} for {entry.get('seconds', '?')} s"
                + (" (quick sizes)" if entry.get("quick") else "")
                + f"; load average {load_text(entry.get('load_before'))} before, {load_text(entry.get('load_after'))}"
                  " after.")
        if entry.get("status") != "ok":
            lines += [when, "", f"**{cell(entry['status'])}**", ""]
            continue
        result = entry["result"]
        lines += [when, ""]
        lines += markdown_table("| measure | value | unit | detail |", "|---|---:|---|---|",
                                [(cell(r["label"]), cell(number(r.get("value"))), cell(r.get("unit", "")),
                                  cell(r.get("detail", ""))) for r in result.get("rows", [])])
        lines += markdown_table("| target | ratio | wanted | result | detail |", "|---|---:|---|---|---|",
                                [(cell(t["name"]), number(t.get("ratio")), f"{t['op']} {number(t['target'])}",
                                  verdict(t), cell(t.get("detail", ""))) for t in result.get("targets", [])])
        for note in result.get("notes", []):
            lines.append(f"- {note}")
        if result.get("notes"):
            lines.append("")
    lines.append(END)
    return "\n".join(lines)


def replace_section(text, section, begin=BEGIN, end=END):
    """``text`` with the part from BEGIN to END replaced by ``section``; all else byte-identical.

    Without markers the section goes after the first paragraph that follows the title.
    Raises ValueError when the markers are not exactly one BEGIN followed by one END.
    """
    begins, ends = text.count(begin), text.count(end)
    if begins == ends == 1 and text.index(begin) < text.index(end):
        start, stop = text.index(begin), text.index(end) + len(end)
        return text[:start] + section + text[stop:]
    if begins or ends:
        raise ValueError(f"expected one {begin} line followed by one {end} line, found {begins} and {ends}")
    return insert_after_first_paragraph(text, section)


def insert_after_first_paragraph(text, section):
    lines = text.splitlines(keepends=True)
    index = 0
    while index < len(lines) and (not lines[index].strip() or lines[index].lstrip().startswith("#")):
        index += 1  # the title and blank lines
    while index < len(lines) and lines[index].strip():
        index += 1  # the paragraph
    head = "".join(lines[:index])
    if head and not head.endswith("\n"):
        head += "\n"
    tail = "".join(lines[index:])
    return head + "\n" + section + "\n" + (tail if tail.startswith("\n") or not tail else "\n" + tail)


def write_section(path, section):
    """Rewrite the generated section of ``path`` (atomically: temporary file + os.replace)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    common.write_text_atomic(path, replace_section(text, section))


# ---------------------------------------------------------------------------------------
# The command


def git_commit():
    try:
        done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def parse_only(value):
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown benchmark(s) {', '.join(unknown) or '(none)'}: choose from "
                                         f"{', '.join(BENCHES)}")
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: every benchmark in a few minutes")
    parser.add_argument("--only", type=parse_only, default=None, metavar="NAMES",
                        help=f"comma list of benchmarks to run ({', '.join(BENCHES)}); the others come from the "
                             "previous bench/out/run_all.json")
    parser.add_argument("--no-write", action="store_true", help="print the section; leave BENCHMARKS.md alone")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="rewrite the section from a saved run_all.json; run nothing")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per benchmark before it is stopped and shown as failed (default: 600 with "
                             "--quick, 7200 otherwise)")
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD, help="file to rewrite (default %(default)s)")
    args = parser.parse_args(argv)

    if args.render:
        report = json.loads(args.render.read_text())
    else:
        report = run(args)
    section = render_section(report)
    if args.no_write:
        print(section)
    else:
        write_section(args.markdown, section)
        print(f"rewrote the run_all section of {args.markdown}")
        if args.markdown == BENCHMARKS_MD and README_MD.is_file() and README_BEGIN in README_MD.read_text():
            readme = README_MD.read_text(encoding="utf-8")
            common.write_text_atomic(README_MD, replace_section(readme, render_readme_table(report),
                                                                README_BEGIN, README_END))
            print(f"rewrote the targets table of {README_MD}")
    failed = [e["name"] for e in report.get("benches", []) if e.get("status") != "ok"]
    return 1 if failed else 0


def run(args):
    names = args.only or list(BENCHES)
    timeout = args.timeout or (600 if args.quick else 7200)
    out = OUT / "run_all"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    previous = {}
    if args.only and RAW_JSON.is_file():
        try:
            earlier = json.loads(RAW_JSON.read_text())
            # Each kept entry remembers the run it came from (older files did not record it per entry).
            previous = {e["name"]: {"run": earlier.get("date"), "git_commit": earlier.get("git_commit"), **e}
                        for e in earlier.get("benches", [])}
        except (ValueError, KeyError, TypeError, AttributeError):
            previous = {}
    report = {"command": common.command_line(script=__file__), "date": common.now_utc(), "quick": args.quick,
              "git_commit": git_commit(), "machine": common.machine(), "versions": common.versions(),
              "load_before": common.load_average()}
    wall = time.perf_counter()
    entries = {}
    for name in names:
        print(f"\n===== {name} ({'quick' if args.quick else 'full'}) =====", flush=True)
        entry = run_bench(name, bench_argv(name, args.quick, out / f"{name}.json"), out / f"{name}.json",
                          out / f"{name}.stderr.txt", timeout=timeout, env=env)
        entry.update(quick=args.quick, run=report["date"], git_commit=report["git_commit"])
        entries[name] = entry
        print(f"===== {name}: {entry['status']} in {entry['seconds']:.0f} s =====", flush=True)
    report["load_after"] = common.load_average()
    report["seconds"] = round(time.perf_counter() - wall, 1)
    report["benches"] = [entries.get(n) or previous.get(n) for n in BENCHES if entries.get(n) or previous.get(n)]
    common.write_result(RAW_JSON, report)
    print(f"\nall benchmarks: {report['seconds']:.0f} s; raw results in {RAW_JSON}")
    return report


if __name__ == "__main__":
    sys.exit(main())
