#!/usr/bin/env python3
"""Checks the demo's rate-limit answers with a real HTTP client and a real RFC 8941 parser.

Usage: check_demo_headers.py PATH_TO_DEMO_BINARY

Starts the demo on a free port, then asserts that:
  * `RateLimit-Policy` and `RateLimit` parse as structured-field lists (http-sfv) and agree
    with `X-RateLimit-Remaining`;
  * a method the rate-limited GET route does not serve (POST, OPTIONS) gets 405 and spends no
    token: after them, a GET still finds the full burst (`route_layer`, not `layer`);
  * the token-bucket route admits exactly its burst of 5, then answers 429 with a JSON body
    whose `retryAfter` equals `Retry-After` (whole seconds, at least 1);
  * the circuit breaker opens after 3 upstream failures (503, `Retry-After`, JSON body);
  * the cached route gives `Cache-Control` and a strong ETag; asked again with it, a 304 with
    exactly the RFC 9110 header set and no body, answered by the validator store (the handler
    logs once); the profile takes a PUT with its current tag (204) and refuses a stale one (412,
    JSON), the stale write changing nothing;
  * with `--redis`, a second demo instance on the same private redis-server follows: the
    breaker opened through the first refuses on the second too, and it answers the catalog's
    304 from what the first served (its handler never runs); the banner says Redis answered;
  * /metrics parses with Python's prometheus_client parser: requests counted per route
    template and status (the rate limiter's 429s among them), durations, in-flight gauges;
    OpenMetrics when asked; /api/slo reports the five objectives as JSON;
  * the report route is compressed: gzip and deflate bodies decode with Python's zlib (the C
    library) to the identity body, byte for byte; q-values pick the coding; the opt-out
    header gives the identity body; `Vary` names accept-encoding; the gzip answer's strong
    ETag is the identity's with `-gzip` appended, and revalidates to a 304 carrying it;
  * with `--redis`, a demo pointed at a Redis that is not there (`redis://127.0.0.1:1/`) still
    serves, says so in its banner (never "in Redis"), and warns on its output that Redis is
    unreachable: the breaker's sync at once, the rate limiter after a few requests.
"""
import http.client
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import http_sfv
from prometheus_client.parser import text_string_to_metric_families


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base, path, method="GET"):
    request = urllib.request.Request(base + path, method=method,
                                     data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def request(base, method, path, headers=None, body=None):
    """One request through http.client (a real client; 304 and 412 are plain answers)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def handler_runs(demo):
    return demo.output().count("GET /api/catalog ran its handler")


def check_cache(demo, wait_for_store=False):
    """The cached route and the guarded profile, as a client sees them."""
    base = demo.base
    status, headers, body = request(base, "GET", "/api/catalog")
    assert status == 200, status
    assert headers["Cache-Control"] == "public, max-age=60, stale-while-revalidate=30", headers
    tag = headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', tag), tag
    assert headers["Vary"] == "accept-language", headers
    json.loads(body)
    # The Redis store is written in the background: ask until it has it (bounded).
    for _ in range(100 if wait_for_store else 1):
        runs = handler_runs(demo)
        status, headers, body = request(base, "GET", "/api/catalog", {"If-None-Match": f'"x", {tag}'})
        if handler_runs(demo) == runs:
            break
        time.sleep(0.05)
    assert status == 304 and body == b"", (status, body)
    names = sorted(k.lower() for k in headers.keys())
    assert names == ["cache-control", "date", "etag", "expires", "vary"], names
    assert handler_runs(demo) == runs, "the 304 ran the handler"

    status, headers, body = request(base, "GET", "/api/profile")
    profile_tag = headers["ETag"]
    status, _, _ = request(base, "PUT", "/api/profile", {"If-Match": profile_tag}, b'{"name":"Grace"}')
    assert status == 204, status
    status, headers, body = request(base, "PUT", "/api/profile", {"If-Match": profile_tag}, b'{"name":"Mallory"}')
    assert status == 412 and json.loads(body)["error"] == "precondition_failed", (status, body)
    status, headers, body = request(base, "GET", "/api/profile")
    assert body == b'{"name":"Grace"}', body
    assert headers["ETag"] != profile_tag
    return tag


def check_compression(base):
    """The report route through a real client and the C zlib's decoders."""
    import gzip
    import zlib
    status, headers, identity = request(base, "GET", "/api/report")
    assert status == 200 and "Content-Encoding" not in headers, (status, headers)
    assert len(identity) > 10_000, len(identity)
    assert headers["Vary"] == "accept-encoding, x-no-compression", headers
    identity_tag = headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', identity_tag), identity_tag
    json.loads(identity)

    status, headers, body = request(base, "GET", "/api/report", {"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip", headers
    assert "Content-Length" not in headers or int(headers["Content-Length"]) == len(body)
    assert gzip.decompress(body) == identity
    assert len(body) < len(identity) / 4, (len(body), len(identity))
    gzip_tag = headers["ETag"]
    assert gzip_tag == identity_tag[:-1] + '-gzip"', (gzip_tag, identity_tag)
    assert headers["Vary"] == "accept-encoding, x-no-compression", headers

    status, headers, body = request(base, "GET", "/api/report",
                                    {"Accept-Encoding": "gzip;q=0.4, deflate;q=0.8"})
    assert headers["Content-Encoding"] == "deflate", headers
    assert zlib.decompress(body) == identity

    status, headers, body = request(base, "GET", "/api/report",
                                    {"Accept-Encoding": "gzip", "X-No-Compression": "1"})
    assert "Content-Encoding" not in headers and body == identity, headers

    status, headers, body = request(base, "GET", "/api/report",
                                    {"Accept-Encoding": "gzip", "If-None-Match": gzip_tag})
    assert status == 304 and body == b"", (status, body)
    assert headers["ETag"] == gzip_tag, headers
    assert headers["Vary"] == "accept-encoding, x-no-compression", headers
    # The gzip tag does not revalidate the identity body.
    status, _, _ = request(base, "GET", "/api/report", {"If-None-Match": gzip_tag})
    assert status == 200, status


def check_metrics(base):
    """/metrics through Python's prometheus_client parser; /api/slo as JSON."""
    request(base, "GET", "/api/orders")
    status, headers, body = request(base, "GET", "/metrics")
    assert status == 200, status
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers
    samples = [s for f in text_string_to_metric_families(body.decode()) for s in f.samples]
    def total(route, code):
        return sum(s.value for s in samples if s.name == "http_requests_total"
                   and s.labels.get("route") == route and s.labels.get("status_code") == code)
    assert total("/api/limited", "429") >= 1, "the refused calls are counted"
    assert total("/api/limited", "200") == 5, total("/api/limited", "200")
    assert total("/api/report", "200") >= 5
    assert total("/api/report", "304") >= 1
    routes = {s.labels.get("route") for s in samples if "route" in s.labels}
    assert all(r is None or r.startswith("/") or r in ("unmatched", "other") for r in routes), routes
    counts = [s for s in samples if s.name == "http_request_duration_seconds_count"
              and s.labels.get("route") == "/api/orders"]
    assert counts and counts[0].value >= 1, counts
    in_flight = [s.value for s in samples if s.name == "http_requests_in_flight"]
    assert in_flight and all(v >= 0 for v in in_flight), in_flight
    status, headers, body = request(base, "GET", "/metrics",
                                    {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert headers["Content-Type"].startswith("application/openmetrics-text"), headers
    assert body.endswith(b"# EOF\n")
    status, _, body = request(base, "GET", "/api/slo")
    report = json.loads(body)
    assert report["requests"] > 0 and len(report["objectives"]) == 5, report
    assert {o["objective"] for o in report["objectives"]} == {
        "P50", "P95", "P99", "ErrorRate", "Availability"}, report


def sf_list(value):
    parsed = http_sfv.List()
    parsed.parse(value.encode())
    return parsed


def start_redis():
    """A private redis-server on a free port, so earlier runs' counts cannot leak in."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/"
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


class Demo:
    """One demo process on a free port; its stdout and stderr go to one file, read by `output`."""

    def __init__(self, demo, redis_url=None):
        port = free_port()
        env = {"BULWARK_ADDR": f"127.0.0.1:{port}", "RUST_LOG": "info"}
        if redis_url:
            env["REDIS_URL"] = redis_url
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([demo], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        sys.exit("demo did not start listening:\n" + self.output())

    def banner(self):
        """The demo's banner line (it binds, then prints: wait for it, bounded). Its log goes
        to the same file, and a warning (Redis unreachable) may come before the banner."""
        for _ in range(100):
            for line in self.output().splitlines():
                if line.startswith("tower-bulwark demo"):
                    return line
            time.sleep(0.05)
        return self.output().splitlines()[0] if self.output() else ""

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def warnings_about_redis(demo):
    """The demo's `WARN` lines that mention Redis (the fmt subscriber writes the level in caps)."""
    return [line for line in demo.output().splitlines()
            if re.search(r"\bWARN\b", line) and "redis" in line.lower()]


def check_unreachable_redis(demo_path):
    """Nothing listens on port 1: the demo must serve anyway, and say so, loudly."""
    demo = Demo(demo_path, "redis://127.0.0.1:1/")
    try:
        banner = demo.banner()
        assert "not reachable" in banner and "in Redis" not in banner, demo.output()
        status, _, _ = get(demo.base, "/")
        assert status == 200, status
        # The breaker's sync task tries Redis every interval, so it warns with no request; the
        # rate limiter warns once a few decisions in a row have failed (3 by default).
        # Decided locally: the shared limit of 5 per 10 s (burst 5), halved by
        # FailMode::Local { instances: 2 } and rounded down: 2 per 10 s, 2 at once.
        statuses = []
        for _ in range(4):
            status, headers, _ = get(demo.base, "/api/limited")
            statuses.append(status)
            policy = sf_list(headers["RateLimit-Policy"])
            assert [(i.value, dict(i.params)) for i in policy] == [("default", {"q": 2, "w": 10})], policy
        assert statuses == [200, 200, 429, 429], (statuses, demo.output())
        status, _, _ = get(demo.base, "/api/upstream")
        assert status == 200, status
        for _ in range(50):
            lines = warnings_about_redis(demo)
            if any("breaker" in l for l in lines) and any("rate" in l for l in lines):
                break
            time.sleep(0.1)
        assert any("breaker" in l for l in lines), demo.output()
        assert any("rate" in l for l in lines), demo.output()
    finally:
        demo.stop()


def main(demo, with_redis=False):
    redis, redis_url, procs = None, None, []
    if with_redis:
        redis, redis_url = start_redis()
    env = {"REDIS_URL": redis_url}
    first = Demo(demo, redis_url)
    procs.append(first)
    base = first.base
    try:
        banner = first.banner()
        if with_redis:
            assert "Redis answered at start-up" in banner, first.output()
        else:
            assert "(in memory)" in banner, first.output()

        # 405s are free: they never reach the limit (route_layer), so carry none of its headers.
        for method in ["POST"] * 6 + ["OPTIONS"] * 2:
            status, headers, _ = get(base, "/api/limited", method)
            assert status == 405, (method, status)
            assert "X-RateLimit-Remaining" not in headers, (method, headers)

        statuses = []
        for n in range(7):
            status, headers, body = get(base, "/api/limited")
            if n == 0:
                # The full burst of 5, this request's token taken: as fresh as it comes.
                assert headers["X-RateLimit-Remaining"] == "4", headers
            statuses.append(status)
            policy = sf_list(headers["RateLimit-Policy"])
            current = sf_list(headers["RateLimit"])
            assert [(i.value, dict(i.params)) for i in policy] == [("default", {"q": 5, "w": 10})], policy
            assert current[0].value == "default", current
            assert current[0].params["r"] == int(headers["X-RateLimit-Remaining"]), headers
            if status == 429:
                answer = json.loads(body)
                assert answer["error"] == "Too many requests", answer
                assert answer["retryAfter"] == int(headers["Retry-After"]) >= 1, (answer, headers)
        assert statuses == [200] * 5 + [429, 429], statuses

        _, headers, _ = get(base, "/api/orders")
        names = [i.value for i in sf_list(headers["RateLimit"])]
        assert names == ["per-second", "per-minute"], names
        # The circuit breaker: 3 upstream failures open it; then a 503 at once, even for a
        # request that would succeed, with Retry-After and the JSON body agreeing.
        codes = [get(base, "/api/upstream?fail")[0] for _ in range(3)]
        assert codes == [500, 500, 500], codes
        status, headers, body = get(base, "/api/upstream")
        assert status == 503, status
        answer = json.loads(body)
        assert answer["error"] == "Service unavailable", answer
        assert answer["retryAfter"] == int(headers["Retry-After"]), (answer, headers)
        assert 9 <= answer["retryAfter"] <= 10, answer  # open for 10 s, rounded up

        # Retry + breaker: every other upstream call fails with 503 and is retried, so each
        # request answers 200 from an even-numbered upstream call.
        for expected_call in (2, 4):
            status, _, body = get(base, "/api/resilient")
            assert status == 200, (status, body)
            assert body.startswith(f"ok: upstream call {expected_call} answered".encode()), body
        # Down: retried, until its own breaker opens; then the refusal is not retried.
        status, headers, body = get(base, "/api/resilient?down")
        assert status == 503 and json.loads(body)["error"] == "Service unavailable", body
        assert "Retry-After" in headers, headers

        catalog_tag = check_cache(first, wait_for_store=with_redis)
        check_compression(base)
        check_metrics(base)

        fleet = ""
        if with_redis:
            keys = subprocess.run(["redis-cli", "-u", env["REDIS_URL"], "--scan"],
                                  capture_output=True, text=True, check=True).stdout.split()
            assert any(k.startswith("{demo:limited:") for k in keys), keys
            # A second instance: the breaker the first opened is open here too, once it has
            # synced (every 200 ms); bounded wait.
            second = Demo(demo, redis_url)
            procs.append(second)
            base2 = second.base
            for _ in range(100):
                status, headers, body = get(base2, "/api/upstream")
                if status == 503:
                    break
                time.sleep(0.1)
            assert status == 503, (status, body)
            assert 1 <= int(headers["Retry-After"]) <= 10, headers
            keys = subprocess.run(["redis-cli", "-u", env["REDIS_URL"], "--scan"],
                                  capture_output=True, text=True, check=True).stdout.split()
            assert "{demo:upstream:global}:cb" in keys, keys
            status, _, _ = request(base2, "GET", "/api/catalog", {"If-None-Match": catalog_tag})
            assert status == 304, status
            assert handler_runs(second) == 0, "the second instance ran its handler"
            fleet = "; a second instance on the same Redis refuses too and answers the first's readers 304"
            check_unreachable_redis(demo)
            fleet += "; with Redis unreachable the demo serves, says so and warns"
        where = "Redis" if with_redis else "memory"
        print(f"demo OK ({where}): 405s spend no token; rate-limit headers parse as structured fields, burst of 5 then 429 with matching Retry-After; breaker opens after 3 failures, then 503 with Retry-After; retry + breaker heals a flaky upstream and stops at an open breaker; the catalog's 304 comes from the validator store with the RFC 9110 header set, a stale If-Match PUT gets 412; the report decodes with zlib in gzip and deflate, its gzip ETag revalidates to a 304; /metrics parses with prometheus_client and counts every route by template, /api/slo reports five objectives{fleet}")
    finally:
        for proc in procs:
            proc.stop()
        if redis:
            redis.kill()
            redis.wait()


if __name__ == "__main__":
    main(sys.argv[1], with_redis="--redis" in sys.argv[2:])
