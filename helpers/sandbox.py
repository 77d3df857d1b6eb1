"""Run untrusted Python (a model's code) where it cannot change its verdict or reach outside.

Every run is two processes, started by :mod:`helpers.sandbox_runner` under the interpreter
you choose (``python=``; the course's own by default, DS-1000's for
:func:`helpers.ds1000.evaluate`):

- the **judge**, trusted: it sets the run up, and for a test (:func:`run_judged`) runs the
  test context itself. The context's ``exec(code, env)`` runs ``code`` in the answer's
  process and gets the variables back as plain data (JSON with typed arrays; nothing is ever
  unpickled on the trusted side), so the expected values, the comparison and the verdict stay
  where the answer cannot reach. The verdict comes back on a pipe of its own, not on stdout,
  so no amount of output loses it.
- the **answer**, forked from the judge *before* the judge reads the work, then limited: its
  own unprivileged uid, CPU time, address space, file size, number of processes.

How well the host lets us isolate them is detected once (:func:`isolation`) and printed by
:func:`isolation_level`, strongest first:

``namespaces`` (root, Linux, ``unshare`` allowed; this course's CI):
    the judge is PID 1 of new PID, mount, network, IPC and UTS namespaces. When it exits the
    kernel kills everything the answer started, in any session or group. The answer runs as a
    uid of its own (no other process has it), so it cannot signal, trace or read the judge
    (which is also made non-dumpable) and its process limit counts only its own processes.
    It sees ``/tmp``, ``/var/tmp`` and ``/dev/shm`` as one size-limited tmpfs (its only
    writable place, gone with the run), home folders (``/root``, ``/home``: tokens, caches)
    replaced by empty ones except the interpreter's own folders, every other mount read-only,
    a ``/proc`` with only its namespace, and no network (a fresh network namespace has only a
    loopback, down). Where a memory cgroup is writable, memory is limited for the run as a
    whole (every process, tmpfs and memfd included); otherwise per process.
``uid`` (root, but namespaces are not allowed: some containers):
    the answer still runs as a uid of its own, in a memory cgroup where one is writable, and
    every process of that uid is killed at the end (``kill(-1)`` as that uid), so nothing it
    starts outlives the run, it cannot signal or read the judge or any other process, cannot
    read private folders (``/root``) and can write only where everyone may (``/tmp``...).
    It shares the host's network and sees its processes. (Needs the interpreter to be
    readable by any user; the trial run checks.)
``basic`` (anything else: not root, no namespaces):
    the same two processes, a fresh temporary folder as working directory, the limits
    (``RLIMIT_*``, per process), a process group killed at the end and an environment without
    secrets. The answer runs as *you*: it can write where you can, read your files, use the
    network, and a process it detaches (``setsid``) can outlive the run. Use it only for code
    you would run yourself.

Verdicts: ``pass``, ``fail`` (the test's assertion said no), ``error`` (an exception, a crash,
a limit other than time), ``timeout`` (wall-clock or CPU time). A failure of the sandbox
itself is an ``error`` whose detail starts with ``sandbox failure``; it never raises.

References: benchmark harnesses run tests in a child process with limits and a
"reliability guard" (openai/human-eval ``human_eval/execution.py``, which DS-1000's
``execution.py`` in xlang-ai/DS-1000 copies); both say they are not a security sandbox. The
design here follows the issue's threat model (course issue 12) instead.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

VERDICTS = ("pass", "fail", "error", "timeout")
RUNNER = Path(__file__).with_name("sandbox_runner.py")
UNSHARE = ["--pid", "--fork", "--kill-child", "--mount", "--net", "--ipc", "--uts"]
HIDDEN = ("/root", "/home")  # replaced by empty folders inside the sandbox
# The trial run: an import the judge has not done, so the answer must read the interpreter.
TRIAL = "import xml.dom.minidom\nimport os\nassert os.getuid() != 0 or os.getpid() == -1"
GRACE = 15.0  # seconds the parent waits beyond the judge's own timeout before killing it all

LEVELS = {
    "namespaces": (
        "namespaces: each run in its own PID, mount, network and IPC namespaces; the answer "
        "as an unprivileged uid of its own, in a separate process from the judge; a "
        "size-limited private /tmp, home folders hidden, other mounts read-only (but /dev, "
        "/proc and /sys, which its uid cannot write); no network"
    ),
    "uid": (
        "uid: the answer as an unprivileged uid of its own, in a separate process from the "
        "judge, all its processes killed at the end; no namespaces: it shares the network "
        "and can write world-writable folders such as /tmp"
    ),
    "basic": (
        "basic: the answer in a separate process from the judge, with time, CPU, memory and "
        "file-size limits and no secrets in its environment, but as your own user: it can "
        "write your files, use the network and leave detached processes behind"
    ),
}


def sandbox_env(home: str) -> dict[str, str]:
    """The whole environment a sandboxed program gets: nothing of the parent's (no tokens).

    Args:
        home: the run's working folder, used as ``HOME`` and ``TMPDIR`` so that caches and
            temporary files land inside it.
    """
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "TMP": home,
        "TEMP": home,
        "MPLCONFIGDIR": home,
        "MPLBACKEND": "Agg",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


# ------------------------------------------------------------------ what the host allows


def _cgroup_dirs() -> dict[str, str]:
    """This process's writable cgroup folders: ``{"memory": ..., "pids": ...}`` (v1 or v2)."""
    found: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for name in ("memory", "pids"):
            if name in controllers.split(","):
                folder = Path("/sys/fs/cgroup", name) / path.lstrip("/")
                if (folder / "cgroup.procs").exists() and os.access(folder, os.W_OK):
                    found[name] = str(folder)
        if controllers == "" and "memory" not in found:  # cgroup v2
            folder = Path("/sys/fs/cgroup") / path.lstrip("/")
            try:
                enabled = (folder / "cgroup.subtree_control").read_text().split()
            except OSError:
                enabled = []
            if "memory" in enabled and os.access(folder, os.W_OK):
                found["v2"] = str(folder)
    return found


