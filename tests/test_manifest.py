import pytest

from efr.io.errors import EFRError
from efr.io.manifest import FIELDS, check_subject_disjoint, manifest_path, read_manifest, write_manifest


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


def test_rows_may_stream_from_a_generator_and_a_failure_keeps_the_old_manifest(tmp_path):
    write_manifest(tmp_path, (_row(f"{i:02d}", "Train", output=f"{i}.png") for i in range(3)))
    before = manifest_path(tmp_path).read_bytes()
    assert [r["subject"] for r in read_manifest(tmp_path)] == ["00", "01", "02"]

    def rows_then_a_bad_one():
        yield _row("09", "Train")
        yield _row("10", "Train", not_a_field=1)

    with pytest.raises(ValueError):
        write_manifest(tmp_path, rows_then_a_bad_one())
    assert manifest_path(tmp_path).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]
