import json
import logging

from efr.cli import EXIT_USER_ERROR, run
from efr.errors import EFRError
from efr.runinfo import library_versions, write_json


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
