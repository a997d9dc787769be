#!/usr/bin/env python3
"""A webhook receiver for the end-to-end tests, checking signatures with `standardwebhooks`.

    target/schemathesis/bin/python tests/webhook_receiver.py PORT

Listens on 127.0.0.1:PORT (0: any free port) and prints `listening on http://127.0.0.1:<port>`
once it accepts connections, so that the harness (testkit/src/webhooks.rs) knows when to go on.

Every POST to a path outside /_control/ is a delivery: it is recorded, verified at once against
the secrets configured for its path, and answered as planned for that path (200 by default).
The signatures are checked by the Standard Webhooks reference library (PyPI `standardwebhooks`,
pinned in tests/schemathesis-requirements.txt), not by code of ours: the service's signing is
checked against someone else's reading of the spec. Verification happens on arrival because the
library refuses timestamps more than 5 minutes from its own clock.

The control API (JSON in, JSON out):

    POST /_control/plan     {"path": "/a", "responses": [500, 500, 410], "delay_ms": 0}
        The next deliveries to /a answer these statuses in order, then 200 forever; every
        answer to /a waits delay_ms first (a slow receiver). Replaces /a's previous plan.
    POST /_control/secrets  {"path": "/a", "secrets": ["whsec_...", "whsec_..."]}
        The secrets deliveries to /a are verified with (several during a rotation). Replaces
        /a's previous secrets; deliveries already recorded keep their results.
    GET  /_control/received?path=/a
        Every delivery to /a, in arrival order: {"received_at", "answered_at", "id",
        "timestamp", "signature", "headers", "body", "raw_body", "status", "verified_by",
        "verify_errors"} (see `Handler._deliver`).

A test harness must not be the flaky part of a test: every request is handled on its own thread,
shared state sits behind one lock, and bad input is answered 400 (or dropped, when the
connection itself is broken) rather than raised.
"""

import json
import sys
import threading
import time
import traceback
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

try:
    from standardwebhooks import Webhook