def _uid_range() -> tuple[int, int]:
    """A range of uids the kernel maps here and no account uses (for one uid per run)."""
    try:
        rows = [line.split() for line in Path("/proc/self/uid_map").read_text().splitlines()]
        spans = [(int(inside), int(inside) + int(count)) for inside, _, count in rows]
    except (OSError, ValueError):
        spans = [(0, 65536)]
    for low, high in spans:
        low = max(low, 2_000_000)
        if high - low >= 1_000_000:
            return low, min(high - 2, low + 1_000_000_000)
    return 60_000, 65_000  # a narrow map: the top of the usual range


@functools.cache
def isolation() -> dict[str, Any]:
    """What this host allows, tried once: ``{"level", "description", "cgroup", "reason"}``.

    ``namespaces`` needs root, Linux and ``unshare``; ``uid`` needs root; each is confirmed
    by a real trial run (which must import a module as the run's uid). Otherwise ``basic``;
    ``reason`` says why a stronger level was not used.
    """
    reason = ""
    level = "basic"
    if not sys.platform.startswith("linux"):
        reason = "not Linux"
    elif os.geteuid() != 0:
        reason = "not root (cannot switch to another uid)"
    elif shutil.which("unshare") is None:
        reason = "no unshare command"
        level = "basic"
    else:
        trial = _run({"mode": "program", "code": TRIAL}, level="namespaces", timeout=30)
        if trial["verdict"] == "pass":
            level = "namespaces"
        else:
            reason = f"a trial run in namespaces failed: {trial['detail'] or trial['stderr']}"[:300]
    if level == "basic" and sys.platform.startswith("linux") and os.geteuid() == 0:
        trial = _run({"mode": "program", "code": TRIAL}, level="uid", timeout=30)
        if trial["verdict"] == "pass":
            level = "uid"
        else:
            reason += f"; a trial run as another uid failed: {trial['detail']}"[:300]
    cgroups = _cgroup_dirs() if os.geteuid() == 0 else {}
    memory = "memory" in cgroups or "v2" in cgroups
    return {
        "level": level,
        "description": LEVELS[level],
        "cgroup": memory,
        "reason": reason,
    }


def isolation_level() -> str:
    """One line saying how model-written code is isolated here, never claiming more.

    For example (root with namespaces and a memory cgroup): ``namespaces: ...; memory
    limited for the whole run (cgroup)``.
    """
    info = isolation()
    memory = (
        "memory limited for the whole run (cgroup)"
        if info["cgroup"]
        else "memory limited per process only (no writable cgroup)"
    )
    why = f" [{info['reason']}]" if info["reason"] else ""
    return f"{info['description']}; {memory}{why}"


# ------------------------------------------------------------------ one run


