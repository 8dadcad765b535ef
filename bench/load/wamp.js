// Load generator for bench/runner.py: WAMP v2 over WebSocket (JSON, subprotocol wamp.2.json), spoken directly.
//
//   node bench/load/wamp.js '<JSON config>'
//
// Roles (config.role):
//   sub   open config.count sessions (config.concurrency handshakes at a time), each subscribed to
//         config.topic, or to config.topic_prefix + its index (idle sessions); count EVENTs; in latency mode
//         extract the send time "@<ms>@" from each EVENT and record publish -> receive latency.
//   pub   one session publishing to config.topic: mode "sat" keeps config.window acknowledged PUBLISHes in
//         flight; mode "rate" publishes config.rate/s with acknowledge.
//   http  POSTs to config.url: mode "sat" with config.window requests in flight; mode "rate" at config.rate/s.
//         config.body is a template; "@T@" is replaced by "@<ms>@" (the send time).
//
// config.protocol "wamp" makes the sub role speak WAMP v1 (subprotocol "wamp", as AutobahnJS 0.8 does): no
// HELLO (the server's WELCOME [0, ...] comes first), SUBSCRIBE [5, topic], then a CALL of wamp.session.count
// whose CALLRESULT says the SUBSCRIBE was handled (v1 has no SUBSCRIBED); EVENTs are [8, topic, event].
//
// The runner drives it through stdin lines: "go" (start publishing), "start" (open the measurement
// window), "stop" (close it and print its result as one JSON line), "quit". Stdout carries JSON lines only:
// {"ready": ...} once connected, then one result per "stop". Times are process.hrtime (CLOCK_MONOTONIC, shared
// by every process of the machine), so latencies across processes are comparable.
"use strict";

const http = require("http");
const readline = require("readline");
const WebSocket = require("ws");

const config = JSON.parse(process.argv[2]);
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const fail = (msg) => {
  process.stderr.write(`wamp.js (${config.role}): ${msg}\n`);
  process.exit(2);
};

const AT = 0x40; // "@", around the send time in a payload
const PAD = "x".repeat(Math.max(0, (config.payload_bytes || 100) - 40));

function percentiles(samples) {
  if (!samples.length) return { samples: 0, p50: null, p90: null, p99: null, max: null, mean: null };
  const s = Float64Array.from(samples).sort();
  const rank = (p) => s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)];
  let sum = 0;
  for (const v of s) sum += v;
  const r3 = (v) => Math.round(v * 1000) / 1000;
  return {
    samples: s.length, p50: r3(rank(50)), p90: r3(rank(90)), p99: r3(rank(99)),
    max: r3(s[s.length - 1]), mean: r3(sum / s.length),
  };
}

// --- one WAMP session -------------------------------------------------------------------------------------

function connect(index, onMessage) {
  return new Promise((resolve, reject) => {
    // The generator checks no UTF-8: the servers are measured, not the client's validation of their frames.
    const options = { perMessageDeflate: false, handshakeTimeout: 60000, skipUTF8Validation: true };
    const v1 = config.protocol === "wamp";
    const ws = new WebSocket(config.url, [v1 ? "wamp" : "wamp.2.json"], options);
    let state = "hello";
    const topic = config.topic_prefix ? `${config.topic_prefix}${index}` : config.topic;
    ws.on("open", () => {
      if (!v1) ws.send(JSON.stringify([1, config.realm, { roles: { subscriber: {}, publisher: {} } }]));
    });
    ws.on("error", (err) => (state === "ready" ? fail(`session ${index}: ${err.message}`) : reject(err)));
    ws.on("close", (code) => {
      if (state !== "closing") {
        if (state === "ready") fail(`session ${index} closed by the server (${code})`);
        else reject(new Error(`session ${index} closed during setup (${code})`));
      }
    });
    ws.on("message", (data) => {
      if (state === "ready") return onMessage(data);
      const msg = JSON.parse(data.toString());
      if (v1 && state === "hello" && msg[0] === 0) {
        state = "subscribing";
        ws.send(JSON.stringify([5, topic]));
        ws.send(JSON.stringify([2, "subscribed", "wamp.session.count"]));
      } else if (v1 && state === "subscribing" && msg[0] === 3) {
        state = "ready";
        resolve(ws);
      } else if (state === "hello" && msg[0] === 2) {
        if (config.role !== "sub") {
          state = "ready";
          return resolve(ws);
        }
        state = "subscribing";
        ws.send(JSON.stringify([32, 1, {}, topic]));
      } else if (state === "subscribing" && msg[0] === 33) {
        state = "ready";
        resolve(ws);
      } else {
        reject(new Error(`session ${index}: unexpected ${data.toString().slice(0, 200)} in state ${state}`));
      }
    });
    ws.markClosing = () => (state = "closing");
  });
}

async function connectAll(count, onMessage) {
  const sockets = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      sockets[i] = await connect(config.index_offset + i, onMessage);
    }
  };
  const started = nowMs();
  await Promise.all(Array.from({ length: Math.min(config.concurrency || 100, count) }, worker));
  return { sockets, connect_s: (nowMs() - started) / 1000 };
}

// --- window bookkeeping --------------------------------------------------------------------------------

let windowStart = 0;
let cpuStart = process.cpuUsage();
const counters = { events: 0, other: 0, sent: 0, acked: 0, errors: 0 };
let latencies = [];
let sendLags = [];

function openWindow() {
  for (const k of Object.keys(counters)) counters[k] = 0;
  latencies = [];
  sendLags = [];
  windowStart = nowMs();
  cpuStart = process.cpuUsage();
}

