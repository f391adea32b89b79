"""Warm start: the heavy imports paid once per workflow run on a machine, not once per job.

An opt-in local tool (config ``warm_start``: off in ``config.yaml``, on in the demo): no stage
imports this module; the entry point (:mod:`workflow_scripts.__main__`) imports it only when a
run started a server (:data:`ENV_VAR` set), and the code fingerprints leave it out.

A stage job spends most of its time importing (torch, transformers, sentence-transformers,
PyLate: ~5-7 s on 2 CPU cores) and well under a second working on a demo-sized split. For a
local run, the Snakefile's ``onstart`` starts one *fork server* (a zygote, as Android starts
apps and Bazel keeps persistent workers): a process that imports the third-party libraries
once and then forks a child per job. Every job still runs its own command
(``python -m workflow_scripts <stage> <command> ...``); that process, the client, finds the
server through ``REASON_COLBERT_WARM``, sends its argv, working directory, environment and
its stdin/stdout/stderr, and waits. The forked child takes those over, imports the *project*
modules fresh from the server's own checkout (the server never keeps them, so edited code is
what runs; the client's ``sys.path`` is never used) and runs exactly the code a cold process
would. Exit status, signals and output are the client's, so Snakemake, ``logged`` and the
logs see no difference. The server forks only the stages of its own :data:`FORKED_STAGES`,
whatever a client asks.

Where the two could differ, the client starts cold instead (one line in its log says why):
no server, another machine, checkout, cgroup or Slurm allocation, another interpreter, or a different
value of a variable that the preloaded libraries read at import time (``HF_HUB_OFFLINE``,
``TRANSFORMERS_VERBOSITY``, ...); Snakemake's per-job thread counts (``OMP_NUM_THREADS`` & co.)
are applied in the child instead. Inside a Slurm job the server of the submitting host is
never used: the work must run in the allocation Snakemake asked for.

A fork copies only the calling thread. The server starts no thread of its own, and it forks
only while no native pool that is not fork-aware (OpenMP, MKL) has live threads
(:func:`_native_pool_hazard`, asked before every fork); otherwise the job starts cold.

What does differ: Snakemake's ``benchmark:`` samples the job's process tree, which holds the
client, not the forked child. So the client writes the child's own figures, as the kernel
counted them (``wait4``), to the JSON sidecar its rule names (:mod:`workflow_scripts.job_usage`;
nothing in the log), and the cost page takes memory from there. That peak is not a cold
job's: the child's RSS counts the server's pages it touches, not those it only shares (measured:
an evaluate job 455 MB forked vs 540-553 MB cold; a report page ~400 MB forked vs 21-50 MB
cold). So the stages whose memory feeds the preflight forecast (``data``, ``preflight``,
``rehearsal``) always start cold (:data:`FORKED_STAGES`).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import logging
import os
import random
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .job_usage import ENV_VAR as USAGE_ENV
from .job_usage import write_usage

__all__ = [
    "ENV_VAR",
    "FORKED_STAGES",
    "delegate",
    "serve",
    "start",
    "stop",
]

ENV_VAR = "REASON_COLBERT_WARM"
# Stages a forked child may run; the others measure their own memory for the forecast.
FORKED_STAGES = ("demo", "evaluate", "model", "report", "summarize", "train")
# Imported once by the server: what the stages import and what costs seconds to import.
PRELOAD = (
    "numpy",
    "threadpoolctl",
    "torch",
    "pyarrow.parquet",
    "pyarrow.compute",
    "yaml",
    "jsonschema",
    "pytrec_eval",
    "transformers",
    "sentence_transformers",
    "pylate.models",
    "pylate.losses",
    "pylate.utils",
    "datasets",
    "matplotlib.pyplot",
)
# Snakemake sets these for every job to its `threads`; the libraries read them when they load,
# so the forked child resizes its pools to them (threadpoolctl) instead of refusing the job.
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
# Variables the preloaded libraries read at import: a job whose values differ starts cold.
IMPORT_TIME_ENV = (
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "SENTENCE_TRANSFORMERS_",
    "TORCH",
    "PYTORCH_",
    "CUDA_",
    "OMP_",
    "MKL_",
    "KMP_",
    "OPENBLAS_",
    "GOTO_",
    "LD_",
    "PYTHON",
    "MPL",
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "XLA_",
    "NUMEXPR_",
)
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
HEADER = struct.Struct("!Q")
GRACE_S = 10.0
# The checkout whose code a forked child runs: the server's own (its children import from here).
PROJECT = Path(__file__).resolve().parents[1]


# -- the wire: a length-prefixed JSON message, file descriptors riding on the first one ----------


def _send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    payload = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [HEADER.pack(len(payload))], fds)
        sock.sendall(payload)
    else:
        sock.sendall(HEADER.pack(len(payload)) + payload)


def _receive(sock: socket.socket, *, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """One message (None at end of stream) and the descriptors that came with it."""
    head, fds = b"", []
    while len(head) < HEADER.size:
        if max_fds and not fds:
            chunk, fds, _, _ = socket.recv_fds(sock, HEADER.size - len(head), max_fds)
        else:
            chunk = sock.recv(HEADER.size - len(head))
        if not chunk:
            return None, fds
        head += chunk
    (size,) = HEADER.unpack(head)
    body = b""
    while len(body) < size:
        chunk = sock.recv(min(size - len(body), 1 << 20))
        if not chunk:
            return None, fds
        body += chunk
    return json.loads(body), fds


def _where() -> dict[str, Any]:
    """What must be equal between a job and the server for the fork to be a faithful start.

    Examples
    --------
    >>> sorted(_where())
    ['affinity', 'cgroup', 'env', 'executable', 'flags', 'host', 'nice', 'prefix', 'project', 'rlimits']
    """
    import resource

    env = {k: v for k, v in os.environ.items() if k.startswith(IMPORT_TIME_ENV) and k not in THREAD_ENV}
    executable = os.path.realpath(sys.executable)  # venv/bin/python and python3: one interpreter
    limits = {n: resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_")}
    try:
        cgroup = Path("/proc/self/cgroup").read_text()  # a Slurm step's memory/GPU limits live here
    except OSError:
        cgroup = ""
    return {
        "executable": executable,
        "prefix": sys.prefix,
        "project": str(PROJECT),
        "host": socket.gethostname(),
        "env": env,
        "flags": repr((sys.flags, sys._xoptions, sys.warnoptions)),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "affinity": sorted(os.sched_getaffinity(0)),
        "rlimits": json.loads(json.dumps(limits)),
        "cgroup": cgroup,
    }


def _difference(job: dict[str, Any], server: dict[str, Any]) -> str | None:
    """The first difference that makes a forked start unfaithful, in words; None if none.

    Examples
    --------
    >>> here = {"executable": "/v/bin/python", "prefix": "/v", "host": "n1", "env": {"HF_HUB_OFFLINE": "1"}}
    >>> _difference(here, here) is None
    True
    >>> _difference({**here, "env": {}}, here)
    'HF_HUB_OFFLINE differs (job: unset, server: 1)'
    >>> _difference({**here, "host": "n2"}, here)
    'host differs (job: n2, server: n1)'
    """
    for key in (k for k in server if k != "env"):  # every fact of _where(), in its order
        if job.get(key) != server[key]:
            if key in ("executable", "prefix", "project", "host", "nice"):  # short enough to show
                return f"{key} differs (job: {job.get(key)}, server: {server[key]})"
            return f"{key} differs"
    for name in sorted(set(job["env"]) | set(server["env"])):
        mine, theirs = job["env"].get(name), server["env"].get(name)
        if mine != theirs:
            return f"{name} differs (job: {mine if mine is not None else 'unset'}, server: {theirs if theirs is not None else 'unset'})"
    return None


# -- the client: every `python -m workflow_scripts ...` job -------------------------------------


def delegate(argv: list[str]) -> int | None:
    """Run ``argv`` in a child forked by the warm server; its exit status, or None to start cold.

    None only when nothing ran (no server, or the server refused, with the reason logged on
    stderr); once the child exists its status is the answer, and the job is never run twice.

    Parameters
    ----------
    argv
        The stage, its command and flags, as ``python -m workflow_scripts`` got them.
    """
    address = os.environ.get(ENV_VAR)
    if not address or not argv or argv[0] not in FORKED_STAGES:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ignored = [int(n) for n in FORWARDED_SIGNALS if signal.getsignal(n) is signal.SIG_IGN]  # e.g. nohup
    reply = _request(sock, address=address, argv=argv, ignored=ignored)
    if reply is None:
        return None
    if "refused" in reply:
        print(f"warm: {reply['refused']}; starting cold", file=sys.stderr)
        return None
    child = int(reply["pid"])
    # Snakemake stops a job by signalling its process group, which holds this client only.
    for number in FORWARDED_SIGNALS:
        if int(number) not in ignored:
            signal.signal(number, lambda received, _frame: _signal_group(child, received))
    try:
        result, _ = _receive(sock)
    except OSError:
        result = None
    if result is None:  # the server is gone: never leave the child running unwatched
        _signal_group(child, signal.SIGKILL)
        print(f"warm: the server went away while child {child} ran", file=sys.stderr)
        return 1
    _record_usage(child=child, result=result)
    if result["signal"]:  # end as the child did (the shell reports 128 + N)
        _end_by(result["signal"])
    return int(result["status"])


def _request(sock: socket.socket, *, address: str, argv: list[str], ignored: list[int]) -> dict[str, Any] | None:
    """Hand the job (argv, directory, environment, umask, stdio) to the server: its reply, or None (unreachable, logged)."""
    try:
        sock.connect(address)
        umask = os.umask(0)
        os.umask(umask)
        request = {
            "argv": argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": umask,
            "ignored": ignored,
            "where": _where(),
        }
        _send(sock, request, fds=[0, 1, 2])
        reply, _ = _receive(sock)  # the server answers once its imports are done
    except OSError as err:
        print(f"warm: cannot hand the job to {address} ({err.strerror or err}); starting cold", file=sys.stderr)
        return None
    except KeyboardInterrupt:  # Ctrl-C before any child exists: one line, no traceback, nothing ran
        print(
            f"warm: interrupted (SIGINT) while the server at {address} was starting; the job did not run",
            file=sys.stderr,
        )
        _end_by(signal.SIGINT)
    return reply if reply is not None else {"refused": "the server closed the connection"}


def _record_usage(*, child: int, result: dict[str, Any]) -> None:
    """The child's figures to the job's usage sidecar, where its rule names one (the log's last line stays the job's)."""
    if not os.environ.get(USAGE_ENV):
        return
    with contextlib.suppress(OSError):  # the job's outcome is the child's, whatever happens here
        write_usage(
            os.environ[USAGE_ENV],
            child=child,
            status=result["status"],
            maxrss_kb=result["maxrss_kb"],
            cpu_s=result["cpu_s"],
        )


def _end_by(number: int) -> None:
    """End this process by signal ``number``, as an unhandled one would (the shell reports 128 + N)."""
    if number not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(number, signal.SIG_DFL)
    sys.stderr.flush()
    os.kill(os.getpid(), number)


def _signal_group(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, number)


# -- the server --------------------------------------------------------------------------------


def serve(*, address: str, parent: int) -> None:
    """Import :data:`PRELOAD`, then fork a child per request until ``parent`` exits.

    Parameters
    ----------
    address
        The Unix socket path to listen on (in :func:`start`'s private folder, removed at the end).
    parent
        The pid whose exit (the Snakemake run's) ends the server.
    """
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)  # before the imports: a job that starts now waits in the backlog
    listener.listen(64)
    where, environ = _where(), dict(os.environ)  # what the imports see, before they run
    # The children's import path: this checkout first, then the server's own path without its
    # working directory (``-m`` puts it first); never a client's.
    import_path = [str(PROJECT), *(p for p in sys.path if p not in ("", os.getcwd(), str(PROJECT)))]
    unsafe, side_effects = _preload(environ)
    children, stopping = _serve_requests(
        listener,
        parent=parent,
        where=where,
        unsafe=unsafe,
        side_effects=side_effects,
        import_path=import_path,
    )
    # Stopped (onsuccess/onerror): no job runs. The run was killed: its jobs died with it, so
    # their forked children (in groups of their own, out of reach of that kill) die now.
    for pid in children:
        _signal_group(pid, signal.SIGTERM if stopping else signal.SIGKILL)
    listener.close()
    with contextlib.suppress(OSError):
        os.unlink(address)
        os.rmdir(os.path.dirname(address))  # start()'s private folder


def _preload(environ: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """Import :data:`PRELOAD`; the reason forks are unsafe (None: safe) and the variables the imports set."""
    started = time.perf_counter()
    # transformers asks torch.cuda.is_available() at import; through the CUDA runtime that call
    # would poison every fork (torch/cuda/__init__.py), through NVML it does not.
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    if "PYTORCH_NVML_BASED_CUDA_CHECK" not in environ:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]
    # Forget the project's own modules (the server imported this one): children import them fresh.
    for name in [n for n in sys.modules if n == "workflow_scripts" or n.startswith("workflow_scripts.")]:
        del sys.modules[name]
    unsafe = _fork_hazard()
    # Some imports set variables (e.g. KMP_DUPLICATE_LIB_OK); a cold job's imports would too.
    side_effects = {k: v for k, v in os.environ.items() if environ.get(k) != v}
    native = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 0
    print(
        f"warm: preloaded {len(PRELOAD)} libraries in {time.perf_counter() - started:.1f} s ({native} native threads)",
        file=sys.stderr,
    )
    if unsafe:
        print(f"warm: {unsafe}; every job will start cold", file=sys.stderr)
    return unsafe, side_effects


def _serve_requests(
    listener: socket.socket, *, parent: int, **child_settings: Any
) -> tuple[dict[int, socket.socket], bool]:
    """Fork a child per connection until SIGTERM or ``parent`` exits; the children still running, and whether stopped.

    A client whose end closes while its child runs was killed by Snakemake: its child's group is
    signalled. ``child_settings`` are :func:`_start_child`'s keywords.
    """
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}  # child pid -> its client's connection
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    while not stopping and os.getppid() == parent:
        for key, _ in selector.select(timeout=0.1):
            if key.fileobj is not listener:  # a client's end closed while its child runs
                _signal_group(key.data, signal.SIGTERM)
                _kill_later(key.data)
                selector.unregister(key.fileobj)
                continue
            connection, _ = listener.accept()
            try:
                pid = _start_child(connection, listener=listener, **child_settings)
            except Exception as err:  # one bad or vanished client must not end the others' jobs
                print(f"warm: a request failed: {err!r}", file=sys.stderr)
                pid = None
            if pid is None:
                connection.close()
            else:
                children[pid] = connection
                selector.register(connection, selectors.EVENT_READ, pid)
        _reap(children, selector)
    return children, bool(stopping)


def _fork_hazard() -> str | None:
    """Why forking this process would be unsafe: Python threads running, CUDA initialised.

    A fork copies only the calling thread, with every lock as it was. Python threads could
    hold the interpreter's locks (logging, imports); none may run. The native pools the
    imports start are fork-aware and restart in the child: OpenBLAS (numpy's and scipy's)
    shuts its workers down in a ``pthread_atfork`` handler, jemalloc (pyarrow) takes its locks
    around the fork. CUDA cannot be used in a child of a process that initialised it.
    """
    import threading

    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        return f"Python threads run after the imports ({names}): a fork would copy their locks"
    if pools := _native_pool_hazard():
        return pools
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA was initialised by the imports"
    if torch is not None and torch.backends.cuda.is_built() and _probe(lambda: torch.cuda._is_in_bad_fork()):
        return "a forked child could not use CUDA (the imports queried the CUDA runtime)"
    return None


# Threads that name themselves and survive a fork by design (jemalloc, pyarrow's allocator, takes
# its locks around a fork); any other thread must be an OpenBLAS worker (see _native_pool_hazard).
FORK_AWARE_THREADS = ("jemalloc_bg_thd",)


def _native_pool_hazard() -> str | None:
    """Why a native thread pool makes a fork unsafe now: live threads no fork-aware pool accounts for.

    The workers of an OpenMP (libgomp, libiomp) or MKL pool, once a parallel region started them,
    are not copied by a fork while the child's runtime believes they exist: its first parallel
    region can hang. The imports start none. OpenBLAS starts ``num_threads - 1`` workers when it
    loads and stops them around a fork itself (``pthread_atfork``); jemalloc's background thread
    names itself. Every other thread of this process (``/proc/self/task``, the main one aside)
    is counted against the OpenBLAS workers that threadpoolctl reports; more means a live pool.
    """
    try:
        tasks = [t for t in os.listdir("/proc/self/task") if int(t) != os.getpid()]
    except OSError:  # not Linux: nothing to count, and nothing this check could vouch for
        return "the process's threads cannot be listed (no /proc/self/task)"
    threads = 0
    for tid in tasks:
        with contextlib.suppress(OSError):  # a thread that just ended
            if Path(f"/proc/self/task/{tid}/comm").read_text().strip() not in FORK_AWARE_THREADS:
                threads += 1
    if not threads:
        return None
    from threadpoolctl import threadpool_info

    pools = threadpool_info()
    openblas = sum(max(int(p.get("num_threads") or 1) - 1, 0) for p in pools if p.get("internal_api") == "openblas")
    if threads <= openblas:
        return None
    others = sorted(
        {
            f"{p.get('internal_api')} ({Path(p.get('filepath', '?')).name})"
            for p in pools
            if p.get("internal_api") != "openblas"
        }
    )
    return (
        f"{threads - openblas} native threads are live beyond OpenBLAS's {openblas} fork-aware workers (a started "
        f"OpenMP/MKL pool: {', '.join(others) or 'unknown'}): a forked child could hang in its first parallel region"
    )


def _probe(question) -> bool:
    """``question()`` asked in a forked child (what a job would find), as a bool."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, b"1" if question() else b"0")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    answer = os.read(read, 1)
    os.close(read)
    return answer == b"1"


def _start_child(
    connection: socket.socket,
    *,
    listener: socket.socket,
    where: dict,
    unsafe: str | None,
    side_effects: dict,
    import_path: list[str],
) -> int | None:
    """Fork a child for the request on ``connection``; its pid, or None if refused.

    The server's own policy decides, whatever the client says: a stage outside
    :data:`FORKED_STAGES` is refused, and the child imports from ``import_path``.
    """
    connection.settimeout(10)  # a client that connects and says nothing must not stall the others
    try:
        request, fds = _receive(connection, max_fds=3)
    except OSError:  # timed out, reset
        return None
    connection.settimeout(None)
    try:
        if request is None or len(fds) != 3:
            return None
        refusal = (
            unsafe
            or _not_forked(request.get("argv"))
            or _difference(request["where"], where)
            or _native_pool_hazard()  # again now: a pool started since the imports would hang the child
        )
        if refusal:
            _send(connection, {"refused": refusal})
            return None
        if _client_gone(connection):  # interrupted while the server was importing: nothing to run for
            return None
        pid = os.fork()
        if pid == 0:  # the child never returns from here
            listener.close()
            connection.close()
            _run_child(request, fds, side_effects=side_effects, import_path=import_path)
        with contextlib.suppress(OSError):  # also here: a signal forwarded at once must find the group
            os.setpgid(pid, pid)
        try:
            _send(connection, {"pid": pid})
        except OSError:  # the client is gone already: so is its job
            _signal_group(pid, signal.SIGKILL)
            raise
        return pid
    finally:
        for fd in fds:
            os.close(fd)


def _not_forked(argv: Any) -> str | None:
    """Why the server does not fork ``argv`` (its own registry decides), or None.

    Examples
    --------
    >>> _not_forked(["evaluate", "job"]) is None
    True
    >>> _not_forked(["data", "fetch"])
    "stage 'data' is not one this server forks (it must start cold)"
    """
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return "a malformed request (argv is not a list of strings)"
    if argv[0] not in FORKED_STAGES:
        return f"stage {argv[0]!r:.40} is not one this server forks (it must start cold)"
    return None


def _client_gone(connection: socket.socket) -> bool:
    """Whether the client closed its end (its job was stopped before the server answered)."""
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _run_child(
    request: dict[str, Any], fds: list[int], *, side_effects: dict[str, str], import_path: list[str]
) -> None:
    """Become the job: its descriptors, directory, environment, argv, then run the stage."""
    status = 1
    try:
        _become_job(request, fds, side_effects=side_effects, import_path=import_path)
        from .stages import run  # fresh, from this checkout (the server forgot its own)

        status = run(request["argv"])
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, int | None):
            print(done.code, file=sys.stderr)
    except KeyboardInterrupt:
        status = 128 + signal.SIGINT
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            atexit._run_exitfuncs()  # the job's own (logging.shutdown among them, if it registered)
        with contextlib.suppress(Exception):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status or 0)


