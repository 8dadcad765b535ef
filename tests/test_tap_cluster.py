"""``twistd sandstone --cluster-name NAME --cluster-secret SECRET``: the options reach the bus, and the
workers get the secret through their environment, not their command line."""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial.unittest import TestCase

from sandstone._bus import CLUSTER_SECRET_ENV
from sandstone._tap import Options, makeService
from tests.test_tap import _FixtureMixin

REDIS = "redis://127.0.0.1:6379/3"


class ClusterOptionTests(_FixtureMixin, TestCase):
    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(["--app", f"{self.app_module()}:app", *args])
        return options

    def test_name_and_secret_reach_the_bus(self) -> None:
        options = self.parse("--redis", REDIS, "--cluster-name", "blog", "--cluster-secret", "s3cret")
        bus = makeService(options).getServiceNamed("bus")
        self.assertEqual(bus.channels.events, "sandstone:blog:db3:realm1:events")
        self.assertEqual(bus.cluster_name, "blog")
        self.assertTrue(bus.signed)

    def test_defaults(self) -> None:
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != CLUSTER_SECRET_ENV})
        bus = makeService(self.parse("--redis", REDIS)).getServiceNamed("bus")
        self.assertEqual(bus.channels.events, "sandstone:db3:realm1:events")
        self.assertFalse(bus.signed)

    def test_secret_from_the_environment(self) -> None:
        self.patch(os, "environ", {**os.environ, CLUSTER_SECRET_ENV: "from-env"})
        bus = makeService(self.parse("--redis", REDIS)).getServiceNamed("bus")
        self.assertTrue(bus.signed)

    def test_need_redis(self) -> None:
        for args, message in [
            (("--cluster-name", "blog"), "--cluster-name needs --redis URL"),
            (("--cluster-secret", "s"), "--cluster-secret needs --redis URL"),
            (
                ("--cluster-name", "b", "--cluster-secret", "s"),
                "--cluster-name and --cluster-secret need --redis URL",
            ),
        ]:
            error = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertEqual(str(error), message)

    def test_bad_values(self) -> None:
        error = self.assertRaises(usage.UsageError, self.parse, "--redis", REDIS, "--cluster-name", "a:b")
        self.assertIn("--cluster-name: the bus cluster name 'a:b' contains ':'", str(error))
        error = self.assertRaises(usage.UsageError, self.parse, "--redis", REDIS, "--cluster-secret", "")
        self.assertEqual(str(error), "--cluster-secret must not be empty")

    def test_an_app_with_its_bus_in_code_takes_the_options_in_code(self) -> None:
        options = self.parse("--redis", REDIS, "--cluster-name", "blog")
        options.app.use_redis(REDIS)
        error = self.assertRaises(usage.UsageError, makeService, options)
        self.assertIn("give cluster_name/cluster_secret to app.use_redis instead", str(error))

    def test_workers_get_the_secret_in_their_environment(self) -> None:
        options = self.parse(
            "--workers",
            "2",
            "--redis",
            REDIS,
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--cluster-name",
            "blog",
            "--cluster-secret",
            "s3cret",
        )
        supervisor = makeService(options).getServiceNamed("workers")
        self.assertIn("--cluster-name=blog", supervisor.arguments)
        self.assertFalse([a for a in supervisor.command(2) if "s3cret" in a or "cluster-secret" in a])
        self.assertEqual(supervisor._environment()[CLUSTER_SECRET_ENV], "s3cret")
