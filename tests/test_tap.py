"""Tests for sandstone._tap: the options, app loading and service of ``twistd sandstone``."""

import importlib
import importlib.metadata
import importlib.util
import itertools
import os
import sys
import textwrap
import types
from pathlib import Path

from twisted.application.service import IService, IServiceMaker
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import inlineCallbacks
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from sandstone import _tap as tap_module
from sandstone._app import Sandstone
from sandstone._listening import ListeningService
from sandstone._tap import AppLoadError, Options, SandstoneService, load_app, makeService

_counter = itertools.count()

_APP_MODULE = """
from sandstone._app import Sandstone

app = Sandstone(anonymous=True)
"""


class _FixtureMixin:
    """Throwaway importable modules in a temp dir, removed from sys.path/sys.modules after."""

    def setUp(self):
        super().setUp()
        saved_path = list(sys.path)
        saved_modules = set(sys.modules)
        self.addCleanup(self._restore, saved_path, saved_modules)

    @staticmethod
    def _restore(saved_path, saved_modules):
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            if name.startswith("tapfix_"):
                del sys.modules[name]
        importlib.invalidate_caches()

    def make_modules(self, files, on_path=True):
        """
        Write C{files} ({relative path: source}) under a new temp dir whose
        names are prefixed with a unique C{tapfix_N}; return (dir, prefix).
        In the file names and sources, C{PFX} is replaced by that prefix.
        """
        prefix = f"tapfix_{next(_counter)}"
        root = Path(self.mktemp())
        for rel, source in files.items():
            path = root / rel.replace("PFX", prefix)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source).replace("PFX", prefix), encoding="utf-8")
        root.mkdir(parents=True, exist_ok=True)
        if on_path:
            sys.path.insert(0, str(root))
        importlib.invalidate_caches()
        return root, prefix

    def app_module(self, source=_APP_MODULE):
        _, prefix = self.make_modules({"PFX_app.py": source})
        return f"{prefix}_app"


