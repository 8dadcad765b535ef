from pathlib import Path

from setuptools import find_packages, setup

_readme = Path(__file__).with_name("README.md")

setup(
    name="sandstone",
    version="0.1.0",
    description="Klein REST routes plus a WAMP v2 router in one Twisted reactor",
    long_description=_readme.read_text(encoding="utf-8") if _readme.exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # twisted/plugins/ deliberately has no __init__.py: Twisted's own
    # twisted.plugins package extends its __path__ with every
    # <sys.path entry>/twisted/plugins directory, which is how twistd finds
    # sandstone_plugin.py. Listing "twisted.plugins" here (plus the
    # package_data entry) makes a normal install copy the plugin file into
    # site-packages/twisted/plugins/ without shipping an __init__.py that
    # would shadow Twisted's.
    packages=find_packages(exclude=["tests*", "examples*", "bench*"]) + ["twisted.plugins"],
    # py.typed (PEP 561): users' type checkers read sandstone's annotations instead of seeing Any.
    package_data={"sandstone": ["py.typed"], "twisted": ["plugins/sandstone_plugin.py"]},
    # `sandstone run ...`: twistd -n --pidfile= sandstone, without needing twistd's plugin discovery.
    entry_points={"console_scripts": ["sandstone = sandstone._cli:main"]},
    install_requires=[
        # msgpack, cbor2 and ujson come with autobahn itself; its "serialization" extra would add
        # bjdata, which prints a traceback on import next to NumPy 2.
        # Upper bounds: the releases sandstone is tested with (it relies on some of their private details,
        # see _twisted_internals.py and _autobahn_internals.py). `tox -e latest` and CI (.ci/latest-deps)
        # run the tests on the newest releases, past these bounds: when they pass, raise them.
        "autobahn[twisted]>=26.7.1,<27",
        "klein>=24.8,<25",
        "Twisted>=24.7,<27",
        "treq>=24.9,<27",
        # 1.6 changed its factories' API in a minor release: bounded at the minor.
        "txredisapi>=1.6,<1.7",
        # txredisapi's C reply parser; without it txredisapi's own parser caps the cluster bus at about
        # 1,000 publications per second per node.
        "hiredis>=2,<4",
        # --metrics: the Prometheus exposition, the process collector.
        "prometheus_client>=0.20,<1",
        # WAMP-Cryptosign: Ed25519 signature checks, public API only (autobahn requires it too).
        "cryptography>=42,<51",
    ],
    extras_require={
        # playwright: the browser tests (tests/test_browser.py), with Debian's chromium
        # cryptography: the throwaway CAs of the TLS tests (twisted[tls] brings it too)
        # pynacl, base58, ecdsa: autobahn's WAMP-Cryptosign client (autobahn.wamp.cryptosign imports them), the
        # client of the cryptosign tests; autobahn's "encryption" extra would add qrcode and pytrie too.
        "test": [
            "base58>=2.1",
            "cryptography",
            "ecdsa>=0.19",
            "hypothesis",
            "kosoku",
            "playwright>=1.40",
            "pynacl>=1.4",
            "redis>=5",
            "twisted[tls]",
        ],
        "push": ["redis>=5,<9"],
        # The versions .ci/run checks with.
        "lint": ["ruff==0.17.6", "mypy==2.4.1", "mypy-zope==1.0.17"],
        # The documentation site (mkdocs.yml, docs/): `mkdocs serve`, `mkdocs build --strict` (tox -e docs,
        # .ci/run). Tested with these versions; a major release may change the config or the warnings.
        "docs": [
            "mkdocs>=1.6.1,<2",
            "mkdocs-material>=9.8.2,<10",
            "mkdocstrings[python]>=1.0.8,<2",
            "mkdocstrings-python>=2.0.11,<3",
            # formats the API reference's signatures (the lint extra pins the version .ci/run checks with)
            "ruff>=0.17.6,<1",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ],
)
