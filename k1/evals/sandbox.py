"""Run untrusted Python programs (model-written code) in their own process, with limits.

    result = run_python("print(sum(map(int, input().split())))", stdin="1 2\\n")
    result.ok, result.stdout          # True, "3\\n"
    isolation()                       # which guards this machine gives (see docs/evals.md)

Each program runs in a fresh temporary directory (its cwd and HOME), with a minimal environment,
under these layers, strongest first where the machine allows them:

1. Namespaces (`unshare`): a user namespace (the program holds no privilege on the host, so it cannot
   raise its own limits), a network namespace (no interface but a down loopback: no network at all),
   a PID namespace (it cannot see or signal host processes, and everything it starts dies with it).
2. A process-count limit: a pids cgroup (`pids.max`) when the evaluator can create one (root), else
   RLIMIT_NPROC set above the user's current process count before the program starts.
3. rlimits: CPU seconds, address space, file size, open files, no core dumps.
4. A Python-level guard (an audit hook installed before the program runs): no sockets, no new
   processes, no ctypes, no changing limits, and no file access outside the work directory except
   reading the standard library.
5. A wall-clock timeout that kills the whole process group (and cgroup / namespace).

Limits of each layer are stated honestly in docs/evals.md: the audit hook is not a security boundary
against code written to defeat it; filesystem confinement is Python-level only.

The supervisor/worker design: the interpreter started here first forks; the parent (the supervisor,
PID 1 of the namespace) only waits and reports how the worker ended through a pipe, because
`unshare` reports a signal death as a plain exit status 1. When the supervisor exits, the kernel
kills whatever the worker left behind in the namespace.
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from k1.errors import K1Error

# Hard ceilings on what a caller may ask for: a typo must not give a program an hour or 1 TB.
MAX_TIMEOUT_S = 3600.0
MAX_MEMORY_MB = 65536
MAX_FILE_SIZE_MB = 4096
MAX_PROCESSES = 4096
MAX_OPEN_FILES = 4096
MAX_OUTPUT_BYTES = 64 << 20
MAX_SOURCE_BYTES = 16 << 20
MAX_STDIN_BYTES = 256 << 20

_CGROUP_V1 = Path("/sys/fs/cgroup/pids")
_CGROUP_V2 = Path("/sys/fs/cgroup")
_CGROUP_PREFIX = "k1-sandbox-"
_counter = itertools.count()


@dataclass(frozen=True)
class Limits:
    """What one program run may use. Defaults suit benchmark solutions (HumanEval, MBPP, LiveCodeBench)."""

    timeout_s: float = 10.0
    """Wall-clock seconds before the whole run is killed."""
    cpu_s: int = 10
    """CPU seconds (RLIMIT_CPU): SIGXCPU, then SIGKILL one second later."""
    memory_mb: int = 1024
    """Address space (RLIMIT_AS), MiB: allocations beyond it raise MemoryError."""
    file_size_mb: int = 16
    """Largest file the program may write, stdout included (RLIMIT_FSIZE), MiB."""
    max_processes: int = 32
    """Processes and threads the program may have at once (pids cgroup or RLIMIT_NPROC)."""
    max_open_files: int = 64
    """RLIMIT_NOFILE."""
    max_output_bytes: int = 1 << 20
    """stdout/stderr kept for scoring; the rest is dropped."""
    guard: bool = True
    """Install the Python-level guard (audit hook). Off only to test the OS layers on their own."""
    namespaces: bool = True
    """Use user/network/PID namespaces where `unshare` allows them."""
    cgroup: bool = True
    """Use a pids cgroup where one can be created."""

    def validate(self) -> Limits:
        checks = [
            ("timeout_s", 0 < self.timeout_s <= MAX_TIMEOUT_S),
            ("cpu_s", 1 <= self.cpu_s <= MAX_TIMEOUT_S),
            ("memory_mb", 16 <= self.memory_mb <= MAX_MEMORY_MB),
            ("file_size_mb", 1 <= self.file_size_mb <= MAX_FILE_SIZE_MB),
            ("max_processes", 1 <= self.max_processes <= MAX_PROCESSES),
            ("max_open_files", 16 <= self.max_open_files <= MAX_OPEN_FILES),
            ("max_output_bytes", 1 <= self.max_output_bytes <= MAX_OUTPUT_BYTES),
        ]
        for name, ok in checks:
            if not ok:
                raise K1Error(
                    f"sandbox limit {name}={getattr(self, name)} is out of range; see docs/evals.md"
                )
        return self


@dataclass
class RunResult:
    """How one program run ended."""

    returncode: int | None
    """Exit status; negative for a signal (as subprocess); None when it was killed on timeout."""
    stdout: str
    stderr: str
    timed_out: bool = False
    completed: bool = False
    """The program ran to its end (the evaluator's end marker was printed after it)."""
    reason: str = ""
    """One word or phrase: ok, exit 1, timeout, cpu limit, memory limit, file size limit, signal ..."""
    wall_s: float = 0.0
    layers: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


# ---------------------------------------------------------------------------------------------
# What this machine allows


@dataclass(frozen=True)
class Isolation:
    namespaces: tuple[str, ...]
    """The `unshare` command prefix in use ((), when namespaces are unavailable)."""
    cgroup: str | None
    """"v1" or "v2" when a pids cgroup can be created per run, else None."""
    nproc_rlimit: bool
    """RLIMIT_NPROC is enforced for this user (it is not for root)."""

    def describe(self) -> dict:
        return {
            "user_namespace": "--user" in self.namespaces,
            "network_namespace": "--net" in self.namespaces,
            "pid_namespace": "--pid" in self.namespaces,
            "process_limit": "cgroup-" + self.cgroup
            if self.cgroup
            else ("rlimit" if self.nproc_rlimit else "none"),
        }


_NS_CANDIDATES = (
    ("unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--"),
    ("unshare", "--net", "--pid", "--fork", "--kill-child", "--"),
)


@functools.cache
def isolation() -> Isolation:
    """Probe once which OS layers work here (each probe is a trivial run)."""
    if sys.platform != "linux":
        raise K1Error("the code sandbox needs Linux (rlimits, namespaces); run code tasks on a Linux machine")
    prefix: tuple[str, ...] = ()
    if shutil.which("unshare"):
        for candidate in _NS_CANDIDATES:
            try:
                done = subprocess.run(
                    [*candidate, sys.executable, "-I", "-S", "-c", "pass"],
                    capture_output=True,
                    timeout=20,
                    env=_minimal_env(tempfile.gettempdir()),
                )
            except (OSError, subprocess.TimeoutExpired):
                continue
            if done.returncode == 0:
                prefix = candidate
                break
    cgroup = None
    try:
        probe = _Cgroup.create(4)
    except OSError:
        probe = None
    if probe is not None:
        cgroup = probe.version
        probe.remove()
    return Isolation(prefix, cgroup, os.geteuid() != 0)


class _Cgroup:
    """A pids cgroup for one run: caps processes+threads and lets us kill every member at the end."""

    def __init__(self, path: Path, version: str):
        self.path, self.version = path, version

    @classmethod
    def create(cls, max_pids: int) -> _Cgroup | None:
        if os.geteuid() != 0:
            return None  # unprivileged users rarely own a delegated subtree; RLIMIT_NPROC covers them
        if _CGROUP_V1.is_dir() and os.access(_CGROUP_V1, os.W_OK):
            base, version = _CGROUP_V1, "v1"
        elif "pids" in _read(_CGROUP_V2 / "cgroup.subtree_control"):
            base, version = _CGROUP_V2, "v2"
        else:
            return None
        _sweep_stale(base)
        path = base / f"{_CGROUP_PREFIX}{os.getpid()}-{next(_counter)}"
        path.mkdir()
        try:
            (path / "pids.max").write_text(str(max_pids))
        except OSError:
            path.rmdir()
            raise
        return cls(path, version)

    def kill_all(self) -> None:
        # pids.max stops new forks, so repeated sweeps converge even against a fork bomb.
        for _ in range(200):
            pids = [int(p) for p in _read(self.path / "cgroup.procs").split()]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        self.kill_all()
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except OSError as err:
                if err.errno != errno.EBUSY:
                    return
                time.sleep(0.02)  # killed processes are still being reaped


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _sweep_stale(base: Path) -> None:
    """Remove cgroups left by evaluator processes that died without cleaning up."""
    for entry in base.glob(_CGROUP_PREFIX + "*"):
        try:
            owner = int(entry.name[len(_CGROUP_PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
            _Cgroup(entry, "").remove()


def _user_process_count() -> int:
    uid = os.getuid()
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def _minimal_env(home: str) -> dict[str, str]:
    # Nothing from the evaluator's environment (API keys, tokens, paths) reaches the program.
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }


# ---------------------------------------------------------------------------------------------
# The interpreter-side part: runs as `python -I -S -c _BOOT <config fd>` inside the sandbox.
# It is trusted code that sets everything up before one byte of the program runs.

_BOOT = r"""
def _k1_boot():
    import os, resource, sys
    fd = int(sys.argv[1])
    raw = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        raw += chunk
    os.close(fd)
    # "key=value" lines, not JSON: importing json (re, enum, ...) was a fifth of a short run
    cfg = dict(line.split("=", 1) for line in raw.decode("utf-8", "surrogateescape").split("\n") if line)
    for key in ("cpu", "memory", "fsize", "nofile", "nproc", "result_fd", "guard"):
        cfg[key] = int(cfg[key])
    if cfg["cgroup_procs"]:
        with open(cfg["cgroup_procs"], "w") as f:
            f.write("0")
    result_fd = cfg["result_fd"]
    worker = os.fork()
    if worker:
        # Supervisor: reap everything; report how the worker ended; exiting ends the namespace.
        status = None
        while status is None:
            try:
                pid, st = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == worker:
                status = st
        os.write(result_fd, str(-1 if status is None else status).encode())
        os._exit(0)
    os.close(result_fd)

    def cap(res, value):
        soft, hard = resource.getrlimit(res)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(res, (value, value))

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cap(resource.RLIMIT_FSIZE, cfg["fsize"])
    cap(resource.RLIMIT_NOFILE, cfg["nofile"])
    cap(resource.RLIMIT_AS, cfg["memory"])
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    cpu = cfg["cpu"] if hard == resource.RLIM_INFINITY else min(cfg["cpu"], hard - 1)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if cfg["nproc"]:
        cap(resource.RLIMIT_NPROC, cfg["nproc"])

    work = cfg["work"]
    if cfg["guard"]:
        read_roots = tuple(os.path.realpath(p) for p in sys.path if p and os.path.exists(p))
        read_roots += (work,)
        read_files = ("/dev/null", "/dev/urandom", "/dev/random", "/dev/zero")
        write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        refused_prefixes = ("socket.", "ctypes.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn",
                            "resource.", "winreg.", "_winapi.", "pty.", "webbrowser.")
        refused = {"os.system", "os.fork", "os.forkpty", "os.kill", "os.killpg", "signal.pthread_kill",
                   "os.startfile", "sys.remote_exec"}
        refused_modules = {"ctypes", "_ctypes", "_posixsubprocess", "cffi", "_cffi_backend"}
        path_events = {"os.listdir": 1, "os.scandir": 1, "os.chdir": 0, "os.remove": 0, "os.rmdir": 0,
                       "os.mkdir": 0, "os.rename": 0, "os.chmod": 0, "os.chown": 0, "os.link": 0,
                       "os.symlink": 0, "os.truncate": 0, "os.utime": 0, "os.mkfifo": 0, "os.mknod": 0,
                       "os.chflags": 0, "os.lchflags": 0, "os.setxattr": 0, "os.removexattr": 0,
                       "shutil.rmtree": 0, "shutil.copyfile": 0, "shutil.move": 0}
        realpath, fspath, isinstance_, str_, bytes_ = os.path.realpath, os.fspath, isinstance, str, bytes
        sep = os.sep

        def inside(path, roots):
            if isinstance_(path, int):
                return True  # an already open descriptor
            try:
                p = fspath(path)
                if isinstance_(p, bytes_):
                    p = p.decode("utf-8", "surrogateescape")
                p = realpath(p)
            except Exception:
                return False
            return any(p == r or p.startswith(r + sep) for r in roots)

        def hook(event, args):
            if event == "open":
                path, mode, flags = args
                if path is None or isinstance_(path, int):
                    return
                writing = (isinstance_(flags, int) and flags & write_flags) or (
                    isinstance_(mode, str_) and any(c in mode for c in "wax+"))
                if inside(path, (work,)):
                    return
                if not writing and (inside(path, read_roots) or path in read_files):
                    return
                raise PermissionError(f"sandbox: access to {path!r} is not allowed")
            if event == "import":
                if args[0] in refused_modules:
                    raise ImportError(f"sandbox: module {args[0]!r} is not allowed")
                return
            if event in refused or event.startswith(refused_prefixes):
                raise PermissionError(f"sandbox: {event} is not allowed")
            kind = path_events.get(event)
            if kind is not None:
                roots = read_roots if kind == 1 else (work,)
                paths = [a for a in args[:2] if isinstance_(a, (str_, bytes_)) or hasattr(a, "__fspath__")]
                for p in paths:
                    if not inside(p, roots):
                        raise PermissionError(f"sandbox: {event} on {p!r} is not allowed")

        sys.addaudithook(hook)

    import builtins

    def _exit(code=None):
        raise SystemExit(code)

    # `python -S` skips site, which is what defines exit() and quit(); contest code calls them.
    builtins.exit = builtins.quit = _exit
    marker = cfg["marker"].encode()
    main = os.path.join(work, "main.py")
    with open(main, "rb") as f:
        code = compile(f.read(), main, "exec", dont_inherit=True)
    del cfg, raw
    sys.argv = [main]
    scope = {"__name__": "__main__", "__file__": main, "__builtins__": __builtins__}
    exec(code, scope)
    if marker:
        sys.stdout.flush()
        os.write(1, b"\n" + marker + b"\n")


_k1_boot()
"""


# ---------------------------------------------------------------------------------------------
# The evaluator-side part


def run_python(
    source: str, stdin: str = "", limits: Limits | None = None, *, until_end: bool = False
) -> RunResult:
    """Run a Python program; never raises for anything the program does.

    `until_end`: the program must run to its last line (test-style programs, whose asserts come
    last): an evaluator-chosen marker is printed after it and `completed` tells whether it was seen,
    so `exit(0)` or `os._exit(0)` before the tests does not pass.
    """
    limits = (limits or Limits()).validate()
    if len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        return RunResult(None, "", "program too large", reason="program too large")
    if len(stdin.encode("utf-8", "surrogatepass")) > MAX_STDIN_BYTES:
        raise K1Error(
            f"test input of {len(stdin)} characters exceeds the sandbox limit of {MAX_STDIN_BYTES} bytes"
        )
    iso = isolation()
    if "\n" in tempfile.gettempdir():  # the bootstrap's config is one "key=value" per line
        raise K1Error(f"temporary directory {tempfile.gettempdir()!r} has a newline in its path; set TMPDIR")
    work = os.path.realpath(tempfile.mkdtemp(prefix="k1-sandbox-"))
    io_dir = tempfile.mkdtemp(prefix="k1-sandbox-io-")  # outside `work`: the program cannot reach it
    cgroup = None
    nproc = 0
    prefix: list[str] = []
    proc = None
    cfg_r = res_r = res_w = -1
    marker = secrets.token_hex(16) if until_end else ""
    run_token = "k1-run-" + secrets.token_hex(8)
    started = time.monotonic()
    timed_out = False
    try:
        try:
            with open(os.path.join(work, "main.py"), "w", encoding="utf-8", errors="surrogatepass") as f:
                f.write(source)
            stdin_path, out_path, err_path = (os.path.join(io_dir, n) for n in ("stdin", "stdout", "stderr"))
            with open(stdin_path, "w", encoding="utf-8", errors="surrogatepass") as f:
                f.write(stdin)
            if limits.cgroup and iso.cgroup:
                try:
                    cgroup = _Cgroup.create(limits.max_processes + 1)  # +1: the supervisor
                except OSError:
                    cgroup = None
            if cgroup is None and iso.nproc_rlimit:
                nproc = _user_process_count() + limits.max_processes
            prefix = list(iso.namespaces) if limits.namespaces else []
            res_r, res_w = os.pipe()
            cfg = {
                "work": work,
                "cpu": int(limits.cpu_s),
                "memory": int(limits.memory_mb) << 20,
                "fsize": int(limits.file_size_mb) << 20,
                "nofile": int(limits.max_open_files),
                "nproc": nproc,
                "guard": int(limits.guard),
                "marker": marker,
                "cgroup_procs": str(cgroup.path / "cgroup.procs") if cgroup else "",
                "result_fd": res_w,
            }
            cfg_r, cfg_w = os.pipe()
            with os.fdopen(cfg_w, "wb") as f:  # small: fits the pipe buffer, so this cannot block
                f.write("".join(f"{k}={v}\n" for k, v in cfg.items()).encode("utf-8", "surrogateescape"))
            # The run token tags every process of this run (children inherit the command line), so
            # leftovers can be found even without a PID namespace or cgroup.
            argv = [*prefix, sys.executable, "-I", "-S", "-c", _BOOT, str(cfg_r), run_token]
            with open(stdin_path, "rb") as fin, open(out_path, "wb") as fout, open(err_path, "wb") as ferr:
                proc = subprocess.Popen(
                    argv,
                    stdin=fin,
                    stdout=fout,
                    stderr=ferr,
                    cwd=work,
                    env=_minimal_env(work),
                    pass_fds=(cfg_r, res_w),
                    start_new_session=True,
                    close_fds=True,
                )
            os.close(cfg_r)
            cfg_r = -1
            os.close(res_w)
            res_w = -1
            timed_out = not _wait(proc, limits.timeout_s)
        finally:
            if proc is not None:
                _kill_group(proc)
            if cgroup is not None:
                cgroup.remove()
            elif not prefix:
                _kill_tagged(run_token)
            for fd in (cfg_r, res_w):
                if fd >= 0:
                    os.close(fd)
            _rmtree(work)
        wall = time.monotonic() - started
        status = _read_status(res_r)
        stdout = _read_capped(os.path.join(io_dir, "stdout"), limits.max_output_bytes)
        stderr = _read_capped(os.path.join(io_dir, "stderr"), limits.max_output_bytes)
    finally:
        if res_r >= 0:
            os.close(res_r)
        shutil.rmtree(io_dir, ignore_errors=True)
    completed = False
    if marker:
        tail = "\n" + marker + "\n"
        completed = stdout.endswith(tail)
        if completed:
            stdout = stdout[: -len(tail)]
    returncode = _returncode(status, proc, timed_out)
    result = RunResult(
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        completed=completed if marker else returncode == 0,
        wall_s=round(wall, 4),
        layers={
            "user_namespace": "--user" in prefix,
            "network_namespace": "--net" in prefix,
            "pid_namespace": "--pid" in prefix,
            "process_limit": "cgroup" if cgroup is not None else ("rlimit" if nproc else "none"),
            "python_guard": limits.guard,
        },
    )
    result.reason = _reason(result)
    return result


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for the process to end; False on timeout.

    Popen.wait(timeout) polls with sleeps of up to 50 ms, which was most of a short run's cost; a
    pidfd becomes readable the moment the process exits.
    """
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not ready:
        return False
    proc.wait()
    return True


def _kill_group(proc: subprocess.Popen) -> None:
    # start_new_session made the program's process group id equal to its pid.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _kill_tagged(token: str) -> None:
    """Kill processes whose command line carries this run's token (escaped the process group)."""
    needle = token.encode()
    for _ in range(20):
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if needle not in f.read():
                        continue
                os.kill(int(entry.name), signal.SIGKILL)
                found = True
            except (OSError, ValueError):
                pass
        if not found:
            return
        time.sleep(0.01)


def _read_status(fd: int) -> int | None:
    os.set_blocking(fd, False)
    try:
        raw = os.read(fd, 4096)
    except BlockingIOError:
        return None
    try:
        status = int(raw)
    except ValueError:
        return None
    return None if status < 0 else status


def _returncode(status: int | None, proc: subprocess.Popen | None, timed_out: bool) -> int | None:
    if timed_out:
        return None
    if status is not None:
        if os.WIFSIGNALED(status):
            return -os.WTERMSIG(status)
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
    return proc.returncode if proc is not None else None


def _reason(r: RunResult) -> str:
    if r.timed_out:
        return "timeout"
    if r.returncode == 0:
        return "ok" if r.completed else "exited before the end"
    if r.returncode is None:
        return "did not start"
    tail = r.stderr[-2000:]
    if r.returncode == -signal.SIGXCPU:
        return "cpu limit"
    if "MemoryError" in tail:
        return "memory limit"
    if r.returncode == -signal.SIGXFSZ or "File too large" in tail:
        return "file size limit"
    if "sandbox:" in tail:
        return "refused by guard"
    if r.returncode < 0:
        return (
            f"signal {signal.Signals(-r.returncode).name}"
            if -r.returncode in signal.valid_signals()
            else "signal"
        )
    return f"exit {r.returncode}"


def _read_capped(path: str, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


def _rmtree(path: str) -> None:
    """Remove a work dir even if the program made parts of it unreadable."""

    def fix(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


# ---------------------------------------------------------------------------------------------
# Many runs at once


def run_many(
    jobs: list[tuple[str, str, bool]], limits: Limits | None = None, workers: int = 2, progress=None
) -> list[RunResult]:
    """Run (source, stdin, until_end) jobs on `workers` threads; results in job order."""
    from concurrent.futures import ThreadPoolExecutor

    results: list[RunResult | None] = [None] * len(jobs)
    lock = threading.Lock()

    def one(i: int) -> None:
        source, stdin, until_end = jobs[i]
        results[i] = run_python(source, stdin, limits, until_end=until_end)
        if progress is not None:
            with lock:
                progress()

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, range(len(jobs))))
    return [r for r in results if r is not None]


def describe_limits(limits: Limits) -> dict:
    return {**asdict(limits), **isolation().describe()}