class _Cgroup:
    """A memory (and pids) cgroup for one run, removed afterwards; everything in it killed."""

    def __init__(self, memory_bytes: int, processes: int):
        self.dirs: list[str] = []
        self.memory: str | None = None
        name = f"course-sandbox-{secrets.token_hex(6)}"
        for kind, parent in _cgroup_dirs().items():
            folder = os.path.join(parent, name)
            try:
                os.mkdir(folder)
            except OSError:
                continue
            self.dirs.append(folder)
            try:
                if kind == "memory":
                    Path(folder, "memory.limit_in_bytes").write_text(str(memory_bytes))
                    swap = Path(folder, "memory.memsw.limit_in_bytes")
                    if swap.exists():
                        swap.write_text(str(memory_bytes))
                    self.memory = folder
                elif kind == "pids":
                    Path(folder, "pids.max").write_text(str(processes + 8))
                elif kind == "v2":
                    Path(folder, "memory.max").write_text(str(memory_bytes))
                    Path(folder, "memory.swap.max").write_text("0")
                    Path(folder, "pids.max").write_text(str(processes + 8))
                    self.memory = folder
            except OSError:
                pass

    @property
    def procs(self) -> list[str]:
        return [os.path.join(folder, "cgroup.procs") for folder in self.dirs]

    def kill_all(self) -> None:
        """Kill every process in the cgroup and remove it (the run is over)."""
        for folder in self.dirs:
            end = time.monotonic() + 5
            while time.monotonic() < end:
                try:
                    pids = [int(p) for p in Path(folder, "cgroup.procs").read_text().split()]
                except OSError:
                    break
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                time.sleep(0.01)
            try:
                os.rmdir(folder)
            except OSError:
                pass


def _new_uid() -> int:
    low, high = _uid_range()
    return low + secrets.randbelow(high - low)


def _remove_tree(path: str) -> None:
    """Delete a folder however deep or strange it is (``shutil.rmtree`` recurses)."""
    try:
        shutil.rmtree(path)
    except BaseException:  # RecursionError on very deep trees, odd permissions
        subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)


