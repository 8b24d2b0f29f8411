"""docker-compose.yml as an operator runs it, without a container engine: each service's command
and environment from the file (host names pointed at the throwaway PostgreSQL and a Redis of this
test's own), run with config.settings.production as an unprivileged user from a copy of the tree
that user cannot write, where only the declared volumes (and /tmp) are writable."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import yaml
from celery import Celery
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import ROOT, wait_for
from ledger import signing

pytestmark = pytest.mark.celery_worker  # starts real worker processes (not in `make check`)

USER = "nobody"
SEED = "5e0f5c1d2b3a49586776859a4b3c2d1e0f1a2b3c4d5e6f708192a3b4c5d6e7f8"
SECRETS = {
    "SECRET_KEY": "compose-test-" + uuid.uuid4().hex + uuid.uuid4().hex,
    "LEDGER_SIGNING_KEY": SEED,
    "METRICS_TOKEN": "metrics-" + uuid.uuid4().hex,
    "ALLOWED_HOSTS": "market.example.com",
    # Checkpoints within seconds, not a minute: the test waits for one.
    "LEDGER_CHECKPOINT_INTERVAL": "6",
}
# The TLS proxy in front of web: it names the host and says the client came over https.
PROXY_HEADERS = {"Host": "market.example.com", "X-Forwarded-Proto": "https"}
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(64)
PDF = b"%PDF-1.4\n" + os.urandom(64)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and $$ (no ${VAR:?}: the file uses none)."""

    def one(match: re.Match[str]) -> str:
        name, _, default = match.group(1).partition(":-")
        return variables.get(name) or default

    return re.sub(r"\$\{([^}]+)\}", one, value).replace("$$", "$")


class Stack:
    """The image and its volumes on this machine, and the services started from them."""

    def __init__(self, base: Path, database_url: str, redis_port: int) -> None:
        self.base = base
        self.compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        self.database_url = database_url
        self.redis_port = redis_port
        self.web_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.app = base / "app"
        self.tmp = base / "tmp"
        self.volumes: dict[str, Path] = {}
        self.bin = base / "python" / "bin"
        self._env_cache: dict[str, dict[str, str]] = {}

    # --- the image ---------------------------------------------------------------------------

    def build(self) -> None:
        """COPY . . as root (the user can read, not write), the Python runtime, collectstatic,
        and one host folder per named volume, owned by the user as the image's would be."""
        shutil.copytree(
            ROOT,
            self.app,
            symlinks=False,
            ignore=shutil.ignore_patterns(
                ".git",
                ".venv",
                ".data",
                "__pycache__",
                "*.pyc",
                "private_media",
                "staticfiles",
                "test-artifacts",
                ".mypy_cache",
                ".ruff_cache",
                ".env",
                ".ledger-signing-key",
            ),
        )
        self._python()
        subprocess.run(
            ["python", "manage.py", "collectstatic", "--noinput", "-v0"],
            cwd=self.app,
            # as the Dockerfile's RUN: production settings, build-only values
            env=self.environment(
                {
                    "DJANGO_SETTINGS_MODULE": "config.settings.production",
                    "SECRET_KEY": uuid.uuid4().hex * 2,
                    "LEDGER_SIGNING_KEY": uuid.uuid4().hex * 2,
                    "ALLOWED_HOSTS": "localhost",
                    "DATABASE_URL": "postgres://build/none",
                    "REDIS_URL": "redis://build/0",
                }
            ),
            check=True,
        )
        subprocess.run(["chmod", "-R", "a+rX,go-w", str(self.base)], check=True)
        self.tmp.mkdir(mode=0o1777)
        self.tmp.chmod(0o1777)
        for service in ("web", "worker"):
            for volume in self.compose["services"][service].get("volumes", []):
                name, target = volume.split(":")[:2]
                if target not in self.volumes:
                    host = self.base / "volumes" / name
                    host.mkdir(parents=True)
                    shutil.chown(host, USER)
                    host.chmod(0o700)
                    self.volumes[target] = host

    def _python(self) -> None:
        """python, gunicorn and celery on PATH for the user: a venv over this interpreter's
        packages (whose own binary may sit where the user cannot reach, e.g. under /root)."""
        # The system's Python of our version if there is one (world-readable, as the image's
        # /usr/local/bin/python), else ours.
        runtime = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
        if not Path(runtime).exists():
            runtime = sys._base_executable
        subprocess.run(
            [runtime, "-m", "venv", "--without-pip", str(self.base / "python")], check=True
        )
        site = next((self.base / "python" / "lib").glob("python3*/site-packages"))
        import site as site_module

        (site / "app-packages.pth").write_text("\n".join(site_module.getsitepackages()) + "\n")
        # (asked as the user: what runs may not be what root runs by that name)
        version = self._as_user([runtime, "-c", "import sys; print(*sys.version_info[:3])"])
        if tuple(map(int, version.stdout.split())) < (3, 11, 3):
            # Debian's 3.11.2: redis wants the async_timeout backport below 3.11.3 (the image's
            # 3.11 is newer); asyncio.timeout is that API.
            (site / "async_timeout.py").write_text("from asyncio import timeout  # noqa: F401\n")
        for name, module in (("gunicorn", "gunicorn"), ("celery", "celery")):
            script = self.bin / name
            script.write_text(
                f"#!{self.bin / 'python'}\nimport runpy\nrunpy.run_module('{module}', run_name='__main__')\n"
            )
            script.chmod(0o755)

    # --- running services --------------------------------------------------------------------

    def to_host(self, value: str) -> str:
        """A container path to where it lives here: a volume's folder, or our /tmp."""
        for target, host in self.volumes.items():
            if value == target or value.startswith(target + "/"):
                return str(host) + value[len(target) :]
        return re.sub(r"(?<![\w/])/tmp/", f"{self.tmp}/", value)

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.tmp),
            "LANG": "C.UTF-8",
            **(extra or {}),
        }

    def service_env(self, service: str) -> dict[str, str]:
        declared = self.compose["services"][service]["environment"]
        env = {k: self.to_host(interpolate(str(v), SECRETS)) for k, v in declared.items()}
        env = {k: v for k, v in env.items() if v != ""}  # compose passes "", settings read unset
        env["DATABASE_URL"] = self.database_url
        env["REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
        env["HOSTNAME"] = f"{service}-{uuid.uuid4().hex[:6]}"
        return self.environment(env)

    def command(self, service: str, env: dict[str, str]) -> list[str]:
        """The service's command; web binds a free port of 127.0.0.1 instead of 0.0.0.0:8000, and
        the worker is named after its container's host name, as in the container."""
        argv = shlex.split(interpolate(self.compose["services"][service]["command"], SECRETS))
        argv = [self.to_host(a).replace("0.0.0.0:8000", f"127.0.0.1:{self.web_port}") for a in argv]
        if service == "worker":
            argv += ["-n", f"celery@{env['HOSTNAME']}"]
        return argv

    def as_user(self, argv: list[str]) -> list[str]:
        """argv run as the user, its program found on the image's PATH (by absolute path: a
        Python started by a bare name looks for itself with the caller's PATH)."""
        program = shutil.which(argv[0], path=self.environment()["PATH"]) or argv[0]
        return [
            "setpriv",
            f"--reuid={USER}",
            "--regid=nogroup",
            "--clear-groups",
            "--",
            program,
            *argv[1:],
        ]

    def _as_user(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.as_user(argv),
            capture_output=True,
            timeout=120,
            **kwargs,
        )

    def run(self, service: str, *argv: str) -> subprocess.CompletedProcess[bytes]:
        """`docker-compose run --rm SERVICE ARGV` (the service's command without ARGV)."""
        env = self.service_env(service)
        self._env_cache[service] = env
        return self._as_user(list(argv) or self.command(service, env), cwd=self.app, env=env)

    def start(self, service: str) -> None:
        env = self.service_env(service)
        self._env_cache[service] = env
        argv = self.command(service, env)
        log = (self.base / f"{service}.log").open("ab")
        self.procs[service] = subprocess.Popen(
            self.as_user(argv),
            cwd=self.app,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def healthcheck(self, service: str) -> subprocess.CompletedProcess[bytes]:
        """The service's compose health check (or the Dockerfile's), run in its environment."""
        test = self.compose["services"][service]["healthcheck"]["test"]
        env = self._env_cache[service]
        if test[0] == "CMD-SHELL":
            argv = ["sh", "-c", interpolate(test[1], SECRETS)]
        else:
            argv = [interpolate(arg, SECRETS) for arg in test[1:]]
        argv = [a.replace("127.0.0.1:8000", f"127.0.0.1:{self.web_port}") for a in argv]
        return self._as_user(argv, cwd=self.app, env=env)

    def log(self, service: str) -> str:
        path = self.base / f"{service}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def json_lines(self, service: str) -> list[dict[str, Any]]:
        lines = []
        for line in self.log(service).splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    lines.append(json.loads(line))
        return lines

    def stop(self, service: str) -> None:
        proc = self.procs.pop(service, None)
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def alive(self, service: str) -> bool:
        proc = self.procs.get(service)
        if proc is None or proc.poll() is not None:
            raise AssertionError(f"{service} exited:\n{self.log(service)[-4000:]}")
        return True

    # --- talking to web ----------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(
            self.url(path),
            headers={**PROXY_HEADERS, **kwargs.pop("headers", {})},
            timeout=10,
            **kwargs,
        )

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(
            self.url(path),
            headers={**PROXY_HEADERS, **kwargs.pop("headers", {})},
            timeout=30,
            **kwargs,
        )

    def wait_for_web(self) -> None:
        try:
            wait_for(self.web_answers, timeout=90, interval=0.2)
        except AssertionError:
            raise AssertionError(f"web does not answer:\n{self.log('web')[-4000:]}") from None

    def web_answers(self) -> bool:
        self.alive("web")
        try:
            return requests.get(self.url("/healthz"), timeout=2).status_code == 200
        except requests.RequestException:
            return False


class Redis:
    """A redis-server of this test's own, so stopping it disturbs nobody else."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: (
                subprocess.run(
                    ["redis-cli", "-p", str(self.port), "ping"], capture_output=True
                ).stdout.strip()
                == b"PONG"
            ),
            timeout=20,
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


@pytest.fixture
def stack() -> Iterator[tuple[Stack, Redis, str]]:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("runs the services as another user: needs root and setpriv")
    if not os.environ.get("PGPORT_TEST") or not shutil.which("redis-server"):
        pytest.skip("needs the PostgreSQL and Redis of `make test` (scripts/with-services.sh)")
    # pytest's tmp_path sits in a folder only root may enter: the user could not reach the tree
    base = Path(tempfile.mkdtemp(prefix="compose-"))
    base.chmod(0o755)
    server = f"postgresql://postgres@127.0.0.1:{os.environ['PGPORT_TEST']}"
    name = f"compose_{uuid.uuid4().hex[:8]}"
    pg_bin = Path(os.environ.get("PG_BIN") or "/usr/lib/postgresql/15/bin")
    subprocess.run(
        [pg_bin / "createdb", "--maintenance-db", f"{server}/postgres", name], check=True
    )
    redis_dir = base / "redis"
    redis_dir.mkdir()
    redis = Redis(redis_dir)
    redis.start()
    stack = Stack(
        base, f"postgres://postgres@127.0.0.1:{os.environ['PGPORT_TEST']}/{name}", redis.port
    )
    try:
        yield stack, redis, f"{server}/{name}"
    finally:
        for service in list(stack.procs):
            stack.stop(service)
        redis.stop()
        subprocess.run(
            [pg_bin / "dropdb", "--force", "--maintenance-db", f"{server}/postgres", name],
            check=False,
        )


def test_compose_stack_as_an_operator_runs_it(stack):
    stack, redis, dsn = stack
    # given the image: the tree copied as root, the app user cannot write it
    stack.build()
    denied = stack._as_user(["touch", str(stack.app / "written-by-app")])
    assert denied.returncode != 0
    assert list(stack.volumes) == ["/var/lib/marketplace/private_media"]
    media = stack.volumes["/var/lib/marketplace/private_media"]
    # and docker-compose up: migrate to completion, then web, worker and beat
    migrated = stack.run("migrate")
    assert migrated.returncode == 0, migrated.stdout.decode()[-3000:]
    seeded = stack.run("web", "python", "manage.py", "seed_demo")  # demo traders and offers
    assert seeded.returncode == 0, seeded.stdout.decode()[-3000:]
    for service in ("web", "worker", "beat"):
        stack.start(service)
    stack.wait_for_web()

    # when a trader uploads a KYC document and sends a chat attachment through web
    alice = stack.post(
        "/api/v1/auth/token/", json={"username": "alice", "password": "demo-pass-123"}
    )
    bob = stack.post("/api/v1/auth/token/", json={"username": "bob", "password": "demo-pass-123"})
    assert alice.status_code == bob.status_code == 200, alice.text
    as_alice = {"Authorization": f"Token {alice.json()['token']}"}
    as_bob = {"Authorization": f"Token {bob.json()['token']}"}
    kyc = stack.post(
        "/api/v1/kyc/documents/",
        headers=as_bob,
        data={"kind": "id_card", "requested_tier": "1"},
        files={"file": ("passport.pdf", PDF, "application/pdf")},
    )
    assert kyc.status_code == 201, kyc.text
    book = stack.get("/api/v1/offers/?side=sell&asset=BTC&fiat=EUR", headers=as_bob).json()
    offer = next(o for o in book["results"] if o["maker"]["username"] == "alice")
    trade = stack.post(
        f"/api/v1/offers/{offer['id']}/take/",
        headers=as_bob,
        json={"fiat_amount": offer["min_fiat"]},
    )
    assert trade.status_code == 201, trade.text
    trade_id = trade.json()["id"]
    message = stack.post(
        f"/api/v1/trades/{trade_id}/messages/",
        headers=as_bob,
        data={"text": "proof of payment"},
        files={"attachment": ("receipt.png", PNG, "image/png")},
    )
    assert message.status_code == 201, message.text
    attachment_url = message.json()["attachment_url"]
    # then both files are on the volume, written by the app user
    stored = {p.read_bytes(): p for p in media.rglob("*") if p.is_file()}
    assert PNG in stored
    assert PDF in stored
    assert stored[PNG].stat().st_uid == stored[PDF].stat().st_uid != 0
    assert not [p for p in stack.app.rglob("*") if p.is_file() and p.stat().st_uid != 0]

    # when the buyer pays and the seller releases: web queues the settlement for the worker
    assert stack.post(f"/api/v1/trades/{trade_id}/mark-paid/", headers=as_bob).status_code == 200
    released = stack.post(
        f"/api/v1/trades/{trade_id}/release/",
        headers=as_alice,
        json={"password": "demo-pass-123"},  # the fund password (alice has no 2FA)
    )
    assert released.status_code == 200, released.text
    request_id = released.headers["X-Request-ID"]
    # then the trade settles, and the worker's lines of that task carry web's request id
    wait_for(
        lambda: (
            stack.alive("worker")
            and stack.get(f"/api/v1/trades/{trade_id}/", headers=as_alice).json()["state"]
            == "completed"
        ),
        timeout=60,
        interval=0.3,
    )
    # (the task's own lines: its "succeeded" line may follow the commit by a moment)

    def settle_lines() -> list[dict]:
        return [
            line
            for line in stack.json_lines("worker")
            if line.get("request_id") == request_id
            and "escrow.tasks.settle" in line.get("message", "")
        ]

    with contextlib.suppress(AssertionError):  # the assert below shows the log
        wait_for(settle_lines, timeout=30, interval=0.3)
    settled = settle_lines()
    assert settled, stack.log("worker")[-3000:]
    assert settled[0]["trade_id"] == trade_id

    # when the worker is asked to read the chat attachment from its side of the volume
    with psycopg.connect(dsn) as conn:
        (name,) = conn.execute(
            "SELECT attachment FROM escrow_trademessage WHERE trade_id = %s AND attachment <> ''",
            [trade_id],
        ).fetchone()
    broker = Celery(broker=f"redis://127.0.0.1:{redis.port}/0")
    broker.send_task("operations.tasks.private_file_digest", args=[name])
    # then it finds the same bytes
    digest = hashlib.sha256(PNG).hexdigest()
    wait_for(
        lambda: (
            stack.alive("worker")
            and any(line.get("sha256") == digest for line in stack.json_lines("worker"))
        ),
        timeout=30,
        interval=0.2,
    )

    # when web is restarted (a new container on the same volume)
    stack.stop("web")
    stack.start("web")
    stack.wait_for_web()
    # then the files are still there
    again = stack.get(attachment_url, headers=as_alice)
    assert again.status_code == 200
    assert again.content == PNG
    assert any(p.read_bytes() == PDF for p in media.rglob("*") if p.is_file())

    # and beat's sequencer signed a checkpoint with the configured key
    public = signing.raw_public(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(SEED)))

    def checkpoint() -> Any:
        stack.alive("beat")
        with psycopg.connect(dsn) as conn:
            return conn.execute(
                "SELECT tree_size, key_id FROM ledger_checkpoint ORDER BY tree_size DESC LIMIT 1"
            ).fetchone()

    size, key_id = wait_for(checkpoint, timeout=60, interval=0.5)
    assert size > 0
    assert key_id == signing.key_id_for(public)

    # and the health checks of the compose file pass: web, worker (celery ping), beat (heartbeat)
    for service in ("web", "worker", "beat"):
        result = stack.healthcheck(service)
        assert result.returncode == 0, (service, result.stdout, result.stderr)
    # and /metrics, summed over gunicorn's workers, answers only with its token
    assert stack.get("/metrics").status_code == 401
    metrics = stack.get("/metrics", headers={"Authorization": f"Bearer {SECRETS['METRICS_TOKEN']}"})
    assert metrics.status_code == 200
    assert 'p2p_trades{state="completed"} 1.0' in metrics.text
    # (counted since web's restart: the attachment fetched after it)
    assert re.search(
        r'^p2p_http_requests_total\{method="GET",status="200",view="api-trade-message-attachment"\} 1\.0$',
        metrics.text,
        re.MULTILINE,
    ), metrics.text

    # when Redis stops, web is not ready (and says why); when it is back, ready again
    def ready() -> int:
        return stack.get("/readyz").status_code

    wait_for(lambda: ready() == 200, timeout=30, interval=0.3)
    redis.stop()
    wait_for(lambda: ready() == 503, timeout=30, interval=0.3)
    body = stack.get("/readyz").json()
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    redis.start()
    wait_for(lambda: ready() == 200, timeout=30, interval=0.3)
    assert stack.get("/readyz").json()["checks"]["redis"]["ok"] is True
