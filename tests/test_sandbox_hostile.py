"""Hostile and pathological programs against the sandbox: one test each (course issue 12).

Every program runs once, all of them together in one batch (a few at a time), with a secret
in this process's environment and in a world-readable file under HOME, a world-writable trap
folder inside the repository, and hashes of watched paths taken before and after. Each test
then checks its own program's outcome: the verdict, that no process of its run is left
(listed from /proc by the run's uid or pids), that nothing watched changed, and that no
secret appears in anything it got back.

At the ``namespaces`` level (root, namespaces allowed: this machine, CI) every test runs;
where the host allows less, the tests of guarantees its level does not give are skipped with
the reason, and ``test_uid_level_*`` and ``test_basic_level_*`` check what the weaker levels
do guarantee (forced here with ``level=``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import socket
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers.sandbox import isolation, run_judged, run_python

REPO = Path(__file__).resolve().parents[1]
TOKEN = secrets.token_hex(8)
SECRET_ENV = f"sk-course-env-secret-{TOKEN}"
SECRET_FILE_TEXT = f"hf_course_file_secret_{TOKEN}"
SECRET_FILE = Path.home() / ".cache" / "llm-finetuning-course" / f"sandbox-test-secret-{TOKEN}"
TRAP = REPO / ".cache" / f"sandbox-trap-{TOKEN}"
HOST_TMP_MARK = f"/tmp/course-sandbox-escape-{TOKEN}"
STRONG = isolation()["level"] == "namespaces"
NEEDS_STRONG = pytest.mark.skipif(
    not STRONG, reason=f"needs the namespaces level; this host: {isolation()['reason']}"
)
NEEDS_CGROUP = pytest.mark.skipif(
    not (STRONG and isolation()["cgroup"]), reason="needs a writable memory cgroup"
)

# A DS-1000-shaped test: the answer must set result = a + 1. The verdict is the judge's.
CONTEXT = '''
import numpy as np


def generate_test_case(i):
    a = np.arange(5.0) * i
    return a, a + 1


def exec_test(result, ans):
    np.testing.assert_array_equal(result, ans)
    return 1


exec_context = r"""
import numpy as np
a = test_input
[insert]
"""


def test_execution(solution: str):
    code = exec_context.replace("[insert]", solution)
    for i in range(2):
        test_input, expected_result = generate_test_case(i + 1)
        test_env = {"test_input": test_input}
        exec(code, test_env)
        assert exec_test(test_env["result"], expected_result)
'''
WHO = "import os as _os\nprint('RUN', _os.getuid(), _os.getpid(), flush=True)\n"
LIMITS = {"timeout": 20.0, "memory_mb": 768, "max_output": 4000}

# name -> (mode, code, limits, verdicts allowed, strong level only)
CASES: dict[str, tuple[str, str, dict, set[str], bool]] = {}


def case(name, mode, code, verdicts, strong=True, **limits):
    CASES[name] = (mode, textwrap.dedent(code), {**LIMITS, **limits}, set(verdicts), strong)


# ---- false passes: a wrong answer (result = a) that tries to pass anyway
case(
    "forge_json_dumps",
    "judged",
    """
    import json
    json.dumps = lambda *a, **k: '{"verdict": "pass", "error": ""}'
    result = a
""",
    {"fail", "error"},
    strong=False,
)
case(
    "forge_report_on_stdout_then_exit",
    "judged",
    """
    import os, sys
    print('{"verdict": "pass", "error": ""}')
    sys.stdout.flush()
    os._exit(0)
""",
    {"error"},
    strong=False,
)
case(
    "read_expected_from_caller_frames",
    "judged",
    """
    import sys
    f, found = sys._getframe(), None
    while f is not None:
        for scope in (f.f_locals, f.f_globals):
            for key in ("expected_result", "ans", "expected"):
                if key in scope:
                    found = scope[key]
        f = f.f_back
    result = found if found is not None else a
""",
    {"fail"},
    strong=False,
)
case(
    "read_expected_from_main_and_gc",
    "judged",
    """
    import gc, sys
    result = a
    main = sys.modules["__main__"].__dict__
    for obj in gc.get_objects():
        if isinstance(obj, dict) and "expected_result" in obj:
            result = obj["expected_result"]
    for name in ("generate_test_case", "exec_test", "test_execution"):
        assert name not in main, name
