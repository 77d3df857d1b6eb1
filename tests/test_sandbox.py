"""The sandbox that runs model-written code: verdicts, limits, isolation, robustness.

Hostile programs are in tests/test_sandbox_hostile.py. No test here times anything: a limit
is shown to have worked by the verdict, its reason, and the run's processes being gone.
"""

import json
import os
from pathlib import Path

import pytest

import helpers.sandbox as sandbox
from helpers.sandbox import (
    LEVELS,
    VERDICTS,
    isolation,
    isolation_level,
    run_judged,
    run_many,
    run_python,
    sandbox_env,
)

# Small programs only (no heavy imports), so that the whole file runs in a few seconds.
FAST = {"timeout": 10.0, "memory_mb": 512}
WHO = "import os as _os\nprint('RUN', _os.getuid(), _os.getpid(), _os.getpgid(0), flush=True)\n"


def gone(result):
    """No process of the run is left: by its own uid (namespaces) or its process group."""
    line = next(x for x in result["stdout"].splitlines() if x.startswith("RUN "))
    uid, pid, group = (int(v) for v in line.split()[1:])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if "State:\tZ" in status:
            continue
        if result["isolation"] == "namespaces":
            uid_line = next(x for x in status.splitlines() if x.startswith("Uid:"))
            if int(uid_line.split()[1]) == uid:
                return False
        elif int(stat.rsplit(")", 1)[1].split()[2]) == group:
            return False
    return True


def test_a_program_that_runs_to_its_end_passes_and_its_output_is_captured():
    result = run_python("print('hello'); import sys; print('oops', file=sys.stderr)", **FAST)
    assert result["verdict"] == "pass", result
    assert result["stdout"] == "hello"
    assert result["stderr"].strip() == "oops"
    assert result["returncode"] == 0
    assert result["pid"] != os.getpid()
    assert set(VERDICTS) == {"pass", "fail", "error", "timeout"}


@pytest.mark.parametrize(
    ("code", "verdict", "words"),
    [
        ("assert 1 + 1 == 3, 'arithmetic'", "fail", "AssertionError: arithmetic"),
        ("def f():\n    return undefined_name\nf()", "error", "NameError"),
        ("def broken(:\n    pass", "error", "SyntaxError"),
        ("raise ValueError('bad value')", "error", "ValueError: bad value"),
        ("import sys\nsys.exit(0)", "error", "SystemExit"),
    ],
)
def test_a_test_that_says_no_fails_and_anything_else_that_goes_wrong_is_an_error(
    code, verdict, words
):
    result = run_python(code, **FAST)
    assert result["verdict"] == verdict, result
    assert words in result["detail"]
    # The traceback points into the program, with its source lines, not into the launcher.
    assert 'File "program.py"' in result["stderr"]
    assert "<string>" not in result["stderr"]


def test_leaving_early_with_status_zero_is_not_a_pass():
    result = run_python("import os\nos._exit(0)\nraise SystemExit('never reached')", **FAST)
    assert result["verdict"] == "error"
    assert "ended before the program did (exit status 0)" in result["detail"]
    assert result["returncode"] != 0


def test_an_infinite_loop_is_stopped_by_the_wall_clock_timeout():
    result = run_python(WHO + "while True:\n    pass", timeout=1.5, cpu_seconds=60, memory_mb=512)
    assert result["verdict"] == "timeout"
    assert "wall-clock" in result["detail"]
    assert gone(result)


def test_a_sleeping_program_is_stopped_by_the_wall_clock_timeout_too():
    result = run_python(WHO + "import time\ntime.sleep(60)", timeout=1.0, memory_mb=512)
    assert result["verdict"] == "timeout"
    assert "wall-clock" in result["detail"]
    assert gone(result)


def test_a_busy_loop_is_stopped_by_the_cpu_limit():
    result = run_python(WHO + "while True:\n    pass", timeout=60, cpu_seconds=1, memory_mb=512)
    assert result["verdict"] == "timeout"
    assert "CPU time limit" in result["detail"]  # not the 60 s clock
    assert gone(result)


def test_a_memory_bomb_is_stopped_by_the_memory_limit():
    bomb = "chunks = []\nwhile True:\n    chunks.append(bytearray(10 * 2**20))"
    result = run_python(bomb, timeout=60, memory_mb=256)
    assert result["verdict"] == "error", result
    # Stopped by the limit (its reason), not by the clock.
    assert "MemoryError" in result["detail"] or "memory limit" in result["detail"]
    assert "256 MB" in result["detail"]


def test_one_huge_allocation_is_refused_at_once():
    result = run_python("x = bytearray(8 * 2**30)", timeout=20, memory_mb=512)
    assert result["verdict"] == "error"
    assert "MemoryError" in result["detail"]


def test_files_are_written_only_inside_a_temporary_folder_that_is_removed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = """
import json, os, tempfile
open("relative.txt", "w").write("x")
os.makedirs("sub/dir")
open(os.path.expanduser("~/in_home.txt"), "w").write("x")
handle, temp_name = tempfile.mkstemp()
os.close(handle)
print(json.dumps({"cwd": os.getcwd(), "home": os.path.expanduser("~"), "temp": temp_name,
                  "files": sorted(os.listdir("."))}))
"""
    result = run_python(code, **FAST)
    assert result["verdict"] == "pass", result
    seen = json.loads(result["stdout"])
    workdir = Path(seen["cwd"])
    assert workdir != tmp_path and tmp_path not in workdir.parents
    assert seen["home"] == str(workdir)
    assert Path(seen["temp"]).parent == workdir
    assert "relative.txt" in seen["files"] and "in_home.txt" in seen["files"]
    assert list(tmp_path.iterdir()) == []  # nothing landed where the caller runs
    # and the sandbox folder is gone (namespaces: it was a private tmpfs all along)
    assert not (workdir / "relative.txt").exists() and not Path(seen["temp"]).exists()


def test_the_program_cannot_read_hf_token_or_any_other_variable_of_the_parent(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_thisIsASecretThatMustNotLeak")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-another-secret")
    monkeypatch.setenv("COURSE_TEST_MARKER", "parent-only")
    code = (
        "import json, os\n"
        "print(json.dumps(dict(os.environ)))\n"
        "assert 'HF_TOKEN' not in os.environ\n"
    )
    result = run_python(code, **FAST)
    assert result["verdict"] == "pass", result
    env = json.loads(result["stdout"])
    assert "hf_thisIsASecretThatMustNotLeak" not in result["stdout"]
    assert not {"HF_TOKEN", "OPENAI_API_KEY", "COURSE_TEST_MARKER"} & set(env)
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_sandbox_env_is_a_fixed_minimal_list(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    env = sandbox_env("/tmp/somewhere")
    assert "HF_TOKEN" not in env
    assert env["HOME"] == env["TMPDIR"] == "/tmp/somewhere"
    assert set(env) == set(sandbox_env("/elsewhere"))  # nothing depends on the parent


def test_long_output_is_truncated():
    result = run_python("print('x' * 100_000)\nprint('y' * 100_000)", max_output=500, **FAST)
    assert result["verdict"] == "pass"
    assert len(result["stdout"]) < 600
    assert "cut" in result["stdout"]


def test_processes_started_by_the_program_are_killed_with_it():
    code = WHO + "import subprocess\nchild = subprocess.Popen(['sleep', '60'])\n"
    result = run_python(code, **FAST)
    assert result["verdict"] == "pass", result
    assert gone(result)


def test_a_crash_in_one_program_does_not_stop_the_others():
    programs = [
        "print('first')",
        "import os\nos._exit(3)",
        "import ctypes\nctypes.string_at(0)",  # segmentation fault
        "while True:\n    pass",
        "print('last')",
    ]
    seen = []
    results = run_many(
        programs,
        workers=2,
        timeout=1.5,
        memory_mb=512,
        on_result=lambda index, result: seen.append(index),
    )
    assert [r["verdict"] for r in results] == ["pass", "error", "error", "timeout", "pass"]
    assert "SIGSEGV" in results[2]["detail"]
    assert results[0]["stdout"] == "first" and results[4]["stdout"] == "last"
    assert sorted(seen) == list(range(len(programs)))


def test_a_failure_of_the_harness_itself_becomes_an_error_for_that_program(monkeypatch):
    real = sandbox.run_python

    def flaky(code, **limits):
        if "explode" in code:
            raise OSError("cannot start a process")
        return real(code, **limits)

    monkeypatch.setattr(sandbox, "run_python", flaky)
    results = run_many(["print(1)", "explode = 1", "print(2)"], **FAST)
    assert [r["verdict"] for r in results] == ["pass", "error", "pass"]
    assert "cannot start a process" in results[1]["detail"]


# ------------------------------------------------------------------ judged tests


CONTEXT = """
def test_execution(solution):
    for a in (1, 5):
        env = {"a": a}
        exec(solution, env)
        assert env["result"] == a + 1, "wrong"
"""


@pytest.mark.parametrize(
    ("answer", "verdict", "words"),
    [
        ("result = a + 1", "pass", ""),
        ("result = a", "fail", "AssertionError: wrong"),
        ("result = undefined_name", "error", "the answer raised NameError"),
        ("class X:\n    pass\nresult = X()", "fail", "AssertionError"),
        ("import os\nos._exit(0)", "error", "ended before"),
    ],
)
def test_a_judged_test_compares_outside_the_answers_process(answer, verdict, words):
    result = run_judged(CONTEXT, answer, **FAST)
    assert result["verdict"] == verdict, result
    assert words in result["detail"]
    assert result["checked_in"] == "judge"


def test_a_value_that_is_not_plain_data_comes_back_as_a_stand_in_that_equals_nothing():
    context = CONTEXT.replace(
        'assert env["result"] == a + 1, "wrong"', "assert repr(env['result'])"
    )
    context += (
        "\n    r = env['result']\n    assert not r == r and not r != 1, 'compared'\n"
        "    try:\n        bool(r)\n        raise ValueError('has a truth value')\n"
        "    except TypeError:\n        pass\n"
    )
    result = run_judged(context, "result = lambda: 1", **FAST)
    assert result["verdict"] == "pass", result  # never equal, not even to itself


def test_isolation_level_says_what_is_in_effect():
    info = isolation()
    line = isolation_level()
    assert info["level"] in LEVELS  # namespaces here; uid or basic where the host forbids more
    assert line.startswith(info["level"] + ":")
    results = run_many(["print(1)"], **FAST)
    assert results[0]["isolation"] == info["level"]
