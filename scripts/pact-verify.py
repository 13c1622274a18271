"""Every pact under contracts/pacts/ verified by the official Pact core (pact_ffi, through
pact-python) against a running system (`mercato up`, embedded):

- message pacts: the system is driven through the gateway (a change of preferences, a stock
  change, orders confirmed and shipped and delivered, declined, out of stock, charged too late)
  and each interaction is verified against a message of its type that the producer really
  published, read from the embedded bus's log;
- the HTTP pact: payments' expectations replayed against the payment sandbox. Its provider
  states are set up by a small state-change server here: "a charge was captured" makes a charge
  in the sandbox and returns its id, which the verifier puts into the refund request (the
  pact's `ProviderState` generator on `charge_id`); the test cards' states need nothing.

Then the check of the check: the real ReserveStock with `lines` renamed must fail inventory's pact,
and the report must name the consumer and the field. Exit status 1 on any failure.

  pact-verify.py --gateway URL --sandbox URL --bus-db PATH --customer TOKEN --admin TOKEN
"""

import argparse
import http.server
import json
import os
import sqlite3
import sys
import threading
import time
import uuid
import urllib.error
import urllib.request
from pathlib import Path

os.environ.setdefault("PACT_DO_NOT_TRACK", "true")

from pact import Verifier  # noqa: E402

PACTS = Path(__file__).resolve().parent.parent / "contracts" / "pacts"
DEADLINE_SECS = 90
SKU = "MUG-001"


def call(method, url, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, None


def eventually(what, probe):
    deadline = time.monotonic() + DEADLINE_SECS
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.2)
    sys.exit(f"timed out waiting for {what}")


