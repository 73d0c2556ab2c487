"""Debian's nginx in the foreground on a free loopback port, its files in a temp dir."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from support import MS, TIMEOUT

NGINX = Path(os.environ.get("NGINX", "/usr/sbin/nginx"))
SITE = Path(__file__).resolve().parents[1] / "deploy" / "nginx.conf"

# A directive the user changes: `name value;  # CHANGE ...`
CHANGE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<name>\w+)[ \t]+(?P<value>[^;#\n]*);[ \t]*# CHANGE.*$", re.M
)


def fill_site(
    text: str,
    *,
    http_port: int,
    https_port: int,
    certificate: tuple[Path, Path],
    upstreams: list[int],
) -> str:
    """The shipped site config with its "# CHANGE" lines filled in for loopback, and no other."""
    servers = iter([[f"127.0.0.1:{port}" for port in upstreams]])

    def fill(match: re.Match[str]) -> str:
        name, value, indent = match["name"], match["value"].split(), match["indent"]
        if name == "server":
            # The first upstream line becomes all of them, its parameters kept; the others go.
            parameters = "".join(f" {word}" for word in value[1:])
            addresses = next(servers, [])
            return "\n".join(f"{indent}server {address}{parameters};" for address in addresses)
        filled = {
            "listen": f"127.0.0.1:{https_port} ssl" if "ssl" in value else f"127.0.0.1:{http_port}",
            "server_name": "localhost",
            "ssl_certificate": str(certificate[0]),
            "ssl_certificate_key": str(certificate[1]),
        }
        assert name in filled, f"a line marked CHANGE the tests cannot fill: {match[0]!r}"
        return f"{indent}{name} {filled[name]};"

    return CHANGE.sub(fill, text)


def nginx_missing() -> str | None:
    """Say what is missing to run nginx with a self-signed certificate, or return None."""
    if not NGINX.exists():
        return f"no nginx at {NGINX}: apt-get install nginx (or set NGINX=path)"
    if shutil.which("openssl") is None:
        return "no openssl command: apt-get install openssl"
    return None


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Make a certificate for localhost and 127.0.0.1 and its key; return their paths."""
    certificate, key = directory / "cert.pem", directory / "key.pem"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -addext"
    names = "subjectAltName=DNS:localhost,IP:127.0.0.1"
    subprocess.run(
        [*command.split(), names, "-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
    )
    return certificate, key


class NginxProcess:
    """nginx in the foreground serving ``site``, with its pid, logs and temp files in ``directory``.

    ``site`` is what goes inside nginx's http block, as a file in sites-enabled/ would; the
    main configuration around it keeps every path nginx writes to inside ``directory``, so no
    root paths are needed.
    """

    def __init__(
        self, site: str, directory: Path, timeout: float = 5 * TIMEOUT, connections: int = 256
    ) -> None:
        self.directory = directory
        # The workers drop root privileges: let them into the directory for their temp files.
        directory.chmod(0o755)
        (directory / "site.conf").write_text(site)
        temp_paths = "\n".join(
            f"    {kind}_temp_path {directory / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        config = directory / "nginx.conf"
        config.write_text(
            f"pid {directory / 'nginx.pid'};\n"
            f"error_log {self.error_log_path} info;\n"
            "worker_processes 1;\n"
            f"events {{ worker_connections {connections}; }}\n"
            "http {\n"
            f"    access_log {self.access_log_path};\n"
            f"{temp_paths}\n"
            f"    include {directory / 'site.conf'};\n"
            "}\n"
        )
        self.process = subprocess.Popen(
            [str(NGINX), "-p", str(directory), "-c", str(config), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # nginx writes its pid file once it listens.
        pid_file = directory / "nginx.pid"
        deadline = time.monotonic() + timeout
        while not (pid_file.exists() and pid_file.read_text().strip() == str(self.process.pid)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("nginx did not start:\n" + self.error_log)
            time.sleep(10 * MS)

    @property
    def error_log_path(self) -> Path:
        return self.directory / "error.log"

    @property
    def access_log_path(self) -> Path:
        return self.directory / "access.log"

    @property
    def error_log(self) -> str:
        path = self.error_log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 5 * TIMEOUT) -> int:
        """Stop nginx and its worker with SIGTERM (SIGQUIT would wait for every open WebSocket).

        Return its exit status. Killing the master alone would leave its worker running.
        """
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def close(self) -> None:
        """Stop nginx if it still runs."""
        if self.process.poll() is None:
            self.stop()
        self.process.wait()
