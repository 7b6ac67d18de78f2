#!/usr/bin/env python3
"""notifier: the shop's service that is not written in Rust.

It uses only documented HTTP APIs and Python's standard library (plus
psycopg, only when its store is PostgreSQL):

- consumes order events from the bus topic ``orders`` (group ``notifier``)
  with the HTTP bus API: long-poll ``pull``, then ``ack`` (or ``nack`` for a
  message it cannot read, which ends in ``orders.dlq`` after the broker's
  ``max_deliveries``);
- records one notification per order event, idempotently: the event id
  (``<stream>@<version>``) is the primary key, so a redelivered message
  changes nothing;
- serves ``/health/live``, ``/health/ready`` and
  ``GET /v1/notifications?customer=NAME`` (or ``?order=ID``),
  over mTLS with the certificate the node issued when it has one;
- reports its port to the node like the Rust SDK does (when there is a
  node), logs one JSON object per line on stdout, and drains on SIGTERM:
  stops pulling, finishes and acks what it holds, then exits.

Under ``mortar up`` the node serves the HTTP bus API. Where there is no node
(a Kubernetes export), ``mortar bus http`` serves the same API beside it,
backed by NATS JetStream, and MORTAR_BUS_HTTP_URL points at it.

Configuration comes from the environment the node sets (see the README's
table): PORT, MORTAR_NODE_URL, MORTAR_NODE_TOKEN, MORTAR_INSTANCE,
MORTAR_SERVICE, MORTAR_APP, MORTAR_TLS_CERT/KEY/CA, MORTAR_TLS_CALLERS,
MORTAR_BUS_HTTP_URL and MORTAR_BUS_HTTP_TOKEN (the HTTP bus API and its
bearer token; the node's URL and token when unset),
MORTAR_STORE_URL (``sqlite://PATH``: notifications.db in that file's
directory; ``postgres://user@host/db?schema=NAME``: the table in that schema,
created when missing, for which psycopg must be installed: see
requirements-postgres.txt and scripts/notifier-venv);
NOTIFIER_TOPIC and NOTIFIER_GROUP override ``orders`` and ``notifier``.
"""

import json
import os
import signal
import sqlite3
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EXIT_CONFIG = 78


def log(level, msg, **fields):
    """One JSON object per line on stdout, as every mortar service logs."""
    line = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
        "level": level,
        "msg": msg,
        "service": os.environ.get("MORTAR_SERVICE", "notifier"),
        "instance": os.environ.get("MORTAR_INSTANCE", "notifier-%d" % os.getpid()),
    }
    line.update({k: v for k, v in fields.items() if v is not None})
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def redact(url):
    """A URL with any password replaced, for log lines."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def trace_id(traceparent):
    """The trace id of a W3C traceparent header, or None."""
    parts = (traceparent or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1]
    return None


# ---- the store ---------------------------------------------------------

TEXTS = {
    "OrderPlaced": "Thank you for your order {order}: {total} cents.",
    "OrderPaid": "We received your payment for order {order}.",
    "OrderCancelled": "Your order {order} was cancelled: {reason}.",
    "OrderShipped": "Your order {order} is on its way with {carrier}.",
}


COLUMNS = ["event_id", "order_id", "customer", "kind", "text", "trace_id", "created_ms"]


def list_query(customer, order, placeholder):
    """The SELECT behind ``list``, filtered by customer and/or order."""
    query = "SELECT %s FROM notifications" % ", ".join(COLUMNS)
    clauses, args = [], []
    if customer is not None:
        clauses.append("customer = " + placeholder)
        args.append(customer)
    if order is not None:
        clauses.append("order_id = " + placeholder)
        args.append(order)
    if clauses:
        query += " WHERE " + " AND ".join(clauses)
    return query + " ORDER BY created_ms, event_id", args


def row_of(note):
    return (
        note["event_id"],
        note["order_id"],
        note["customer"],
        note["kind"],
        note["text"],
        note.get("trace_id"),
        int(time.time() * 1000),
    )


class SqliteStore:
    """Notifications in SQLite; the event id makes each one happen once."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS notifications ("
                " event_id TEXT PRIMARY KEY, order_id TEXT NOT NULL,"
                " customer TEXT NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL,"
                " trace_id TEXT, created_ms INTEGER NOT NULL)"
            )

    def record(self, note):
        """Stores `note`; False when its event was already recorded."""
        with self.lock:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO notifications (%s) VALUES (?, ?, ?, ?, ?, ?, ?)"
                % ", ".join(COLUMNS),
                row_of(note),
            )
            return cur.rowcount == 1

    def customer_of(self, order_id):
        with self.lock:
            row = self.db.execute(
                "SELECT customer FROM notifications WHERE order_id = ? AND customer != ''"
                " LIMIT 1",
                (order_id,),
            ).fetchone()
        return row[0] if row else ""

    def list(self, customer=None, order=None):
        query, args = list_query(customer, order, "?")
        with self.lock:
            return [dict(zip(COLUMNS, row)) for row in self.db.execute(query, args)]

    def close(self):
        with self.lock:
            self.db.close()


