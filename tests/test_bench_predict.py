"""bench/bench_predict.py's timing helpers: interleaved rounds, and fer kept in a process of its own."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import bench_predict  # noqa: E402


def test_interleaved_rounds_take_turns_keep_the_fastest_and_drop_a_failing_way():
    calls, own = [], iter([0.5, 0.2, 0.4, 0.3])

    def failing():
        calls.append("failing")
        raise RuntimeError("fer exited")

    ways = {"plain": lambda: calls.append("plain"), "own": lambda: calls.append("own") or next(own),
            "failing": failing}
    best, errors = bench_predict.time_interleaved(ways, rounds=3, optional=("failing",))
    # warm-up, then 3 rounds in turn; the failing way is tried once (its warm-up) and dropped
    assert calls == ["plain", "own", "failing"] + ["plain", "own"] * 3
    assert best["own"] == 0.2  # a way's own timing (fer times itself) is used as given; the warm-up's 0.5 is not
    assert 0 <= best["plain"] < 0.1 and "failing" not in best
    assert errors == {"failing": "fer exited"}
    with pytest.raises(RuntimeError, match="fer exited"):  # EFR's own ways are not optional
        bench_predict.time_interleaved({"failing": failing}, rounds=1)
    calls.clear()
    bench_predict.time_interleaved({"plain": lambda: calls.append("plain"), "warm": lambda: calls.append("warm")},
                                   rounds=2, warmed=("warm",))
    assert calls == ["plain", "plain", "warm", "plain", "warm"]  # no warm-up call for a way that warmed itself


def test_fer_server_says_why_it_could_not_start(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named fer' >&2\nexit 1\n")
    fake.chmod(0o755)
    server = bench_predict.FerServer(fake)
    try:
        server.ready()
    except RuntimeError as err:
        assert str(err) == "ModuleNotFoundError: No module named fer"
    else:
        raise AssertionError("FerServer started without fer")
    finally:
        server.close()


def test_fer_server_times_passes_on_request_in_one_process(tmp_path):
    """The protocol, with a stand-in for fer's environment: one process, one reply per request."""
    fake = tmp_path / "python"
    fake.write_text(f"""#!/bin/sh
exec {sys.executable} -c '
import json, sys
print("TensorFlow chatter on stdout")
assert json.loads(sys.argv[-1]) == [["a.png", True]]  # the warm-up pairs
print("FER_REPLY ready", flush=True)
for n, line in enumerate(sys.stdin):
    job = json.loads(line)
    print("FER_REPLY " + json.dumps({{"seconds": 0.25 * (n + 1), "faces": len(job["paths"]), "version": "x"}}), flush=True)
' "$@"
""")
    fake.chmod(0o755)
    server = bench_predict.FerServer(fake, warm_up=[("a.png", True)])
    try:
        server.ready()
        assert server.time_pass(["a.png", "b.png"], True) == 0.25
        assert server.time_pass(["a.png"], False) == 0.5
        # only what the pass found: merged into an entry, it must not replace the fastest round's seconds
        assert server.last == {"faces": 1, "version": "x"}
    finally:
        server.close()
    assert server.process.returncode == 0