except ImportError as import_error:
    print(
        f"webhook_receiver: cannot import standardwebhooks ({import_error}); run tests/run.sh, "
        "which installs it into target/schemathesis",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(3)

CONTROL = "/_control/"
# Far above any webhook the service sends; a bound so that a bogus Content-Length cannot make a
# thread allocate without limit.
MAX_BODY = 16 * 1024 * 1024


class BadRequest(Exception):
    """Input the receiver refuses with 400 and this message."""


class Plan:
    """The statuses still to answer on one path, and the delay before every answer."""

    def __init__(self, responses, delay):
        self.responses = deque(responses)
        self.delay = delay


class State:
    """Everything the control API sets and reads, shared by the request threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.plans = {}  # path -> Plan
        self.secrets = {}  # path -> [str]
        self.received = {}  # path -> [record dict], in arrival order


STATE = State()


def parse_json(raw):
    """The JSON value of `raw`, or None when it is not strict JSON.

    NaN and Infinity are refused: Python accepts them but would write them back out as invalid
    JSON, which the Rust side could then not read.
    """

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    try:
        return json.loads(raw, parse_constant=refuse)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


class Handler(BaseHTTPRequestHandler):
    """One connection's requests: deliveries on any path, the control API under /_control/."""

    # HTTP/1.1 keeps connections open, as real receivers do, so the service's connection pool
    # is exercised; every answer therefore carries a Content-Length.
    protocol_version = "HTTP/1.1"
    server_version = "dns-handling-webhook-receiver"

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        # The harness sends stderr to a log file it shows when something goes wrong.
        sys.stderr.write(f"{time.time():.3f} {self.address_string()} {format % args}\n")

    # -- plumbing --------------------------------------------------------------------------

    def _read_body(self):
        """The request body, from a Content-Length or chunked transfer encoding."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise BadRequest(f"bad chunk size line {line!r}")
                if size < 0 or total + size > MAX_BODY:
                    raise BadRequest("chunked body too large")
                if size == 0:
                    # Trailers, up to the blank line that ends the message.
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunk = self.rfile.read(size)
                if len(chunk) != size:
                    raise BadRequest("body shorter than its chunk size")
                chunks.append(chunk)
                total += size
                self.rfile.readline(1024)  # the CRLF after the chunk
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise BadRequest(f"bad Content-Length {length_header!r}")
        if length < 0 or length > MAX_BODY:
            raise BadRequest(f"Content-Length {length} out of range")
        body = self.rfile.read(length)
        if len(body) != length:
            raise BadRequest("body shorter than its Content-Length")
        return body

    def _answer(self, status, payload):
        """Sends `payload` as JSON with `status`; False when the client has gone."""
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError):
            # The client hung up (a service that timed out on a slow answer): nothing to do.
            self.close_connection = True
            return False

    def _guarded(self, handle):
        """Runs `handle`, turning bad input into 400 and any bug of ours into 500."""
        try:
            handle()
        except BadRequest as error:
            # The body may be partly unread: the connection cannot carry another request.
            self.close_connection = True
            self._answer(400, {"error": str(error)})
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception as error:  # a bug here must fail the request, not the receiver
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            self._answer(500, {"error": f"{type(error).__name__}: {error}"})

    def _path(self):
        return urlsplit(self.path).path

    # -- methods ---------------------------------------------------------------------------

    def do_POST(self):
        path = self._path()
        if path.startswith(CONTROL):
            self._guarded(lambda: self._control_post(path))
        else:
            self._guarded(lambda: self._deliver(path))

    def do_GET(self):
        self._guarded(self._control_get)

    def _not_allowed(self):
        self._guarded(lambda: self._refuse(405, "deliveries are POSTs"))

    do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed

    def _refuse(self, status, message):
        self.close_connection = True
        self._answer(status, {"error": message})

    # -- deliveries ------------------------------------------------------------------------

    def _deliver(self, path):
        """Records a delivery with its verification results, then answers as planned.

        The record, as GET /_control/received lists it:
        - received_at: unix time (float) when its headers had arrived;
        - answered_at: unix time the answer was written, null while it waits (delay_ms) or when
          the client hung up first;
        - id, timestamp, signature: the webhook-id, webhook-timestamp and webhook-signature
          header values, "" when absent;
        - headers: every request header, names in lower case (the last of repeated ones);
        - body: the body parsed as JSON, else its text; raw_body: its text (undecodable UTF-8
          bytes replaced);
        - status: the status it is answered with;
        - verified_by: the indices of the path's secrets that verify it;
        - verify_errors: "secret <index>: <error>" for every secret that does not.
        """
        received_at = time.time()
        raw = self._read_body()
        webhook_id = self.headers.get("webhook-id")
        timestamp = self.headers.get("webhook-timestamp")
        signature = self.headers.get("webhook-signature")

        with STATE.lock:
            secrets = list(STATE.secrets.get(path, []))
        # The three headers the library reads, exactly as received (the first of repeated
        # ones, as recorded): a consumer passes its framework's headers the same way.
        headers = {
            name: value
            for name, value in (
                ("webhook-id", webhook_id),
                ("webhook-timestamp", timestamp),
                ("webhook-signature", signature),
            )
            if value is not None
        }
        verified_by = []
        verify_errors = []
        for index, secret in enumerate(secrets):
            try:
                # json_parse=False: verified_by is about the signature; whether the body is
                # JSON shows in `body`.
                Webhook(secret).verify(raw, headers, json_parse=False)
                verified_by.append(index)
            except Exception as error:  # the library raises more than its own error type
                verify_errors.append(f"secret {index}: {type(error).__name__}: {error}")

        text = raw.decode("utf-8", errors="replace")
        parsed = parse_json(raw)
        record = {
            "received_at": received_at,
            "answered_at": None,
            "id": webhook_id or "",
            "timestamp": timestamp or "",
            "signature": signature or "",
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "body": parsed if parsed is not None else text,
            "raw_body": text,
            "verified_by": verified_by,
            "verify_errors": verify_errors,
        }
        # The status is taken from the plan and the record appended under one lock, so that
        # the n-th recorded delivery is the one that got the plan's n-th status.
        with STATE.lock:
            plan = STATE.plans.get(path)
            status = plan.responses.popleft() if plan and plan.responses else 200
            delay = plan.delay if plan else 0.0
            record["status"] = status
            STATE.received.setdefault(path, []).append(record)

        if delay > 0:
            time.sleep(delay)
        if self._answer(status, {"status": status}):
            with STATE.lock:
                record["answered_at"] = time.time()

    # -- control ---------------------------------------------------------------------------

    def _json_body(self):
        raw = self._read_body()
        parsed = parse_json(raw)
        if not isinstance(parsed, dict):
            raise BadRequest("the body must be a JSON object")
        return parsed

    @staticmethod
    def _delivery_path(request):
        path = request.get("path")
        if not isinstance(path, str) or not path.startswith("/") or path.startswith(CONTROL):
            raise BadRequest(f"path must be a string starting with / outside {CONTROL}")
        return path

    def _control_post(self, path):
        if path == CONTROL + "plan":
            request = self._json_body()
            target = self._delivery_path(request)
            responses = request.get("responses", [])
            if not isinstance(responses, list) or not all(
                isinstance(status, int) and not isinstance(status, bool) and 200 <= status <= 599
                for status in responses
            ):
                raise BadRequest("responses must be a list of statuses from 200 to 599")
            delay_ms = request.get("delay_ms", 0)
            if (
                not isinstance(delay_ms, (int, float))
                or isinstance(delay_ms, bool)
                or not 0 <= delay_ms <= 600_000
            ):
                raise BadRequest("delay_ms must be a number of milliseconds from 0 to 600000")
            with STATE.lock:
                STATE.plans[target] = Plan(responses, delay_ms / 1000)
            self._answer(200, {"ok": True})
        elif path == CONTROL + "secrets":
            request = self._json_body()
            target = self._delivery_path(request)
            secrets = request.get("secrets")
            if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
                raise BadRequest("secrets must be a list of strings")
            for index, secret in enumerate(secrets):
                # A secret the library cannot even load is the test's mistake: say so now,
                # rather than as a verify error on every delivery.
                try:
                    Webhook(secret)
                except Exception as error:
                    raise BadRequest(f"secret {index}: {type(error).__name__}: {error}")
            with STATE.lock:
                STATE.secrets[target] = list(secrets)
            self._answer(200, {"ok": True})
        else:
            self._read_body()
            self._refuse(404, f"no control endpoint {path}")

    def _control_get(self):
        split = urlsplit(self.path)
        if split.path != CONTROL + "received":
            self._refuse(404, f"no GET endpoint {split.path} (deliveries are POSTs)")
            return
        paths = parse_qs(split.query).get("path")
        if not paths:
            raise BadRequest("the path query parameter is missing")
        with STATE.lock:
            # Copied under the lock: answered_at changes after a delivery is recorded.
            records = json.loads(json.dumps(STATE.received.get(paths[0], [])))
        self._answer(200, records)


class Server(ThreadingHTTPServer):
    """A thread per connection; daemon threads, so a hung client never holds the exit."""

    daemon_threads = True
    # Bursts of concurrent deliveries must queue, not be refused.
    request_queue_size = 128


def main():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} PORT", file=sys.stderr)
        return 2
    try:
        port = int(sys.argv[1])
    except ValueError:
        print(f"not a port: {sys.argv[1]!r}", file=sys.stderr)
        return 2
    server = Server(("127.0.0.1", port), Handler)
    # The constructor has bound and listened: connections queue from here on.
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