""",
    {"fail"},
    strong=False,
)
case(
    "scan_memory_for_the_test_source",
    "judged",
    """
    import gc
    hits = [o for o in gc.get_objects() if isinstance(o, str) and "generate_test_case" in o]
    result = a if not hits else None
    print("HITS", len(hits))
""",
    {"fail"},
    strong=False,
)
case(
    "replace_the_assertion_helpers",
    "judged",
    """
    import numpy.testing, builtins
    numpy.testing.assert_array_equal = lambda *x, **k: None
    builtins.AssertionError = type("Nothing", (Exception,), {})
    result = a
""",
    {"fail"},
    strong=False,
)
case(
    "object_equal_to_everything",
    "judged",
    """
    class Everything:
        def __eq__(self, other):
            return True
        def __array__(self, *args, **kwargs):
            return a + 1
    result = Everything()
""",
    {"fail", "error"},
    strong=False,
)
case(
    "ndarray_subclass_equal_to_everything",
    "judged",
    """
    import numpy as np
    class Liar(np.ndarray):
        def __eq__(self, other):
            return np.ones(np.shape(other), dtype=bool)
    result = np.zeros(5).view(Liar)
""",
    {"fail", "error"},
    strong=False,
)
case(
    "write_a_forged_reply_on_every_fd",
    "judged",
    """
    import os, json, struct
    forged = json.dumps({"status": "ok", "env": {}}).encode()
    for fd in range(3, 64):
        for payload in (struct.pack("<Q", len(forged)) + forged, b'{"verdict": "pass"}'):
            try:
                os.write(fd, payload)
            except OSError:
                pass
    result = a
""",
    {"fail", "error"},
    strong=False,
)
case(
    "write_a_verdict_through_proc_fds",
    "judged",
    """
    import os
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for fd in range(0, 16):
                try:
                    with open(f"/proc/{pid}/fd/{fd}", "w") as h:
                        h.write('{"verdict": "pass", "error": ""}')
                except OSError:
                    pass
    result = a
""",
    {"fail"},
)
case(
    "pth_file_in_site_packages",
    "judged",
    """
    import site, sysconfig
    paths = set(site.getsitepackages()) | {sysconfig.get_paths()["purelib"]}
    for path in paths:
        for name in ("zz_course_evil.pth", "sitecustomize.py", "usercustomize.py"):
            try:
                with open(f"{path}/{name}", "w") as h:
                    h.write("import os; os.environ['EVIL'] = '1'\\n")
                print("WROTE", path, name)
            except OSError:
                pass
    result = a
""",
    {"fail"},
)
case(
    "rewrite_the_sandbox_itself",
    "judged",
    f"""
    for path in ("{REPO}/helpers/sandbox.py", "{REPO}/helpers/sandbox_runner.py"):
        try:
            with open(path, "a") as h:
                h.write("\\n# pwned\\n")
            print("WROTE", path)
        except OSError:
            pass
    result = a
""",
    {"fail"},
)
case(
    "kill_the_judge",
    "judged",
    """
    import os, signal
    for pid in (1, os.getppid()):
        for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
    result = a
""",
    {"fail"},
)
case(
    "ptrace_and_read_the_judges_memory",
    "judged",
    """
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    attached = libc.ptrace(16, os.getppid(), 0, 0)  # PTRACE_ATTACH
    readable = []
    for name in ("mem", "environ", "maps"):
        try:
            with open(f"/proc/{os.getppid()}/{name}", "rb") as h:
                h.read(64)
            readable.append(name)
        except OSError:
            pass
    print("ATTACH", attached, "READABLE", readable)
    result = a if attached != 0 and not readable else a + 1
""",
    {"fail"},
)
case(
    "become_root_again",
    "judged",
    """
    import os
    for call in (lambda: os.setuid(0), lambda: os.setresuid(0, 0, 0), lambda: os.setgid(0)):
        try:
            call()
            print("BECAME ROOT")
        except OSError:
            pass
    result = a if os.getuid() != 0 else a + 1
""",
    {"fail"},
)
case(
    "leave_the_cgroup",
    "judged",
    """
    import os, glob
    for procs in glob.glob("/sys/fs/cgroup/*/cgroup.procs") + ["/sys/fs/cgroup/cgroup.procs"]:
        try:
            with open(procs, "w") as h:
                h.write(str(os.getpid()))
            print("MOVED", procs)
        except OSError:
            pass
    result = a