def _pump(
    proc: subprocess.Popen,
    stdin_data: bytes,
    verdict_fd: int,
    deadline: float,
    keep: int,
) -> tuple[bytes, int, bytes, int, bytes, bool]:
    """Feed stdin, drain stdout/stderr (keeping the first ``keep`` bytes), read the verdict.

    Stops when the verdict pipe is closed (the judge ended) or at ``deadline``.
    """
    sel = selectors.DefaultSelector()
    buffers = {"out": bytearray(), "err": bytearray(), "verdict": bytearray()}
    sizes = {"out": 0, "err": 0, "verdict": 0}
    for name, stream in (("out", proc.stdout), ("err", proc.stderr)):
        os.set_blocking(stream.fileno(), False)
        sel.register(stream.fileno(), selectors.EVENT_READ, name)
    os.set_blocking(verdict_fd, False)
    sel.register(verdict_fd, selectors.EVENT_READ, "verdict")
    pending = memoryview(stdin_data)
    stdin_fd = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    sel.register(stdin_fd, selectors.EVENT_WRITE, "in")
    timed_out = False
    verdict_open = True
    while verdict_open:
        wait = deadline - time.monotonic()
        if wait <= 0:
            timed_out = True
            break
        for key, _ in sel.select(min(wait, 1.0)):
            name = key.data
            if name == "in":
                try:
                    pending = pending[os.write(stdin_fd, pending[: 1 << 16]) :]
                except (BrokenPipeError, BlockingIOError, OSError):
                    pending = pending[:0]
                if not pending:
                    sel.unregister(stdin_fd)
                    proc.stdin.close()
                continue
            try:
                chunk = os.read(key.fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(key.fd)
                if name == "verdict":
                    verdict_open = False
                continue
            sizes[name] += len(chunk)
            room = keep - len(buffers[name]) if name != "verdict" else 1 << 20
            if room > 0:
                buffers[name] += chunk[:room]
    sel.close()
    return (
        bytes(buffers["out"]),
        sizes["out"],
        bytes(buffers["err"]),
        sizes["err"],
        bytes(buffers["verdict"]),
        timed_out,
    )


def _clip(data: bytes, size: int, limit: int) -> str:
    text = data.decode("utf-8", errors="replace")
    if len(text) > limit or size > len(data):
        text = text[:limit] + f"\n... [cut: {size} bytes in all]"
    return text


def _run(
    work: dict[str, Any],
    *,
    level: str | None = None,
    python: str | None = None,
    timeout: float = 30.0,
    cpu_seconds: int | None = None,
    memory_mb: int = 4096,
    file_size_mb: int = 64,
    disk_mb: int = 256,
    processes: int = 64,
    max_output: int = 2000,
    preload: Sequence[str] = (),
) -> dict[str, Any]:
    level = level or isolation()["level"]
    python = python or sys.executable
    cpu = int(cpu_seconds if cpu_seconds is not None else -(-timeout // 1))
    uid = _new_uid() if level in ("namespaces", "uid") else None
    cgroup = _Cgroup(memory_mb * 2**20, processes) if os.geteuid() == 0 else None
    workdir = judgedir = None
    if level != "namespaces":
        workdir = tempfile.mkdtemp(prefix="sandbox-")
        judgedir = workdir
    if level == "uid":
        os.chown(workdir, uid, uid)  # its own folder; the judge works in another
        judgedir = tempfile.mkdtemp(prefix="sandbox-judge-")
    read_fd, write_fd = os.pipe()
    cfg = {
        "level": level,
        "uid": uid,
        "timeout": timeout,
        "cpu_seconds": cpu,
        "memory_bytes": memory_mb * 2**20,
        "file_size_bytes": file_size_mb * 2**20,
        "disk_mb": disk_mb,
        "inodes": 20_000,
        "nproc": processes if uid is not None else 0,
        "preload": list(preload),
        "hide": list(HIDDEN),
        "workdir": workdir,
        "judgedir": judgedir,
        "verdict_fd": write_fd,
        "cgroup_procs": cgroup.procs if cgroup else [],
        "cgroup_memory": cgroup.memory if cgroup else None,
    }
    command = [python, "-I", str(RUNNER), json.dumps(cfg)]
    if level == "namespaces":
        command = ["unshare", *UNSHARE, *command]
    start = time.monotonic()
    proc = None
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(write_fd,),
            cwd=workdir or "/",
            env=sandbox_env(workdir or "/tmp/work"),
            start_new_session=True,
        )
        os.close(write_fd)
        write_fd = -1
        out, out_size, err, err_size, raw, timed_out = _pump(
            proc, json.dumps(work).encode(), read_fd, start + timeout + GRACE, 4 * max_output
        )
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        os.close(read_fd)
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    stream.close()
                except OSError:
                    pass
        if cgroup is not None:
            cgroup.kill_all()
        for folder in {workdir, judgedir} - {None}:
            _remove_tree(folder)
    seconds = time.monotonic() - start
    try:
        report = json.loads(raw[8:]) if len(raw) > 8 else None
    except ValueError:
        report = None
    stdout = _clip(out, out_size, max_output).rstrip("\n")
    stderr = _clip(err, err_size, max_output)
    if report is None:
        verdict = "timeout" if timed_out else "error"
        detail = (
            f"wall-clock limit ({timeout:g} s, the judge did not answer)"
            if timed_out
            else f"sandbox failure: the judge ended without a verdict (status {proc.returncode})"
        )
        checked_in = "judge"
    else:
        verdict, detail = report["verdict"], report["error"]
        checked_in = report.get("checked_in", "judge")
        if report.get("trace"):
            stderr = (stderr + report["trace"])[-4 * max_output :]
        if "MemoryError" in detail:
            detail = f"{detail} (memory limit {memory_mb} MB)"
    return {
        "verdict": verdict,
        "detail": detail,
        "returncode": 0 if verdict == "pass" else 1,
        "stdout": stdout,
        "stderr": stderr,
        "seconds": round(seconds, 3),
        "pid": proc.pid if proc is not None else None,
        "isolation": level,
        "checked_in": checked_in,
    }


def _failure(exc: BaseException) -> dict[str, Any]:
    return {
        "verdict": "error",
        "detail": f"sandbox failure: {exc!r}"[:300],
        "returncode": None,
        "stdout": "",
        "stderr": "",
        "seconds": 0.0,
        "pid": None,
        "isolation": None,
        "checked_in": None,
    }


def run_python(
    code: str,
    *,
    timeout: float = 30.0,
    cpu_seconds: int | None = None,
    memory_mb: int = 4096,
    file_size_mb: int = 64,
    disk_mb: int = 256,
    processes: int = 64,
    max_output: int = 2000,
    python: str | None = None,
    level: str | None = None,
) -> dict[str, Any]:
    """Run a whole program in the sandbox; it passes if it runs to its end.

    "Ran to its end" is the program's own process's word (``checked_in == "answer"``):
    right for a program you test yourself; for a test whose verdict must hold against the
    code under test, use :func:`run_judged`.

    Args:
        code: the whole program (Python source).
        timeout: wall-clock seconds for the whole run (the judge's start and imports too).
        cpu_seconds: CPU-time limit of the answer's process; defaults to ``timeout``.
        memory_mb: memory limit: of the whole run where a cgroup allows, and of each
            process's address space. Imports need room: NumPy about 150 MB, pandas about
            400 MB, PyTorch about 700 MB.
        file_size_mb: the largest file the program may write.
        disk_mb: the size of its private ``/tmp`` (namespaces level).
        processes: how many processes it may have (namespaces level: its own uid).
        max_output: characters of stdout and of stderr kept (the rest is cut).
        python: the interpreter (default: this one).
        level: force an isolation level (``"basic"``: to test the weaker mode); default:
            the strongest this host allows (:func:`isolation`).

    Returns:
        ``{"verdict", "detail", "returncode", "stdout", "stderr", "seconds", "pid",
        "isolation", "checked_in"}``; ``verdict`` is one of :data:`VERDICTS`.
    """
    try:
        return _run(
            {"mode": "program", "code": code},
            level=level,
            python=python,
            timeout=timeout,
            cpu_seconds=cpu_seconds,
            memory_mb=memory_mb,
            file_size_mb=file_size_mb,
            disk_mb=disk_mb,
            processes=processes,
            max_output=max_output,
        )
    except Exception as exc:
        return _failure(exc)


def run_judged(
    context: str,
    solution: str,
    *,
    preload: Sequence[str] = (),
    python: str | None = None,
    **limits: Any,
) -> dict[str, Any]:
    """Test ``solution`` with a DS-1000-style test context; the judge decides the verdict.

    The context (trusted) runs in the judge and calls ``test_execution(solution)`` and, when
    it mentions it, ``test_string(solution)`` (DS-1000's layout). Its ``exec(code, env)`` runs
    in the answer's process; the variables come back as plain data. A value that is not
    plain data comes back as a stand-in that equals nothing, so the test fails on it.

    Args:
        context: the problem's ``code_context``.
        solution: the answer's code.
        preload: modules the judge imports before forking the answer (saves time).
        python: the interpreter for both processes.
        **limits: as for :func:`run_python`.
    """
    try:
        return _run(
            {"mode": "judged", "context": context, "solution": solution},
            python=python,
            preload=preload,
            **limits,
        )
    except Exception as exc:
        return _failure(exc)


def run_many(
    programs: Sequence[str | dict[str, Any]],
    *,
    workers: int = 1,
    progress: bool = False,
    desc: str = "sandbox",
    on_result: Callable[[int, dict[str, Any]], None] | None = None,
    **limits: Any,
) -> list[dict[str, Any]]:
    """Run each program, ``workers`` at a time, and return the results in input order.

    A program is either source text (run by :func:`run_python`) or a dict of
    :func:`run_judged`'s arguments (``{"context", "solution", "preload"}``). A program that
    crashes, hangs or exhausts its limits gets its own verdict; the others still run. Even a
    failure to start a process becomes an ``"error"`` for that program.

    Args:
        programs: whole Python programs or judged tests.
        workers: how many run at the same time.
        progress: show a tqdm progress bar.
        desc: the progress bar's label.
        on_result: called as ``on_result(index, result)`` when each program finishes.
        **limits: passed on (timeout, cpu_seconds, memory_mb, python, ...).
    """
    lock = threading.Lock()

    def one(index: int) -> dict[str, Any]:
        item = programs[index]
        try:
            if isinstance(item, dict):
                result = run_judged(**item, **limits)
            else:
                result = run_python(item, **limits)
        except Exception as exc:  # the harness must outlive any single program
            result = _failure(exc)
        if on_result is not None:
            with lock:
                on_result(index, result)
        return result

    bar = None
    if progress:
        with warnings.catch_warnings():  # "IProgress not found": a text bar will do
            warnings.simplefilter("ignore")
            from tqdm.auto import tqdm

        bar = tqdm(total=len(programs), desc=desc)
    from concurrent.futures import ThreadPoolExecutor, as_completed

    results: list[dict[str, Any]] = [{} for _ in programs]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(one, i): i for i in range(len(programs))}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return results