# The lock mortar's Rust stores take while creating their schemas
# (mortar-eventstore's migrate): instances starting together take turns.
MIGRATE_LOCK = 0x6D6F72746173


class PostgresStore:
    """Notifications in a PostgreSQL schema of their own (``?schema=``);
    the event id makes each one happen once. One session, reconnected and
    the statement run once more when it turns out to have dropped (every
    statement here is safe to repeat: a repeated insert is ignored)."""

    def __init__(self, conninfo, schema, psycopg):
        self.psycopg = psycopg
        self.conninfo = conninfo
        self.schema = schema
        self.lock = threading.Lock()
        self.conn = None
        with self.lock:
            self.run(self.migrate)

    def connect(self):
        conn = self.psycopg.connect(
            self.conninfo, autocommit=True, connect_timeout=5,
            application_name="mortar/%s/notifier" % self.schema,
        )
        conn.execute('SET search_path TO "%s"' % self.schema)
        return conn

    def migrate(self, conn):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            conn.execute('CREATE SCHEMA IF NOT EXISTS "%s"' % self.schema)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS notifications ("
                " event_id TEXT PRIMARY KEY, order_id TEXT NOT NULL,"
                " customer TEXT NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL,"
                " trace_id TEXT, created_ms BIGINT NOT NULL)"
            )

    def run(self, work):
        """`work(conn)` on the session; once more on a new one if it dropped.
        The caller holds the lock."""
        for attempt in (1, 2):
            if self.conn is None or self.conn.closed:
                self.conn = self.connect()
            try:
                return work(self.conn)
            except self.psycopg.OperationalError as e:
                dropped = self.conn.closed
                if dropped:
                    log("warn", "lost the PostgreSQL session; reconnecting", error=str(e))
                    self.conn = None
                if not dropped or attempt == 2:
                    raise

    def record(self, note):
        """Stores `note`; False when its event was already recorded."""
        sql = (
            "INSERT INTO notifications (%s) VALUES (%%s, %%s, %%s, %%s, %%s, %%s, %%s)"
            " ON CONFLICT (event_id) DO NOTHING" % ", ".join(COLUMNS)
        )
        with self.lock:
            return self.run(lambda conn: conn.execute(sql, row_of(note)).rowcount == 1)

    def customer_of(self, order_id):
        sql = ("SELECT customer FROM notifications WHERE order_id = %s AND customer != ''"
               " LIMIT 1")
        with self.lock:
            row = self.run(lambda conn: conn.execute(sql, (order_id,)).fetchone())
        return row[0] if row else ""

    def list(self, customer=None, order=None):
        query, args = list_query(customer, order, "%s")
        with self.lock:
            rows = self.run(lambda conn: conn.execute(query, args).fetchall())
        return [dict(zip(COLUMNS, row)) for row in rows]

    def close(self):
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None


class StoreUrlError(Exception):
    """MORTAR_STORE_URL cannot be used: the service exits 78."""


def open_store(url):
    """The store MORTAR_STORE_URL names: (store, where, for the log)."""
    if url.startswith("sqlite://"):
        path = os.path.join(os.path.dirname(url[len("sqlite://"):]) or ".", "notifications.db")
        return SqliteStore(path), path
    if url.startswith(("postgres://", "postgresql://")):
        base, _, query = url.partition("?")
        schema, rest = "public", []
        for pair in filter(None, query.split("&")):
            if pair.startswith("schema="):
                schema = pair[len("schema="):]
            else:
                rest.append(pair)
        if not schema or not all(c.islower() or c.isdigit() or c == "_" for c in schema):
            raise StoreUrlError("schema must be lowercase letters, digits and '_'")
        try:
            import psycopg
        except ImportError:
            raise StoreUrlError(
                "a postgres:// store needs psycopg (requirements-postgres.txt); "
                "run the notifier with the python scripts/notifier-venv prints"
            )
        conninfo = base + ("?" + "&".join(rest) if rest else "")
        return PostgresStore(conninfo, schema, psycopg), "%s (schema %s)" % (base.rsplit("@", 1)[-1], schema)
    raise StoreUrlError("expected sqlite://PATH or postgres://user@host/db?schema=NAME")


class Malformed(Exception):
    """A message that is not an order event: nacked, never acked."""