""",
    {"fail"},
)
case(
    "user_namespace_to_remount_rw",
    "judged",
    f"""
    import subprocess
    done = subprocess.run(["unshare", "-r", "-m", "sh", "-c",
        "mount -o remount,rw / 2>/dev/null; touch {REPO}/helpers/pwned_by_userns"],
        capture_output=True)
    result = a
""",
    {"fail"},
)
case(
    "correct_answer_that_floods_stdout",
    "judged",
    """
    import sys
    chunk = "x" * 65536 + "\\n"
    for _ in range(800):  # about 50 MB
        sys.stdout.write(chunk)
    result = a + 1
""",
    {"pass"},
    strong=False,
)
case(
    "wrong_answer_that_floods_forged_verdicts",
    "judged",
    """
    import sys
    line = '{"verdict": "pass", "error": ""}\\n' * 2000
    for _ in range(200):
        sys.stdout.write(line)
        sys.stderr.write(line)
    result = a
""",
    {"fail"},
    strong=False,
)
case(
    "closes_its_stdout_and_stderr",
    "judged",
    """
    import os, sys
    for fd in (1, 2):
        try:
            os.close(fd)
        except OSError:  # closed already, at the first test case
            pass
    sys.stdout = sys.stderr = open(os.devnull, "w")  # (the next case prints its RUN line)
    result = a + 1
""",
    {"pass"},
    strong=False,
)
case(
    "raises_system_exit_zero",
    "judged",
    """
    raise SystemExit(0)
""",
    {"error"},
    strong=False,
)
case(
    "huge_nested_result",
    "judged",
    """
    result = []
    for _ in range(100000):
        result = [result]
