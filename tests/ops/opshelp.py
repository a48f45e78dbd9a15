"""Shared by the tests of the metrics endpoint and the AdminServer: HTTP gets with a wait, the
Apache names list, zoo.cfg lines for the endpoints."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from zkpy.testing.procs import Ensemble, ServerProcess, ensemble_servers, free_port

APACHE_NAMES_FILE = Path(__file__).with_name("apache_metric_names.txt")


def apache_metric_names() -> dict[str, str]:
    """name -> 'value' or 'summary', as read from Apache 3.8's monitor output (see the file)."""
    names = {}
    for line in APACHE_NAMES_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            kind, name = line.split()
            names[name] = kind
    return names


def http_get(url: str, wait: float = 30.0) -> tuple[int, str]:
    """GET, retrying while the endpoint is not up yet (connection refused) for at most `wait` s."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except (ConnectionError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def get_json(url: str) -> Any:
    status, body = http_get(url)
    assert status == 200, (url, status, body)
    return json.loads(body)


def scrape(url: str) -> dict[str, Any]:
    """The endpoint's metric families by name, parsed by prometheus_client's own parser."""
    status, body = http_get(url)
    assert status == 200, body
    return {family.name: family for family in text_string_to_metric_families(body)}


def sample(families: dict[str, Any], name: str, **labels: str) -> float:
    """One sample's value: `name` is the sample name (e.g. fsynctime_count), found in any family."""
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise KeyError(f"no sample {name} {labels}")


def _is_map(value: dict[str, Any]) -> bool:
    """A dict keyed by data (session ids, expiry times, paths), not by field names."""
    return bool(value) and all(key.lstrip("-").isdigit() or key.startswith("/") for key in value)


def shape(value: Any) -> Any:
    """Field names and JSON types, values dropped: lists by their first element, maps keyed by ids
    or paths by their first entry."""
    if isinstance(value, dict):
        if _is_map(value):
            # The first entry that has something in it: Apache's expiry map can hold an empty
            # bucket for a moment after a session moved to the next one.
            entries = [item for item in value.values() if item] or list(value.values())
            return {"<key>": shape(entries[0])}
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=5000",  # let the page's fetches finish before the DOM is dumped
]  # fmt: skip


def chromium() -> str:
    """Debian's chromium, or skip the test saying how to get it."""
    import pytest

    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is needed to test the admin page: apt-get install chromium")


def browse(url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran, as a person's browser has it; a screenshot too."""
    base = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    if screenshot is not None:
        subprocess.run([*base, "--window-size=1280,1000", f"--screenshot={screenshot}", url],
                       check=True, capture_output=True, timeout=90)  # fmt: skip
    done = subprocess.run([*base, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=90)
    return done.stdout


class _Texts(HTMLParser):
    """The text inside each element that has an id (nested ids included in their parent's)."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: dict[str, str] = {}
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "input", "meta", "link", "img"):
            return
        ident = dict(attrs).get("id")
        self._open.append((tag, ident))
        if ident:
            self.texts.setdefault(ident, "")

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            open_tag, _ = self._open.pop()
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, ident in self._open:
            if ident:
                self.texts[ident] += data


def texts_by_id(dom: str) -> dict[str, str]:
    parser = _Texts()
    parser.feed(dom)
    return {key: " ".join(value.split()) for key, value in parser.texts.items()}


@contextlib.contextmanager
def ensemble_with_ports(
    tmp: Path, settings: Callable[[int], str]
) -> Iterator[list[tuple[ServerProcess, int]]]:
    """Three zkpy servers in one quorum, each with a port of its own for an endpoint: `settings`
    turns that port into the zoo.cfg lines to add. Yields [(server, its endpoint port)]."""
    servers = ensemble_servers("zkpy", tmp, 3, {"tickTime": "500"})
    ports = []
    for server in servers:
        port = free_port()
        with server.config_path.open("a") as cfg:
            cfg.write(settings(port))
        ports.append(port)
    running = Ensemble(servers)
    try:
        for server in servers:
            server.start(wait=None)
        running.wait_serving(90)
        yield list(zip(servers, ports, strict=True))
    finally:
        running.stop()
