import json
import logging

from efr.commands.cli import EXIT_USER_ERROR, run
from efr.io.errors import EFRError
from efr.io.runinfo import command_line, git_commit, library_versions, provenance_rows, write_json


def test_versions_name_the_libraries_a_run_depends_on():
    versions = library_versions()
    for name in ("python", "efr", "numpy", "scikit-learn"):
        assert versions.get(name), name


def test_write_json_is_readable_and_stringifies_paths(tmp_path):
    write_json(tmp_path / "a.json", {"path": tmp_path, "n": 3})
    assert json.loads((tmp_path / "a.json").read_text()) == {"path": str(tmp_path), "n": 3}


def test_user_error_becomes_exit_2_and_one_message(caplog):
    def main(argv):
        raise EFRError("Dataset/Train not found: run crop.py first")

    with caplog.at_level(logging.ERROR):
        assert run(main, []) == EXIT_USER_ERROR
    assert "error: Dataset/Train not found: run crop.py first" in caplog.text


def test_return_code_passes_through():
    assert run(lambda argv: None, []) == 0
    assert run(lambda argv: 3, []) == 3


def test_provenance_names_date_version_commit_libraries_and_command(tmp_path):
    rows = dict(provenance_rows(argv=["/usr/local/bin/efr", "train", "--dataset", "My Data"]))
    assert rows["EFR version"] and "numpy" in rows["libraries"] and rows["date (UTC)"].startswith("20")
    assert rows["command"] == "efr train --dataset 'My Data'"
    assert command_line(["/x/efr/__main__.py", "crop"]) == "python -m efr crop"
    assert git_commit(tmp_path) is None  # not a checkout