function closeWindow(extra) {
  const wall = (nowMs() - windowStart) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  return {
    role: config.role, window_s: wall, ...counters,
    events_per_s: counters.events / wall, acked_per_s: counters.acked / wall, sent_per_s: counters.sent / wall,
    cpu_percent: ((cpu.user + cpu.system) / 1e6 / wall) * 100,
    latency_ms: percentiles(latencies), send_lag_ms: percentiles(sendLags), ...extra,
    // config.samples: every latency too (us resolution), for a runner merging several processes
    ...(config.samples ? { latency_samples: latencies.map((v) => Math.round(v * 1000) / 1000) } : {}),
  };
}

// --- roles -------------------------------------------------------------------------------------------------

async function runSub() {
  const measure = config.mode === "latency";
  const v1 = config.protocol === "wamp";
  const onMessage = (data) => {
    // EVENT frames start with "[36," (v1: "[8,"); counting them needs no JSON parsing, and the send time
    // "@<ms>@" is found without decoding the frame into a string (the receive time is taken first).
    if (v1 ? data[1] === 56 && data[2] === 44 : data[1] === 51 && data[2] === 54) {
      counters.events++;
      if (measure) {
        const now = nowMs();
        const start = data.indexOf(AT);
        const end = start < 0 ? -1 : data.indexOf(AT, start + 1);
        const sent = end > start + 1 ? Number(data.latin1Slice(start + 1, end)) : NaN;
        if (Number.isFinite(sent)) latencies.push(now - sent);
      }
    } else counters.other++;
  };
  const { sockets, connect_s } = await connectAll(config.count, onMessage);
  out({ ready: true, connect_s, rss_kib: Math.round(process.memoryUsage().rss / 1024) });
  return { close: () => sockets.forEach((ws) => { ws.markClosing(); ws.terminate(); }) };
}

async function runPub() {
  let ws;
  let reqId = 0;
  let running = false;
  const pending = new Map();
  const publish = (due) => {
    const t = nowMs();
    if (due !== undefined) sendLags.push(t - due);
    reqId++;
    pending.set(reqId, t);
    counters.sent++;
    ws.send(`[16,${reqId},{"acknowledge":true},${JSON.stringify(config.topic)},[],` +
      `{"seq":${reqId},"t":"@${t.toFixed(4)}@","pad":"${PAD}"}]`);
  };
  const onMessage = (data) => {
    const msg = JSON.parse(data.toString());
    if (msg[0] === 17) {
      pending.delete(msg[1]);
      counters.acked++;
      if (running && config.mode === "sat") publish();
    } else if (msg[0] === 8) {
      counters.errors++;
      if (counters.errors <= 3) process.stderr.write(`wamp.js pub: ${data.toString().slice(0, 300)}\n`);
      pending.delete(msg[2]);
      if (running && config.mode === "sat") publish();
    }
  };
  ws = (await connectAll(1, onMessage)).sockets[0];
  out({ ready: true });
  return {
    go() {
      running = true;
      startSending(publish, () => running);
    },
    halt() { running = false; },
    close() { running = false; ws.markClosing(); ws.close(); },
  };
}

// Keep `config.window` requests in flight (saturation) or send `config.rate` a second on a fixed schedule,
// passing each scheduled send its due time so that send lag can be measured.
function startSending(send, isRunning) {
  if (config.mode === "sat") {
    for (let i = 0; i < config.window; i++) send();
    return;
  }
  const start = nowMs();
  let n = 0;
  const tick = () => {
    if (!isRunning()) return;
    const now = nowMs();
    while (start + (n * 1000) / config.rate <= now) send(start + (n++ * 1000) / config.rate);
    setTimeout(tick, Math.max(0, start + (n * 1000) / config.rate - nowMs()));
  };
  tick();
}

async function runHttp() {
  const target = new URL(config.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: (config.window || 1) + 16 });
  let running = false;
  const rtts = [];
  const post = (due) => {
    const t = nowMs();
    if (due !== undefined) sendLags.push(t - due);
    counters.sent++;
    const body = config.body.replace("@T@", `@${t.toFixed(4)}@`);
    const req = http.request({
      host: target.hostname, port: target.port, path: target.pathname, method: "POST", agent,
      headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) },
    }, (res) => {
      res.resume();
      res.on("end", () => {
        if (res.statusCode >= 200 && res.statusCode < 300) counters.acked++;
        else if (++counters.errors <= 3) process.stderr.write(`wamp.js http: HTTP ${res.statusCode}\n`);
        rtts.push(nowMs() - t);
        if (running && config.mode === "sat") post();
      });
    });
    req.on("error", (err) => {
      if (++counters.errors <= 3) process.stderr.write(`wamp.js http: ${err.message}\n`);
      if (running && config.mode === "sat") setTimeout(post, 10);
    });
    req.end(body);
  };
  out({ ready: true });
  return {
    go() {
      running = true;
      startSending(post, () => running);
    },
    halt() { running = false; },
    close() { running = false; agent.destroy(); },
    extra: () => ({ rtt_ms: percentiles(rtts.splice(0)) }),
  };
}

async function main() {
  const roles = { sub: runSub, pub: runPub, http: runHttp };
  if (!roles[config.role]) fail(`unknown role ${config.role}`);
  config.index_offset = config.index_offset || 0;
  let handle;
  try {
    handle = await roles[config.role]();
  } catch (err) {
    fail(err.message || String(err));
  }
  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    const cmd = line.trim();
    if (cmd === "go" && handle.go) handle.go();
    else if (cmd === "start") openWindow();
    else if (cmd === "stop") out(closeWindow(handle.extra ? handle.extra() : {}));
    else if (cmd === "halt" && handle.halt) handle.halt();
    else if (cmd === "quit") {
      handle.close();
      setTimeout(() => process.exit(0), 200);
    }
  });
  lines.on("close", () => process.exit(0));
}

main();