def notification(message, store):
    """The notification an order event message asks for (see ordering's
    outbox: the payload is the recorded event as JSON)."""
    event = message.get("payload")
    if not isinstance(event, dict):
        raise Malformed("payload is not a JSON object")
    try:
        stream, version = event["stream_id"], int(event["version"])
        kind, data = event["event_type"], event.get("payload") or {}
    except (KeyError, TypeError, ValueError) as e:
        raise Malformed("not a recorded event: missing %s" % e)
    if kind not in TEXTS:
        raise Malformed("unknown event type %r" % kind)
    order = stream[len("order-"):] if stream.startswith("order-") else stream
    fields = {"order": order, "total": "?", "reason": "", "carrier": ""}
    if isinstance(data, dict):
        fields.update({k: v for k, v in data.items() if isinstance(v, (str, int))})
        if "total_cents" in data:
            fields["total"] = data["total_cents"]
    customer = data.get("customer") if isinstance(data, dict) else None
    headers = message.get("headers") or {}
    tp = headers.get("traceparent") or (event.get("metadata") or {}).get("traceparent")
    return {
        "event_id": "%s@%d" % (stream, version),
        "order_id": order,
        "customer": customer or store.customer_of(order),
        "kind": kind,
        "text": TEXTS[kind].format(**fields),
        "trace_id": trace_id(tp),
    }


# ---- the node's and the bus's HTTP APIs -------------------------------


class Api:
    """An HTTP API (the node's, or the bus bridge's) with a bearer token."""

    def __init__(self, url, token):
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, timeout=10):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        if self.token:
            req.add_header("authorization", "Bearer " + self.token)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None


# ---- HTTP --------------------------------------------------------------


class State:
    def __init__(self, store):
        self.store = store
        self.draining = threading.Event()
        self.bus_ok = threading.Event()


def allowed_callers():
    """Services allowed to call (MORTAR_TLS_CALLERS), plus the node itself."""
    callers = os.environ.get("MORTAR_TLS_CALLERS")
    if callers is None:
        return None
    return set(c for c in callers.split(",") if c) | {"mortar"}


def caller_service(cert):
    """The service named by a peer certificate's URI SAN mortar://<app>/<service>."""
    for kind, value in (cert or {}).get("subjectAltName", ()):
        if kind == "URI" and value.startswith("mortar://"):
            return value.rsplit("/", 1)[-1]
    return None


def handler_for(state):
    callers = allowed_callers()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def send_json(self, status, body, content_type="application/json"):
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def problem(self, status, title, detail):
            self.send_json(
                status,
                {"type": "about:blank", "title": title, "status": status, "detail": detail,
                 "instance": self.path},
                "application/problem+json",
            )

        def do_GET(self):
            if callers is not None and hasattr(self.connection, "getpeercert"):
                who = caller_service(self.connection.getpeercert())
                if who not in callers:
                    return self.problem(
                        403, "Forbidden",
                        "caller %r may not call notifier; allowed: %s" % (who, ", ".join(sorted(callers))),
                    )
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/health/live":
                return self.send_json(200, {"status": "live"})
            if url.path == "/health/ready":
                if state.draining.is_set():
                    return self.problem(503, "Service Unavailable", "draining")
                return self.send_json(200, {"status": "ready"})
            if url.path == "/v1/notifications":
                query = urllib.parse.parse_qs(url.query)
                customer = query.get("customer", [None])[0]
                order = query.get("order", [None])[0]
                if customer is None and order is None:
                    return self.problem(
                        400, "Bad Request",
                        "name a customer or an order: /v1/notifications?customer=NAME or ?order=ID",
                    )
                try:
                    notes = state.store.list(customer=customer, order=order)
                except Exception as e:
                    log("error", "the notification store failed", error=str(e))
                    return self.problem(
                        503, "Service Unavailable",
                        "the notification store is not available; try again shortly",
                    )
                return self.send_json(200, {"notifications": notes})
            return self.problem(404, "Not Found", "no route for %s; try /v1/notifications" % url.path)

    return Handler


def serve(state):
    server = ThreadingHTTPServer(
        (os.environ.get("MORTAR_BIND_ADDR", "127.0.0.1"), int(os.environ.get("PORT", "0"))),
        handler_for(state),
    )
    server.daemon_threads = True
    cert, key, ca = (os.environ.get(k) for k in ("MORTAR_TLS_CERT", "MORTAR_TLS_KEY", "MORTAR_TLS_CA"))
    if cert and key and ca:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        # The node renews the files in place; new connections use the new
        # certificate once it is loaded again.
        threading.Thread(target=reload_forever, args=(ctx, cert, key), daemon=True).start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def reload_forever(ctx, cert, key):
    seen = os.stat(cert).st_mtime
    while True:
        time.sleep(1)
        try:
            now = os.stat(cert).st_mtime
            if now != seen:
                ctx.load_cert_chain(cert, key)
                seen = now
                log("info", "certificate reloaded")
        except (OSError, ssl.SSLError) as e:
            log("warn", "cannot reload the certificate", error=str(e))


# ---- consuming ---------------------------------------------------------


