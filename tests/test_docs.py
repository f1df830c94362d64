"""The docs: every option of every command documented; the README's two commands are what CI and make run."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from efr import commands
from efr.commands import pipeline

REPO = Path(__file__).resolve().parents[1]


def documented_options(verb):
    """The long options of a command that its doc must mention (the pipeline: its own ones)."""
    parser = commands.command_module(verb).build_parser()
    found = {s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    if verb == "pipeline":
        found -= {s for stage in pipeline.STAGES for a in pipeline.stage_actions(stage) for s in a.option_strings}
    return found


@pytest.mark.parametrize("verb", commands.VERBS)
def test_every_option_is_in_its_doc(verb):
    text = (REPO / "docs" / f"{verb}.md").read_text()
    missing = [o for o in sorted(documented_options(verb)) if not re.search(re.escape(o) + r"(?![\w-])", text)]
    assert not missing, f"docs/{verb}.md does not mention {missing}"
    assert documented_options(verb) or verb == "pipeline"


def test_readme_links_exist_and_it_stays_a_front_page():
    readme = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if not target.startswith("http"):
            assert (REPO / target).is_file(), target
    for verb in commands.VERBS:
        assert f"docs/{verb}.md" in readme or verb == "demo" and "docs/demo.md" in readme
    assert len(readme) < 12000


def test_the_two_commands_are_make_demo_and_make_test_and_ci_runs_the_second():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", readme, re.S).group(1)
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()] == ["make demo", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^exec make test$", ci, re.M)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_creates_the_venv_installs_the_project_and_runs(tmp_path):
    def dry(target):
        out = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(REPO), target, f"VENV={tmp_path / 'v'}"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return [line.rstrip() for line in out.stdout.splitlines()]

    lines = dry("test")
    venv = tmp_path / "v"
    assert lines[0] == f"test -x {venv}/bin/python || python3 -m venv {venv}"
    assert f'{venv}/bin/python -m pip install -q -e ".[test]"' in lines
    assert lines[-1].startswith(f"{venv}/bin/python -m pytest -q")  # the README's test command, in that venv
    assert dry("demo")[-1] == f"{venv}/bin/efr demo"