class LoadAppTests(_FixtureMixin, TestCase):
    def assertLoadError(self, spec, expected):
        err = self.assertRaises(AppLoadError, load_app, spec)
        message = str(err)
        self.assertNotIn("\n", message)
        self.assertEqual(message, expected)
        # twistd shows the same one line as a usage error.
        uerr = self.assertRaises(usage.UsageError, Options().parseOptions, ["--app", spec])
        self.assertEqual(str(uerr), expected)
        return message

    def test_loads_instance(self):
        mod = self.app_module()
        app = load_app(f"{mod}:app")
        self.assertIsInstance(app, Sandstone)
        self.assertIs(app, sys.modules[mod].app)

    def test_dotted_module_and_attribute(self):
        _, prefix = self.make_modules(
            {
                "PFX_pkg/__init__.py": "",
                "PFX_pkg/site.py": """
                    from sandstone._app import Sandstone

                    class holder:
                        app = Sandstone(anonymous=True)
                """,
            }
        )
        mod = importlib.import_module(f"{prefix}_pkg.site")
        self.assertIs(load_app(f"{prefix}_pkg.site:holder.app"), mod.holder.app)

    def test_no_colon(self):
        self.assertLoadError("blog", "--app expects MODULE:ATTRIBUTE, got 'blog'")

    def test_empty_parts(self):
        self.assertLoadError("blog:", "--app expects MODULE:ATTRIBUTE, got 'blog:'")
        self.assertLoadError(":app", "--app expects MODULE:ATTRIBUTE, got ':app'")

    def test_module_not_found(self):
        self.assertLoadError(
            "tapfix_nosuchmodule:app",
            "no module named 'tapfix_nosuchmodule' (from --app 'tapfix_nosuchmodule:app')",
        )

    def test_parent_package_not_found(self):
        self.assertLoadError(
            "tapfix_nosuchpkg.blog:app",
            "no module named 'tapfix_nosuchpkg' (needed to import 'tapfix_nosuchpkg.blog' "
            "from --app 'tapfix_nosuchpkg.blog:app')",
        )

    def test_submodule_not_found(self):
        _, prefix = self.make_modules({"PFX_pkg/__init__.py": ""})
        spec = f"{prefix}_pkg.nope:app"
        self.assertLoadError(spec, f"no module named '{prefix}_pkg.nope' (from --app '{spec}')")

    def test_module_raises_import_error(self):
        mod = self.app_module("raise ImportError('cannot import name x from y')\n")
        self.assertLoadError(
            f"{mod}:app",
            f"module '{mod}' was found but importing it failed: ImportError: cannot import name x from y",
        )

    def test_module_imports_missing_dependency(self):
        mod = self.app_module("import tapfix_missing_dependency\n")
        self.assertLoadError(
            f"{mod}:app",
            f"module '{mod}' was found but importing it failed: "
            "ModuleNotFoundError: No module named 'tapfix_missing_dependency'",
        )

    def test_module_raises_other_error(self):
        mod = self.app_module("raise RuntimeError('boom\\non two lines')\n")
        self.assertLoadError(
            f"{mod}:app",
            f"module '{mod}' was found but importing it failed: RuntimeError: boom on two lines",
        )

    def test_module_syntax_error(self):
        mod = self.app_module("def (:\n")
        message = str(self.assertRaises(AppLoadError, load_app, f"{mod}:app"))
        self.assertNotIn("\n", message)
        self.assertTrue(
            message.startswith(f"module '{mod}' was found but importing it failed: SyntaxError: "),
            message,
        )

    def test_missing_attribute(self):
        mod = self.app_module()
        self.assertLoadError(f"{mod}:ap", f"module '{mod}' has no attribute 'ap'")

    def test_missing_nested_attribute(self):
        mod = self.app_module()
        self.assertLoadError(f"{mod}:app.nope", f"{mod}:app has no attribute 'nope'")

    def test_function(self):
        mod = self.app_module(_APP_MODULE + "def make():\n    return app\n")
        self.assertLoadError(f"{mod}:make", f"{mod}:make is a function, not a sandstone.Sandstone app")

    def test_class(self):
        mod = self.app_module(_APP_MODULE)
        self.assertLoadError(
            f"{mod}:Sandstone",
            f"{mod}:Sandstone is a class, not a sandstone.Sandstone app "
            "(instantiate it in the module and point --app at the instance)",
        )

    def test_other_instance(self):
        mod = self.app_module("from klein import Klein\napp = Klein()\nother = None\n")
        self.assertLoadError(f"{mod}:app", f"{mod}:app is a Klein instance, not a sandstone.Sandstone app")
        self.assertLoadError(f"{mod}:other", f"{mod}:other is None, not a sandstone.Sandstone app")

    def test_module(self):
        mod = self.app_module("import os\n")
        self.assertLoadError(f"{mod}:os", f"{mod}:os is a module, not a sandstone.Sandstone app")

    def test_working_directory_importable(self):
        """
        The module is found relative to the working directory even when that
        is not on sys.path (the twistd console script does not put it there).
        """
        root, prefix = self.make_modules({"PFX_cwd.py": _APP_MODULE}, on_path=False)
        here = os.getcwd()
        os.chdir(root)
        self.addCleanup(os.chdir, here)
        cwd = os.getcwd()
        sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != cwd]
        app = load_app(f"{prefix}_cwd:app")
        self.assertIsInstance(app, Sandstone)
        self.assertEqual(sys.path[0], cwd)


class OptionsTests(_FixtureMixin, TestCase):
    def parse(self, *args):
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_defaults(self):
        mod = self.app_module()
        options = self.parse("--app", f"{mod}:app")
        self.assertEqual(options["app"], f"{mod}:app")
        self.assertEqual(options["listen"], "tcp:8080")
        self.assertIsNone(options["realm"])
        self.assertIsNone(options["ws-path"])
        self.assertIs(options.app, sys.modules[mod].app)
        # The app's own settings are kept.
        self.assertEqual(options.app.realm, "realm1")
        self.assertEqual(options.app.ws_path, "/ws")

    def test_short_options(self):
        mod = self.app_module()
        options = self.parse("-a", f"{mod}:app", "-l", "tcp:9090")
        self.assertIs(options.app, sys.modules[mod].app)
        self.assertEqual(options["listen"], "tcp:9090")

    def test_app_settings_kept_when_not_overridden(self):
        mod = self.app_module(
            "from sandstone._app import Sandstone\napp = Sandstone(realm='r9', ws_path='/x')\n"
        )
        options = self.parse("--app", f"{mod}:app")
        self.assertEqual((options.app.realm, options.app.ws_path), ("r9", "/x"))

    def test_realm_and_ws_path_override(self):
        mod = self.app_module()
        options = self.parse("--app", f"{mod}:app", "--realm", "blog", "--ws-path", "/wamp")
        self.assertEqual(options.app.realm, "blog")
        self.assertEqual(options.app.ws_path, "/wamp")

    def test_default_app(self):
        """Without --app, sandstone._default.make_default_app() provides the app."""
        default = Sandstone(anonymous=True)
        fake = types.ModuleType("sandstone._default")
        fake.make_default_app = lambda: default
        missing = object()
        saved = sys.modules.get("sandstone._default", missing)
        sys.modules["sandstone._default"] = fake
        self.addCleanup(
            lambda: (
                sys.modules.pop("sandstone._default")
                if saved is missing
                else sys.modules.__setitem__("sandstone._default", saved)
            )
        )
        options = self.parse("--realm", "r2")
        self.assertIs(options.app, default)
        self.assertEqual(default.realm, "r2")
        self.assertEqual(default.ws_path, "/ws")

    def test_bad_listen(self):
        mod = self.app_module()
        err = self.assertRaises(
            usage.UsageError, self.parse, "--app", f"{mod}:app", "--listen", "nosuchtype:8080"
        )
        self.assertTrue(str(err).startswith("--listen 'nosuchtype:8080' is not a valid server endpoint: "))
        self.assertNotIn("\n", str(err))

    def test_unknown_option(self):
        self.assertRaises(usage.UsageError, self.parse, "--nope")