def _become_job(
    request: dict[str, Any], fds: list[int], *, side_effects: dict[str, str], import_path: list[str]
) -> None:
    """This process as a fresh interpreter of the job would be: group, signals, stdio, directory, environment, seeds."""
    os.setpgid(0, 0)  # a group of its own, so the whole job can be signalled
    for number in (*FORWARDED_SIGNALS, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter sets them
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    for number in request["ignored"]:
        signal.signal(number, signal.SIG_IGN)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    atexit._clear()  # the server's exit handlers are not the job's
    os.chdir(request["cwd"])
    os.umask(request["umask"])  # outputs get the job's permissions, not the server's
    os.environ.clear()
    os.environ.update(request["env"] | side_effects)
    sys.path[:] = import_path
    tempfile.tempdir = None  # cached on first use; the job's TMPDIR may differ
    _apply_thread_limits()
    # A fresh interpreter seeds these from the OS; the server's state must not be shared.
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()


def _apply_thread_limits() -> None:
    """Size the loaded thread pools as a cold start with this environment would have.

    torch sizes its pool at first use, from the environment already set; the BLAS and OpenMP
    libraries did at load, in the server, so they are resized here.
    """
    blas = (
        os.environ.get("OPENBLAS_NUM_THREADS")
        or os.environ.get("GOTO_NUM_THREADS")
        or os.environ.get("OMP_NUM_THREADS")
    )
    openmp = os.environ.get("OMP_NUM_THREADS")
    if not (blas or openmp):
        return
    from threadpoolctl import threadpool_limits

    if blas and blas.isdigit():
        threadpool_limits(limits=int(blas), user_api="blas")
    if openmp and openmp.isdigit():
        threadpool_limits(limits=int(openmp), user_api="openmp")


def _reap(children: dict[int, socket.socket], selector: selectors.BaseSelector) -> None:
    """Send each finished child's status and the kernel's count of its resources to its client."""
    while True:  # also the _kill_later watchers, which are no job's
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        if connection is None:
            continue
        result = {
            "status": os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status),
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
            "maxrss_kb": usage.ru_maxrss,
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }
        with contextlib.suppress(OSError, KeyError, ValueError):
            _send(connection, result)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(connection)
        connection.close()


