// An autobahn-js client as a web page writes one: a Connection with auto-reconnect on (short retry delays, so
// that a test does not wait), which subscribes to TOPIC each time it opens and does nothing else on its own
// to come back. Used by tests/test_e2e_reconnect.py.
//
//   node reconnect.js URL TOPIC [PROCEDURE]
//
// It prints one JSON object per line on stdout:
//   {"kind": "open", "session": ID, "answer": ...}   a session joined (answer: PROCEDURE's result, if given)
//   {"kind": "subscribed", "session": ID}            ...and subscribed to TOPIC
//   {"kind": "event", "session": ID, "args": [...]}  an EVENT on TOPIC
//   {"kind": "close", "reason": "closed" | "lost" | "unreachable",
//    "goodbye": REASON | null, "will_retry": BOOL}   the connection closed (goodbye: the GOODBYE's reason URI)
//   {"kind": "error", "error": TEXT}
// It exits when its stdin closes (the test is gone) or on SIGTERM.
"use strict";

const autobahn = require("autobahn");

const [url, topic, procedure] = process.argv.slice(2);

function emit(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

const connection = new autobahn.Connection({
  url,
  realm: "realm1",
  max_retries: -1,
  initial_retry_delay: 0.1,
  max_retry_delay: 0.3,
  retry_delay_growth: 1.5,
});

connection.onopen = async (session) => {
  const answer = procedure ? await session.call(procedure).catch((error) => String(error)) : null;
  emit({ kind: "open", session: session.id, answer });
  try {
    await session.subscribe(topic, (args) => emit({ kind: "event", session: session.id, args }));
    emit({ kind: "subscribed", session: session.id });
  } catch (error) {
    emit({ kind: "error", error: JSON.stringify(error) });
  }
};

connection.onclose = (reason, details) => {
  emit({ kind: "close", reason, goodbye: details.reason || null, will_retry: Boolean(details.will_retry) });
  return false; // autobahn-js decides whether to retry
};

process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
connection.open();
