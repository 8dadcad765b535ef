// What the example pages share: their WAMP connection (autobahn-js) to this server, which comes back by
// itself, and its state in the page's #connection element. A page loads this script before its own:
//
//   live.connect({ onopen(session) {...}, onclose() {...} }, options)
//
// opens the connection; onopen runs with the new session each time the connection opens (again after a
// reconnection), onclose each time it is lost. options (optional) adds autobahn.Connection options, such as
// authmethods, authid and onchallenge. Without autobahn-js (it did not load), the state says so and
// connect returns null.
"use strict";

const live = (function () {
  const REALM = "realm1";
  const WS_PATH = "/ws";

  function showConnection(state, text) {
    const node = document.getElementById("connection");
    node.dataset.state = state;
    node.textContent = text;
  }

  function connect(handlers, options) {
    if (typeof autobahn === "undefined") {
      showConnection("unavailable", "Live updates unavailable: autobahn-js did not load");
      return null;
    }

    const connection = new autobahn.Connection({
      url: (location.protocol === "https:" ? "wss://" : "ws://") + location.host + WS_PATH,
      realm: REALM,
      max_retries: -1, // keep trying while the server is away
      initial_retry_delay: 1,
      max_retry_delay: 5,
      retry_delay_growth: 1.5,
      ...options,
    });

    connection.onopen = (session) => {
      showConnection("open", "Connected");
      handlers.onopen(session);
    };

    connection.onclose = (reason, details) => {
      if (handlers.onclose) handlers.onclose();
      if (details.will_retry) {
        const delay = Math.max(1, Math.round(details.retry_delay));
        showConnection("closed", "Disconnected: reconnecting in " + delay + " s…");
      } else if (details.reason === "wamp.close.system_shutdown") {
        // The server said goodbye because it is stopping (a restart, a deploy). autobahn-js never retries
        // after a goodbye, so the page comes back by itself.
        showConnection("closed", "Disconnected: the server is restarting, reconnecting…");
        setTimeout(() => {
          try {
            connection.open();
          } catch (error) {
            // already opening
          }
        }, 1000);
      } else {
        const why = details.reason ? " (" + details.reason + ")" : "";
        showConnection("closed", "Disconnected" + why + ": reload the page to reconnect");
      }
      return false;
    };

    connection.open();
    return connection;
  }

  // A WAMP error (autobahn-js rejects with {error, args}) as text: its URI and first argument.
  function wampError(error) {
    if (error && typeof error.error === "string") {
      const detail = Array.isArray(error.args) && error.args.length ? ": " + String(error.args[0]) : "";
      return error.error + detail;
    }
    return String(error);
  }

  return { connect, wampError };
})();