class MakeServiceTests(_FixtureMixin, TestCase):
    def service_for(self, *args):
        mod = self.app_module()
        options = Options()
        options.parseOptions(["--app", f"{mod}:app", *args])
        return sys.modules[mod].app, makeService(options)

    def test_service_tree(self):
        app, service = self.service_for("--listen", "tcp:0:interface=127.0.0.1")
        self.assertTrue(IService.providedBy(service))
        self.assertIsInstance(service, SandstoneService)
        self.assertEqual(service.name, "sandstone")
        self.assertIs(service.app, app)
        self.assertFalse(service.running)
        web = service.getServiceNamed("web")
        self.assertIsInstance(web, ListeningService)
        self.assertIsInstance(web.factory, Site)
        self.assertIsInstance(web.factory.resource, type(app.resource()))

    def test_plain_mapping_options(self):
        """makeService also accepts unparsed options (a plain dict)."""
        mod = self.app_module()
        service = makeService({"app": f"{mod}:app", "listen": "tcp:0", "realm": "r3", "ws-path": None})
        self.assertIs(service.app, sys.modules[mod].app)
        self.assertEqual(service.app.realm, "r3")

    def record_gc(self):
        """Replace the gc module _tap uses by a recorder (the test process's own heap stays unfrozen)."""
        calls = []
        recorder = types.SimpleNamespace(
            collect=lambda: calls.append("collect"),
            freeze=lambda: calls.append("freeze"),
            get_freeze_count=lambda: 0,
        )
        self.patch(tap_module, "gc", recorder)
        return calls

    @inlineCallbacks
    def test_start_sets_the_started_servers_objects_aside_from_gc(self):
        calls = self.record_gc()
        app, service = self.service_for("--listen", "tcp:0:interface=127.0.0.1")
        self.assertEqual(calls, [])
        service.startService()
        try:
            self.assertEqual(calls, ["collect", "freeze"])  # garbage first, so none of it is kept
        finally:
            yield service.stopService()

    @inlineCallbacks
    def test_start_listen_and_log(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.record_gc()

        app, service = self.service_for("--listen", "tcp:0:interface=127.0.0.1", "--realm", "blog")
        service.startService()
        try:
            self.assertTrue(service.running)
            address = service.getServiceNamed("web").port.getHost()
            self.assertEqual(address.host, "127.0.0.1")
            self.assertNotEqual(address.port, 0)
        finally:
            yield service.stopService()

        messages = [formatEvent(e) for e in events if "sandstone serving" in e.get("log_format", "")]
        self.assertEqual(
            messages,
            [
                f"sandstone serving {service.app_label} at http://127.0.0.1:{address.port}/ "
                f"(WebSocket ws://127.0.0.1:{address.port}/ws, realm blog)"
            ],
        )


class ServingURLTests(TestCase):
    """The URLs of the startup line ("sandstone serving ... at URL (WebSocket URL, ...)")."""

    def test_wildcard_interface_shows_the_loopback_address(self):
        self.assertEqual(
            tap_module._base_url(IPv4Address("TCP", "0.0.0.0", 8080), "tcp:8080"), "http://127.0.0.1:8080"
        )

    def test_ipv6_address_in_brackets(self):
        self.assertEqual(
            tap_module._base_url(IPv6Address("TCP", "::", 8080), "tcp6:8080"), "http://[::1]:8080"
        )

    def test_tls_endpoint_is_https_and_wss(self):
        base = tap_module._base_url(IPv4Address("TCP", "127.0.0.1", 8443), "ssl:8443:privateKey=k.pem")
        self.assertEqual((base, tap_module._ws_url(base)), ("https://127.0.0.1:8443", "wss://127.0.0.1:8443"))

    def test_unix_socket_shows_the_endpoint(self):
        self.assertEqual(tap_module._base_url(UNIXAddress(b"/tmp/s"), "unix:/tmp/s"), "unix:/tmp/s")


class PluginTests(TestCase):
    def load_plugin_module(self):
        path = Path(__file__).resolve().parent.parent / "twisted" / "plugins" / "sandstone_plugin.py"
        if not path.exists():
            self.skipTest(f"{path} not found (tests not run from a checkout)")
        spec = importlib.util.spec_from_file_location("_sandstone_plugin_under_test", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    def test_service_maker(self):
        maker = self.load_plugin_module().sandstone
        self.assertTrue(IServiceMaker.providedBy(maker))
        self.assertEqual(maker.tapname, "sandstone")
        self.assertEqual(maker.description, "Klein REST routes and a WAMP router in one reactor")
        self.assertIs(maker.options, Options)
        self.assertIs(maker.makeService, makeService)

    def test_no_init_files(self):
        """An __init__.py in twisted/ or twisted/plugins/ would shadow Twisted or hide the plugin."""
        root = Path(__file__).resolve().parent.parent
        self.assertFalse((root / "twisted" / "__init__.py").exists())
        self.assertFalse((root / "twisted" / "plugins" / "__init__.py").exists())

    def test_discovered_when_installed(self):
        try:
            importlib.metadata.distribution("sandstone")
        except importlib.metadata.PackageNotFoundError:
            self.skipTest("sandstone is not installed; twistd would not find the plugin either")
        from twisted.plugin import getPlugins

        names = [p.tapname for p in getPlugins(IServiceMaker)]
        self.assertIn("sandstone", names)


class LimitOptionsTests(_FixtureMixin, TestCase):
    """``twistd sandstone`` options for the app's limits, allowed origins and shutdown."""

    def service_for(self, *args):
        mod = self.app_module()
        options = Options()
        options.parseOptions(["--app", f"{mod}:app", "--listen", "tcp:0", *args])
        return sys.modules[mod].app, makeService(options)

    def test_defaults_leave_the_apps_limits(self):
        from sandstone._limits import Limits

        app, _ = self.service_for()
        self.assertEqual(app.limits, Limits())
        self.assertEqual(app.allowed_origins, [])

    def test_limit_options_set_the_apps_limits(self):
        app, service = self.service_for(
            "--allowed-origins",
            "https://*.example.com, http://localhost:*",
            "--max-message-size",
            "65536",
            "--max-connections",
            "50",
            "--publish-rate",
            "2.5",
            "--call-rate",
            "7",
            "--max-outgoing-buffer",
            "100000",
            "--max-request-body",
            "2048",
            "--hello-timeout",
            "3",
            "--ping-interval",
            "0",
        )
        limits = app.limits
        self.assertEqual(app.allowed_origins, ["https://*.example.com", "http://localhost:*"])
        self.assertEqual(
            (limits.max_message_size, limits.max_connections, limits.publish_rate, limits.call_rate),
            (65536, 50, 2.5, 7.0),
        )
        self.assertEqual(
            (limits.max_outgoing_buffer, limits.max_request_body, limits.hello_timeout),
            (100000, 2048, 3.0),
        )
        self.assertEqual(limits.auto_ping_interval, 0)
        self.assertEqual(limits.publish_burst, 200)  # not given: the app's own
        site = service.getServiceNamed("web").factory
        self.assertEqual(site.max_request_body, 2048)
        app.websocket_resource()
        factory = app._core.factory
        self.assertEqual((factory.maxMessagePayloadSize, factory.autoPingInterval), (65536, 0))
        self.assertEqual(factory.allowed_origins, ["https://*.example.com", "http://localhost:*"])

    def test_connection_options_reach_the_site(self):
        app, service = self.service_for(
            "--allowed-hosts",
            "api.example.com, *.example.org",
            "--max-pending-per-ip",
            "7",
            "--max-header-bytes",
            "4096",
            "--header-timeout",
            "2.5",
            "--max-subscriptions-per-session",
            "9",
        )
        self.assertEqual(app.allowed_hosts, ["api.example.com", "*.example.org"])
        limits = app.limits
        self.assertEqual(
            (limits.max_pending_per_ip, limits.max_header_bytes, limits.header_timeout),
            (7, 4096, 2.5),
        )
        self.assertEqual(limits.max_subscriptions_per_session, 9)
        site = service.getServiceNamed("web").factory
        self.assertEqual(site.allowed_hosts, ["api.example.com", "*.example.org"])
        self.assertEqual((site.limits.max_pending_per_ip, site.header_timeout), (7, 2.5))
        self.assertEqual(app._core.factory.allowed_hosts, ["api.example.com", "*.example.org"])

    def test_bad_numbers_are_usage_errors(self):
        mod = self.app_module()
        for args in (["--max-connections", "many"], ["--publish-rate", "-1"], ["--shutdown-timeout", "x"]):
            err = self.assertRaises(usage.UsageError, Options().parseOptions, ["--app", f"{mod}:app", *args])
            self.assertIn(args[0], str(err))

    def test_shutdown_service(self):
        from sandstone._web import GracefulShutdown

        _, service = self.service_for("--shutdown-timeout", "2.5")
        shutdown = service.getServiceNamed("shutdown")
        self.assertIsInstance(shutdown, GracefulShutdown)
        self.assertEqual(shutdown.timeout, 2.5)
        self.assertIs(shutdown.site, service.getServiceNamed("web").factory)
        self.assertFalse(shutdown.goodbye)  # WebSockets closed with 1001, no GOODBYE: clients reconnect

    def test_shutdown_goodbye(self):
        _, service = self.service_for("--shutdown-goodbye")
        self.assertTrue(service.getServiceNamed("shutdown").goodbye)


class WorkersOptionTests(_FixtureMixin, TestCase):
    """``--workers N``: N processes on one listening socket, which must share a Redis."""

    REDIS = "redis://127.0.0.1:6379/0"

    def parse(self, *args):
        mod = self.app_module()
        options = Options()
        options.parseOptions(["--app", f"{mod}:app", *args])
        return options

    def test_default_is_one_process(self):
        options = self.parse()
        self.assertEqual(options["workers"], 1)
        service = makeService(options)
        self.assertIsInstance(service.getServiceNamed("web"), ListeningService)
        self.assertNotIn("workers", [child.name for child in service])

    def test_workers_need_redis(self):
        err = self.assertRaises(usage.UsageError, self.parse, "--workers", "2")
        self.assertEqual(
            str(err),
            "--workers 2 needs --redis URL: the workers share events, broadcasts and calls through Redis",
        )
        self.assertEqual(self.parse("--workers", "1")["workers"], 1)

    def test_bad_numbers(self):
        for value in ("0", "-3", "two", "1.5"):
            err = self.assertRaises(usage.UsageError, self.parse, "--workers", value, "--redis", self.REDIS)
            self.assertEqual(
                str(err), f"--workers expects a number of processes (1 or more), got {value!r}", value
            )

    def test_tcp_endpoints_only(self):
        err = self.assertRaises(
            usage.UsageError,
            self.parse,
            "--workers",
            "3",
            "--redis",
            self.REDIS,
            "--listen",
            "unix:/tmp/s.sock",
        )
        self.assertEqual(
            str(err),
            "--workers 3 needs a tcp: or tcp6: --listen endpoint (the workers share one listening TCP "
            "socket), got 'unix:/tmp/s.sock'",
        )
        self.assertEqual(
            self.parse("--workers", "2", "--redis", self.REDIS, "--listen", "tcp6:0")["workers"], 2
        )

    def test_service_tree(self):
        from sandstone._workers import SharedListener, WorkerSupervisor

        options = self.parse(
            "--workers",
            "3",
            "--redis",
            self.REDIS,
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--realm",
            "r5",
            "--shutdown-goodbye",
        )
        service = makeService(options)
        web, supervisor = service.getServiceNamed("web"), service.getServiceNamed("workers")
        self.assertIsInstance(web, SharedListener)
        self.assertIsInstance(supervisor, WorkerSupervisor)
        self.assertIs(supervisor.listener, web)
        self.assertEqual((web.count, supervisor.count), (3, 3))
        self.assertEqual(service.getServiceNamed("shutdown").site, web.factory)
        # the workers get every option and flag given, except --workers
        self.assertEqual(
            supervisor.arguments,
            [
                f"--app={options['app']}",
                "--listen=tcp:0:interface=127.0.0.1",
                "--realm=r5",
                f"--redis={self.REDIS}",
                "--shutdown-timeout=5.0",
                "--shutdown-goodbye",
            ],
        )
        self.assertEqual(
            supervisor.command(2)[-len(supervisor.arguments) - 3 :][:3], ["sandstone._worker", "2", "3"]
        )

    def test_shared_listener_binds_one_socket_per_worker(self):
        from sandstone._workers import SharedListener

        options = self.parse("--workers", "2", "--redis", self.REDIS, "--listen", "tcp:0:interface=127.0.0.1")
        web = makeService(options).getServiceNamed("web")
        web.startService()
        self.addCleanup(web.stopService)
        self.assertIsInstance(web, SharedListener)
        self.assertEqual(len(web.sockets), 2)
        [(host1, port1), (host2, port2)] = [sock.getsockname() for sock in web.sockets]
        self.assertEqual((host1, host2), ("127.0.0.1", "127.0.0.1"))
        self.assertEqual(port1, port2)
        self.assertEqual(web.port.getHost().port, port1)
        self.assertNotEqual(web.fileno(1), web.fileno(2))
