import pytest

from efr.errors import EFRError
from efr.manifest import FIELDS, check_subject_disjoint, manifest_path, read_manifest, write_manifest


def _row(subject, split, output="x.png", **extra):
    return {"subject": subject, "split": split, "output": output, "status": "ok", "kind": "original", **extra}


def test_round_trip_keeps_every_field_and_blanks_missing_ones(tmp_path):
    rows = [_row("01", "Train", emotion="Happy", x=10, y=20, w=30, h=30), _row("02", "Test", reason="a, b \"c\"")]
    write_manifest(tmp_path, rows)
    back = read_manifest(tmp_path)
    assert len(back) == 2
    assert set(back[0]) == set(FIELDS)
    assert back[0]["emotion"] == "Happy" and back[0]["x"] == "10" and back[0]["gaze"] == ""
    assert back[1]["reason"] == 'a, b "c"'


def test_missing_manifest_reads_as_empty(tmp_path):
    assert read_manifest(tmp_path) == []


def test_foreign_csv_is_refused_with_its_path(tmp_path):
    manifest_path(tmp_path).write_text("a,b\n1,2\n")
    with pytest.raises(EFRError, match="not an EFR manifest"):
        read_manifest(tmp_path)


def test_write_leaves_no_temporary_file(tmp_path):
    write_manifest(tmp_path, [_row("01", "Train")])
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]


def test_unknown_column_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError):
        write_manifest(tmp_path, [_row("01", "Train", not_a_field=1)])


def test_disjoint_splits_pass_and_a_shared_subject_is_named():
    check_subject_disjoint([_row("01", "Train"), _row("02", "Valid"), _row("03", "Test")])
    with pytest.raises(EFRError, match="07.*Train.*Test|07.*Test.*Train"):
        check_subject_disjoint([_row("07", "Train"), _row("07", "Test"), _row("02", "Valid")])


def test_rows_without_output_do_not_count_as_leaks():
    # A photo of subject 01 that had no face has no output: it cannot leak.
    check_subject_disjoint([_row("01", "Train"), _row("01", "Test", output="")])
