"""npm packages the tests need (autobahn-js for the browser pages and for Node), installed into the
git-ignored ``.cache/`` the first time, into a staging directory renamed when complete: concurrent test
workers never read half an installation."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.test_e2e_twistd import REPO

CACHE = REPO / ".cache"


class NpmFailed(Exception):
    """npm is missing, or could not install the package (the message says which, and why)."""


def npm_install(directory: str, package: str, version: str, *needed: str) -> Path:
    """The ``node_modules`` directory of ``package@version`` under ``.cache/DIRECTORY``, installed with npm
    unless ``package`` and the ``needed`` packages are there already."""
    target = CACHE / directory
    modules = target / "node_modules"
    if all((modules / name / "package.json").exists() for name in (package, *needed)):
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise NpmFailed(f"npm is missing (it installs {package} for these tests)")
    CACHE.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=CACHE))
    try:
        subprocess.run(
            [npm, "install", "--prefix", str(staging), "--no-save", "--no-package-lock", "--no-audit"]
            + ["--no-fund", f"{package}@{version}"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        try:
            staging.rename(target)
        except OSError:  # another worker installed it meanwhile
            if not modules.exists():
                raise
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as failed:
        stderr = getattr(failed, "stderr", b"") or b""
        raise NpmFailed(
            f"npm install {package}@{version} failed: {stderr.decode('utf-8', 'replace')[-500:]!r}"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return modules