def drive(gateway, customer, admin):
    """Makes every producer publish every message type some pact names."""
    prefs = {"channels": {"email": True, "sms": True}, "marketing_opt_in": False, "locale": "de-DE"}
    status, _ = call("PUT", f"{gateway}/api/customers/me/preferences", customer, prefs)
    assert status == 200, f"preferences: {status}"
    status, _ = call("PUT", f"{gateway}/api/products/{SKU}/stock", admin, {"quantity": 50})
    assert status == 200, f"stock: {status}"

    def order(quantity, card):
        body = {
            "items": [{"sku": SKU, "quantity": quantity}],
            "payment": {"card_token": card},
            "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        }
        status, placed = call("POST", f"{gateway}/api/orders", customer, body)
        assert status == 201, f"placing an order with {card}: {status}"
        return placed["id"]

    confirmed = order(2, "tok_visa")
    others = [order(1, "tok_decline"), order(100, "tok_visa"), order(1, "tok_late")]

    def settled(order_id):
        def probe():
            status, body = call("GET", f"{gateway}/api/orders/{order_id}", customer)
            return body if status == 200 and body["status"] != "pending" else None

        return eventually(f"order {order_id} to settle", probe)

    assert settled(confirmed)["status"] == "confirmed"
    for step in ["ship", "deliver"]:
        status, _ = call("POST", f"{gateway}/api/orders/{confirmed}/{step}", admin)
        assert status == 200, f"{step}: {status}"
    for other in others:
        assert settled(other)["status"] == "cancelled"


def published(bus_db, provider, event_type):
    with sqlite3.connect(f"file:{bus_db}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT envelope FROM bus_messages WHERE category = ? AND event_type = ? ORDER BY rowid LIMIT 1",
            (provider, event_type),
        ).fetchone()
    return json.loads(row[0]) if row else None


def as_message(envelope):
    return {
        "contents": json.dumps(envelope["payload"]).encode(),
        "metadata": {"type": envelope["type"], "schema_version": envelope["schema_version"]},
        "content_type": "application/json",
    }


def no_op_states(pact):
    # A provider state of a message pact names what the producer did; the messages were made by
    # driving the system.
    names = {s["name"] for i in pact["interactions"] for s in i.get("providerStates", [])}
    return {name: (lambda *args, **kwargs: None) for name in names}


def sandbox_states(sandbox):
    """A state-change server for the sandbox's pact, on a free port; returns its URL. The
    verifier posts {"state", "action", "params"} and takes a JSON object back as the values its
    `ProviderState` generators read."""

    def captured_charge():
        request = urllib.request.Request(
            f"{sandbox}/v1/charges",
            data=json.dumps({"amount_minor": 2500, "currency": "EUR", "card_token": "tok_visa"}).encode(),
            method="POST",
        )
        request.add_header("content-type", "application/json")
        request.add_header("idempotency-key", f"pact-state-{uuid.uuid4()}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return {"charge_id": json.load(response)["id"]}

    class States(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            change = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            values = {}
            if change.get("action") == "setup" and change.get("state") == "a charge was captured":
                values = captured_charge()
            text = json.dumps(values).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), States)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/"


def verify(path, pact, configure, states=None):
    verifier = Verifier(pact["provider"]["name"], host="127.0.0.1").set_coloured_output(enabled=False)
    if states:
        verifier.state_handler(states, teardown=False, body=True)
    else:
        verifier.state_handler(no_op_states(pact), teardown=False)
    configure(verifier)
    verifier.add_source(str(path))
    try:
        verifier.verify()
        return True, verifier.output(strip_ansi=True)
    except Exception:  # the verifier raises on any failed interaction
        return False, verifier.output(strip_ansi=True)


def messages_from(bus_db, pact, change=None):
    handlers = {}
    for interaction in pact["interactions"]:
        event_type = interaction["metadata"]["type"]
        envelope = eventually(
            f"{pact['provider']['name']} to publish {event_type}",
            lambda: published(bus_db, pact["provider"]["name"], event_type),
        )
        if change:
            change(envelope)
        handlers[interaction["description"]] = as_message(envelope)
    return handlers


def main():
    parser = argparse.ArgumentParser()
    for flag in ["--gateway", "--sandbox", "--bus-db", "--customer", "--admin"]:
        parser.add_argument(flag, required=True)
    args = parser.parse_args()

    drive(args.gateway, args.customer, args.admin)
    failed = []
    for path in sorted(PACTS.glob("*.json")):
        pact = json.loads(path.read_text())
        consumer, provider = pact["consumer"]["name"], pact["provider"]["name"]
        kinds = {i["type"] for i in pact["interactions"]}
        if kinds == {"Asynchronous/Messages"}:
            handlers = messages_from(args.bus_db, pact)
            ok, output = verify(path, pact, lambda v: v.message_handler(handlers))
        elif kinds == {"Synchronous/HTTP"}:
            # tok_late answers after the sandbox's late delay.
            ok, output = verify(
                path,
                pact,
                lambda v: v.add_transport(url=args.sandbox).set_request_timeout(30_000),
                states=sandbox_states(args.sandbox),
            )
        else:
            ok, output = False, f"unexpected interaction types {kinds}"
        print(f"== pact {consumer} <- {provider}: {'verified' if ok else 'FAILED'}")
        if not ok:
            print(output)
            failed.append(f"{consumer} <- {provider}")

    # A producer that renames a field a consumer reads must fail that consumer's pact, by name.
    path = PACTS / "inventory-orders.json"
    pact = json.loads(path.read_text())

    def rename(envelope):
        if envelope["type"] == "ReserveStock":
            envelope["payload"]["items"] = envelope["payload"].pop("lines")

    handlers = messages_from(args.bus_db, pact, rename)
    ok, output = verify(path, pact, lambda v: v.message_handler(handlers))
    named = "between inventory and orders" in output and "missing the following keys: lines" in output
    if ok or not named:
        print(output)
        failed.append("the renamed ReserveStock field was not reported against inventory's pact")
    else:
        print("== a renamed ReserveStock field fails inventory's pact, naming the field: as expected")

    if failed:
        sys.exit("pact verification failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
