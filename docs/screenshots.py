"""Take the README's screenshots from the real pages: ``docs/images/blog.png`` (two browser windows on the
blog, side by side, after an article and a chat exchange) and ``docs/images/sensors.png`` (the live chart).

    python docs/screenshots.py            # from the repository root, in the dev venv

It serves the examples with ``twistd -n sandstone`` on port 8080 (another free port when 8080 is taken) and
drives headless Chromium with Playwright, as ``tests/test_browser.py`` does (same requirements: Debian's
``chromium``, ``pip install playwright``, npm for autobahn-js). The sensors picture waits about 40 seconds for
readings to fill the chart.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.browser import Server, check_browser, launch, new_context  # noqa: E402
from tests.test_e2e_twistd import free_port  # noqa: E402

IMAGES = Path(__file__).resolve().parent / "images"
TIMEOUT = 15_000

# Two windows side by side: each page in an iframe of its own (its own scripts and WebSocket), framed like a
# browser window. Only the frames' pages are the app's; this wrapper exists for the picture.
WINDOW = """<div class="window">
    <div class="title"><span class="dot"></span><span class="dot"></span><span class="dot"></span>
      <span class="address">URL</span></div>
    <iframe id="ID" src="URL"></iframe>
  </div>"""
WINDOWS = """<!doctype html>
<html><head><meta charset="utf-8"><style>
  body { margin: 0; padding: 24px; display: flex; gap: 24px; background: #d6d0c6; height: 100vh;
         box-sizing: border-box; font: 13px system-ui, "DejaVu Sans", sans-serif; }
  .window { flex: 1; display: flex; flex-direction: column; border-radius: 10px; overflow: hidden;
            background: #fff; box-shadow: 0 6px 24px rgba(0, 0, 0, 0.22); }
  .title { display: flex; align-items: center; gap: 7px; height: 36px; padding: 0 12px;
           background: #ebe7e1; }
  .dot { width: 12px; height: 12px; border-radius: 50%; background: #d9d4cc; }
  .address { flex: 1; margin-left: 10px; padding: 4px 12px; border-radius: 6px; background: #fff;
             color: #52606d; }
  iframe { flex: 1; width: 100%; border: 0; }
</style></head><body>LEFT RIGHT</body></html>
""".replace("LEFT", WINDOW.replace("ID", "left")).replace("RIGHT", WINDOW.replace("ID", "right"))


def port_to_use(wanted: int) -> int:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as twistd binds
        try:
            probe.bind(("127.0.0.1", wanted))
        except OSError:
            return free_port()
    return wanted


def blog(browser: Any, port: int) -> Path:
    server = Server("examples.blog:app", port).start()
    try:
        url = f"http://localhost:{port}/"
        context = new_context(browser, viewport={"width": 1720, "height": 925})
        page = context.new_page()
        page.set_content(WINDOWS.replace("URL", url))
        left, right = page.frame_locator("#left"), page.frame_locator("#right")
        for frame in (left, right):
            frame.locator("#connection").filter(has_text="Connected").wait_for(timeout=TIMEOUT)
            frame.locator("#chat-log li").first.wait_for(timeout=TIMEOUT)  # "Welcome on general"

        left.get_by_label("Title").fill("Sandstone pages are live")
        left.get_by_role("button", name="Publish").click()
        right.locator("#notifications li").first.wait_for(timeout=TIMEOUT)
        right.get_by_label("Title").fill("Unicorns spotted in Alaska")
        right.get_by_role("button", name="Publish").click()
        left.locator("#notifications li").nth(1).wait_for(timeout=TIMEOUT)

        left.get_by_label("Message").fill("Did you see that? Unicorns!")
        left.get_by_label("Message").press("Enter")
        right.locator("#chat-log li").nth(1).wait_for(timeout=TIMEOUT)
        right.get_by_label("Message").fill("Yes, it showed up here the moment you published it")
        right.get_by_label("Message").press("Enter")
        left.locator("#chat-log li").nth(2).wait_for(timeout=TIMEOUT)
        page.wait_for_timeout(800)  # the notifications' arrival highlight fades

        path = IMAGES / "blog.png"
        page.screenshot(path=str(path))
        context.close()
        return path
    finally:
        server.close()


def sensors(browser: Any, port: int, fill_seconds: float) -> Path:
    server = Server("examples.sensors:app", port).start()
    try:
        url = f"http://localhost:{port}/"
        urllib.request.urlopen(url, timeout=10).close()  # serving the page starts the simulated sensors
        time.sleep(fill_seconds)  # readings for the chart to start with (sensors.recent)
        context = new_context(browser, viewport={"width": 1280, "height": 720})
        page = context.new_page()
        page.goto(url)
        page.locator("#connection").filter(has_text="Connected").wait_for(timeout=TIMEOUT)
        page.locator('#chart .series[data-room="3"] polyline').wait_for(timeout=TIMEOUT)
        page.locator("#average-room").fill("2")
        page.get_by_role("button", name="Average").click()
        page.locator("#result").filter(has_text="°C").wait_for(timeout=TIMEOUT)
        page.wait_for_timeout(2500)  # a few live readings on top of the history
        path = IMAGES / "sensors.png"
        page.screenshot(path=str(path))
        context.close()
        return path
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="port to serve on when free (default 8080)")
    parser.add_argument(
        "--fill", type=float, default=40.0, help="seconds of sensor readings before the picture"
    )
    options = parser.parse_args()
    check_browser()
    from playwright.sync_api import sync_playwright

    IMAGES.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            for path in (
                blog(browser, port_to_use(options.port)),
                sensors(browser, port_to_use(options.port), options.fill),
            ):
                sys.stdout.write(
                    f"{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}\n"
                )
        finally:
            browser.close()


if __name__ == "__main__":
    main()