def consume(bus, state, topic, group, consumer):
    """Pull, record, ack, until draining; what was pulled is always settled."""
    backoff = 0.1
    while not state.draining.is_set():
        try:
            batch = bus.call(
                "POST",
                "/v1/bus/topics/%s/groups/%s/pull" % (topic, group),
                {"consumer": consumer, "max": 50, "wait_ms": 1000},
                timeout=15,
            )["messages"]
            state.bus_ok.set()
            backoff = 0.1
        except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
            log("warn", "bus pull failed; retrying", error=str(e), retry_in_ms=int(backoff * 1000))
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            continue
        try:
            settle(bus, state, topic, group, batch)
        except Exception as e:  # the store failed: what was not acked comes again
            log("warn", "cannot record notifications; the unacknowledged messages will be redelivered",
                error=str(e), retry_in_ms=int(backoff * 1000))
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


def settle(bus, state, topic, group, batch):
    acks, bad = [], []
    for message in batch:
        try:
            note = notification(message, state.store)
        except Malformed as e:
            bad.append((message["id"], str(e)))
            continue
        fresh = state.store.record(note)
        log(
            "info",
            "notification recorded" if fresh else "duplicate delivery; already notified",
            event_id=note["event_id"], order=note["order_id"], kind=note["kind"],
            attempt=message.get("attempt"), trace_id=note["trace_id"],
        )
        acks.append(message["id"])
    path = "/v1/bus/topics/%s/groups/%s/" % (topic, group)
    if acks:
        send_until_done(bus, path + "ack", {"ids": acks})
    for message_id, why in bad:
        log("error", "malformed message refused", id=message_id, reason=why)
        send_until_done(bus, path + "nack", {"ids": [message_id], "reason": why})


def send_until_done(bus, path, body):
    """Retries a settle while the bus is unreachable: a lost ack would only
    mean a duplicate delivery, which the store absorbs, but draining waits
    for it so that scale-in causes no redelivery."""
    for attempt in range(20):
        try:
            bus.call("POST", path, body)
            return
        except (urllib.error.URLError, OSError) as e:
            log("warn", "settling failed; retrying", path=path, error=str(e), attempt=attempt + 1)
            time.sleep(min(0.1 * 2 ** attempt, 2.0))


def exit_with_node(state):
    """Drains when stdin closes: the node died (MORTAR_EXIT_WITH_NODE=stdin)."""
    sys.stdin.read()
    state.draining.set()


def main():
    node_url = os.environ.get("MORTAR_NODE_URL")
    bus_url = os.environ.get("MORTAR_BUS_HTTP_URL") or node_url
    if not bus_url:
        log("error", "neither MORTAR_BUS_HTTP_URL nor MORTAR_NODE_URL is set: run the notifier "
            "under `mortar up`, or set MORTAR_BUS_HTTP_URL to a `mortar bus http` bridge")
        return EXIT_CONFIG
    store_url = os.environ.get("MORTAR_STORE_URL", "sqlite://notifications.db")
    try:
        store, db = open_store(store_url)
    except StoreUrlError as e:
        log("error", "MORTAR_STORE_URL cannot be used: %s" % e, found=redact(store_url))
        return EXIT_CONFIG
    state = State(store)
    node_token = os.environ.get("MORTAR_NODE_TOKEN", "")
    node = Api(node_url, node_token) if node_url else None
    bus = Api(bus_url, os.environ.get("MORTAR_BUS_HTTP_TOKEN", node_token))
    instance = os.environ.get("MORTAR_INSTANCE", "notifier-%d" % os.getpid())
    topic = os.environ.get("NOTIFIER_TOPIC", "orders")
    group = os.environ.get("NOTIFIER_GROUP", "notifier")

    def drain(signum, _frame):
        log("info", "draining: no more pulls, finishing and acking what is held",
            signal=signal.Signals(signum).name)
        state.draining.set()

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    server = serve(state)
    address, port = server.server_address[:2]
    # Without a node the platform finds the service (a Kubernetes Service).
    if node is not None:
        node.call("POST", "/v1/instances/%s/endpoint" % instance, {
            "address": address, "port": port, "pid": os.getpid(),
            "service": os.environ.get("MORTAR_SERVICE", "notifier"),
        })
    log("info", "listening", address=address, port=port, topic=topic, group=group, db=db,
        bus=redact(bus_url))
    worker = threading.Thread(target=consume, args=(bus, state, topic, group, instance))
    worker.start()
    # Exit with the node even when it is killed (MORTAR_EXIT_WITH_NODE=stdin).
    if os.environ.get("MORTAR_EXIT_WITH_NODE") == "stdin":
        threading.Thread(target=exit_with_node, args=(state,), daemon=True).start()
    while worker.is_alive():
        worker.join(0.2)
    server.shutdown()
    log("info", "drained, exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
