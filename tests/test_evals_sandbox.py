"""The code sandbox contains hostile programs and goes on.

Every hostile program runs under small limits and short timeouts, so the shared machine stays
healthy: the fork bomb gets 8 processes at most, and only where an OS-level process limit exists.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from k1.errors import K1Error
from k1.evals.sandbox import Limits, isolation, run_many, run_python

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self"), reason="the sandbox needs Linux")

SMALL = Limits(timeout_s=5, cpu_s=2, memory_mb=256, file_size_mb=2, max_processes=8)


def _our_processes() -> list[int]:
    """Sandbox processes alive on this machine (they all run the `_k1_boot` bootstrap)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    cmd = f.read()
                with open(f"/proc/{entry.name}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if b"_k1_boot" in cmd and state != "Z":
                found.append(int(entry.name))
    return found


def _sandbox_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("k1-sandbox-*")}


@pytest.fixture
def healthy():
    """After the test: no sandbox process left, no work dir left, and the harness still runs programs."""
    dirs = _sandbox_dirs()
    yield
    deadline = time.monotonic() + 5
    while _our_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _our_processes() == []
    assert _sandbox_dirs() <= dirs
    r = run_python("print(6 * 7)", "", SMALL)
    assert r.ok and r.stdout == "42\n"


def test_runs_programs_and_reads_stdin(healthy):
    r = run_python("import sys\nprint(sum(map(int, sys.stdin.read().split())))", "1 2 3\n", SMALL)
    assert (r.ok, r.stdout, r.reason) == (True, "6\n", "ok")
    assert r.layers["python_guard"] and r.layers["process_limit"] in ("cgroup", "rlimit", "none")
    assert r.layers["network_namespace"] == ("--net" in isolation().namespaces)
    r = run_python("raise ValueError('bad')", "", SMALL)
    assert not r.ok and r.returncode == 1 and "ValueError: bad" in r.stderr


def test_exiting_before_the_tests_does_not_pass(healthy):
    """A candidate that exits with status 0 before the asserts run must not count as passing."""
    for early_exit in ("import sys\nsys.exit(0)", "import os\nos._exit(0)", "exit()"):
        r = run_python(early_exit + "\nassert False, 'tests'\n", "", SMALL, until_end=True)
        assert r.returncode == 0 and not r.completed and r.reason == "exited before the end"
    r = run_python("x = 1\nassert x == 1\nprint('done')", "", SMALL, until_end=True)
    assert r.completed and r.stdout == "done\n"  # the end marker is stripped


@pytest.mark.skipif(
    not (isolation().cgroup or isolation().nproc_rlimit),
    reason="no OS-level process limit here (root without a pids cgroup): only the guard stops forks",
)
def test_fork_bomb_is_capped_by_the_os(healthy):
    bomb = (
        "import os, time\n"
        "n = 0\n"
        "while True:\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        n = 0\n"
        "        continue\n"
        "    n += 1\n"
        "os.write(1, f'{n}\\n'.encode())\n"
        "time.sleep(60)\n"
    )
    limits = Limits(timeout_s=1.5, cpu_s=2, memory_mb=256, max_processes=8, guard=False)
    started = time.monotonic()
    r = run_python(bomb, "", limits)
    assert r.timed_out and time.monotonic() - started < 8
    forks = sum(int(x) for x in r.stdout.split())
    assert 0 < forks < limits.max_processes  # every process counted its successful forks


def test_fork_bomb_is_refused_by_the_guard(healthy):
    r = run_python("import os\nwhile True:\n    os.fork()\n", "", SMALL)
    assert r.returncode == 1 and "os.fork is not allowed" in r.stderr


def test_infinite_loops_are_stopped(healthy):
    started = time.monotonic()
    r = run_python("while True:\n    pass\n", "", Limits(timeout_s=10, cpu_s=1))
    assert r.reason == "cpu limit" and time.monotonic() - started < 5
    r = run_python("import time\ntime.sleep(100)\n", "", Limits(timeout_s=1, cpu_s=5))
    assert r.timed_out and r.reason == "timeout" and r.wall_s < 4


def test_memory_hog_gets_memory_error(healthy):
    r = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(10**7))\n", "", SMALL)
    assert r.reason == "memory limit" and "MemoryError" in r.stderr