""",
    {"fail", "error"},
    strong=False,
)
case(
    "large_result_comes_back_as_data",
    "judged",
    """
    import numpy as np
    result = np.zeros(16 * 2**20 // 8)
""",
    {"fail"},
    strong=False,
    memory_mb=512,
)
case(
    "claims_a_huge_reply",
    "judged",
    """
    import os, struct, time
    for fd in range(3, 64):
        try:
            os.write(fd, struct.pack("<Q", 2**40))
        except OSError:
            pass
    time.sleep(30)
    result = a + 1
""",
    {"error"},
    strong=False,
)

# ---- processes that would outlive the run
case(
    "setsid_child_survives",
    "program",
    """
    import os, time
    if os.fork() == 0:
        os.setsid()
        time.sleep(60)
        os._exit(0)
    print("CHILD STARTED")
""",
    {"pass"},
)
case(
    "double_fork_daemon",
    "program",
    """
    import os, time
    if os.fork() == 0:
        if os.fork() == 0:
            os.setsid()
            time.sleep(60)
        os._exit(0)
    os.wait()
""",
    {"pass"},
)
case(
    "popen_new_session",
    "program",
    """
    import subprocess
    subprocess.Popen(["sleep", "60"], start_new_session=True)
""",
    {"pass"},
)
case(
    "fork_bomb",
    "program",
    """
    import os
    children = 0
    try:
        while True:
            if os.fork() == 0:
                import time
                time.sleep(60)
                os._exit(0)
            children += 1
    except OSError:
        print("FORKS", children)
        raise
""",
    {"error", "timeout"},
    timeout=10.0,
)
case(
    "kill_everything_it_can",
    "program",
    """
    import os, signal
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
""",
    {"error", "pass"},
)

# ---- writes and deletes outside its folder
case(
    "write_everywhere",
    "program",
    f"""
    import os
    # Its own private tmpfs: writable, and gone with the run (checked from outside).
    for path in ("{HOST_TMP_MARK}", "/var/tmp/course-escape-{TOKEN}",
                 "/dev/shm/course-escape-{TOKEN}"):
        with open(path, "w") as h:
            h.write("private")
    # Everything else: refused.
    for path in (os.path.expanduser("~root/.bashrc"), "/root/.bashrc", "/etc/hosts",
                 "{TRAP}/new-file", "{TRAP}/trap.txt", "{REPO}/README.md", "/usr/local/bin/evil"):
        try:
            with open(path, "a") as h:
                h.write("pwned")
            print("WROTE", path)
        except OSError:
            pass
""",
    {"pass"},
)
case(
    "delete_outside",
    "program",
    f"""
    import os, shutil
    for path in ("{TRAP}/trap.txt", "{REPO}/README.md", "/root/.bashrc"):
        try:
            os.remove(path)
            print("DELETED", path)
        except OSError:
            pass
    shutil.rmtree("{TRAP}", ignore_errors=True)
""",
    {"pass"},
)
case(
    "world_writable_trap_in_the_repo",
    "program",
    f"""
    import os
    print("TRAP VISIBLE", os.path.isdir("{TRAP}"))
    try:
        os.mkdir("{TRAP}/made-inside")
        print("MADE")
    except OSError as exc:
        print("REFUSED", exc.errno)
""",
    {"pass"},
)

# ---- secrets
case(
    "read_parent_environ_through_proc",
    "program",
    f"""
    import os
    seen = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() or pid == "self":
            try:
                seen.append(open(f"/proc/{{pid}}/environ", "rb").read().decode(errors="replace"))
            except OSError:
                pass
    try:
        seen.append(open(f"/proc/{os.getpid()}/environ", "rb").read().decode(errors="replace"))
    except OSError:
        pass
    print("\\n".join(seen))
    print(dict(os.environ))
""",
    {"pass"},
)
case(
    "read_secret_files",
    "program",
    f"""
    import glob, os
    for path in ["{SECRET_FILE}", os.path.expanduser("~/.cache/huggingface/token"),
                 "/root/.cache/huggingface/token", *glob.glob("/root/.cache/*/*"),
                 *glob.glob("/home/*/.cache/huggingface/token")]:
        try:
            print(open(path).read()[:200])
        except OSError:
            pass
""",
    {"pass"},
)
case(
    "read_the_parents_memory",
    "program",
    f"""
    import os
    for pid in ("{os.getpid()}", str(os.getppid()), "1"):
        try:
            with open(f"/proc/{{pid}}/mem", "rb") as h:
                print("OPENED", pid)
        except OSError:
            pass
    try:
        print(open(f"/proc/{os.getpid()}/cmdline", "rb").read())
    except OSError:
        print("NO PARENT")
""",
    {"pass"},
)
case(
    "sees_no_other_process",
    "program",
    """
    import os
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    print("PIDS", pids)
    assert pids == [os.getpid()], pids  # not the judge, not the host, not a sibling run
""",
    {"pass"},
)

# ---- network
case(
    "network_is_unreachable",
    "program",
    """
    import socket
    reached = []
    for host, port in (("1.1.1.1", 53), ("127.0.0.1", 22), ("8.8.8.8", 443)):
        try:
            socket.create_connection((host, port), timeout=1).close()
            reached.append(host)
        except OSError:
            pass
    assert not reached, reached
""",
    {"pass"},
)
case(
    "host_loopback_listener_unreachable",
    "program",
    "pass  # its port is known at run time: see batch()",
    {"pass"},
)
case(
    "abstract_unix_socket_unreachable",
    "program",
    f"""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\\0course-sandbox-{TOKEN}")
        print("CONNECTED")
    except OSError:
        print("REFUSED")
""",
    {"pass"},
)

# ---- memory, disk and other limits of the whole run
case(
    "four_forks_share_one_memory_limit",
    "program",
    """
    import os
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            block = bytearray(200 * 2**20)
            for i in range(0, len(block), 4096):
                block[i] = 1
            import time
            time.sleep(5)
            os._exit(0)
        pids.append(pid)
    statuses = [os.waitpid(p, 0)[1] for p in pids]
    print("STATUSES", statuses)
    assert all(s == 0 for s in statuses), "a child was killed"
""",
    {"fail", "error"},
    memory_mb=512,
)
case(
    "memfd_beyond_the_memory_limit",
    "program",
    """
    import os
    fd = os.memfd_create("big")
    chunk = b"x" * 2**20
    for _ in range(1024):
        os.write(fd, chunk)
""",
    {"error"},
    memory_mb=512,
)
case(
    "dev_shm_is_bounded",
    "program",
    """
    import os
    written = 0
    try:
        with open("/dev/shm/fill", "wb") as h:
            for _ in range(512):
                h.write(b"x" * 2**20)
                written += 1
    except OSError as exc:
        print("STOPPED", written, exc.errno)
        raise
""",
    {"error"},
    disk_mb=32,
    memory_mb=1024,
)
case(
    "disk_is_bounded_across_files",
    "program",
    """
    import os
    written = 0
    try:
        for i in range(200):
            with open(f"part{i}", "wb") as h:
                h.write(b"x" * 4 * 2**20)
            written += 4
    except OSError as exc:
        print("STOPPED AT MB", written)
        raise
""",
    {"error"},
    disk_mb=32,
    memory_mb=1024,
)
case(
    "inodes_are_bounded",
    "program",
    """
    import os
    try:
        for i in range(100000):
            open(f"f{i}", "w").close()
    except OSError as exc:
        print("STOPPED AT", i)
        raise
""",
    {"error"},
)
case(
    "cpu_limit_with_sigxcpu_ignored",
    "program",
    """
    import signal
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
    while True:
        pass
""",
    {"timeout"},
    strong=False,
    cpu_seconds=1,
    timeout=30.0,
)
case(
    "sleeps_through_sigterm",
    "program",
    """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(120)
""",
    {"timeout"},
    strong=False,
    timeout=2.0,
)
case(
    "deep_directory_tree",
    "program",
    """
    import os
    for i in range(3000):
        os.mkdir("d")
        os.chdir("d")
""",
    {"pass", "error"},
    strong=False,
)
case(
    "unremovable_files_in_its_folder",
    "program",
    """
    import os
    os.makedirs("locked/inner")
    open("locked/inner/f", "w").write("x")
    os.chmod("locked/inner", 0)
    os.chmod("locked", 0)
""",
    {"pass"},
    strong=False,
)


def _digest(path: Path) -> str:
    if not path.exists():
        return "absent"
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return hashlib.sha256(
        "\n".join(sorted(str(p.relative_to(path)) for p in path.rglob("*"))).encode()
    ).hexdigest()


def _watched() -> dict[str, str]:
    site = Path(
        sys.prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages"
    )
    paths = [
        *sorted((REPO / "helpers").glob("*.py")),
        REPO / "README.md",
        TRAP,
        TRAP / "trap.txt",
        Path(HOST_TMP_MARK),
        Path(f"/var/tmp/course-escape-{TOKEN}"),
        Path(f"/dev/shm/course-escape-{TOKEN}"),
        Path.home() / ".bashrc",
        SECRET_FILE,
    ]
    out = {str(p): _digest(p) for p in paths}
    out["site-packages"] = hashlib.sha256(
        "\n".join(sorted(p.name for p in site.iterdir())).encode()
    ).hexdigest()
    return out


def _processes_of(uids: set[int]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        if int(uid_line.split()[1]) in uids and "State:\tZ" not in status:
            found.append(int(entry.name))
    return found


def _run_case(name: str) -> dict:
    mode, code, limits, _, _ = CASES[name]
    if mode == "judged":
        return run_judged(CONTEXT, WHO + code, preload=["numpy"], **limits)
    return run_python(WHO + code, **limits)


@pytest.fixture(scope="module")
def batch():
    """Every case run once, a few at a time, with secrets planted and paths watched."""
    SECRET_FILE.parent.mkdir(parents=True, exist_ok=True)
    SECRET_FILE.write_text(SECRET_FILE_TEXT)
    os.chmod(SECRET_FILE, 0o644)
    TRAP.mkdir(parents=True)
    os.chmod(TRAP, 0o777)
    (TRAP / "trap.txt").write_text("keep me")
    os.chmod(TRAP / "trap.txt", 0o666)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(f"\0course-sandbox-{TOKEN}")
    abstract.listen()
    CASES["host_loopback_listener_unreachable"] = (
        "program",
        textwrap.dedent(f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {listener.getsockname()[1]}), timeout=1)
                print("CONNECTED")
            except OSError:
                print("REFUSED")
        """),
        LIMITS,
        {"pass"},
        True,
    )
    os.environ["COURSE_SANDBOX_SECRET"] = SECRET_ENV
    try:
        before = _watched()
        names = [n for n, c in CASES.items() if STRONG or not c[4]]
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = dict(zip(names, pool.map(_run_case, names), strict=True))
        time.sleep(0.2)
        after = _watched()
    finally:
        del os.environ["COURSE_SANDBOX_SECRET"]
        listener.close()
        abstract.close()
        SECRET_FILE.unlink()
        for path in sorted(TRAP.rglob("*"), reverse=True):
            path.unlink() if not path.is_dir() else path.rmdir()
        TRAP.rmdir()
        for leftover in (Path(HOST_TMP_MARK),):
            if leftover.exists():
                leftover.unlink()
    changed = sorted(k for k in before if before[k] != after[k])
    return {"results": results, "changed": changed}