def _kill_later(pid: int) -> None:
    """SIGKILL ``pid``'s group after :data:`GRACE_S` if SIGTERM did not end it (a forked watcher)."""
    if os.fork() == 0:
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except (ProcessLookupError, PermissionError):
                os._exit(0)
            time.sleep(0.2)
        _signal_group(pid, signal.SIGKILL)
        os._exit(0)


# -- lifecycle: called from the Snakefile's onstart / onsuccess / onerror --------------------------

MIN_FORKED_JOBS = 2  # the server's imports cost one cold start: worth it from two forked jobs on


def worth_starting(commands: Iterable[str | None]) -> bool:
    """Whether a run whose jobs run these shell ``commands`` gains from a server.

    A run with fewer forked jobs than :data:`MIN_FORKED_JOBS` (the ``preflight`` target: only
    ``widen``) starts none, so the cold jobs it measures share the cores with no import.

    Examples
    --------
    >>> worth_starting(["logged x python -m workflow_scripts evaluate job --model-name {wildcards.model}"] * 2)
    True
    >>> worth_starting(["logged x python -m workflow_scripts data build-shards", "logged x python -m workflow_scripts model widen"])
    False
    """
    stages = (re.search(r"python -m workflow_scripts (\w+)", command or "") for command in commands)
    return sum(1 for found in stages if found and found.group(1) in FORKED_STAGES) >= MIN_FORKED_JOBS


