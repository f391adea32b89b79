"""Warm start (workflow_scripts/warm.py): a forked job is the cold job, started sooner.

Real processes throughout: the server imports the real libraries, the clients are the
`python -m workflow_scripts ...` commands the rules run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO, copy_repo

from workflow_scripts import warm
from workflow_scripts.cli import to_argv
from workflow_scripts.job_usage import ENV_VAR as USAGE_ENV
from workflow_scripts.job_usage import read_usage, sidecar, write_usage
from workflow_scripts.stages import STAGES


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One warm server for the module (its imports take seconds); its pid."""
    address = warm.start(log=tmp_path_factory.mktemp("warm") / "server.log")
    yield warm._SERVER["process"].pid, address
    warm.stop()


def stage(
    *argv: str, cold: bool = False, env: dict | None = None, cwd: Path = REPO, usage: Path | None = None, **popen
) -> subprocess.CompletedProcess:
    """``python -m workflow_scripts ARGV`` as a rule runs it, warm unless ``cold``; ``usage``: its sidecar."""
    env = dict(os.environ if env is None else env)
    if cold:
        env.pop(warm.ENV_VAR, None)
    if usage is not None:
        env[USAGE_ENV] = str(usage)
    return subprocess.run(
        [sys.executable, "-m", "workflow_scripts", *argv], cwd=cwd, env=env, capture_output=True, text=True, **popen
    )


def widen_argv(manifests, out: Path) -> list[str]:
    return [
        "model",
        "widen",
        *to_argv(
            {
                "source": manifests["base_model"],
                "out_dir": str(out / "model"),
                "verify_path": str(out / "verify.json"),
                "to": 128,
                "seed": 3,
            }
        ),
    ]


def warm_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warm: ")]


def forked(usage: Path) -> dict:
    """The sidecar the job's client wrote: proof that a child forked from the server ran it."""
    record = read_usage(usage)
    assert record is not None, "the job was not forked (no usage sidecar)"
    return record


def test_a_forked_job_writes_the_bytes_a_cold_one_does(server, manifests, tmp_path):
    stale = tmp_path / "cold.usage.json"
    write_usage(stale, child=1, status=0, maxrss_kb=1024, cpu_s=1.0)  # an earlier, forked run of the cold job
    cold = stage(*widen_argv(manifests, tmp_path / "cold"), cold=True, usage=stale)
    forked_job = stage(*widen_argv(manifests, tmp_path / "warm"), usage=tmp_path / "warm.usage.json")
    assert cold.returncode == forked_job.returncode == 0, forked_job.stderr
    assert not stale.exists()  # a cold job leaves no sidecar, not even an earlier one
    assert not warm_lines(cold.stderr) and not warm_lines(forked_job.stderr)  # nothing of warm start in the log
    record = forked(tmp_path / "warm.usage.json")  # the kernel's count, in the sidecar
    assert record["status"] == 0 and record["max_rss"] > 50 and record["cpu_time"] > 0 and record["child"] > 0
    for name in ("model/model.safetensors", "model/2_Dense/model.safetensors", "verify.json"):
        if (tmp_path / "cold" / name).exists():
            assert (tmp_path / "warm" / name).read_bytes() == (tmp_path / "cold" / name).read_bytes(), name
    files = sorted(p.relative_to(tmp_path / "cold") for p in (tmp_path / "cold").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "warm") for p in (tmp_path / "warm").rglob("*") if p.is_file())


def test_the_child_takes_the_jobs_umask(server, manifests, tmp_path):
    """Outputs get the permissions the job's umask gives, not the server's (tests/test_atomic_outputs.py)."""
    argv = widen_argv(manifests, tmp_path)
    proc = stage(*argv, usage=tmp_path / "usage.json", preexec_fn=lambda: os.umask(0o077))
    assert proc.returncode == 0 and forked(tmp_path / "usage.json"), proc.stderr
    assert (tmp_path / "verify.json").stat().st_mode & 0o077 == 0
    assert all(p.stat().st_mode & 0o077 == 0 for p in (tmp_path / "model").rglob("*"))