def _run_identity(result: dict) -> tuple[int, int] | None:
    for line in result["stdout"].splitlines():
        if line.startswith("RUN "):
            _, uid, pid = line.split()
            return int(uid), int(pid)
    return None


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_program(batch, name):
    mode, _, _, verdicts, strong = CASES[name]
    if strong and not STRONG:
        pytest.skip(f"needs the namespaces level; this host: {isolation()['reason']}")
    if (
        name in ("four_forks_share_one_memory_limit", "memfd_beyond_the_memory_limit")
        and not (isolation()["cgroup"])
    ):
        pytest.skip("needs a writable memory cgroup (memory per process only here)")
    result = batch["results"][name]
    assert result["verdict"] in verdicts, (name, result)
    assert "sandbox failure" not in result["detail"], result
    assert result["checked_in"] == ("judge" if mode == "judged" else "answer")
    # No secret in anything that came back.
    text = result["stdout"] + result["stderr"] + result["detail"]
    assert SECRET_ENV not in text and SECRET_FILE_TEXT not in text
    # Nothing watched changed (sources, site-packages, the trap, HOME, host /tmp).
    assert batch["changed"] == []
    for marker in ("WROTE", "DELETED", "MADE\n", "CONNECTED", "BECAME ROOT", "MOVED", "OPENED"):
        assert marker not in result["stdout"], (name, result["stdout"][:500])
    # Nothing of the run is left.
    identity = _run_identity(result)
    if STRONG and identity is not None:
        assert _processes_of({identity[0]}) == [], name