_SERVER: dict[str, Any] = {}


def start(*, log: str | Path) -> str:
    """Start a server for this process's lifetime, export its address; the address.

    Parameters
    ----------
    log
        The server's log file (its stdout and stderr, appended); its folder is created.

    Returns
    -------
    The server's Unix socket path, also exported as :data:`ENV_VAR`.
    """
    folder = tempfile.mkdtemp(prefix="reason-colbert-warm-")  # 0700: only this user connects
    address = os.path.join(folder, "server.sock")
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "workflow_scripts.warm", address, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while not os.path.exists(address) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    _SERVER.update(process=process, folder=folder)
    os.environ[ENV_VAR] = address
    atexit.register(stop)  # also when Snakemake ends without its onsuccess/onerror (Ctrl-C)
    return address


def stop() -> None:
    """Stop the server started by :func:`start` (if any) and remove its folder."""
    os.environ.pop(ENV_VAR, None)
    process = _SERVER.pop("process", None)
    if process is not None and process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        if process.poll() is None:
            process.kill()
    folder = _SERVER.pop("folder", None)
    if folder and os.path.isdir(folder):  # the server removes it itself when it ends in time
        for name in os.listdir(folder):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))
        with contextlib.suppress(OSError):
            os.rmdir(folder)


if __name__ == "__main__":
    serve(address=sys.argv[1], parent=int(sys.argv[2]))
