"""ketchd on TCP: TLS with client verification, through the docker CLI.

The certificates are made with openssl for 127.0.0.1 in the test's network namespace,
and the docker CLI runs in that namespace too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.daemon import VENV_BIN, KetchDaemon
from support.restart import restart_ketchd

pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None or shutil.which("openssl") is None,
    reason="the docker CLI or openssl is not installed",
)

PORT = 23760


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> None:
    """Make a CA, a server certificate for 127.0.0.1 and a client certificate."""
    directory.mkdir(exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=directory)  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", cwd=directory)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
                "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem", cwd=directory)  # fmt: skip


@pytest.fixture(scope="module")
def tls_daemon(daemon: KetchDaemon) -> KetchDaemon:
    certificates = daemon.root / "tls"
    make_certificates(certificates)
    restart_ketchd(
        daemon,
        "--host", f"tcp://127.0.0.1:{PORT}", "--tlsverify",
        "--tlscacert", str(certificates / "ca.pem"),
        "--tlscert", str(certificates / "server.pem"),
        "--tlskey", str(certificates / "server-key.pem"),
        kill_signal=15,
    )  # fmt: skip
    return daemon


def docker_tcp(
    daemon: KetchDaemon, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DOCKER_CONFIG=str(daemon.root / "docker"))
    env.pop("DOCKER_HOST", None)
    command = ["docker", "-H", f"tcp://127.0.0.1:{PORT}", *args]
    # Without input the CLI's stdin is /dev/null, so it ends at once, as in a script.
    return subprocess.run(
        daemon.namespace.command(command),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def docker_tls(
    daemon: KetchDaemon, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI over TLS with the client certificate."""
    certificates = daemon.root / "tls"
    return docker_tcp(
        daemon, "--tlsverify",
        "--tlscacert", str(certificates / "ca.pem"),
        "--tlscert", str(certificates / "client.pem"),
        "--tlskey", str(certificates / "client-key.pem"),
        *args, stdin=stdin,
    )  # fmt: skip


def test_tls_client_with_certificate(tls_daemon: KetchDaemon) -> None:
    result = docker_tls(tls_daemon, "version", "--format", "{{.Server.APIVersion}}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1.45\n"


# The docker CLI half-closes a hijacked connection once its stdin ends, which over TLS is
# a close_notify alert. The container's output and exit code must still arrive after it.


def test_tls_run_prints_output(tls_daemon: KetchDaemon) -> None:
    result = docker_tls(tls_daemon, "run", "--rm", "busybox", "echo", "via-tls")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "via-tls\n"


def test_tls_run_exit_code(tls_daemon: KetchDaemon) -> None:
    result = docker_tls(tls_daemon, "run", "--rm", "busybox", "sh", "-c", "echo late; exit 3")
    assert result.stdout == "late\n"
    assert result.returncode == 3


def test_tls_exec_output_and_exit_code(tls_daemon: KetchDaemon) -> None:
    started = docker_tls(tls_daemon, "run", "-d", "--name", "tls-exec", "busybox", "sleep", "300")
    assert started.returncode == 0, started.stderr
    try:
        printed = docker_tls(tls_daemon, "exec", "tls-exec", "echo", "out")
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout == "out\n"

        failed = docker_tls(tls_daemon, "exec", "tls-exec", "sh", "-c", "exit 4")
        assert failed.returncode == 4, failed.stderr

        # With -i the half-close comes after stdin's bytes, which must reach the process.
        echoed = docker_tls(tls_daemon, "exec", "-i", "tls-exec", "cat", stdin="piped\n")
        assert echoed.returncode == 0, echoed.stderr
        assert echoed.stdout == "piped\n"

        assert "ended without an exit code" not in tls_daemon.log_text()
    finally:
        docker_tls(tls_daemon, "rm", "-f", "tls-exec")


def test_tls_client_without_certificate_rejected(tls_daemon: KetchDaemon) -> None:
    certificates = tls_daemon.root / "tls"
    result = docker_tcp(tls_daemon, "--tls", "--tlscacert", str(certificates / "ca.pem"), "version")
    assert result.returncode != 0
    assert "TLS handshake with 127.0.0.1:" in tls_daemon.log_text()


def test_plain_tcp_refused_without_flag(daemon: KetchDaemon) -> None:
    command = [
        str(VENV_BIN / "ketchd"), "--host", "tcp://127.0.0.1:23761",
        "--data-root", str(daemon.root / "other-data"), "--exec-root", str(daemon.root / "oe"),
    ]  # fmt: skip
    # Were the flag check to pass, this ketchd would set up networks, so it runs in the
    # fixture's namespace and not on the host's.
    result = subprocess.run(
        daemon.namespace.command(command), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "TCP needs TLS client verification" in result.stderr
