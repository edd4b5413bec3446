"""'Another host' for xdist workers: OpenSSH's server on a loopback port, and two users.

The controller runs as one user and logs in, with a key made for the test, as another
whose home it cannot read: a worker there measures in a folder the controller never sees,
as on another machine. Needs Debian's `openssh-server` (`scripts/setup.sh test` installs
it) and root (to add the users and to let sshd log them in); without either the test
skips, and fails under CI (where setup ran as root), so that CI never skips it unseen.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
REPO = Path(__file__).resolve().parent.parent
#: The controller's user and the worker's: fixed names, made by the test and removed after.
CONTROLLER_USER = "llmperf-ctl"
WORKER_USER = "llmperf-wrk"


@dataclass(frozen=True)
class SshHost:
    port: int
    #: The controller user's private key, which the worker user's account accepts.
    key: Path
    controller_home: Path
    worker_home: Path

    def tx(self, python: str, chdir: Path) -> str:
        """The `--tx` spec of a worker that logs in as the worker user and runs there."""
        options = (
            f"-p {self.port} -i {self.key} -o BatchMode=yes -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
        )
        return f"ssh={options} {WORKER_USER}@127.0.0.1//python={python}//chdir={chdir}"

    def as_controller(self, argv: list[str]) -> list[str]:
        """`argv` run as the controller's user, at home, with nothing of root's environment."""
        env = [f"HOME={self.controller_home}", f"PATH={os.environ.get('PATH', '')}"]
        return ["runuser", "-u", CONTROLLER_USER, "--", "env", "-i", *env, *argv]

    @property
    def python(self) -> list[str]:
        """A Python the two users can run, with this checkout and this environment's
        packages: this one, or the system's of the same version where this one lives in a
        folder only its owner may enter (a pyenv build under /root)."""
        paths = dict.fromkeys(
            [str(REPO), *(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))]
        )
        env = ["env", f"PYTHONPATH={':'.join(paths)}"]
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        for python in (sys.executable, f"/usr/bin/{version}"):
            probe = [*env, python, "-c", "import pytest_llmperf, xdist, transformers"]
            if subprocess.run(self.as_controller(probe), capture_output=True).returncode == 0:
                return [*env, python]
        _skip_or_fail(
            f"no Python the test's users can run with this checkout ({REPO}) and its packages: "
            f"neither {sys.executable} nor /usr/bin/{version} (the checkout and its environment "
            "must be readable by other users)"
        )
        raise AssertionError("unreachable")


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


def _add_user(name: str) -> Path:
    if subprocess.run(["id", name], capture_output=True, check=False).returncode == 0:
        _run("userdel", "-r", name)  # left by a killed run: made afresh
    # No password, but not locked ('*', not useradd's '!'): sshd refuses locked accounts.
    _run("useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", name)
    home = Path(f"/home/{name}")
    home.chmod(0o700)  # neither user can read the other's folder
    return home


@contextmanager
def ssh_host() -> Iterator[SshHost]:
    """sshd on a free loopback port, the two users and the key; all removed at the end."""
    if not SSHD.exists():
        _skip_or_fail("openssh-server is not installed (scripts/setup.sh test installs it)")
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("runuser") is None:
        _skip_or_fail("the SSH worker test adds two users and starts sshd: it needs root")
    with tempfile.TemporaryDirectory(prefix="llmperf-sshd-") as folder:
        state = Path(folder)
        server: subprocess.Popen[str] | None = None
        try:
            controller_home, worker_home = _add_user(CONTROLLER_USER), _add_user(WORKER_USER)
            key = controller_home / ".ssh" / "id_ed25519"
            key.parent.mkdir(mode=0o700)
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
            _run("chown", "-R", f"{CONTROLLER_USER}:", str(key.parent))
            authorized = worker_home / ".ssh" / "authorized_keys"
            authorized.parent.mkdir(mode=0o700)
            authorized.write_text(key.with_suffix(".pub").read_text())
            authorized.chmod(0o600)
            _run("chown", "-R", f"{WORKER_USER}:", str(authorized.parent))
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(state / "host_key"))
            port = _free_port()
            (state / "sshd_config").write_text(
                f"Port {port}\nListenAddress 127.0.0.1\nHostKey {state / 'host_key'}\n"
                f"PidFile {state / 'sshd.pid'}\nUsePAM no\nPasswordAuthentication no\n"
                f"KbdInteractiveAuthentication no\nAllowUsers {WORKER_USER}\n"
            )
            Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation folder
            server = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(state / "sshd_config")],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            _wait_for(port, server)
            yield SshHost(port, key, controller_home, worker_home)
        finally:
            if server is not None:
                server.terminate()
                server.communicate(timeout=30)
            for user in (CONTROLLER_USER, WORKER_USER):
                subprocess.run(["userdel", "-r", user], capture_output=True, check=False)


def _wait_for(port: int, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            out = server.stdout.read() if server.stdout else ""
            raise RuntimeError(f"sshd exited with {server.returncode}: {out[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within 30 s")
