"""Run untrusted Python (a model's code) in a separate, limited process.

Each program runs in its own ``python -I`` process, started in a fresh temporary folder
(its working directory, ``HOME`` and ``TMPDIR``) that is deleted afterwards, with:

- a wall-clock timeout (the whole process group is killed when it runs out),
- CPU-time, address-space (memory), file-size and core-dump limits (``resource.setrlimit``),
- a minimal environment: no ``HF_TOKEN`` or any other variable of the parent, one thread
  for the maths libraries, no visible GPU, a non-interactive Matplotlib backend,
- stdout and stderr captured in anonymous files and truncated.

The limits are set by a small launcher inside the child before it compiles the program,
rather than in ``preexec_fn``: ``preexec_fn`` is not safe when the parent runs threads, and
:func:`run_many` runs several programs at once from a thread pool.

The verdict of a run is one of ``"pass"`` (the program ran to its end), ``"fail"`` (it
raised ``AssertionError``: a test said no), ``"error"`` (any other exception, a crash, a
limit other than time) or ``"timeout"`` (wall-clock or CPU time ran out). A program only
passes if the launcher reports so after the last line ran, so one that exits early with
status 0 (``os._exit(0)``) does not pass.

This is a guard against the mistakes of generated code (endless loops, huge arrays, stray
files, a crash), the way benchmark harnesses such as DS-1000's and HumanEval's run it. It
is not a security boundary against code written to escape: that needs a container or a VM.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

VERDICTS = ("pass", "fail", "error", "timeout")

# The launcher: set the limits, read the program from stdin, run it, report how it ended.
LAUNCHER = r"""
import json, linecache, os, resource, sys, traceback
cpu, memory, fsize = (int(v) for v in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
if cpu > 0:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
if memory > 0:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
if fsize > 0:
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
nonce = sys.stdin.readline().strip()
source = sys.stdin.read()
sys.stdin.close()
sys.stdin = open(os.devnull)
sys.argv = ["program.py"]
linecache.cache["program.py"] = (len(source), None, source.splitlines(True), "program.py")
namespace = {"__name__": "__main__", "__builtins__": __builtins__}
verdict, error, trace = "pass", "", ""
try:
    exec(compile(source, "program.py", "exec"), namespace)
except BaseException as exc:
    verdict = "fail" if isinstance(exc, AssertionError) else "error"
    try:
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        inner = exc.__traceback__.tb_next  # leave out the launcher's own frame
        trace = "".join(traceback.format_exception(type(exc), exc, inner, limit=-6))
    except BaseException:
        error = error or type(exc).__name__
    del exc
namespace.clear()
try:
    sys.stdout.flush()
    sys.stderr.write(trace)
    sys.stderr.flush()
except BaseException:
    pass
os.write(1, ("\n" + nonce + " " + json.dumps({"verdict": verdict, "error": error}) + "\n").encode())
os._exit(0 if verdict == "pass" else 1)
"""

SIGNAL_NAMES = {
    signal.SIGXCPU: "CPU time limit",
    signal.SIGXFSZ: "file size limit",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGKILL: "killed",
    signal.SIGABRT: "aborted",
    signal.SIGBUS: "bus error",
}


def sandbox_env(home: str) -> dict[str, str]:
    """The whole environment a sandboxed program gets: nothing of the parent's (no tokens).

    Args:
        home: the run's temporary folder, used as ``HOME`` and ``TMPDIR`` so that caches
            and temporary files land inside it.
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
    }