def test_a_failing_job_fails_the_same_way(server, tmp_path):
    argv = [
        "model",
        "widen",
        *to_argv(
            {
                "source": str(tmp_path / "missing.json"),
                "out_dir": str(tmp_path / "m"),
                "verify_path": str(tmp_path / "v.json"),
                "to": 128,
            }
        ),
    ]
    cold, forked_job = stage(*argv, cold=True), stage(*argv, usage=tmp_path / "usage.json")
    assert cold.returncode == forked_job.returncode == 2
    assert forked(tmp_path / "usage.json")["status"] == 2
    error = [line for line in cold.stderr.splitlines() if line.startswith("error: ")]
    assert error and error == [line for line in forked_job.stderr.splitlines() if line.startswith("error: ")]
    assert forked_job.stderr.splitlines()[-1] == error[-1]  # the log's last line is the job's own error
    usage = stage("nosuchstage")
    assert usage.returncode == 2 and "usage: python -m workflow_scripts" in usage.stderr


def test_an_import_time_variable_that_differs_starts_cold(server, manifests, tmp_path):
    server_value = os.environ.get("TRANSFORMERS_VERBOSITY", "unset")  # read when transformers loads
    proc = stage(*widen_argv(manifests, tmp_path), env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    assert proc.returncode == 0, proc.stderr
    assert warm_lines(proc.stderr) == [
        f"warm: TRANSFORMERS_VERBOSITY differs (job: error, server: {server_value}); starting cold"
    ]


def test_per_job_thread_counts_are_applied_not_refused(server, manifests, tmp_path):
    """Snakemake sets OMP_NUM_THREADS & co. to each job's `threads`: the child sizes its pools."""
    proc = stage(
        *widen_argv(manifests, tmp_path),
        env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        usage=tmp_path / "usage.json",
    )
    assert proc.returncode == 0, proc.stderr
    assert forked(tmp_path / "usage.json")["status"] == 0 and not warm_lines(proc.stderr)


def test_stages_that_measure_their_own_memory_start_cold(server, demo_assets, tmp_path):
    argv = [
        "data",
        "fetch",
        *to_argv(
            {
                "name": "bright",
                "repo": "org/bright",
                "revision": "a" * 40,
                "repo_type": "dataset",
                "local": str(demo_assets / "BRIGHT"),
                "cache_dir": str(tmp_path / "hub"),
                "manifest": str(tmp_path / "m.json"),
            }
        ),
    ]
    proc = stage(*argv, usage=tmp_path / "usage.json")
    assert proc.returncode == 0, proc.stderr
    assert "data" not in warm.FORKED_STAGES and not warm_lines(proc.stderr) and not read_usage(tmp_path / "usage.json")


def start_server(checkout: Path, address: Path, env: dict) -> subprocess.Popen:
    """A warm server of ``checkout``, started as the Snakefile's onstart does; returns once it listens."""
    server = subprocess.Popen(
        [sys.executable, "-m", "workflow_scripts.warm", str(address), str(os.getpid())],
        cwd=checkout,
        env=env,
        stderr=open(address.with_suffix(".log"), "w"),
    )
    deadline = time.monotonic() + 30
    while not address.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # bound, then listening
    return server


def test_the_child_runs_the_project_code_on_disk_now(tmp_path):
    """The server keeps no project module: an edit made after it started is what runs (its own checkout)."""
    copy = copy_repo(tmp_path / "repo")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    server = start_server(copy, tmp_path / "s.sock", env)
    try:
        module = copy / "workflow_scripts" / "summarize.py"
        module.write_text(module.read_text() + "\nprint('edited after the server started')\n")
        proc = stage(
            "summarize",
            "--help",
            cwd=copy,
            env={**env, warm.ENV_VAR: str(tmp_path / "s.sock")},
            usage=tmp_path / "usage.json",
        )
        assert "edited after the server started" in proc.stdout
        assert forked(tmp_path / "usage.json")["status"] == 0 and proc.returncode == 0, proc.stderr
        other = stage(
            "summarize", "--help", env={**env, "PYTHONPATH": str(REPO), warm.ENV_VAR: str(tmp_path / "s.sock")}
        )
        assert "edited after the server started" not in other.stdout  # another checkout's job runs its own code
    finally:
        server.terminate()
        server.wait()


# A client that asks the server for more than `python -m workflow_scripts` ever does.
RAW_CLIENT = """
import json, os, sys
from workflow_scripts import warm
import socket
argv, path = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ[warm.ENV_VAR])
request = {"argv": argv, "cwd": os.getcwd(), "path": path + sys.path, "env": dict(os.environ), "umask": 0o022,
           "ignored": [], "where": warm._where()}
null = os.open(os.devnull, os.O_RDWR)
warm._send(sock, request, fds=[null, null, null])
reply, _ = warm._receive(sock)
result = warm._receive(sock)[0] if reply and "pid" in reply else None
print(json.dumps({"reply": reply, "result": result}))
"""


@pytest.mark.parametrize("ask", ["its own import path", "a stage that must start cold"])
def test_security_warm_server_runs_only_its_registry_with_its_own_path(server, tmp_path, ask):
    """The server forks only the stages of its own registry and imports from its own checkout, whatever a
    client sends (a sys.path with another workflow_scripts first, a stage the client policy starts cold)."""
    import json

    site = tmp_path / "site"
    (site / "workflow_scripts").mkdir(parents=True)
    marker = tmp_path / "imported"
    (site / "workflow_scripts/__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (site / "workflow_scripts/stages.py").write_text("def run(argv):\n    return 0\n")
    argv = ["summarize", "--help"] if ask == "its own import path" else ["data", "--help"]
    assert argv[0] in STAGES and (argv[0] in warm.FORKED_STAGES) == (ask == "its own import path")
    proc = subprocess.run(
        [sys.executable, "-c", RAW_CLIENT, json.dumps(argv), json.dumps([str(site)])],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(proc.stdout)
    assert not marker.exists(), "the child imported project code from a client-supplied path"
    if ask == "its own import path":
        assert answer["result"]["status"] == 0, answer  # forked, and ran the server's own code
    else:
        assert "must start cold" in answer["reply"]["refused"] and answer["result"] is None


def test_late_or_loud_ctrl_c_during_the_servers_imports(tmp_path):
    """Ctrl-C while the job waits for a server still importing: one line naming the server, no traceback, the
    job ends by SIGINT, and the server forks nothing for it afterwards."""
    address = tmp_path / "s.sock"
    server = start_server(REPO, address, dict(os.environ))
    try:
        client = subprocess.Popen(
            [sys.executable, "-m", "workflow_scripts", "summarize", "--help"],
            cwd=REPO,
            env={**os.environ, warm.ENV_VAR: str(address)},
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's job has it
        )
        deadline = time.monotonic() + 20
        while not psutil.Process(client.pid).net_connections(kind="unix") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "warm: preloaded" not in address.with_suffix(".log").read_text()  # still importing
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=30)
        assert client.returncode == -signal.SIGINT
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("warm: interrupted"), err
        assert str(address) in err.strip().splitlines()[-1] and len(err.strip().splitlines()) == 1
        deadline = time.monotonic() + 60
        while "warm: preloaded" not in address.with_suffix(".log").read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # it has answered the backlog by now
        assert not children_of(server.pid), "a child was forked for a job that was stopped"
    finally:
        server.terminate()
        server.wait()


def children_of(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children()


def long_forked_job(server, out: Path) -> tuple[subprocess.Popen, psutil.Process]:
    """A demo-assets job big enough to run for tens of seconds, and the server's child running it."""
    pid, _ = server
    before = {p.pid for p in children_of(pid)}
    big = ["--queries-per-split", "500", "--documents-per-split", "20000", "--train-rows", "50000"]
    client = subprocess.Popen(
        [sys.executable, "-m", "workflow_scripts", "demo", "make", "--out-dir", str(out), *big],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (new := [p for p in children_of(pid) if p.pid not in before]) and time.monotonic() < deadline:
        time.sleep(0.05)
    [child] = new
    return client, child


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_job_leaves_no_child_running(server, tmp_path, how):
    """Snakemake stops a job by signalling its process: the forked child ends with it."""
    client, child = long_forked_job(server, tmp_path / "assets")
    time.sleep(1.0)  # the child is working
    client.send_signal(how)
    client.wait(timeout=30)
    assert client.returncode == -how
    gone, alive = psutil.wait_procs([child], timeout=warm.GRACE_S + 5)
    assert not alive
    assert not (tmp_path / "assets").exists()  # nothing half-written taken as done


def test_the_server_ends_with_the_run_that_started_it(tmp_path):
    """Snakemake killed without its onsuccess/onerror hooks (SIGKILL): the server notices."""
    address = str(tmp_path / "server.sock")
    parent = subprocess.Popen(
        ["bash", "-c", f'"{sys.executable}" -m workflow_scripts.warm "{address}" $$ & wait'],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not os.path.exists(address) and time.monotonic() < deadline:
        time.sleep(0.05)
    [server_process] = psutil.Process(parent.pid).children()
    parent.kill()
    parent.wait()
    gone, alive = psutil.wait_procs([server_process], timeout=60)  # after its imports, within 0.1 s
    assert not alive and not os.path.exists(address)


def test_the_cost_page_takes_a_forked_jobs_memory_from_its_sidecar_never_its_log(tmp_path):
    bench = tmp_path / "results/x/benchmarks/evaluate/base/pony.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\tmax_vms\n1.50\t0:00:01\t21.3\t30\n")
    log = tmp_path / "results/x/logs/evaluate/base/pony.log"
    log.parent.mkdir(parents=True)
    log.write_text("working\nwarm: child 77 exit 0, peak RSS 999.9 MB, CPU 1.20 s\n")  # the old log line: ignored
    cost = [
        "report",
        "cost",
        *to_argv({"benchmarks": [str(bench)], "out": str(tmp_path / "cost.html"), "train_gpus": 8, "evaluate_gpus": 1}),
    ]
    assert stage(*cost, cold=True).returncode == 0
    assert "<td>21.3</td>" in (tmp_path / "cost.html").read_text()  # a cold job: Snakemake's measurement stands
    write_usage(sidecar(bench), child=77, status=0, maxrss_kb=655.4 * 1024, cpu_s=1.2)
    assert stage(*cost, cold=True).returncode == 0
    page = (tmp_path / "cost.html").read_text()
    assert "655.4 (warm)" in page and "21.3" not in page and "999.9" not in page
    sidecar(bench).write_text("warm: child 77 exit 0, peak RSS 655.4 MB")  # not a usage record: one line, naming it
    broken = stage(*cost, cold=True)
    assert broken.returncode == 2 and broken.stderr.strip().splitlines() == [
        f"error: {sidecar(bench)}: not a job usage record (a JSON object with child, status, max_rss, cpu_time); "
        "delete it and rerun the job"
    ], broken.stderr


def test_a_job_the_kernel_kills_ends_killed_not_with_a_traceback(server, tmp_path):
    """SIGKILL of the child (the OOM killer): the client ends as a killed cold job would (137)."""
    client, child = long_forked_job(server, tmp_path / "assets")
    child.kill()
    _, err = client.communicate(timeout=30)
    assert client.returncode == -signal.SIGKILL and "Traceback" not in err, err


def test_one_vanished_client_does_not_end_the_others_jobs(server, manifests, tmp_path):
    """A client that connects, sends garbage and leaves: the server answers the next job."""
    import socket

    _, address = server
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as rogue:
        rogue.connect(address)
        rogue.sendall(b"\x00\x00\x00\x00\x00\x00\x00\x05{not")
    proc = stage(*widen_argv(manifests, tmp_path), usage=tmp_path / "usage.json")
    assert proc.returncode == 0 and forked(tmp_path / "usage.json"), proc.stderr


# A server whose process started an OpenMP pool before serving (torch's parallel_for): as if an import did.
POOLED_SERVER = """
import sys, torch
torch.set_num_threads(2)
(torch.ones(2000, 2000) * 2).sum()  # a parallel region: libgomp's workers now live
from workflow_scripts import warm
warm.serve(address=sys.argv[1], parent=int(sys.argv[2]))
"""


def test_a_live_openmp_pool_in_the_server_starts_jobs_cold(manifests, tmp_path):
    """A fork copies no native pool's workers: with an OpenMP pool live in the server, the job starts cold,
    the reason in its log, and its output is right. The usual server (no pool started) forks: the other tests."""
    address = tmp_path / "s.sock"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    server = subprocess.Popen(
        [sys.executable, "-c", POOLED_SERVER, str(address), str(os.getpid())],
        cwd=REPO,
        env=env,
        stderr=open(tmp_path / "s.log", "w"),
    )
    try:
        deadline = time.monotonic() + 60
        while "warm: preloaded" not in (tmp_path / "s.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        proc = stage(
            *widen_argv(manifests, tmp_path), env={**env, warm.ENV_VAR: str(address)}, usage=tmp_path / "usage.json"
        )
        assert proc.returncode == 0 and (tmp_path / "verify.json").exists(), proc.stderr
        assert read_usage(tmp_path / "usage.json") is None  # not forked
        [line] = warm_lines(proc.stderr)
        assert "native threads are live" in line and "openmp" in line and line.endswith("; starting cold"), line
        assert not proc.stderr.strip().splitlines()[-1].startswith("warm: ")
    finally:
        server.terminate()
        server.wait()


def test_no_stage_imports_warm_start():
    """Warm start is an opt-in tool of the entry point: importing every stage loads none of it."""
    from workflow_scripts import __main__ as entry

    assert entry.WARM_ENV == warm.ENV_VAR
    stages = "; ".join(f"import workflow_scripts.{module}" for module in STAGES.values())
    check = f"import sys; {stages}; print([m for m in sys.modules if m.startswith('workflow_scripts.warm')])"
    proc = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout
