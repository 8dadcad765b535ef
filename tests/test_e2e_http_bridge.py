"""End-to-end: the HTTP bridge over real TCP — treq and curl requests, autobahn-python subscribers and
callees, ``twistd sandstone --http-publisher ... --http-caller ...`` with signed requests (signed as
Crossbar's clients sign, and by Crossbar's own signing helper), and two twistd nodes on one redis-server."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import random
import shutil
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue

from sandstone import Limits, Sandstone
from sandstone._http_bridge import KEYS_ENV
from tests.support import ServerTestCase, sleep, wait_until
from tests.test_e2e_cluster_twistd import TwistdClusterTestCase
from tests.test_e2e_twistd import REPO, TwistdTestCase

KEY, SECRET = "app1", "kkjH68GiuUZ"
CROSSBAR_PYTHON = REPO / "bench" / ".venv-crossbar" / "bin" / "python"
# crossbarhttp (PyPI, 0.1.2, the Python client of Crossbar's HTTP bridge) runs on Python 2 only: point
# CROSSBARHTTP_PYTHON at a Python 2.7 that imports it (CROSSBARHTTP_PYTHONPATH: where it is, if need be).
CROSSBARHTTP_PYTHON = os.environ.get("CROSSBARHTTP_PYTHON")
CROSSBARHTTP_SCRIPT = """
import json, sys
from crossbarhttp import Client, ClientMissingParams, ClientNoCalleeRegistered, ClientSignatureError

base, key, secret = sys.argv[1:4]
seen = {}
seen["id"] = Client(base + "/publish", key=key, secret=secret).publish("com.example.py2", "hello", n=1)
caller = Client(base + "/call", key=key, secret=secret)  # seq starts at 1 again: not checked
seen["sum"] = caller.call("com.example.add2", 1, 2)
for name, call in (
    ("no_callee", lambda: caller.call("com.example.nobody")),
    ("wrong_secret", lambda: Client(base + "/publish", key=key, secret="x").publish("com.example.py2", 2)),
    ("unsigned", lambda: Client(base + "/publish").publish("com.example.py2", 3)),
):
    try:
        call()
    except (ClientNoCalleeRegistered, ClientSignatureError, ClientMissingParams) as error:
        seen[name] = type(error).__name__
print(json.dumps(seen))
"""


def crossbar_signed(body: bytes, key: str = KEY, secret: str = SECRET, seq: int = 1) -> str:
    """The query string crossbarhttp's ``Client._compute_signature`` and ``_make_api_call`` build."""
    timestamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    nonce = random.randint(0, 2**53)
    hm = hmac.new(secret.encode(), None, hashlib.sha256)
    for part in (key, timestamp, str(seq), str(nonce)):
        hm.update(part.encode())
    hm.update(body)
    signature = base64.urlsafe_b64encode(hm.digest()).decode()
    return urlencode(
        {"timestamp": timestamp, "seq": str(seq), "nonce": nonce, "signature": signature, "key": key}
    )


def bridge_app(**caller: Any) -> Sandstone:
    app = Sandstone(anonymous=True, open_uris=True)
    app.http_publisher("/publish")
    app.http_caller("/call", **caller)
    return app


class BridgeServerTests(ServerTestCase):
    """An app with the bridge served on a 127.0.0.1 port, autobahn-python clients on its WebSocket."""

    timeout = 30

    async def test_publish_reaches_autobahn_subscribers(self) -> None:
        self.serve(bridge_app())
        json_reader, cbor_reader = await self.connect("json"), await self.connect("cbor")
        for reader in (json_reader, cbor_reader):
            await reader.record("com.example.news")
        response = await self.http().post(
            f"{self.base_url}/publish",
            json={"topic": "com.example.news", "args": ["hello"], "kwargs": {"from": "http"}},
        )
        self.assertEqual(response.code, 200)
        answer = await response.json()
        await wait_until(
            lambda: json_reader.received["com.example.news"] and cbor_reader.received["com.example.news"]
        )
        for reader in (json_reader, cbor_reader):
            [event] = reader.received["com.example.news"]
            self.assertEqual((event.args, event.kwargs), (["hello"], {"from": "http"}))
            self.assertEqual(event.details.publication, answer["id"])

    async def test_call_reaches_an_autobahn_callee(self) -> None:
        self.serve(bridge_app())
        callee = await self.connect("msgpack")
        await callee.register(lambda a, b: a * b, "com.example.multiply")

        def checkname(name: str) -> None:
            raise ApplicationError("com.example.error.mixed_case", name.lower(), name.upper())

        await callee.register(checkname, "com.example.checkname")
        http = self.http()
        response = await http.post(
            f"{self.base_url}/call", json={"procedure": "com.example.multiply", "args": [6, 7]}
        )
        self.assertEqual((response.code, await response.json()), (200, {"args": [42]}))
        response = await http.post(
            f"{self.base_url}/call", json={"procedure": "com.example.checkname", "args": ["Ab"]}
        )
        self.assertEqual(response.code, 500)
        self.assertEqual(
            await response.json(),
            {"error": "com.example.error.mixed_case", "args": ["ab", "AB"], "kwargs": {}},
        )
        response = await http.post(f"{self.base_url}/call", json={"procedure": "com.example.nobody"})
        self.assertEqual(response.code, 404)
        self.assertEqual((await response.json())["error"], "wamp.error.no_such_procedure")

    async def test_timeout_interrupts_the_autobahn_callee(self) -> None:
        self.serve(bridge_app(timeout=0.5))
        callee = await self.connect("json")
        canceled: list[str] = []
        await callee.register(lambda: defer.Deferred(lambda _: canceled.append("slow")), "com.example.slow")
        response = await self.http().post(f"{self.base_url}/call", json={"procedure": "com.example.slow"})
        self.assertEqual(response.code, 504)
        self.assertEqual((await response.json())["error"], "wamp.error.timeout")
        await wait_until(lambda: canceled == ["slow"])  # autobahn cancels the invocation on INTERRUPT

    async def test_http_client_going_away_cancels_the_call(self) -> None:
        app = bridge_app(timeout=30)
        canceled: list[str] = []

        @app.procedure("com.example.forever")
        def forever() -> defer.Deferred[None]:
            return defer.Deferred(lambda _: canceled.append("forever"))

        self.serve(app)
        try:  # treq's timeout drops the connection
            await self.http().post(
                f"{self.base_url}/call", json={"procedure": "com.example.forever"}, timeout=0.3
            )
        except Exception:
            pass
        else:
            self.fail("the call answered")
        await wait_until(lambda: canceled == ["forever"])
        self.assertEqual(app.router.dealer.calls_in_flight, 0)

    async def test_body_over_the_apps_limit_gets_the_sites_413(self) -> None:
        app = bridge_app()
        app.limits = Limits(max_request_body=1024)
        self.serve(app)
        reader = await self.connect()
        await reader.record("com.example.big")
        response = await self.http().post(
            f"{self.base_url}/publish", json={"topic": "com.example.big", "args": ["x" * 2000]}
        )
        self.assertEqual(response.code, 413)
        self.assertEqual((await response.json())["status"], 413)
        await sleep(0.2)
        self.assertEqual(reader.received["com.example.big"], [])

    async def test_curl(self) -> None:
        curl = shutil.which("curl")
        if curl is None:
            self.skipTest("curl is not installed")
        self.serve(bridge_app())
        reader = await self.connect()
        await reader.record("com.example.curl")

        async def run(*arguments: str) -> tuple[int, Any]:
            out, err, code = await getProcessOutputAndValue(
                curl, ["-sS", "--max-time", "10", "-w", "\n%{http_code}", *arguments], env=os.environ
            )
            self.assertEqual(code, 0, err)
            body, _, status = out.decode().rpartition("\n")
            return int(status), json.loads(body) if body else None

        json_header = ["-H", "Content-Type: application/json"]
        status, body = await run(
            *json_header, "-d", '{"topic": "com.example.curl", "args": [1]}', f"{self.base_url}/publish"
        )
        self.assertEqual((status, list(body)), (200, ["id"]))
        await wait_until(lambda: reader.received["com.example.curl"])
        # curl -d without a Content-Type header sends a form: refused, nothing published
        status, body = await run(
            "-d", '{"topic": "com.example.curl", "args": [2]}', f"{self.base_url}/publish"
        )
        self.assertEqual((status, body["error"]), (415, "sandstone.error.unsupported_media_type"))
        status, body = await run(
            *json_header, "-d", '{"topic": "com.example.curl"', f"{self.base_url}/publish"
        )
        self.assertEqual((status, body["error"]), (400, "sandstone.error.bad_request"))
        status, body = await run(f"{self.base_url}/publish")
        self.assertEqual(status, 405)
        status, body = await run(
            *json_header, "-d", '{"procedure": "wamp.session.count"}', f"{self.base_url}/call"
        )
        self.assertEqual((status, body), (200, {"args": [1]}))
        await sleep(0.2)
        self.assertEqual([e.payload for e in reader.received["com.example.curl"]], [1])


