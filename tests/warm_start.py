"""`omniseg` commands in processes of their own that start warm: forked from a server that has already imported
the command line and torch, instead of a fresh interpreter importing them again (1 to 3 CPU-seconds a command,
the kill tests' largest cost).

The command still runs in its own process, as a user's does: its own pid, its own SQLite connections (the server
never opened one), killed by a real SIGKILL, its exit status and its output as a subprocess gives them. The
server is multiprocessing's fork server (a fresh interpreter that imports the modules below, then forks a child
per command): nothing of the test process (threads, open stores, patched functions) reaches the command.

``OMNISEG_TEST_COLD=1`` runs every such command in a fresh interpreter instead (subprocess), to check that the
two agree.
"""

from __future__ import annotations

import atexit
import io
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: what the commands import anyway (the SDK and smp when a model needs them), loaded once in the server
PRELOAD = ["omniseg.cli", "omniseg.inference.runner", "omniseg.models", "torch", "google.genai",
           "segmentation_models_pytorch", "warm_start"]

_context = None
#: commands not yet ended: killed when the test process exits (a failed test may leave one paused), before
#: multiprocessing's own exit handler would wait for them
_running: set = set()


def _kill_leftovers() -> None:
    for command in list(_running):
        command.kill()


atexit.register(_kill_leftovers)


def cold() -> bool:
    """Fresh interpreters when asked, and under mutmut: each mutant's tests run in a new process, where a server
    would be started (and its preloads imported) for one or two commands."""
    return os.environ.get("OMNISEG_TEST_COLD", "") not in ("", "0") or bool(os.environ.get("MUTANT_UNDER_TEST"))


def _server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _command(code: str, args: list[str], env: dict, cwd: str, out: str, err: str) -> None:
    """In the forked child: become the process ``python -c code *args`` would be, then run it."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    # as a Python whose standard streams are files: UTF-8, stderr with backslashes for what it cannot encode;
    # unbuffered, so a killed command's output up to the kill is there (PYTHONUNBUFFERED, as the tests set)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                                  write_through=True)
    sys.stdin = open(os.devnull)
    sys.argv = ["-c", *args]
    try:
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
    except KeyboardInterrupt:  # what an interpreter does with an uncaught Ctrl-C: dies of SIGINT
        import signal
        import traceback

        traceback.print_exc()
        atexit._run_exitfuncs()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    finally:
        atexit._run_exitfuncs()  # a process forked by multiprocessing ends with os._exit, which skips them


class Command:
    """A command started warm, used as a :class:`subprocess.Popen` with text pipes is (the calls the tests make)."""

    def __init__(self, code: str, args: list, env: dict, cwd: str | None = None):
        self._dir = tempfile.mkdtemp(prefix="omniseg-cmd-")
        self._out, self._err = os.path.join(self._dir, "stdout"), os.path.join(self._dir, "stderr")
        self.args = list(map(str, args))
        self._process = _server().Process(target=_command, args=(code, self.args, dict(env), cwd or os.getcwd(),
                                                                self._out, self._err), daemon=False)
        self._process.start()
        _running.add(self)
        self.pid = self._process.pid
        self.returncode: int | None = None
        self.stdout = self.stderr = None

    def poll(self) -> int | None:
        if self.returncode is None and not self._process.is_alive():
            self._finish()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.is_alive():
            raise subprocess.TimeoutExpired(self.args, timeout)
        self._finish()
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.stdout.read(), self.stderr.read()

    def kill(self) -> None:
        if self.returncode is None:
            self._process.kill()

    def _finish(self) -> None:
        if self.returncode is not None:
            return
        self._process.join()
        _running.discard(self)
        self.returncode = self._process.exitcode
        # the output as text pipes give it (universal newlines), kept in memory: the folder goes now (a command
        # killed before it got going wrote nothing)
        out, err = (Path(p) for p in (self._out, self._err))
        self.stdout, self.stderr = (io.StringIO(p.read_text(encoding="utf-8", errors="replace") if p.exists() else "")
                                    for p in (out, err))
        shutil.rmtree(self._dir, ignore_errors=True)
        self._process.close()


def start(code: str, args: list, env: dict):
    """``python -c code *args`` with ``env``: warm (a :class:`Command`), or a real Popen with OMNISEG_TEST_COLD."""
    if cold():
        return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return Command(code, args, env)


def run(code: str, args: list, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """The same to its end, as :func:`subprocess.run` with ``capture_output=True, text=True`` gives it."""
    proc = start(code, args, env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


#: ``python -m omniseg.cli ARGS`` as code for :func:`run` (what the console script runs)
CLI = "import sys\nfrom omniseg.cli import app\nsys.argv = ['omniseg'] + sys.argv[1:]\napp()\n"


def omniseg(args: list, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``omniseg ARGS`` to its end in a process of its own, started warm (a rerun after a kill, say)."""
    return run(CLI, args, os.environ.copy() if env is None else env, timeout)
