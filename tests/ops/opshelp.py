"""Shared by the tests of the metrics endpoint and the AdminServer: HTTP gets with a wait, the
Apache names list, zoo.cfg lines for the endpoints."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

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
            return {"<key>": shape(next(iter(value.values())))}
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__