# ------------------------------------------------------------------ specific checks


@NEEDS_STRONG
def test_each_run_has_its_own_uid_and_never_root(batch):
    uids = [_run_identity(r) for r in batch["results"].values()]
    uids = [u[0] for u in uids if u is not None]
    assert len(uids) >= 30 and 0 not in uids
    assert len(set(uids)) == len(uids)


@NEEDS_STRONG
def test_the_flood_keeps_its_verdict_and_is_cut(batch):
    result = batch["results"]["correct_answer_that_floods_stdout"]
    assert result["verdict"] == "pass"
    assert len(result["stdout"]) < 5000 and "cut:" in result["stdout"]


@NEEDS_STRONG
def test_the_answer_never_held_the_test(batch):
    assert "HITS 0" in batch["results"]["scan_memory_for_the_test_source"]["stdout"]


@NEEDS_STRONG
def test_the_trap_was_not_even_writable(batch):
    out = batch["results"]["world_writable_trap_in_the_repo"]["stdout"]
    assert "REFUSED 30" in out  # EROFS: read-only, though its permissions say 0777


@NEEDS_STRONG
def test_the_cpu_limit_is_labelled_timeout_even_when_sigxcpu_is_ignored(batch):
    assert "CPU time limit" in batch["results"]["cpu_limit_with_sigxcpu_ignored"]["detail"]


@NEEDS_CGROUP
def test_memory_is_limited_for_the_whole_run(batch):
    result = batch["results"]["four_forks_share_one_memory_limit"]
    assert result["verdict"] in ("fail", "error")


def test_a_sibling_run_cannot_be_killed():
    killer = "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n"
    sleeper = "import time\ntime.sleep(3)\nprint('survived')"
    with ThreadPoolExecutor(max_workers=2) as pool:
        slow = pool.submit(run_python, sleeper, timeout=20, memory_mb=512)
        time.sleep(0.5)
        pool.submit(run_python, killer, timeout=20, memory_mb=512).result()
        result = slow.result()
    if not STRONG:
        pytest.skip("basic level: runs share your uid, so kill(-1) reaches siblings")
    assert result["verdict"] == "pass" and result["stdout"] == "survived"


# ------------------------------------------------------------------ the weaker level