def test_huge_file_and_huge_output_are_capped(healthy):
    r = run_python(
        "with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 10**6)\n", "", SMALL
    )
    assert r.reason == "file size limit"
    r = run_python(
        "while True:\n    print('y' * 1000)\n", "", Limits(timeout_s=5, file_size_mb=1, max_output_bytes=4096)
    )
    assert not r.ok and len(r.stdout) <= 4096


def test_writing_outside_its_directory_is_refused(healthy, tmp_path):
    target = tmp_path / "escaped.txt"
    for program in (
        f"open({str(target)!r}, 'w').write('x')",
        f"import os\nos.close(os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT))",
        f"import os\nos.symlink({str(target)!r}, 'link')\nopen('link', 'w').write('x')",
        f"import shutil\nopen('a', 'w').write('x')\nshutil.copy('a', {str(target)!r})",
        "import os\nos.chdir('/')\nopen('k1-escape', 'w')",
    ):
        r = run_python(program, "", SMALL)
        assert not r.ok and "sandbox:" in r.stderr, program
    assert not target.exists() and not Path("/k1-escape").exists()
    r = run_python("open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())", "", SMALL)
    assert r.ok and r.stdout == "ok\n"  # its own directory is writable


def test_reading_the_evaluators_files_and_environment_is_refused(healthy, tmp_path, monkeypatch):
    secret = tmp_path / "expected_outputs.txt"
    secret.write_text("SECRET-ANSWERS")
    monkeypatch.setenv("K1_TEST_SECRET", "SECRET-KEY")
    for program in (
        f"print(open({str(secret)!r}).read())",
        f"import os\nprint(os.listdir({str(tmp_path)!r}))",
        "print(open('/proc/self/environ').read())",
        f"print(open({__file__!r}).read())",
    ):
        r = run_python(program, "", SMALL)
        assert not r.ok and "SECRET" not in r.stdout and "sandbox:" in r.stderr, program
    r = run_python("import os\nprint(dict(os.environ))", "", SMALL)
    assert r.ok and "SECRET-KEY" not in r.stdout and "K1_TEST_SECRET" not in r.stdout


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    hits: list[int] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                hits.append(1)
                conn.close()
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], hits
    stop.set()
    thread.join()
    server.close()


def test_sockets_are_refused(healthy, listener):
    port, hits = listener
    connect = (
        f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')"
    )
    r = run_python(connect, "", SMALL)
    assert not r.ok and "socket" in r.stderr and "connected" not in r.stdout
    if "--net" in isolation().namespaces:
        # without the guard, the network namespace alone has no route to the host
        r = run_python(connect, "", Limits(timeout_s=5, guard=False))
        assert not r.ok and "connected" not in r.stdout
    time.sleep(0.2)
    assert hits == []


@pytest.mark.skipif(
    not (isolation().cgroup or isolation().namespaces),
    reason="without a PID namespace or cgroup a daemon is found only by its command line",
)
def test_background_processes_die_with_the_run(healthy, tmp_path):
    """A program that double-forks a daemon into a new session leaves nothing running after it."""
    beat = tmp_path / "beat"
    daemon = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        while True:\n"
        f"            open({str(beat)!r}, 'a').write('.')\n"
        "            time.sleep(0.05)\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
        "print('parent done')\n"
    )
    r = run_python(daemon, "", Limits(timeout_s=5, guard=False))
    assert r.ok and r.stdout == "parent done\n"
    assert beat.exists()  # the daemon did run
    time.sleep(0.2)
    size = beat.stat().st_size
    time.sleep(0.4)
    assert beat.stat().st_size == size


def test_run_many_keeps_order_and_limits_are_validated(healthy):
    jobs = [(f"print({i} * 2)", "", False) for i in range(6)]
    results = run_many(jobs, SMALL, workers=3)
    assert [r.stdout for r in results] == [f"{i * 2}\n" for i in range(6)]
    with pytest.raises(K1Error, match="timeout_s"):
        run_python("pass", "", Limits(timeout_s=0))
    with pytest.raises(K1Error, match="memory_mb"):
        run_python("pass", "", Limits(memory_mb=10**9))
