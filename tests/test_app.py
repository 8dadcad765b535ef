"""Tests for L{sandstone._app}: Klein's REST features, events, broadcasts and configuration of the app."""

from __future__ import annotations

import json
from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest

from sandstone import DispatchResult, EventDispatcher, Sandstone, StopPropagation, Topic
from sandstone._router import Router
from sandstone.testing import SessionClosed, TestClient


class RestTests(SynchronousTestCase):
    """Klein's routing works as usual on a Sandstone app."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)

    def client(self) -> TestClient:
        return TestClient(self.app)

    def test_route_returns_the_handlers_body(self) -> None:
        self.app.route("/hello")(lambda request: b"hello")
        response = self.client().get("/hello")
        self.assertEqual((response.code, response.body), (200, b"hello"))

    def test_route_with_a_converted_variable(self) -> None:
        self.app.route("/double/<int:n>")(lambda request, n: str(n * 2))
        self.assertEqual(self.client().get("/double/21").body, b"42")

    def test_unknown_path_is_404(self) -> None:
        self.app.route("/hello")(lambda request: b"hello")
        self.assertEqual(self.client().get("/nothing").code, 404)

    def test_method_not_allowed_is_405(self) -> None:
        self.app.route("/things", methods=["POST"])(lambda request: b"made")
        self.assertEqual(self.client().get("/things").code, 405)

    def test_methods_select_the_handler(self) -> None:
        @self.app.route("/things", methods=["GET"])
        def list_things(request: IRequest) -> bytes:
            return b"list"

        @self.app.route("/things", methods=["POST"])
        def make_thing(request: IRequest) -> bytes:
            return b"made"

        client = self.client()
        self.assertEqual((client.get("/things").body, client.post("/things").body), (b"list", b"made"))

    def test_handler_sets_status_and_headers(self) -> None:
        @self.app.route("/teapot")
        def teapot(request: IRequest) -> bytes:
            request.setResponseCode(418)
            request.setHeader(b"X-Kind", b"teapot")
            return b"short and stout"

        response = self.client().get("/teapot")
        self.assertEqual((response.code, response.headers["X-Kind"]), (418, ["teapot"]))

    def test_handler_reads_the_request_body(self) -> None:
        self.app.route("/echo", methods=["POST"])(lambda request: request.content.read())
        self.assertEqual(self.client().post("/echo", data=b"ping").body, b"ping")

    def test_handler_reads_a_json_body(self) -> None:
        @self.app.route("/sum", methods=["POST"])
        def total(request: IRequest) -> str:
            return str(sum(json.loads(request.content.read())))

        self.assertEqual(self.client().post("/sum", json=[1, 2, 3]).body, b"6")

    def test_branch_route_serves_the_whole_subtree(self) -> None:
        self.app.route("/files/", branch=True)(lambda request: b"/".join(request.postpath))
        self.assertEqual(self.client().get("/files/a/b.txt").body, b"a/b.txt")

    def test_handle_errors_turns_an_exception_into_a_response(self) -> None:
        @self.app.route("/items/<name>")
        def item(request: IRequest, name: str) -> bytes:
            raise KeyError(name)

        @self.app.handle_errors(KeyError)
        def missing(request: IRequest, failure: Failure) -> bytes:
            request.setResponseCode(404)
            return f"no item {failure.value.args[0]}".encode()

        response = self.client().get("/items/x")
        self.assertEqual((response.code, response.body), (404, b"no item x"))

    def test_subroute_prefixes_its_routes(self) -> None:
        with self.app.subroute("/api/v1") as api:
            api.route("/status")(lambda request: b"ok")
        client = self.client()
        self.assertEqual((client.get("/api/v1/status").body, client.get("/status").code), (b"ok", 404))

    def test_async_def_handler(self) -> None:
        @self.app.route("/async")
        async def handler(request: IRequest) -> bytes:
            return b"async " + await succeed(b"body")

        self.assertEqual(self.client().get("/async").body, b"async body")

    def test_deferred_returning_handler(self) -> None:
        self.app.route("/deferred")(lambda request: succeed(b"deferred body"))
        self.assertEqual(self.client().get("/deferred").body, b"deferred body")

    def test_handler_finishing_on_a_later_event(self) -> None:
        @self.app.route("/after-dispatch")
        def handler(request: IRequest) -> Deferred[bytes]:
            return self.app.dispatch("ping").addCallback(lambda result: f"called {result.called}".encode())

        self.app.on_event("ping")(lambda event: None)
        self.assertEqual(self.client().get("/after-dispatch").body, b"called 1")

    def test_bound_app_serves_routes_of_its_instance(self) -> None:
        class Service:
            app = Sandstone(anonymous=True)

            def __init__(self, greeting: str) -> None:
                self.greeting = greeting

            @app.route("/greet")
            def greet(self, request: IRequest) -> str:
                return self.greeting

        service = Service("hi there")
        self.assertEqual(TestClient(service.app).get("/greet").body, b"hi there")

    def test_bound_app_shares_router_and_events(self) -> None:
        class Service:
            app = Sandstone(anonymous=True)

        bound = Service().app
        self.assertIs(bound.router, Service.app.router)
        self.assertIs(bound.events, Service.app.events)


class DispatchTests(SynchronousTestCase):
    """``app.dispatch`` and ``app.on_event``."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)
        self.calls: list[str] = []

    def listen(self, label: str, priority: int = 0) -> None:
        self.app.on_event("thing", priority=priority)(lambda event: self.calls.append(label))

    def dispatch(self, event: Any = None) -> DispatchResult:
        return self.successResultOf(self.app.dispatch("thing", event))

    def test_listener_receives_the_event(self) -> None:
        seen: list[Any] = []
        self.app.on_event("thing")(seen.append)
        self.dispatch({"id": 1})
        self.assertEqual(seen, [{"id": 1}])

    def test_on_event_returns_the_function(self) -> None:
        def listener(event: Any) -> None:
            pass

        self.assertIs(self.app.on_event("thing")(listener), listener)

    def test_higher_priority_runs_first(self) -> None:
        self.listen("low", priority=-1)
        self.listen("high", priority=5)
        self.listen("default")
        self.dispatch()
        self.assertEqual(self.calls, ["high", "default", "low"])

    def test_equal_priorities_run_in_registration_order(self) -> None:
        for label in ("a", "b", "c"):
            self.listen(label)
        self.dispatch()
        self.assertEqual(self.calls, ["a", "b", "c"])

    def test_stop_propagation_stops_later_listeners(self) -> None:
        self.listen("first", priority=1)

        @self.app.on_event("thing")
        def stop(event: Any) -> None:
            raise StopPropagation()

        self.listen("never", priority=-1)
        result = self.dispatch()
        self.assertEqual((self.calls, result.stopped, result.errors), (["first"], True, []))

    def test_failing_listener_is_recorded_and_the_others_run(self) -> None:
        @self.app.on_event("thing", priority=1)
        def broken(event: Any) -> None:
            raise ValueError("listener failed")

        self.listen("after")
        result = self.dispatch()
        self.assertEqual(self.calls, ["after"])
        [error] = result.errors
        self.assertTrue(error.failure.check(ValueError))
        self.assertIn("broken", error.listener)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_dispatch_without_listeners_succeeds(self) -> None:
        result = self.dispatch("nobody")
        self.assertEqual((result.name, result.event, result.called, result.ok), ("thing", "nobody", 0, True))

    def test_async_listener_is_awaited_before_the_next(self) -> None:
        gate: Deferred[None] = Deferred()

        @self.app.on_event("thing", priority=1)
        async def slow(event: Any) -> None:
            await gate
            self.calls.append("slow")

        self.listen("next")
        d = self.app.dispatch("thing")
        self.assertEqual(self.calls, [])
        gate.callback(None)
        self.assertEqual((self.calls, self.successResultOf(d).called), (["slow", "next"], 2))

    def test_events_property_is_the_dispatcher_behind_dispatch(self) -> None:
        self.assertIsInstance(self.app.events, EventDispatcher)
        self.listen("x")
        self.assertEqual(self.app.events.listener_count("thing"), 1)


