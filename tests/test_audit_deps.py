"""scripts/audit_deps.py's rules, against a local registry that answers PyPI's project JSON (the
real registry is audited by `make lint`): a vulnerable latest release, a pin left behind in its
series (news, not a failure), a yanked pin, withdrawn advisories, `-r` includes, and an unreachable registry."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import audit_deps


def _project(latest: str, releases: dict[str, bool], vulns: list[dict[str, Any]] | None = None):
    return {
        "info": {"version": latest},
        "releases": {v: [{"filename": f"x-{v}.whl", "yanked": y}] for v, y in releases.items()},
        "vulnerabilities": vulns or [],
    }


VULN = {
    "id": "PYSEC-2026-1",
    "aliases": ["CVE-2026-0001"],
    "summary": "Request smuggling",
    "fixed_in": ["2.0.1"],
    "withdrawn": None,
}
REGISTRY = {
    "clean": _project("1.2.3", {"1.2.2": False, "1.2.3": False}),
    "vulnerable": _project("2.0.0", {"2.0.0": False}, [VULN]),
    "withdrawn": _project("3.0.0", {"3.0.0": False}, [{**VULN, "withdrawn": "2026-02-01"}]),
    "lts": _project("6.1.3", {"5.2.18": False, "5.2.19": False, "6.1.3": False}),
    "yanked": _project("1.1.0", {"1.0.0": True, "1.1.0": False}),
}


@pytest.fixture
def registry() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.strip("/").split("/")[0]
            body = REGISTRY.get(name)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body or {"message": "Not Found"}).encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _run(tmp_path: Path, registry: str, *lines: str, extra: tuple[str, ...] = ()) -> int:
    (tmp_path / "base.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.txt").write_text("# the test pins\n-r base.txt\nclean==1.2.3\n")
    return audit_deps.main([str(tmp_path / "test.txt"), "--index-url", registry, *extra])


def test_clean_pins_pass(tmp_path, registry, capsys):
    assert _run(tmp_path, registry, "withdrawn==3.0.0", "lts==5.2.19  # LTS") == 0
    out = capsys.readouterr().out
    assert "3 locked packages; 2 checked" in out
    assert "not checkable here: lts==5.2.19 (the latest is 6.1.3" in out
    assert "news: lts==5.2.19: 6.1.3 is the latest release" in out


def test_a_known_vulnerability_fails_naming_it(tmp_path, registry, capsys):
    assert _run(tmp_path, registry, "vulnerable==2.0.0") == 1
    err = capsys.readouterr().err
    assert "vulnerable==2.0.0: PYSEC-2026-1 (CVE-2026-0001): Request smuggling" in err
    assert "fixed in 2.0.1" in err


def test_a_newer_patch_release_is_news_not_a_failure(tmp_path, registry, capsys):
    # given a pin behind the newest patch release of its series (a registry published one)
    # when the audit runs
    status = _run(tmp_path, registry, "lts==5.2.18")
    # then it passes and says so
    out = capsys.readouterr()
    assert status == 0
    assert "news: lts==5.2.18: 5.2.19 is out in the same series" in out.out
    assert "1 newer releases (news only)" in out.out
    assert "FINDING" not in out.err


def test_a_yanked_or_unknown_pin_fails(tmp_path, registry, capsys):
    assert _run(tmp_path, registry, "yanked==1.0.0", "nosuch==0.1") == 1
    err = capsys.readouterr().err
    assert "yanked==1.0.0: yanked" in err
    assert "nosuch==0.1: the registry answered 404" in err


def test_an_unreachable_registry_is_named_and_fails_only_when_required(tmp_path, capsys):
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    once = ("--attempts", "1")
    assert _run(tmp_path, dead, "clean==1.2.3", extra=once) == 0
    assert "NOT audited" in capsys.readouterr().err
    assert _run(tmp_path, dead, "clean==1.2.3", extra=(*once, "--require-network")) == 2