def test_basic_level_keeps_its_own_guarantees(monkeypatch):
    monkeypatch.setenv("COURSE_SANDBOX_SECRET", SECRET_ENV)
    forged = run_judged(
        CONTEXT,
        "import json\njson.dumps = lambda *a, **k: 'x'\nresult = a",
        preload=["numpy"],
        level="basic",
        **LIMITS,
    )
    assert forged["verdict"] in ("fail", "error") and forged["isolation"] == "basic"
    right = run_judged(
        CONTEXT, "print('x' * 100000)\nresult = a + 1", preload=["numpy"], level="basic", **LIMITS
    )
    assert right["verdict"] == "pass" and "cut:" in right["stdout"]
    env = run_python("import os\nprint(dict(os.environ))", level="basic", **LIMITS)
    assert env["verdict"] == "pass" and SECRET_ENV not in env["stdout"]
    child = run_python(
        "import subprocess\nprint('CHILD', subprocess.Popen(['sleep', '30']).pid)\n",
        level="basic",
        **LIMITS,
    )
    assert child["verdict"] == "pass"
    pid = int(child["stdout"].split()[-1])
    time.sleep(0.2)  # a killed process may still be a zombie for a moment
    try:  # killed with its process group (or the pid is another process's by now)
        alive = "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
        alive = alive and Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x0030\x00"
    except OSError:
        alive = False
    assert not alive
    deep = run_python(  # deeper than Python's recursion limit: shutil.rmtree cannot
        "import os\nprint(os.getcwd())\nfor i in range(1050):\n    os.mkdir('d')\n"
        "    os.chdir('d')\n",
        level="basic",
        **LIMITS,
    )
    assert deep["verdict"] == "pass" and "sandbox failure" not in deep["detail"]
    assert not Path(deep["stdout"].splitlines()[0]).exists()  # removed all the same
    slow = run_python(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)",
        level="basic",
        timeout=2.0,
        memory_mb=512,
    )
    assert slow["verdict"] == "timeout"
    assert os.getpid() not in (forged["pid"], right["pid"])


def test_isolation_level_names_the_level_in_effect_and_no_more():
    from helpers.sandbox import isolation_level

    line = isolation_level()
    assert line.startswith(isolation()["level"] + ":")
    if not STRONG:
        assert "namespaces" not in line.split(":")[0] and "your own user" in line
    if not isolation()["cgroup"]:
        assert "per process only" in line
    assert signal.SIGKILL  # (the module imports what it needs)


def _running_of(uid: int) -> list[int]:
    time.sleep(0.2)  # a killed process may still be a zombie for a moment
    return _processes_of({uid})


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid level needs root")
def test_uid_level_keeps_its_own_guarantees(monkeypatch):
    # The level a root container without namespaces gets. (Programs use only modules the
    # judge has loaded: this machine's Python lives in /root, which other uids cannot read.)
    monkeypatch.setenv("COURSE_SANDBOX_SECRET", SECRET_ENV)
    code = WHO + textwrap.dedent(f"""
        import os, signal, time
        if os.fork() == 0:
            os.setsid()
            time.sleep(60)
            os._exit(0)
        for pid in (1, os.getppid(), {os.getpid()}):
            try:
                os.kill(pid, signal.SIGKILL)
                print("KILLED", pid)
            except OSError:
                pass
            try:
                print(open(f"/proc/{{pid}}/environ").read())
            except OSError:
                pass
        for path in ("/root/.bashrc", "{REPO}/README.md", "{SECRET_FILE}"):
            try:
                open(path, "a").close()
                print("WROTE", path)
            except OSError:
                pass
    """)
    result = run_python(code, level="uid", **LIMITS)
    assert result["verdict"] == "pass" and result["isolation"] == "uid", result
    uid, _ = _run_identity(result)
    assert uid != 0
    assert "KILLED" not in result["stdout"] and "WROTE" not in result["stdout"]
    assert SECRET_ENV not in result["stdout"]
    assert _running_of(uid) == []  # the detached child too
    forged = run_judged(
        CONTEXT,
        WHO + "import json\njson.dumps = lambda *a, **k: 'x'\nresult = a",
        preload=["numpy"],
        level="uid",
        **LIMITS,
    )
    assert forged["verdict"] in ("fail", "error") and forged["checked_in"] == "judge"
    assert _running_of(_run_identity(forged)[0]) == []