class DispatchFromRestTests(SynchronousTestCase):
    """A REST handler dispatching an event is not failed by a failing listener."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)
        self.results: list[DispatchResult] = []

        @self.app.route("/orders", methods=["POST"])
        async def order(request: IRequest) -> bytes:
            result = await self.app.dispatch("order.placed", {"id": 7})
            self.results.append(result)
            request.setResponseCode(201)
            return b"placed"

        @self.app.on_event("order.placed")
        def broken(event: Any) -> None:
            raise RuntimeError("mailer down")

    def test_failing_listener_does_not_fail_the_request(self) -> None:
        response = TestClient(self.app).post("/orders")
        self.assertEqual((response.code, response.body), (201, b"placed"))
        self.flushLoggedErrors(RuntimeError)

    def test_dispatch_result_has_the_error(self) -> None:
        TestClient(self.app).post("/orders")
        [result] = self.results
        self.assertFalse(result.ok)
        self.assertTrue(result.errors[0].failure.check(RuntimeError))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class BroadcastTests(SynchronousTestCase):
    """``app.broadcast`` publishes from the app to subscribers."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)

        @self.app.topic("news/{section}")
        class News(Topic):
            pass

        self.client = TestClient(self.app)
        self.alice, self.bob = self.client.connect(), self.client.connect()
        self.subscriptions = [s.subscribe("news/sport") for s in (self.alice, self.bob)]

    def test_broadcast_reaches_every_subscriber(self) -> None:
        self.app.broadcast("news/sport", {"headline": "goal"})
        self.assertEqual([s.payloads for s in self.subscriptions], [[{"headline": "goal"}]] * 2)

    def test_broadcast_returns_the_publication_id(self) -> None:
        publication = self.app.broadcast("news/sport", "goal")
        self.assertEqual({s.events[0].publication for s in self.subscriptions}, {publication})

    def test_broadcast_exclude(self) -> None:
        self.app.broadcast("news/sport", "goal", exclude=[self.alice.id])
        self.assertEqual([s.payloads for s in self.subscriptions], [[], ["goal"]])

    def test_broadcast_eligible(self) -> None:
        self.app.broadcast("news/sport", "goal", eligible=[self.alice.id])
        self.assertEqual([s.payloads for s in self.subscriptions], [["goal"], []])

    def test_broadcast_accepts_session_objects(self) -> None:
        [alice_session, _] = self.app.topic_instance("news/sport").subscribers
        self.app.broadcast("news/sport", "goal", exclude=[alice_session])
        self.assertEqual([s.payloads for s in self.subscriptions], [[], ["goal"]])

    def test_broadcast_reaches_pattern_subscribers(self) -> None:
        prefix = self.client.connect().subscribe("news/", match="prefix")
        self.app.broadcast("news/weather", "rain")
        self.assertEqual((prefix.payloads, prefix.events[0].topic), (["rain"], "news/weather"))

    def test_broadcast_without_subscribers_returns_an_id(self) -> None:
        self.assertIsInstance(self.app.broadcast("news/empty", "anyone?"), int)
        self.assertIsNone(self.app.topic_instance("news/empty"))

    def test_broadcast_does_not_run_on_publish(self) -> None:
        published: list[Any] = []

        @self.app.topic("watched")
        class Watched(Topic):
            def on_publish(self, session: Any, payload: Any) -> None:
                published.append(payload)

        subscription = self.alice.subscribe("watched")
        self.app.broadcast("watched", "direct")
        self.assertEqual((published, subscription.payloads), ([], ["direct"]))


class ConfigurationTests(SynchronousTestCase):
    """realm, ws_path, router."""

    def test_default_realm(self) -> None:
        self.assertEqual(Sandstone(anonymous=True).realm, "realm1")

    def test_realm_argument(self) -> None:
        app = Sandstone(anonymous=True, realm="chat")
        self.assertEqual(app.realm, "chat")
        self.assertEqual(TestClient(app).connect().messages[0].realm, "chat")

    def test_setting_the_realm_changes_the_realm_sessions_join(self) -> None:
        app = Sandstone(anonymous=True)
        app.realm = "renamed"
        client = TestClient(app)
        self.assertEqual(client.connect("renamed").messages[0].realm, "renamed")
        with self.assertRaises(SessionClosed):
            client.connect("realm1")

    def test_default_ws_path(self) -> None:
        self.assertEqual(Sandstone(anonymous=True).ws_path, "/ws")

    def test_ws_path_argument(self) -> None:
        self.assertEqual(Sandstone(anonymous=True, ws_path="/realtime").ws_path, "/realtime")

    def test_ws_path_can_change_before_serving(self) -> None:
        app = Sandstone(anonymous=True)
        app.ws_path = "/live"
        TestClient(app)
        self.assertEqual(app.ws_path, "/live")

    def test_ws_path_cannot_change_once_served(self) -> None:
        app = Sandstone(anonymous=True)
        TestClient(app)
        with self.assertRaises(RuntimeError):
            app.ws_path = "/elsewhere"

    def test_ws_path_may_be_set_to_its_current_value_once_served(self) -> None:
        app = Sandstone(anonymous=True)
        TestClient(app)
        app.ws_path = "/ws"
        self.assertEqual(app.ws_path, "/ws")

    def test_router_property(self) -> None:
        app = Sandstone(anonymous=True, realm="chat")
        self.assertIsInstance(app.router, Router)
        self.assertEqual(app.router.realm, "chat")

    def test_apps_do_not_share_state(self) -> None:
        first, second = Sandstone(anonymous=True), Sandstone(anonymous=True)
        first.procedure("app.only_first")(lambda: 1)
        error = self.failureResultOf(TestClient(second).connect().call("app.only_first"), ApplicationError)
        self.assertEqual(error.value.error, "wamp.error.no_such_procedure")


class WebSocketMountTests(SynchronousTestCase):
    """The WAMP endpoint is mounted at ws_path in the app's resource."""

    def test_ws_path_is_served(self) -> None:
        # a plain GET (no Upgrade) of the WebSocket path: 426, which says the endpoint is mounted there
        response = TestClient(Sandstone(anonymous=True)).get("/ws")
        self.assertEqual(response.code, 426)
        self.assertIn(b"WebSocket endpoint", response.body)

    def test_custom_ws_path_is_served(self) -> None:
        client = TestClient(Sandstone(anonymous=True, ws_path="/realtime"))
        self.assertNotEqual(client.get("/realtime").code, 404)
        self.assertEqual(client.get("/ws").code, 404)

    def test_rest_routes_are_served_beside_the_websocket(self) -> None:
        app = Sandstone(anonymous=True)
        app.route("/hello")(lambda request: b"hello")
        client = TestClient(app)
        self.assertEqual(client.get("/hello").body, b"hello")
        self.assertNotEqual(client.get("/ws").code, 404)

    def test_resource_can_be_made_twice(self) -> None:
        app = Sandstone(anonymous=True)
        TestClient(app)
        self.assertNotEqual(TestClient(app).get("/ws").code, 404)
