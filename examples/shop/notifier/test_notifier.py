"""Unit tests of the notifier: run with `python3 -m unittest` in this directory.

The store tests run on SQLite, and on PostgreSQL too when
NOTIFIER_TEST_POSTGRES names a server (postgres://user@host/db) and psycopg
is installed (the python scripts/notifier-venv prints); otherwise the
PostgreSQL ones are skipped, saying why."""

import io
import os
import random
import tempfile
import unittest
from contextlib import redirect_stdout
from unittest import mock

import notifier


def message(kind="OrderPlaced", version=1, data=None, headers=None):
    return {
        "id": 7,
        "attempt": 1,
        "headers": headers or {},
        "payload": {
            "stream_id": "order-42",
            "version": version,
            "event_type": kind,
            "payload": data if data is not None else {"customer": "ann", "total_cents": 1250, "lines": []},
            "metadata": {},
        },
    }


class StoreCases:
    """The store's behaviour, whichever backend."""

    def test_an_event_is_notified_once_however_often_it_is_delivered(self):
        note = notifier.notification(message(), self.store)
        self.assertTrue(self.store.record(note))
        self.assertFalse(self.store.record(note))
        notes = self.store.list(customer="ann")
        self.assertEqual(len(notes), 1)
        self.assertEqual(notes[0]["event_id"], "order-42@1")
        self.assertIn("1250 cents", notes[0]["text"])

    def test_later_events_find_the_customer_of_their_order(self):
        self.store.record(notifier.notification(message(), self.store))
        paid = notifier.notification(message("OrderPaid", 2, {"amount_cents": 1250}), self.store)
        self.assertEqual(paid["customer"], "ann")
        self.store.record(paid)
        self.assertEqual([n["kind"] for n in self.store.list(order="42")], ["OrderPlaced", "OrderPaid"])

    def test_the_trace_id_comes_from_the_traceparent_header(self):
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        note = notifier.notification(message(headers={"traceparent": tp}), self.store)
        self.assertEqual(note["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736")

    def test_what_is_not_an_order_event_is_refused_with_the_reason(self):
        for bad, why in [
            ({"id": 1, "payload": "text"}, "not a JSON object"),
            ({"id": 1, "payload": {"version": 1}}, "missing"),
            (message("OrderLost"), "unknown event type"),
        ]:
            with self.assertRaises(notifier.Malformed) as caught:
                notifier.notification(bad, self.store)
            self.assertIn(why, str(caught.exception))

    def test_a_reopened_store_keeps_its_notifications(self):
        self.store.record(notifier.notification(message(), self.store))
        again, _ = notifier.open_store(self.url)
        try:
            self.assertEqual(len(again.list(customer="ann")), 1)
            self.assertFalse(again.record(notifier.notification(message(), again)))
        finally:
            again.close()


class SqliteStoreTest(StoreCases, unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.url = "sqlite://" + os.path.join(self.dir.name, "store.db")
        self.store, where = notifier.open_store(self.url)
        self.assertEqual(where, os.path.join(self.dir.name, "notifications.db"))

    def tearDown(self):
        self.store.close()
        self.dir.cleanup()


class PostgresStoreTest(StoreCases, unittest.TestCase):
    def setUp(self):
        server = os.environ.get("NOTIFIER_TEST_POSTGRES")
        if not server:
            self.skipTest("NOTIFIER_TEST_POSTGRES is not set (a postgres:// URL to test against)")
        try:
            import psycopg
        except ImportError:
            self.fail("NOTIFIER_TEST_POSTGRES is set but psycopg is missing: use scripts/notifier-venv's python")
        self.psycopg, self.server = psycopg, server
        self.schema = "t_notifier_%016x" % random.getrandbits(64)
        self.url = "%s?schema=%s" % (server, self.schema)
        self.store, where = notifier.open_store(self.url)
        self.assertIn(self.schema, where)

    def tearDown(self):
        self.store.close()
        with self.psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute('DROP SCHEMA IF EXISTS "%s" CASCADE' % self.schema)

    def test_the_table_is_in_the_urls_schema(self):
        self.store.record(notifier.notification(message(), self.store))
        with self.psycopg.connect(self.server) as conn:
            count = conn.execute('SELECT count(*) FROM "%s".notifications' % self.schema).fetchone()[0]
        self.assertEqual(count, 1)

    def test_a_dropped_session_is_replaced(self):
        self.store.record(notifier.notification(message(), self.store))
        with self.psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                ("mortar/%s/notifier" % self.schema,),
            )
        self.assertEqual(len(self.store.list(customer="ann")), 1)


class StoreUrlTest(unittest.TestCase):
    def test_other_schemes_and_bad_schemas_are_refused(self):
        for url in ["mysql://db/x", "postgres://u@h/db?schema=Bad;drop"]:
            with self.assertRaises(notifier.StoreUrlError):
                notifier.open_store(url)


class ConfigTest(unittest.TestCase):
    def test_without_a_node_or_a_bus_url_it_exits_78_naming_both(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("MORTAR_NODE_URL", "MORTAR_BUS_HTTP_URL")}
        out = io.StringIO()
        with mock.patch.dict(os.environ, env, clear=True), redirect_stdout(out):
            self.assertEqual(notifier.main(), notifier.EXIT_CONFIG)
        self.assertIn("MORTAR_BUS_HTTP_URL", out.getvalue())
        self.assertIn("MORTAR_NODE_URL", out.getvalue())


class CallerTest(unittest.TestCase):
    def test_the_caller_is_the_service_in_the_certificates_uri(self):
        cert = {"subjectAltName": (("DNS", "gateway.shop.mortar"), ("URI", "mortar://shop/gateway"))}
        self.assertEqual(notifier.caller_service(cert), "gateway")
        self.assertIsNone(notifier.caller_service({}))

    def test_trace_id_rejects_garbage(self):
        self.assertIsNone(notifier.trace_id("nonsense"))
        self.assertIsNone(notifier.trace_id(None))


if __name__ == "__main__":
    unittest.main()
