"""Audit the locked dependencies against the known vulnerabilities that PyPI publishes.

pip-audit needs https://pypi.org/pypi/NAME/VERSION/json or api.osv.dev; this network's registry
mirror answers the first with 404 and cannot reach the second. What it does serve is each
project's JSON (https://pypi.org/pypi/NAME/json): the project's releases (with their yanked
flags) and, from PyPI's own OSV feed, the known vulnerabilities of its *latest* release. So:

- a pin that is the project's latest release: fail on any vulnerability PyPI lists for it (the
  same data pip-audit's PyPI service reads for that version);
- a yanked pin fails;
- a newer release (in the pin's own series or a later one) is news, not a failure: it is reported
  so that someone upgrades on purpose, but a checkout that passed once keeps passing until its own
  files change. A pin behind the latest is listed as "not checkable here": PyPI tells nothing
  about that version's vulnerabilities.

Exit status: 0 clean, 1 a finding, 2 the registry could not be read and --require-network was
given (without it, packages the registry could not be read for are named as not audited, and the
run does not fail on network trouble alone).

Usage: python scripts/audit_deps.py [requirements/test.txt] [--index-url URL] [--require-network]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

DEFAULT_INDEX = "https://pypi.org/pypi"


@dataclass
class Report:
    findings: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    news: list[str] = field(default_factory=list)
    checked: int = 0


def pins(path: Path, seen: set[Path] | None = None) -> Iterator[tuple[str, str]]:
    """(name, version) of every `name==version` line, following `-r other.txt`."""
    seen = seen if seen is not None else set()
    path = path.resolve()
    if path in seen:
        return
    seen.add(path)
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if line.startswith(("-r ", "--requirement ")):
            yield from pins(path.parent / line.split(None, 1)[1], seen)
        elif "==" in line:
            name, version = (part.strip() for part in line.split("==", 1))
            yield name.split("[", 1)[0], version


def fetch(index: str, name: str, attempts: int = 3) -> dict[str, Any]:
    url = f"{index.rstrip('/')}/{canonicalize_name(name)}/json"
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=20) as answer:  # noqa: S310 - https/http only
                return json.load(answer)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, TimeoutError, OSError):
            if attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def _series(version: Version) -> tuple[int, ...]:
    return (*version.release, 0, 0)[:2]


def audit_one(name: str, pinned: str, project: dict[str, Any], report: Report) -> None:
    latest = project["info"]["version"]
    files = project.get("releases", {}).get(pinned)
    if files is None:
        report.findings.append(f"{name}=={pinned}: not a release PyPI knows")
        return
    if files and all(f.get("yanked") for f in files):
        reason = next((f.get("yanked_reason") for f in files if f.get("yanked_reason")), "")
        report.findings.append(f"{name}=={pinned}: yanked{f' ({reason})' if reason else ''}")
    if pinned == latest:
        for vuln in project.get("vulnerabilities") or []:
            if vuln.get("withdrawn"):
                continue
            aliases = ", ".join(vuln.get("aliases") or [])
            fixed = ", ".join(vuln.get("fixed_in") or []) or "no fix yet"
            report.findings.append(
                f"{name}=={pinned}: {vuln.get('id')}{f' ({aliases})' if aliases else ''}: "
                f"{(vuln.get('summary') or vuln.get('details') or '').strip()[:160]} "
                f"-- fixed in {fixed}"
            )
        report.checked += 1
        return
    try:
        mine = Version(pinned)
        newer = sorted(
            v
            for v in (_version(s) for s, f in project["releases"].items() if f)
            if v is not None and not v.is_prerelease and _series(v) == _series(mine) and v > mine
        )
    except InvalidVersion:
        newer = []
    if newer:
        # News, never a failure: the date must not break a build whose files did not change.
        report.news.append(
            f"{name}=={pinned}: {newer[-1]} is out in the same series (patch releases carry the "
            f"security fixes; upgrade on purpose)"
        )
    elif latest != pinned:
        report.news.append(f"{name}=={pinned}: {latest} is the latest release")
    report.unchecked.append(
        f"{name}=={pinned} (the latest is {latest}, and PyPI lists known vulnerabilities only "
        "for the latest)"
    )


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("requirements", nargs="*", default=["requirements/test.txt"])
    parser.add_argument("--index-url", default=DEFAULT_INDEX, help="PyPI's JSON API base")
    parser.add_argument(
        "--require-network", action="store_true", help="an unreachable registry fails the audit"
    )
    parser.add_argument(
        "--attempts", type=int, default=3, help="tries per package on network errors"
    )
    args = parser.parse_args(argv)
    locked = sorted(
        {(canonicalize_name(n), v) for r in args.requirements for n, v in pins(Path(r))}
    )
    report = Report()
    unreachable: list[str] = []
    for name, version in locked:
        try:
            project = fetch(args.index_url, name, attempts=args.attempts)
        except urllib.error.HTTPError as err:
            report.findings.append(f"{name}=={version}: the registry answered {err.code}")
            continue
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            unreachable.append(f"{name}: {err}")
            continue
        audit_one(name, version, project, report)
    print(
        f"audit_deps: {len(locked)} locked packages; {report.checked} checked against PyPI's "
        f"known vulnerabilities, {len(report.unchecked)} not checkable here, "
        f"{len(report.findings)} findings, {len(report.news)} newer releases (news only)"
    )
    for line in report.news:
        print(f"  news: {line}")
    for line in report.unchecked:
        print(f"  not checkable here: {line}")
    for line in report.findings:
        print(f"  FINDING: {line}", file=sys.stderr)
    if unreachable:
        print(
            f"audit_deps: the registry could not be read for {len(unreachable)} packages "
            f"(first: {unreachable[0]}); those were NOT audited",
            file=sys.stderr,
        )
    if report.findings:
        return 1
    if unreachable:
        return 2 if args.require_network else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
