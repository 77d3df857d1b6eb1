"""The trusted side of one sandboxed run: the *judge* (see :mod:`helpers.sandbox`).

This file is run as a script by :mod:`helpers.sandbox`, with whichever interpreter runs the
answers (the course's own, or DS-1000's, :mod:`helpers.ds1000_env`). It uses the standard
library only, so that it runs under any Python 3.9+. Its one argument is a JSON config; the
work (``{"mode": "program", "code": ...}`` or ``{"mode": "judged", "context": ...,
"solution": ...}``) comes on stdin, and is read only after the answer's process has been
forked, so that the answer's memory never held it. The verdict goes back on a pipe of its own
(``verdict_fd``), never on stdout.

At the ``namespaces`` level it is the first process (PID 1) of new PID, mount, network, IPC
and UTS namespaces (``unshare``); it builds the run's file system (a size-limited tmpfs for
``/tmp``, ``/var/tmp`` and ``/dev/shm``, home folders hidden, everything else read-only, a
``/proc`` showing only this namespace), joins the run's memory cgroup, imports the libraries
the problem needs, then forks the *answer* process, which drops to an unprivileged uid of its
own, sets its limits and waits for code. When this process exits the kernel kills every
process left in the namespace.

Modes:

- ``program``: the whole program runs in the answer process, which reports how it ended.
  That report is the answer's own word (a program that does not raise "passes"): right for
  :func:`helpers.sandbox.run_python`, and for checks that need the answer's process (figure
  state in Matplotlib problems).
- ``judged``: the test context (trusted: it comes with the problem) runs *here*, in the
  judge. Its calls to ``exec(code, env)`` run ``code`` in the answer process and bring the
  variables back as plain data (:func:`decode`: JSON with typed arrays, never pickle), so the
  expected values and the comparison never live where the answer runs.
"""

from __future__ import annotations

import base64
import builtins
import ctypes
import json
import linecache
import os
import pickle
import resource
import select
import signal
import struct
import sys
import time
import traceback

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
MAX_MESSAGE = 256 * 2**20  # the largest reply the judge accepts (and a quarter of memory)

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    prctl = getattr(_libc, "prctl", None)  # Linux only: elsewhere (macOS) nothing to set
    if prctl is not None:
        prctl(option, ctypes.c_ulong(value), 0, 0, 0)


