"""New processes for CLI commands, without paying Python's start-up for each one.

One server process imports ``lit_tutorial`` (about 5 s here) and then forks a child for each batch of commands. A child
starts from the server's state right after those imports, as ``python -m lit_tutorial`` would: it shares nothing
with the tests' process, the server runs no command itself, and no child sees another's. A child runs its
commands one after another and exits; its status is what a shell would see (0, 2 for a user error, -9 when killed
by SIGKILL).
"""

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def env_with_tests_on_path() -> dict[str, str]:
    """The environment for a new Python process that imports this checkout's ``lit_tutorial`` from any working
    directory, and from tests/ (e.g. ``conftest.InterruptAt`` named in a command's ``--trainer.callbacks``)."""
    path = os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}

_SERVER = r"""
import json, os, sys, traceback
import torchvision
# Hand-made CIFAR10 files cannot match torchvision's md5 sums (see conftest.trust_cifar_files).
torchvision.datasets.cifar.check_integrity = lambda *args, **kwargs: True
from lit_tutorial.cli import main

protocol = os.fdopen(os.dup(1), "w")
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        os.dup2(2, 1)  # what the child prints goes with its stderr, not into the protocol
        code = 0
        try:
            for args in json.loads(line):
                main(args)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    protocol.write(f"{os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}\n")
    protocol.flush()
"""


class FreshProcesses:
    """``run(args, ...)`` runs CLI commands one after another in one new process and returns its exit status;
    ``output()`` is what that process printed (stdout and stderr)."""

    def __init__(self, cwd: Path) -> None:
        self._log, self._start = tempfile.TemporaryFile(mode="w+"), 0
        self._server = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=cwd,
                                        env=env_with_tests_on_path(), start_new_session=True)

    def run(self, *commands: list[str], timeout: float = 300) -> int:
        self._start = self._log.seek(0, os.SEEK_END)
        self._server.stdin.write(json.dumps(commands) + "\n")
        self._server.stdin.flush()
        if not select.select([self._server.stdout], [], [], timeout)[0]:
            os.killpg(self._server.pid, signal.SIGKILL)  # the server and its children: their own process group
            raise AssertionError(f"no result after {timeout} s:\n{self.output()[-3000:]}")
        line = self._server.stdout.readline()
        assert line, f"the process server died:\n{self.output()[-3000:]}"
        return int(line)

    def output(self) -> str:
        self._log.seek(self._start)
        return self._log.read()

    def close(self) -> None:
        self._server.stdin.close()
        self._server.wait(timeout=60)
        self._log.close()
