"""Connectivity checks: can the fleet's API servers be reached and do they say they are ready."""

from __future__ import annotations

import time

import pytest
from fleetcheck import CheckInfo, Evidence, Target, Unknown
from fleetcheck.preflight import describe_error, raw_get


@pytest.mark.check("connectivity/api-ready", level="required")
def test_api_ready(target: Target, check: CheckInfo, evidence: Evidence, expectations: dict) -> None:
    """``/readyz`` answers ``ok`` within the connect timeout; the server version is recorded."""
    timeout = float(expectations["connectivity"]["api_ready_timeout_s"])
    start = time.monotonic()
    try:
        status, body = raw_get(target.api_client, "/readyz", (target.connect_timeout, timeout))
    except Exception as exc:  # noqa: BLE001 - reachable at preflight, not any more
        raise Unknown(f"GET /readyz failed: {describe_error(exc, target.server)}") from None
    elapsed = time.monotonic() - start
    evidence.text(
        "GET /readyz",
        f"server: {target.server}\nstatus: {status}\nelapsed: {elapsed:.3f}s\nbody: {body}",
    )
    evidence.text("server version", f"{target.version or 'unknown'}")
    check.require(
        status == 200 and body.strip() == "ok" and elapsed <= timeout,
        expected=f"GET /readyz -> HTTP 200 'ok' within {timeout:g}s",
        observed=f"HTTP {status} {body.strip()[:200]!r} after {elapsed:.2f}s",
    )
