// The sensors page: a live line chart (plain SVG) of every room's temperature, from the topics
// sensors.{room}.temperature (one wildcard subscription), and forms calling the app's procedures; the WAMP
// connection is live.connect's, from /common/live.js.
"use strict";

(function () {
  const WINDOW = 120; // seconds of readings on the chart, at most
  const COLORS = ["#b45309", "#2563eb", "#059669", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#db2777"];
  const SVG = "http://www.w3.org/2000/svg";
  const MARGIN = { left: 48, right: 16, top: 12, bottom: 28 };

  const $ = (id) => document.getElementById(id);
  const wampError = live.wampError;
  const series = new Map(); // room -> readings [{at, celsius}], oldest first
  let session = null;
  let pending = false;

  // --- readings ------------------------------------------------------------------------------------------

  function add(room, at, celsius) {
    if (!Number.isInteger(room) || !Number.isFinite(at) || !Number.isFinite(celsius)) return;
    let readings = series.get(room);
    if (!readings) {
      readings = [];
      series.set(room, readings);
    }
    const last = readings[readings.length - 1];
    if (!last || at > last.at) {
      readings.push({ at, celsius });
    } else if (!readings.some((reading) => reading.at === at)) {
      // fetched with sensors.recent and also received as an event: keep one
      readings.push({ at, celsius });
      readings.sort((a, b) => a.at - b.at);
    }
    if (!pending) {
      pending = true;
      requestAnimationFrame(draw);
    }
  }

  function onReading(args) {
    const reading = args && args.length ? args[0] : null;
    if (reading) add(reading.room, reading.at, reading.celsius);
  }

  // --- the chart -----------------------------------------------------------------------------------------

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceStep(range) {
    const rough = range / 4;
    const power = Math.pow(10, Math.floor(Math.log10(rough)));
    for (const factor of [1, 2, 2.5, 5, 10]) {
      if (factor * power >= rough) return factor * power;
    }
    return 10 * power;
  }

  function colorOf(index) {
    return COLORS[index % COLORS.length];
  }

  function draw() {
    pending = false;
    const chart = $("chart");
    const width = Math.max(chart.clientWidth, 200);
    const height = Math.max(chart.clientHeight, 150);
    chart.setAttribute("viewBox", "0 0 " + width + " " + height);

    let latest = -Infinity;
    let earliest = Infinity;
    for (const readings of series.values()) {
      latest = Math.max(latest, readings[readings.length - 1].at);
      earliest = Math.min(earliest, readings[0].at);
    }
    if (!Number.isFinite(latest)) return;
    // the time axis grows with the first readings up to WINDOW seconds, then scrolls
    const span = Math.min(WINDOW, Math.max(30, latest - earliest));
    const start = latest - span;
    for (const readings of series.values()) {
      while (readings.length > 1 && readings[0].at < start - 5) readings.shift(); // scrolled out
    }

    const visible = [...series.values()].flat().filter((reading) => reading.at >= start);
    let low = Math.min(...visible.map((reading) => reading.celsius));
    let high = Math.max(...visible.map((reading) => reading.celsius));
    if (high - low < 2) {
      const middle = (high + low) / 2;
      low = middle - 1;
      high = middle + 1;
    }
    const step = niceStep(high - low);
    low = Math.floor(low / step) * step;
    high = Math.ceil(high / step) * step;
    const decimals = step < 1 ? 1 : 0;

    const plotWidth = width - MARGIN.left - MARGIN.right;
    const x = (at) => MARGIN.left + ((at - start) / span) * plotWidth;
    const y = (celsius) => MARGIN.top + ((high - celsius) / (high - low)) * (height - MARGIN.top - MARGIN.bottom);
    const parts = [];

    for (let value = low; value <= high + step / 2; value += step) {
      parts.push(svg("line", { class: "grid", x1: MARGIN.left, x2: width - MARGIN.right, y1: y(value), y2: y(value) }));
      parts.push(svg("text", { class: "axis", x: MARGIN.left - 6, y: y(value) + 4, "text-anchor": "end" }, value.toFixed(decimals) + "°"));
    }
    const every = [5, 10, 15, 30, 60].find((seconds) => (seconds / span) * plotWidth >= 64) || 60;
    for (let ago = 0; ago <= span; ago += every) {
      const at = x(latest - ago);
      if (ago && at < MARGIN.left + 24) break;
      const label = ago ? "−" + ago + " s" : "now";
      parts.push(svg("text", { class: "axis", x: at, y: height - 8, "text-anchor": ago ? "middle" : "end" }, label));
    }

    const rooms = [...series.keys()].sort((a, b) => a - b);
    rooms.forEach((room, index) => {
      const shown = series.get(room).filter((reading) => reading.at >= start);
      const group = svg("g", { class: "series", "data-room": room, "data-points": shown.length });
      if (shown.length) {
        const points = shown.map((reading) => x(reading.at).toFixed(1) + "," + y(reading.celsius).toFixed(1));
        group.append(svg("polyline", { points: points.join(" "), fill: "none", stroke: colorOf(index), "stroke-width": 2 }));
        const last = shown[shown.length - 1];
        group.append(svg("circle", { cx: x(last.at), cy: y(last.celsius), r: 3.5, fill: colorOf(index) }));
      }
      parts.push(group);
    });
    chart.replaceChildren(...parts);
    drawLegend(rooms);
  }

  function drawLegend(rooms) {
    const items = rooms.map((room, index) => {
      const readings = series.get(room);
      const item = document.createElement("li");
      item.dataset.room = String(room);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = colorOf(index);
      const value = document.createElement("strong");
      value.textContent = readings[readings.length - 1].celsius.toFixed(1) + " °C";
      item.append(swatch, "Room " + room + " ", value);
      return item;
    });
    $("legend").replaceChildren(...items);
    $("waiting").hidden = rooms.length > 0;
  }

  if (typeof ResizeObserver !== "undefined") {
    new ResizeObserver(() => {
      if (series.size && !pending) {
        pending = true;
        requestAnimationFrame(draw);
      }
    }).observe($("chart"));
  }

  // --- procedures ----------------------------------------------------------------------------------------

  function showResult(kind, text) {
    const output = $("result");
    output.dataset.kind = kind;
    output.textContent = text;
  }

  async function call(procedure, args, describe) {
    const shown = procedure + "(" + args.join(", ") + ")";
    if (!session) {
      showResult("error", shown + ": not connected");
      return;
    }
    try {
      showResult("ok", shown + " → " + describe(await session.call(procedure, args)));
    } catch (error) {
      showResult("error", shown + " failed: " + wampError(error));
    }
  }

  function wholeNumber(id) {
    const value = Number($(id).value);
    return $(id).value.trim() !== "" && Number.isInteger(value) ? value : null;
  }

  $("average-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const room = wholeNumber("average-room");
    if (room === null) return showResult("error", "A room is a whole number.");
    call("sensors.average", [room], (celsius) => celsius.toFixed(2) + " °C");
  });

  $("report-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const room = wholeNumber("report-room");
    const celsius = Number($("report-celsius").value);
    if (room === null) return showResult("error", "A room is a whole number.");
    if ($("report-celsius").value.trim() === "" || !Number.isFinite(celsius)) {
      return showResult("error", "A temperature is a number.");
    }
    call("sensors.report", [room, celsius], (count) => count + (count === 1 ? " reading" : " readings") + " of room " + room);
  });

  // --- the WAMP connection -------------------------------------------------------------------------------

  live.connect({
    async onopen(opened) {
      session = opened;
      try {
        // every room's topic: "sensors..temperature" matches sensors.1.temperature, sensors.2.temperature...
        await opened.subscribe("sensors..temperature", onReading, { match: "wildcard" });
        for (const room of await opened.call("sensors.recent")) {
          for (const [at, celsius] of room.readings) add(room.room, at, celsius);
        }
      } catch (error) {
        showResult("error", "Could not follow the sensors: " + wampError(error));
      }
    },
    onclose() {
      session = null;
    },
  });
})();