class TwistdBridgeTests(TwistdTestCase):
    """``twistd -n sandstone --http-publisher /publish --http-caller /call`` with signed requests."""

    def keys_file(self) -> str:
        path = Path(self.mktemp()).resolve()
        path.write_text(json.dumps({KEY: SECRET}))
        return str(path)

    async def test_signed_requests_with_a_keys_file(self) -> None:
        process = await self.start(
            "--http-publisher", "/publish", "--http-caller", "/call", "--http-bridge-keys", self.keys_file()
        )
        reader = await self.connect("cbor")
        await reader.record("com.example.signed")
        http = self.http()
        body = json.dumps({"topic": "com.example.signed", "args": ["signed"]}).encode()
        url = f"{self.base_url}/publish?{crossbar_signed(body)}"
        headers = {"Content-Type": ["application/json"]}
        response = await http.post(url, data=body, headers=headers)
        self.assertEqual(response.code, 200, await response.text())
        await wait_until(lambda: reader.received["com.example.signed"])

        replayed = await http.post(url, data=body, headers=headers)
        self.assertEqual(
            (replayed.code, (await replayed.json())["error"]), (401, "sandstone.error.request_replayed")
        )
        unsigned = await http.post(f"{self.base_url}/publish", data=body, headers=headers)
        self.assertEqual(unsigned.code, 400)
        wrong = await http.post(
            f"{self.base_url}/publish?{crossbar_signed(body, secret='guess')}", data=body, headers=headers
        )
        self.assertEqual(wrong.code, 401)

        call = json.dumps({"procedure": "wamp.session.count"}).encode()
        response = await http.post(
            f"{self.base_url}/call?{crossbar_signed(call, seq=2)}", data=call, headers=headers
        )
        self.assertEqual(await response.json(), {"args": [1]})
        await sleep(0.2)
        self.assertEqual(len(reader.received["com.example.signed"]), 1)
        self.assertIn(
            "HTTP bridge: publisher at /publish and caller at /call (signed requests, 1 key;", process.output
        )
        self.assertIn("401 for 127.0.0.1: nonce", process.output)  # refusals are logged
        await self.terminate(process)

    async def test_keys_from_the_environment_and_crossbar_errors(self) -> None:
        os.environ[KEYS_ENV] = json.dumps({"envkey": "envsecret"})
        self.addCleanup(os.environ.pop, KEYS_ENV)
        process = await self.start("--http-caller", "/call", "--http-bridge-crossbar-errors")
        body = json.dumps({"procedure": "com.example.nobody"}).encode()
        response = await self.http().post(
            f"{self.base_url}/call?{crossbar_signed(body, 'envkey', 'envsecret')}",
            data=body,
            headers={"Content-Type": ["application/json"]},
        )
        self.assertEqual(response.code, 200)  # as Crossbar answers, and crossbarhttp expects
        self.assertEqual((await response.json())["error"], "wamp.error.no_such_procedure")
        await self.terminate(process)

    async def test_signed_by_crossbars_own_helper(self) -> None:
        """Crossbar's client-side signer (``crossbar.bridge.rest.test.makeSignedArguments``, run by Crossbar's
        own interpreter) signs a request this server accepts."""
        if not CROSSBAR_PYTHON.exists():
            self.skipTest(f"Crossbar is not installed in {CROSSBAR_PYTHON.parent.parent}")
        process = await self.start("--http-publisher", "/publish", "--http-bridge-keys", self.keys_file())
        reader = await self.connect()
        await reader.record("com.example.crossbar")
        script = textwrap.dedent(
            f"""
            import json, sys, types, urllib.error, urllib.parse, urllib.request

            # the test package imports mock for its other helpers (not installed with Crossbar)
            sys.modules.setdefault("mock", types.SimpleNamespace(Mock=object))
            from crossbar.bridge.rest.test import makeSignedArguments

            body = json.dumps({{"topic": "com.example.crossbar", "args": ["from crossbar"]}}).encode()
            params = makeSignedArguments({{}}, {KEY!r}, {SECRET!r}, body)
            query = urllib.parse.urlencode({{k.decode(): v[0].decode() for k, v in params.items()}})
            request = urllib.request.Request(
                "{self.base_url}/publish?" + query, body, {{"Content-Type": "application/json"}}
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    print(response.status, response.read().decode())
            except urllib.error.HTTPError as error:
                print(error.code, error.read().decode())
            """
        )
        out, err, code = await getProcessOutputAndValue(str(CROSSBAR_PYTHON), ["-c", script], env={})
        self.assertEqual(code, 0, err.decode())
        status, _, answer = out.decode().strip().partition(" ")
        self.assertEqual(status, "200", answer)
        await wait_until(lambda: reader.received["com.example.crossbar"])
        self.assertEqual(reader.received["com.example.crossbar"][0].payload, "from crossbar")
        self.assertEqual(
            json.loads(answer)["id"], reader.received["com.example.crossbar"][0].details.publication
        )
        await self.terminate(process)

    async def test_crossbarhttp_client(self) -> None:
        """crossbarhttp, Crossbar's Python HTTP bridge client, unchanged: signed publish and call, and the
        exceptions it raises for a missing callee (with --http-bridge-crossbar-errors), a wrong secret and an
        unsigned request."""
        if not CROSSBARHTTP_PYTHON:
            self.skipTest(
                "set CROSSBARHTTP_PYTHON to a Python 2.7 that imports crossbarhttp 0.1.2 (Python 2 only)"
            )
        process = await self.start(
            "--http-publisher=/publish",
            "--http-caller=/call",
            f"--http-bridge-keys={self.keys_file()}",
            "--http-bridge-crossbar-errors",
        )
        client = await self.connect("msgpack")
        await client.record("com.example.py2")
        await client.register(lambda a, b: a + b, "com.example.add2")
        environment = {"PYTHONPATH": os.environ.get("CROSSBARHTTP_PYTHONPATH", "")}
        arguments = ["-c", CROSSBARHTTP_SCRIPT, self.base_url, KEY, SECRET]
        out, err, code = await getProcessOutputAndValue(CROSSBARHTTP_PYTHON, arguments, env=environment)
        self.assertEqual(code, 0, err.decode())
        seen = json.loads(out)
        await wait_until(lambda: client.received["com.example.py2"])
        [event] = client.received["com.example.py2"]
        self.assertEqual(
            (event.args, event.kwargs, event.details.publication), (["hello"], {"n": 1}, seen["id"])
        )
        self.assertEqual(
            seen,
            {
                "id": seen["id"],
                "sum": 3,
                "no_callee": "ClientNoCalleeRegistered",
                "wrong_secret": "ClientSignatureError",
                "unsigned": "ClientMissingParams",
            },
        )
        await self.terminate(process)