def _mount(source, target, fstype, flags, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)):
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def build_filesystem(cfg: dict) -> None:
    """The run's view of the files (namespaces level only; we are root in a new mount ns)."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    hidden = [h for h in cfg["hide"] if os.path.isdir(h)]
    keep = set()
    for path in [sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))]:
        keep.add(os.path.realpath(path))
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            keep.add(os.path.realpath(entry))
            for name in os.listdir(entry):  # links to packages shared with another env
                full = os.path.join(entry, name)
                if os.path.islink(full):
                    keep.add(os.path.realpath(full))
    keep = {p for p in keep if os.path.exists(p) and any(_under(p, h) for h in hidden)}
    # Outermost first, and nothing kept twice.
    keep = sorted(p for p in keep if not any(q != p and _under(p, q) for q in keep))
    fds = {p: os.open(p, os.O_RDONLY) for p in keep}
    size = f"size={cfg['disk_mb']}m,nr_inodes={cfg['inodes']}"
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=1777")
    private = ["/tmp"]
    for other in ("/var/tmp", "/dev/shm", "/run/lock", "/var/lock"):
        if os.path.isdir(other) and not os.path.islink(other):
            _mount("/tmp", other, None, MS_BIND)
            private.append(other)
    for folder in hidden:
        _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for path, fd in fds.items():
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "a").close()
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)
    # Everything read-only but the run's own tmpfs and the kernel's file systems.
    with open("/proc/self/mountinfo") as info:
        points = [line.split()[4] for line in info]
    for point in points:
        point = point.encode().decode("unicode_escape")
        if point in private or any(_under(point, k) for k in ("/proc", "/sys", "/dev")):
            continue
        try:
            flags = os.statvfs(point).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except OSError:
            pass  # a mount we cannot see through (shadowed): what is on top is read-only
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")


# ------------------------------------------------------------------ messages


def send(fd: int, data: bytes) -> None:
    view = memoryview(struct.pack("<Q", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int, deadline: float, pid: int | None):
    chunks, got = [], 0
    while got < n:
        wait = max(0.0, min(0.2, deadline - time.monotonic()))
        ready, _, _ = select.select([fd], [], [], wait)
        if ready:
            chunk = os.read(fd, min(n - got, 2**20))
            if not chunk:
                return None  # the other side is gone
            chunks.append(chunk)
            got += len(chunk)
            continue
        if time.monotonic() >= deadline:
            raise TimeoutError
        if pid is not None and _reaped(pid) is not None:
            return None
    return b"".join(chunks)


def recv(fd: int, deadline: float = float("inf"), pid: int | None = None, limit: int = MAX_MESSAGE):
    head = _read_exact(fd, 8, deadline, pid)
    if head is None:
        return None
    (size,) = struct.unpack("<Q", head)
    if size > limit:
        raise ValueError(f"a reply of {size} bytes, more than the judge takes ({limit})")
    return _read_exact(fd, size, deadline, pid)


_STATUS: dict[int, tuple] = {}


def _reaped(pid: int):
    """The answer's (status, rusage) once it has ended, else None (reaps it)."""
    if pid in _STATUS:
        return _STATUS[pid]
    try:
        got, status, usage = os.wait4(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if got == 0:
        return None
    _STATUS[pid] = (status, usage)
    return _STATUS[pid]


# ------------------------------------------------------------------ data-only values


def _arr(a) -> dict:
    import numpy as np

    a = np.asarray(a)
    if a.dtype.hasobject:
        return {
            "t": "ndo",
            "shape": list(a.shape),
            "items": [encode(x) for x in a.ravel().tolist()],
        }
    a = a.copy(order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
    return {
        "t": "nd",
        "dtype": a.dtype.str,
        "shape": list(a.shape),
        "b64": base64.b64encode(a.tobytes()).decode(),
    }


def _values(array) -> dict:
    """A pandas column's values (an ndarray or an extension array)."""
    import numpy as np
    import pandas as pd

    if isinstance(array, np.ndarray):
        return _arr(array)
    dtype = array.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return {
            "t": "cat",
            "codes": _arr(array.codes),
            "categories": _index(dtype.categories),
            "ordered": bool(dtype.ordered),
        }
    numpy_backed = type(dtype).__name__ in ("PandasDtype", "NumpyEADtype")
    if isinstance(dtype, np.dtype) or numpy_backed:  # plain numpy values, naive datetimes
        return _arr(array.to_numpy())
    if getattr(dtype, "tz", None) is not None:
        return {"t": "tz", "tz": str(dtype.tz), "ns": _arr(array.asi8)}
    return {"t": "ext", "dtype": str(dtype), "items": [encode(x) for x in array.tolist()]}


def _index(index) -> dict:
    import pandas as pd

    if isinstance(index, pd.RangeIndex):
        return {
            "t": "range",
            "start": index.start,
            "stop": index.stop,
            "step": index.step,
            "name": encode(index.name),
        }
    if isinstance(index, pd.MultiIndex):
        return {
            "t": "multi",
            "levels": [_index(level) for level in index.levels],
            "codes": [_arr(c) for c in index.codes],
            "names": [encode(n) for n in index.names],
        }
    return {
        "t": "index",
        "values": _values(index.array),
        "name": encode(index.name),
        "freq": getattr(index, "freqstr", None),
    }


def encode(value):  # noqa: C901 - one branch per type
    """A plain-data form of ``value`` (runs in the answer's process)."""
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float:
        return {"t": "float", "v": repr(value)}
    if type(value) in (list, tuple, set, frozenset) or isinstance(value, tuple):
        kind = "tuple" if isinstance(value, tuple) else type(value).__name__
        return {"t": kind, "items": [encode(x) for x in value]}
    if type(value) is dict:
        return {"t": "dict", "items": [[encode(k), encode(v)] for k, v in value.items()]}
    if type(value) is complex:
        return {"t": "complex", "re": repr(value.real), "im": repr(value.imag)}
    if type(value) is bytes:
        return {"t": "bytes", "b64": base64.b64encode(value).decode()}
    module = type(value).__module__.split(".")[0]
    if module == "numpy":
        import numpy as np

        if isinstance(value, np.ndarray) and type(value) is np.ndarray:
            return _arr(value)
        if isinstance(value, np.generic) and not isinstance(value, np.object_):
            return {"t": "npscalar", "v": _arr(np.asarray(value))}
    if module == "pandas":
        import pandas as pd

        if value is pd.NaT:
            return {"t": "NaT"}
        if value is pd.NA:
            return {"t": "NA"}
        if type(value) is pd.DataFrame:
            return {
                "t": "frame",
                "index": _index(value.index),
                "columns": _index(value.columns),
                "cols": [_values(value.iloc[:, i].array) for i in range(value.shape[1])],
            }
        if type(value) is pd.Series:
            return {
                "t": "series",
                "index": _index(value.index),
                "values": _values(value.array),
                "name": encode(value.name),
            }
        if isinstance(value, pd.Index):
            return {"t": "pdindex", "index": _index(value)}
        if type(value) is pd.Timestamp:
            return {"t": "ts", "ns": value.value, "tz": None if value.tz is None else str(value.tz)}
        if type(value) is pd.Timedelta:
            return {"t": "td", "ns": value.value}
        if type(value) is pd.Period:
            return {"t": "period", "v": str(value), "freq": value.freqstr}
        if type(value) is pd.Interval:
            return {
                "t": "interval",
                "left": encode(value.left),
                "right": encode(value.right),
                "closed": value.closed,
            }
    if module == "torch":
        import torch

        if type(value) is torch.Tensor or isinstance(value, torch.nn.Parameter):
            t = value.detach().cpu()
            wide = t.float() if t.dtype == torch.bfloat16 else t
            return {
                "t": "torch",
                "dtype": str(t.dtype).split(".")[1],
                "data": _arr(wide.numpy()),
                "grad": bool(value.requires_grad),
            }
    if module in ("tensorflow", "keras"):
        import tensorflow as tf

        if tf.is_tensor(value) or isinstance(value, tf.Variable):
            return {"t": "tf", "dtype": value.dtype.name, "data": _arr(value.numpy())}
    if module == "scipy":
        import scipy.sparse as sparse

        if sparse.issparse(value):
            coo = value.tocoo()
            return {
                "t": "sparse",
                "format": value.format,
                "shape": list(value.shape),
                "array": not sparse.isspmatrix(value),
                "data": _arr(coo.data),
                "row": _arr(coo.row),
                "col": _arr(coo.col),
            }
    import datetime
    import decimal
    import fractions

    if type(value) is datetime.datetime:
        return {"t": "datetime", "v": value.isoformat()}
    if type(value) is datetime.date:
        return {"t": "date", "v": value.isoformat()}
    if type(value) is datetime.timedelta:
        return {"t": "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if type(value) is decimal.Decimal:
        return {"t": "decimal", "v": str(value)}
    if type(value) is fractions.Fraction:
        return {"t": "fraction", "v": str(value)}
    if type(value) is range:
        return {"t": "range_obj", "v": [value.start, value.stop, value.step]}
    raise TypeError(f"{type(value).__module__}.{type(value).__qualname__}")


class Unreturnable:
    """Stands in, on the judge's side, for an answer's value that is not plain data."""

    def __init__(self, name: str, kind: str):
        self.name, self.kind = name, kind

    def __repr__(self) -> str:
        return f"<{self.name}: a {self.kind}, which cannot be returned as data>"

    def __eq__(self, other):  # never equal to anything, not even itself
        return False

    def __ne__(self, other):  # nor unequal: no comparison of it can pass a test
        return False

    def __bool__(self):
        raise TypeError(f"{self!r} has no truth value")

    __hash__ = None


def _dec_arr(d):
    import numpy as np

    if d["t"] == "ndo":
        items = [decode(x) for x in d["items"]]
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape(d["shape"])
    dtype = np.dtype(d["dtype"])
    if dtype.hasobject:
        raise ValueError("an object dtype in a typed array")
    return np.frombuffer(base64.b64decode(d["b64"]), dtype=dtype).reshape(d["shape"]).copy()


def _dec_values(d):
    import pandas as pd

    if d["t"] == "cat":
        return pd.Categorical.from_codes(
            _dec_arr(d["codes"]), categories=_dec_index(d["categories"]), ordered=d["ordered"]
        )
    if d["t"] == "tz":
        return (
            pd.DatetimeIndex(_dec_arr(d["ns"]).view("M8[ns]"))
            .tz_localize("UTC")
            .tz_convert(d["tz"])
            .array
        )
    if d["t"] == "ext":
        return pd.array([decode(x) for x in d["items"]], dtype=d["dtype"])
    return _dec_arr(d)


def _dec_index(d):
    import pandas as pd

    if d["t"] == "range":
        return pd.RangeIndex(d["start"], d["stop"], d["step"], name=decode(d["name"]))
    if d["t"] == "multi":
        return pd.MultiIndex(
            levels=[_dec_index(x) for x in d["levels"]],
            codes=[_dec_arr(c) for c in d["codes"]],
            names=[decode(n) for n in d["names"]],
        )
    values = _dec_values(d["values"])
    index = pd.Index(values, name=decode(d["name"]), tupleize_cols=False)
    if d.get("freq") and hasattr(index, "freq"):
        try:
            index.freq = d["freq"]
        except (ValueError, TypeError):
            pass
    return index


def decode(d):  # noqa: C901 - one branch per type
    """The value of an :func:`encode` form, built from plain data only (runs in the judge)."""
    if d is None or type(d) in (bool, int, str):
        return d
    if type(d) is not dict:
        raise ValueError(f"not an encoded value: {type(d).__name__}")
    t = d["t"]
    if t == "float":
        return float(d["v"])
    if t in ("list", "tuple", "set", "frozenset"):
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[t](
            decode(x) for x in d["items"]
        )
    if t == "dict":
        return {decode(k): decode(v) for k, v in d["items"]}
    if t == "complex":
        return complex(float(d["re"]), float(d["im"]))
    if t == "bytes":
        return base64.b64decode(d["b64"])
    if t in ("nd", "ndo"):
        return _dec_arr(d)
    if t == "npscalar":
        return _dec_arr(d["v"])[()]
    if t == "unreturnable":
        return Unreturnable(str(d["name"]), str(d["kind"]))
    import datetime
    import decimal
    import fractions

    simple = {
        "datetime": lambda: datetime.datetime.fromisoformat(d["v"]),
        "date": lambda: datetime.date.fromisoformat(d["v"]),
        "timedelta": lambda: datetime.timedelta(*d["v"]),
        "decimal": lambda: decimal.Decimal(d["v"]),
        "fraction": lambda: fractions.Fraction(d["v"]),
        "range_obj": lambda: range(*d["v"]),
    }
    if t in simple:
        return simple[t]()
    if t == "torch":
        import torch

        return (
            torch.from_numpy(_dec_arr(d["data"]))
            .to(getattr(torch, d["dtype"]))
            .requires_grad_(d["grad"])
        )
    if t == "tf":
        import tensorflow as tf

        return tf.constant(_dec_arr(d["data"]), dtype=d["dtype"])
    if t == "sparse":
        import scipy.sparse as sparse

        make = sparse.coo_array if d["array"] else sparse.coo_matrix
        data = (_dec_arr(d["data"]), (_dec_arr(d["row"]), _dec_arr(d["col"])))
        return make(data, shape=tuple(d["shape"])).asformat(d["format"])
    import pandas as pd

    if t == "NaT":
        return pd.NaT
    if t == "NA":
        return pd.NA
    if t == "ts":
        return (
            pd.Timestamp(d["ns"], tz="UTC").tz_convert(d["tz"])
            if d["tz"]
            else pd.Timestamp(d["ns"])
        )
    if t == "td":
        return pd.Timedelta(d["ns"])
    if t == "period":
        return pd.Period(d["v"], freq=d["freq"])
    if t == "interval":
        return pd.Interval(decode(d["left"]), decode(d["right"]), closed=d["closed"])
    if t == "pdindex":
        return _dec_index(d["index"])
    if t == "series":
        return pd.Series(
            _dec_values(d["values"]), index=_dec_index(d["index"]), name=decode(d["name"])
        )
    if t == "frame":
        index, columns = _dec_index(d["index"]), _dec_index(d["columns"])
        cols = [_dec_values(c) for c in d["cols"]]
        frame = pd.DataFrame(
            {i: pd.Series(c, index=index) for i, c in enumerate(cols)}, index=index
        )
        frame.columns = columns
        return frame
    raise ValueError(f"unknown type tag {t!r}")


# ------------------------------------------------------------------ the answer's process


def _limit(kind: int, value: int) -> None:
    if value > 0:
        resource.setrlimit(kind, (value, value))


def become_answer(cfg: dict, requests: int, replies: int) -> None:
    """Turn this forked process into the answer's: unprivileged, limited, waiting for code."""
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        low, high = sorted((requests, replies))
        os.closerange(3, low)
        os.closerange(low + 1, high)
        os.closerange(high + 1, 65536)
        for procs in cfg["cgroup_procs"]:  # the answer's memory cgroup (not the judge's)
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
        os.chdir(cfg["workdir"])
        try:  # the first to go when the run's memory is exhausted (the judge is spared)
            with open("/proc/self/oom_score_adj", "w") as handle:
                handle.write("1000")
        except OSError:
            pass
        if cfg["uid"] is not None:
            os.setgroups([])
            os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
            os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        cpu = cfg["cpu_seconds"]
        if cpu > 0:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        _limit(resource.RLIMIT_AS, cfg["memory_bytes"])
        _limit(resource.RLIMIT_FSIZE, cfg["file_size_bytes"])
        _limit(resource.RLIMIT_NPROC, cfg["nproc"])
        _limit(resource.RLIMIT_NOFILE, 1024)
    except BaseException as exc:  # cannot limit it: do not run it
        os.write(2, f"sandbox: could not set up the answer's process: {exc!r}\n".encode())
        os._exit(101)
    sys.argv = ["program.py"]
    sys.stdin = open(os.devnull)
    answer_loop(requests, replies)
    os._exit(0)


def _describe(exc: BaseException, skip: int = 1) -> dict:
    error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    tb = exc.__traceback__
    for _ in range(skip):
        tb = tb.tb_next if tb is not None else None
    trace = "".join(traceback.format_exception(type(exc), exc, tb, limit=-6))
    return {
        "status": "raised",
        "type": type(exc).__name__,
        "error": error,
        "trace": trace[-4000:],
        "assertion": isinstance(exc, AssertionError),
    }


def answer_loop(requests: int, replies: int) -> None:
    """Run each request (code to exec) and send back how it went (in the answer's process)."""
    while True:
        message = recv(requests)
        if message is None:
            return
        kind, code, env = pickle.loads(message)
        filename = "program.py" if kind == "program" else "answer.py"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        if kind == "program":
            env = {"__name__": "__main__", "__builtins__": builtins}
        else:
            env = dict(env)
            for name, module in list(env.items()):
                if isinstance(module, _Module):
                    env[name] = __import__(module.name, fromlist=["_"])
            env.setdefault("__builtins__", builtins)
        try:
            exec(compile(code, filename, "exec"), env)
            reply = {"status": "ok"}
            if kind == "exec":
                values = {}
                for name, value in env.items():
                    if name.startswith("__") or type(value).__name__ == "module":
                        continue
                    try:
                        values[name] = encode(value)
                    except Exception as exc:
                        kind_name = str(exc) if isinstance(exc, TypeError) else type(value).__name__
                        values[name] = {"t": "unreturnable", "name": name, "kind": kind_name}
                reply["env"] = values
        except BaseException as exc:
            try:
                reply = _describe(exc)
            except BaseException:
                reply = {
                    "status": "raised",
                    "type": "?",
                    "error": "an exception",
                    "trace": "",
                    "assertion": False,
                }
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        try:
            data = json.dumps(reply).encode()
        except Exception as exc:
            data = json.dumps(
                {
                    "status": "raised",
                    "type": "ValueError",
                    "error": f"the answer's values cannot be returned: {exc}"[:300],
                    "trace": "",
                    "assertion": False,
                }
            ).encode()
        send(replies, data)
        if kind == "program":
            return


class _Module:
    """A module in a test's environment, sent by name (the answer imports it itself)."""

    def __init__(self, name: str):
        self.name = name


# ------------------------------------------------------------------ the judge


class AnswerError(Exception):
    """The answer raised, crashed or ran out of a limit; the test stops there."""

    def __init__(self, reply: dict):
        super().__init__(reply.get("error", "the answer failed"))
        self.reply = reply


class Judge:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.deadline = time.monotonic() + cfg["timeout"]
        self.pid = None

    def start_answer(self) -> None:
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(self.req_w)
            os.close(self.rep_r)
            become_answer(self.cfg, req_r, rep_w)
        os.close(req_r)
        os.close(rep_w)
        self.pid = pid

    def ask(self, kind: str, code: str, env: dict) -> dict:
        try:
            send(self.req_w, pickle.dumps((kind, code, env), protocol=4))
        except BrokenPipeError:
            pass
        try:
            limit = min(MAX_MESSAGE, max(self.cfg["memory_bytes"] // 4, 2**20))
            data = recv(self.rep_r, self.deadline, self.pid, limit)
        except TimeoutError:
            raise AnswerError(
                {"verdict": "timeout", "error": f"wall-clock limit ({self.cfg['timeout']:g} s)"}
            ) from None
        except ValueError as exc:
            raise AnswerError({"verdict": "error", "error": str(exc)}) from None
        if data is None:
            raise AnswerError(self.death())
        try:
            reply = json.loads(data)
            if reply.get("status") not in ("ok", "raised"):
                raise ValueError
        except ValueError:
            raise AnswerError(
                {"verdict": "error", "error": "the answer's process sent a reply that is not one"}
            ) from None
        if reply["status"] == "raised":
            reply["verdict"] = "error"
            reply["error"] = str(reply.get("error", ""))[:300]
            raise AnswerError(reply)
        return reply

    def death(self) -> dict:
        """How the answer's process ended, when it ended before it replied."""
        end = time.monotonic() + 2
        got = _reaped(self.pid)
        while got is None and time.monotonic() < end:
            time.sleep(0.01)
            got = _reaped(self.pid)
        if got is None:
            return {"verdict": "error", "error": "the answer's process closed its channel"}
        status, usage = got
        cpu = usage.ru_utime + usage.ru_stime
        limit = self.cfg["cpu_seconds"]
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and limit > 0 and cpu >= limit):
                return {"verdict": "timeout", "error": f"CPU time limit ({limit} s)"}
            if sig == signal.SIGKILL and _memory_failed(self.cfg):
                total = self.cfg["memory_bytes"] // 2**20
                return {"verdict": "error", "error": f"memory limit of the whole run ({total} MB)"}
            names = {
                signal.SIGXFSZ: "file size limit",
                signal.SIGSEGV: "segmentation fault",
                signal.SIGKILL: "killed",
                signal.SIGABRT: "aborted",
                signal.SIGBUS: "bus error",
            }
            name = (
                signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            )
            return {"verdict": "error", "error": f"{names.get(sig, 'killed by a signal')} ({name})"}
        code = os.WEXITSTATUS(status)
        return {
            "verdict": "error",
            "error": f"the answer's process ended before the program did (exit status {code})",
        }

    def remote_exec(self, code, env=None, local=None):
        """``exec`` as the test context sees it: run ``code`` in the answer's process."""
        if env is None:
            env = {}
        if not isinstance(code, str):
            raise TypeError("the sandbox's exec takes source text")
        sendable = {}
        for name, value in env.items():
            if name == "__builtins__":
                continue
            if type(value).__name__ == "module":
                sendable[name] = _Module(value.__name__)
                continue
            try:
                pickle.dumps(value, protocol=4)
            except Exception:
                continue
            sendable[name] = value
        reply = self.ask("exec", code, sendable)
        for name, form in reply.get("env", {}).items():
            if type(name) is str:
                env[name] = decode(form)
        return None


def _memory_failed(cfg: dict) -> bool:
    path = cfg.get("cgroup_memory")
    if not path:
        return False
    try:
        with open(os.path.join(path, "memory.failcnt")) as handle:
            return int(handle.read()) > 0
    except (OSError, ValueError):
        return False


ANSWER: list[int] = []  # the answer's pid, once forked


def judge(cfg: dict, verdict_fd: int) -> dict:
    j = Judge(cfg)
    j.start_answer()
    ANSWER.append(j.pid)
    _prctl(PR_SET_DUMPABLE, 0)  # nobody but root-in-the-namespace may read this process
    work = json.loads(sys.stdin.buffer.read())  # only now: the answer never held it
    os.chdir(cfg["judgedir"])
    if work["mode"] == "program":
        try:
            j.ask("program", work["code"], {})
            return {"verdict": "pass", "error": "", "checked_in": "answer"}
        except AnswerError as exc:
            reply = exc.reply
            verdict = "fail" if reply.get("assertion") else reply.get("verdict", "error")
            return {
                "verdict": verdict,
                "error": reply.get("error", ""),
                "trace": reply.get("trace", ""),
                "checked_in": "answer",
            }
    context = work["context"]
    linecache.cache["test_context.py"] = (
        len(context),
        None,
        context.splitlines(True),
        "test_context.py",
    )
    namespace = {"__name__": "test_context", "__builtins__": builtins, "exec": j.remote_exec}
    try:
        exec(compile(context, "test_context.py", "exec"), namespace)
        namespace["test_execution"](work["solution"])
        if "test_string(" in context:
            namespace["test_string"](work["solution"])
    except AnswerError as exc:
        reply = exc.reply
        detail = reply.get("error", "")
        if reply.get("status") == "raised":
            detail = "the answer raised " + detail
        return {
            "verdict": reply.get("verdict", "error"),
            "error": detail,
            "trace": reply.get("trace", ""),
            "checked_in": "judge",
        }
    except BaseException as exc:
        verdict = "fail" if isinstance(exc, AssertionError) else "error"
        described = _describe(exc, skip=0)
        return {
            "verdict": verdict,
            "error": described["error"],
            "trace": described["trace"],
            "checked_in": "judge",
        }
    return {"verdict": "pass", "error": "", "checked_in": "judge"}


def _alive_of(uid: int) -> bool:
    """Whether a process of ``uid`` is still running (zombies do not count)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as handle:
                status = handle.read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
            return True
    return False


def reap_uid(uid: int, answer: int | None) -> None:
    """Kill every process of the run's uid, in any session or group (``uid`` level).

    A child takes the uid and calls ``kill(-1, SIGKILL)``, which reaches exactly the
    processes that uid may signal: its own, and no one else's; repeated until none runs.
    """
    if answer is not None:
        try:
            os.kill(answer, signal.SIGKILL)
        except OSError:
            pass
        end = time.monotonic() + 2
        while _reaped(answer) is None and time.monotonic() < end:
            time.sleep(0.002)
    for _ in range(100):
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                for _ in range(3):
                    try:
                        os.kill(-1, signal.SIGKILL)
                    except OSError:
                        break
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        if not _alive_of(uid):
            return
        time.sleep(0.005)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    verdict_fd = cfg["verdict_fd"]
    started = time.monotonic()
    outcome = None
    try:
        if cfg["level"] == "namespaces":
            build_filesystem(cfg)
            os.makedirs("/tmp/work", mode=0o700)
            os.chown("/tmp/work", cfg["uid"], cfg["uid"])
            os.makedirs("/tmp/judge", mode=0o700)
            cfg["workdir"], cfg["judgedir"] = "/tmp/work", "/tmp/judge"
        else:
            os.makedirs(os.path.join(cfg["workdir"], ".."), exist_ok=True)
            cfg["judgedir"] = cfg["judgedir"] or cfg["workdir"]
        for name in cfg["preload"]:
            try:
                __import__(name)
            except BaseException:
                pass
        outcome = judge(cfg, verdict_fd)
        if cfg["level"] == "uid":
            reap_uid(cfg["uid"], ANSWER[0] if ANSWER else None)
    except BaseException as exc:
        outcome = {
            "verdict": "error",
            "error": f"sandbox failure: {exc!r}"[:300],
            "checked_in": "judge",
        }
    outcome["judge_seconds"] = round(time.monotonic() - started, 3)
    try:
        send(verdict_fd, json.dumps(outcome).encode())
    finally:
        os._exit(0)


if __name__ == "__main__":
    main()
