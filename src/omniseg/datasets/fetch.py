"""`omniseg data fetch`: download a public archive, unpack it into the expected layout, verify it."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from ..progress import bar as progress_bar

from ..errors import OmnisegError
from .base import FetchSpec


def download(url: str, dest: Path, progress: bool = True, chunk: int = 1 << 20) -> str:
    """Stream ``url`` to ``dest`` (via a temporary name) and return its sha256."""
    digest = hashlib.sha256()
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as f:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress_bar(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", disable=not progress) as bar:
                while block := resp.read(chunk):
                    f.write(block)
                    digest.update(block)
                    bar.update(len(block))
    except OSError as e:  # URLError, HTTPError and socket errors are all OSErrors
        tmp.unlink(missing_ok=True)
        raise OmnisegError(f"could not download {url}: {e}") from None
    tmp.replace(dest)
    return digest.hexdigest()


def _unpack(archive: Path, into: Path) -> None:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(into)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                t.extractall(into, filter="data")
        else:
            raise OmnisegError(f"{archive} is neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise OmnisegError(f"{archive} is damaged: {e}") from None


def verify_counts(root: Path, expected: dict[str, int]) -> list[str]:
    """Problems with the unpacked files: each glob that does not match its expected count."""
    problems = []
    for pattern, n in expected.items():
        found = len(list(root.glob(pattern)))
        if found != n:
            problems.append(f"{root}/{pattern}: {found} files, the publisher's release has {n}")
    return problems


def fetch(spec: FetchSpec, dest: Path, *, url: str | None = None, progress: bool = True,
          force: bool = False) -> Path:
    """Download and unpack ``spec`` so that ``dest/<archive_root>`` is the dataset root."""
    root = dest / spec.archive_root
    if root.exists() and not force:
        raise OmnisegError(f"{root} already exists; pass --force to download it again")
    dest.mkdir(parents=True, exist_ok=True)
    src = url or spec.url
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as tmpdir:
        tmp = Path(tmpdir)
        archive = tmp / (Path(src.split("?")[0]).name or "archive")
        digest = download(src, archive, progress)
        if spec.sha256 and digest != spec.sha256:
            raise OmnisegError(f"{src}: sha256 {digest} does not match the published {spec.sha256}")
        _unpack(archive, tmp / "unpacked")
        found = [p for p in (tmp / "unpacked").rglob(spec.archive_root) if p.is_dir()]
        if not found:
            raise OmnisegError(f"{src}: the archive has no folder {spec.archive_root}/")
        if root.exists():
            shutil.rmtree(root)
        shutil.move(str(found[0]), root)
    problems = verify_counts(root, spec.expected)
    if problems:
        raise OmnisegError(f"unpacked into {root}, but it does not match the release:\n  " + "\n  ".join(problems))
    return root
