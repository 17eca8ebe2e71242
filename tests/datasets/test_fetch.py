"""`omniseg data fetch` against an HTTP server on 127.0.0.1 serving a small archive in the publisher's layout."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omniseg.cli import app
from omniseg.datasets.base import FetchSpec
from omniseg.datasets.fetch import fetch
from omniseg.errors import OmnisegError

from conftest import make_kvasir


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on a free loopback port; yields the base URL."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(www), **k)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)  # a quick shutdown
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()
    httpd.server_close()


def kvasir_zip(tmp_path: Path, www: Path, n: int = 3) -> Path:
    src = make_kvasir(tmp_path / "src" / "Kvasir-SEG", n=n)
    archive = www / "kvasir-seg.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(src.rglob("*")):
            z.write(f, f.relative_to(src.parent))
    return archive


def test_fetch_unpacks_verifies_counts_and_checksum(tmp_path, server):
    url, www = server
    archive = kvasir_zip(tmp_path, www)
    spec = FetchSpec(url=f"{url}/kvasir-seg.zip", archive_root="Kvasir-SEG",
                     expected={"images/*.jpg": 3, "masks/*.jpg": 3},
                     sha256=hashlib.sha256(archive.read_bytes()).hexdigest())
    root = fetch(spec, tmp_path / "data", progress=False)
    assert root == tmp_path / "data" / "Kvasir-SEG"
    assert len(list((root / "images").glob("*.jpg"))) == 3
    assert not list((tmp_path / "data").glob(".fetch-*"))  # temporary files cleaned up
    with pytest.raises(OmnisegError, match="already exists"):
        fetch(spec, tmp_path / "data", progress=False)
    bad = FetchSpec(spec.url, spec.archive_root, spec.expected, sha256="0" * 64)
    with pytest.raises(OmnisegError, match="does not match the published"):
        fetch(bad, tmp_path / "other", progress=False)


def test_cli_fetch_reports_a_short_release(tmp_path, server):
    url, www = server
    kvasir_zip(tmp_path, www)
    r = CliRunner().invoke(app, ["data", "fetch", "polyp", "--dest", str(tmp_path / "d"), "--url",
                                 f"{url}/kvasir-seg.zip", "--quiet"])
    assert r.exit_code == 2
    assert "images/*.jpg: 3 files, the publisher's release has 1000" in r.output
    assert (tmp_path / "d" / "Kvasir-SEG" / "masks").is_dir()


def test_cli_fetch_errors(tmp_path, server):
    url, www = server
    r = CliRunner().invoke(app, ["data", "fetch", "polyp", "--dest", str(tmp_path / "d"), "--url", f"{url}/missing.zip", "-q"])
    assert r.exit_code == 2 and "could not download" in r.output and "404" in r.output
    (www / "junk.zip").write_bytes(b"garbage")
    r = CliRunner().invoke(app, ["data", "fetch", "polyp", "--dest", str(tmp_path / "e"), "--url", f"{url}/junk.zip", "-q"])
    assert r.exit_code == 2 and "neither a zip nor a tar" in r.output
    r = CliRunner().invoke(app, ["data", "fetch", "vessel"])
    assert r.exit_code == 1 and "grand-challenge" in r.output
    r = CliRunner().invoke(app, ["data", "fetch", "polpy"])
    assert r.exit_code == 2 and "did you mean 'polyp'" in r.output