def _read_capture(handle, limit: int) -> tuple[str, bytes]:
    """Return (the first ``limit`` characters, the last 4 KiB) of a capture file."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(0)
    head = handle.read(4 * limit)
    handle.seek(max(0, size - 4096))
    tail = handle.read()
    text = head.decode("utf-8", errors="replace")
    if len(text) > limit or size > len(head):
        text = text[:limit] + f"\n... [cut: {size} bytes in all]"
    return text, tail


def run_python(
    code: str,
    *,
    timeout: float = 30.0,
    cpu_seconds: int | None = None,
    memory_mb: int = 4096,
    file_size_mb: int = 64,
    max_output: int = 2000,
) -> dict[str, Any]:
    """Run ``code`` in a fresh sandboxed process and return its verdict.

    Args:
        code: the whole program (Python source).
        timeout: wall-clock seconds before the process group is killed.
        cpu_seconds: CPU-time limit; defaults to ``timeout`` rounded up.
        memory_mb: address-space limit of the process. Leave room for imports: NumPy
            needs about 150 MB, pandas about 400 MB, PyTorch about 700 MB.
        file_size_mb: the largest file the program may write.
        max_output: characters of stdout and of stderr kept (the rest is cut).

    Returns:
        ``{"verdict", "detail", "returncode", "stdout", "stderr", "seconds", "pid"}``;
        ``verdict`` is one of :data:`VERDICTS`, ``detail`` says why in a few words.
    """
    cpu = int(cpu_seconds if cpu_seconds is not None else -(-timeout // 1))
    nonce = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="sandbox-")
    timed_out = False
    start = time.monotonic()
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-c",
                    LAUNCHER,
                    str(cpu),
                    str(memory_mb * 2**20),
                    str(file_size_mb * 2**20),
                ],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                cwd=workdir,
                env=sandbox_env(workdir),
                start_new_session=True,  # its own process group, killed as a whole
                close_fds=True,
            )
            try:
                proc.communicate((nonce + "\n" + code).encode(), timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:  # the program and anything it started
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
                if proc.stdin is not None and not proc.stdin.closed:
                    try:
                        proc.stdin.close()
                    except OSError:
                        pass
            seconds = time.monotonic() - start
            stdout, tail = _read_capture(out, max_output)
            stderr, _ = _read_capture(err, max_output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    report = None
    marker = nonce.encode() + b" "
    for line in reversed(tail.splitlines()):
        if line.startswith(marker):
            try:
                report = json.loads(line[len(marker) :])
            except ValueError:  # mangled (a thread of the program wrote into it)
                pass
            break
    lines = [line for line in stdout.split("\n") if not line.startswith(nonce)]
    stdout = "\n".join(lines).rstrip("\n")
    status = proc.returncode
    if timed_out:
        verdict, detail = "timeout", f"wall-clock limit ({timeout:g} s)"
    elif report is not None:
        verdict, detail = report["verdict"], report["error"]
        if "MemoryError" in detail:
            detail = f"{detail} (memory limit {memory_mb} MB)"
    elif status is not None and status < 0:
        sig = -status
        verdict = "timeout" if sig == signal.SIGXCPU else "error"
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        detail = f"{SIGNAL_NAMES.get(sig, 'killed by a signal')} ({name})"
    else:
        verdict = "error"
        detail = f"the process ended before the program did (exit status {status})"
        if "MemoryError" in stderr:
            detail += f"; MemoryError (memory limit {memory_mb} MB)"
    return {
        "verdict": verdict,
        "detail": detail,
        "returncode": status,
        "stdout": stdout,
        "stderr": stderr,
        "seconds": round(seconds, 3),
        "pid": proc.pid,
    }


def run_many(
    programs: Sequence[str],
    *,
    workers: int = 1,
    progress: bool = False,
    desc: str = "sandbox",
    on_result: Callable[[int, dict[str, Any]], None] | None = None,
    **limits: Any,
) -> list[dict[str, Any]]:
    """Run each program with :func:`run_python`, ``workers`` at a time, in input order.

    A program that crashes, hangs or exhausts its limits gets its own verdict; the others
    still run. Even a failure to start a process becomes an ``"error"`` for that program.

    Args:
        programs: whole Python programs.
        workers: how many run at the same time (each is its own process).
        progress: show a tqdm progress bar.
        desc: the progress bar's label.
        on_result: called as ``on_result(index, result)`` when each program finishes.
        **limits: passed to :func:`run_python` (timeout, cpu_seconds, memory_mb, ...).
    """

    def one(index: int) -> dict[str, Any]:
        try:
            result = run_python(programs[index], **limits)
        except Exception as exc:  # the harness must outlive any single program
            result = {
                "verdict": "error",
                "detail": f"sandbox failure: {exc!r}",
                "returncode": None,
                "stdout": "",
                "stderr": "",
                "seconds": 0.0,
                "pid": None,
            }
        if on_result is not None:
            on_result(index, result)
        return result

    bar = None
    if progress:
        with warnings.catch_warnings():  # "IProgress not found": a text bar will do
            warnings.simplefilter("ignore")
            from tqdm.auto import tqdm

        bar = tqdm(total=len(programs), desc=desc)
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