class ClusterBridgeTests(TwistdClusterTestCase):
    async def test_publish_and_call_through_one_node_reach_the_other(self) -> None:
        (first, url1, base1), (second, url2, _) = await self.start_nodes(
            "--http-publisher", "/publish", "--http-caller", "/call"
        )
        here, there = await self.connect(url=url1), await self.connect("msgpack", url=url2)
        for reader in (here, there):
            await reader.record("com.example.everywhere")
        await there.register(lambda name: f"hello {name} from node 2", "com.example.greet")
        http = self.http()
        response = await http.post(f"{base1}/publish", json={"topic": "com.example.everywhere", "args": [1]})
        self.assertEqual(response.code, 200)
        published = (await response.json())["id"]
        await wait_until(
            lambda: here.received["com.example.everywhere"] and there.received["com.example.everywhere"]
        )
        response = await http.post(
            f"{base1}/call", json={"procedure": "com.example.greet", "args": ["bridge"]}
        )
        self.assertEqual(await response.json(), {"args": ["hello bridge from node 2"]})
        await sleep(0.3)
        for reader in (here, there):  # exactly once on each node
            [event] = reader.received["com.example.everywhere"]
            self.assertEqual((event.payload, event.details.publication), (1, published))
        await self.terminate(first)
        await self.terminate(second)
