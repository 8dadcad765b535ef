// The planning poker page: rooms over REST (create, read), the table over WAMP (autobahn-js, through
// live.connect from /common/live.js): who is there, the votes, reveal, new round, and what happened.
//
// The room's state arrives as a whole (the retained event first, then one per change) and the page merges
// each one into what it knows, the way the server merges them: the later round wins, a reveal stays, and
// each player's vote is the one with the higher version. So states that arrive twice, late, or from the
// history after a reconnection never take anything back.
// Whatever people typed (room names, player names) goes into the page as text (textContent), never as HTML.
"use strict";

(function () {
  const CARDS = ["0", "1", "2", "3", "5", "8", "13", "20", "40", "100", "?"];
  const NAME = /^[\p{L}\p{N}][\p{L}\p{N} _.'-]{0,39}$/u; // what the server accepts as a player's name
  const ROOM_ID = /^[0-9a-f]{12}$/;
  const MAX_ACTIVITY = 100; // lines kept in "What happened"
  const FIRST_VISIT = 20; // past events shown when the page opens
  const PAGE = 100; // events per wamp.subscription.get_events call
  const MAX_PAGES = 10; // at most this many pages are caught up after a reconnection
  const SEEN = 500; // publication ids remembered, to show each event once

  const $ = (id) => document.getElementById(id);
  const wampError = live.wampError;
  const roomId = new URLSearchParams(location.search).get("room");
  const topic = "poker/" + roomId;

  let me = localStorage.getItem("poker.name") || "";
  let room = null; // {id, name, round, revealed, votes: Map name -> {version, card}}, merged
  let people = new Map(); // session id -> name, of those at the table now
  let session = null; // the open WAMP session, or null
  let last = null; // the last publication of the room's history seen: where a catch-up starts
  let queued = null; // events arriving while the page catches up, or null
  const seen = new Set();
  const seenOrder = [];

  // --- helpers -------------------------------------------------------------------------------------------

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function show(id, text) {
    const node = $(id);
    node.textContent = text || "";
    node.hidden = !text;
  }

  function screen(id) {
    for (const name of ["lobby", "entrance", "table", "missing"]) $(name).hidden = name !== id;
  }

  function clock(date) {
    const text = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    return element("time", null, text);
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") return body.error;
    } catch (error) {
      // not JSON: say what the status was
    }
    return "The server answered " + response.status + " " + response.statusText;
  }

  // --- the room's state, merged as the server merges it ----------------------------------------------------

  function stateFrom(view) {
    if (!view || typeof view.id !== "string" || !Number.isInteger(view.round)) return null;
    if (typeof view.votes !== "object" || view.votes === null) return null;
    const votes = new Map();
    for (const [player, vote] of Object.entries(view.votes)) {
      if (vote && Number.isInteger(vote.version)) {
        votes.set(player, { version: vote.version, card: typeof vote.card === "string" ? vote.card : null });
      }
    }
    return { id: view.id, name: String(view.name), round: view.round, revealed: view.revealed === true, votes };
  }

  function later(vote, known) {
    if (vote.version !== known.version) return vote.version > known.version;
    return (vote.card || "") > (known.card || "");
  }

  function merge(known, state) {
    if (!known || known.id !== state.id) return state;
    if (known.round !== state.round) return known.round > state.round ? known : state;
    const votes = new Map(known.votes);
    for (const [player, vote] of state.votes) {
      const mine = votes.get(player);
      if (!mine || later(vote, mine)) votes.set(player, vote);
    }
    return { ...known, revealed: known.revealed || state.revealed, votes };
  }

  function average(state) {
    const numbers = [...state.votes.values()].filter((v) => /^\d+$/.test(v.card || "")).map((v) => Number(v.card));
    if (!numbers.length) return null;
    return Math.floor((numbers.reduce((a, b) => a + b, 0) / numbers.length) * 10 + 0.5) / 10;
  }

  function myVote() {
    try {
      const stored = JSON.parse(sessionStorage.getItem("poker.vote." + roomId) || "null");
      return stored && room && stored.round === room.round && room.votes.has(me) ? stored.card : null;
    } catch (error) {
      return null;
    }
  }

  // --- rendering -----------------------------------------------------------------------------------------

  function render() {
    if (!room) return;
    $("room-name").textContent = room.name;
    $("round").textContent = String(room.round);
    $("me").textContent = me;
    const link = location.origin + "/?room=" + room.id;
    $("room-link").textContent = link;
    $("room-link").href = link;
    document.title = room.name + " · sandstone planning poker";

    const mine = myVote();
    for (const button of $("cards").children) {
      button.setAttribute("aria-pressed", String(button.dataset.card === mine));
      button.disabled = !session || room.revealed;
    }
    $("reveal").disabled = !session || room.revealed;
    $("new-round").disabled = !session;

    const present = new Set(people.values());
    const voted = [...room.votes.keys()].filter((player) => present.has(player)).length;
    $("status").textContent = room.revealed
      ? "The cards are on the table."
      : voted + " of " + present.size + " at the table voted.";
    const mean = room.revealed ? average(room) : null;
    $("result").hidden = !room.revealed;
    $("average").textContent = mean === null ? "no numeric card" : String(mean);
    renderPeople(present);
  }

  function renderPeople(present) {
    const names = [...new Set([...present, ...(room ? room.votes.keys() : [])])].sort((a, b) => a.localeCompare(b));
    const items = names.map((player) => {
      const vote = room ? room.votes.get(player) : undefined;
      const item = element("li");
      item.dataset.name = player;
      item.dataset.voted = String(vote !== undefined);
      item.append(element("span", "name", player + (player === me ? " (you)" : "")));
      let status = vote === undefined ? "thinking…" : "voted";
      if (vote && room.revealed && vote.card !== null) status = vote.card;
      item.append(element("span", vote && room.revealed ? "card-face" : "status", status));
      if (!present.has(player)) item.append(element("span", "away", "left"));
      return item;
    });
    $("people").replaceChildren(...items);
  }

  function activity(text, at, kind) {
    const item = element("li", kind || null);
    item.append(clock(at || new Date()), element("span", "text", text));
    const list = $("activity");
    list.append(item);
    while (list.children.length > MAX_ACTIVITY) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  const CHANGES = {
    created: (change) => "The room was created",
    vote: (change) => change.by + " voted",
    reveal: (change) => change.by + " revealed the cards",
    new_round: (change) => change.by + " started round " + change.round,
  };

  // --- events of the room's topic ------------------------------------------------------------------------

  const HANDLERS = {
    state(payload, retained, at) {
      const state = stateFrom(payload);
      if (!state || state.id !== roomId) return;
      room = merge(room, state);
      const change = payload.change;
      if (!retained && change && typeof change.by === "string" && CHANGES[change.what]) {
        activity(CHANGES[change.what](change), at);
      }
      render();
    },
    people(payload) {
      if (!Array.isArray(payload.people)) return;
      people = new Map(payload.people.filter(isPerson).map((p) => [p.session, p.name]));
      render();
    },
    joined(payload, retained, at) {
      if (!isPerson(payload.person)) return;
      people.set(payload.person.session, payload.person.name);
      activity(payload.person.name + " joined", at);
      render();
    },
    left(payload, retained, at) {
      if (!isPerson(payload.person)) return;
      people.delete(payload.person.session);
      activity(payload.person.name + " left", at);
      render();
    },
  };

  function isPerson(value) {
    return value !== null && typeof value === "object" && Number.isInteger(value.session) && typeof value.name === "string";
  }

  function firstTime(publication) {
    if (seen.has(publication)) return false;
    seen.add(publication);
    seenOrder.push(publication);
    while (seenOrder.length > SEEN) seen.delete(seenOrder.shift());
    return true;
  }

  // One event of the room, live (at: undefined) or from the history (at: when it happened).
  function receive(payload, publication, retained, at) {
    if (!payload || typeof payload !== "object" || !Object.hasOwn(HANDLERS, payload.type)) return;
    if (!firstTime(publication)) return; // the live stream and the history overlap for a moment
    // "people" is sent to one subscriber and kept nowhere; a retained state may be older than what was seen
    if (payload.type !== "people" && !retained) last = publication;
    HANDLERS[payload.type](payload, retained, at);
  }

  function onEvent(args, kwargs, details) {
    const event = [args && args.length ? args[0] : null, details.publication, details.retained === true];
    if (queued) queued.push(event);
    else receive(...event);
  }

  async function history(current, subscribed, options) {
    const result = await current.call("wamp.subscription.get_events", [subscribed.id], options);
    if (result && Array.isArray(result.args)) {
      const more = result.kwargs || {};
      return { events: result.args, more: more.more === true, gap: more.gap === true };
    }
    return { events: result == null ? [] : [result], more: false, gap: false };
  }

  function replay(event) {
    const payload = Array.isArray(event.args) && event.args.length ? event.args[0] : null;
    receive(payload, event.publication, false, new Date(event.timestamp));
  }

  // What happened while the page was away (after the last event it saw), or lately on a first visit.
  async function catchUp(current, subscribed) {
    if (last === null) {
      const page = await history(current, subscribed, { limit: FIRST_VISIT, reverse: true });
      page.events.reverse().forEach(replay);
      return;
    }
    let after = last;
    for (let pages = 0; pages < MAX_PAGES; pages++) {
      const page = await history(current, subscribed, { after_publication: after, limit: PAGE });
      if (page.gap) activity("Some of what happened meanwhile is no longer kept.", null, "notice");
      page.events.forEach(replay);
      if (!page.more || !page.events.length) return;
      after = page.events[page.events.length - 1].publication;
    }
  }

  // --- actions -------------------------------------------------------------------------------------------

  async function act(action, extra) {
    if (!session || !room) {
      show("room-error", "Not connected: try again in a moment.");
      return false;
    }
    show("room-error", null);
    try {
      await session.publish(topic, [{ action, round: room.round, ...extra }], {}, { acknowledge: true });
      return true;
    } catch (error) {
      show("room-error", wampError(error));
      return false;
    }
  }

  for (const card of CARDS) {
    const button = element("button", "playing-card", card);
    button.type = "button";
    button.dataset.card = card;
    button.setAttribute("aria-pressed", "false");
    button.setAttribute("aria-label", "Vote " + card);
    button.addEventListener("click", async () => {
      const round = room && room.round;
      if (await act("vote", { card })) {
        sessionStorage.setItem("poker.vote." + roomId, JSON.stringify({ round, card }));
        render();
      }
    });
    $("cards").append(button);
  }
  $("reveal").addEventListener("click", () => act("reveal"));
  $("new-round").addEventListener("click", () => act("new_round"));
  $("leave").addEventListener("click", () => {
    localStorage.removeItem("poker.name");
    location.reload();
  });

  // --- the WAMP connection -------------------------------------------------------------------------------

  function connect() {
    screen("table");
    render();
    const handlers = {
      async onopen(opened) {
        session = opened;
        queued = [];
        show("room-error", null);
        try {
          const subscribed = await opened.subscribe(topic, onEvent, { get_retained: true });
          if (session !== opened) return;
          await catchUp(opened, subscribed).catch((error) => {
            if (session === opened) activity("Could not fetch what happened meanwhile: " + wampError(error), null, "notice");
          });
        } catch (error) {
          if (session === opened) show("room-error", "Could not follow the room: " + wampError(error));
        } finally {
          if (session === opened) {
            const waiting = queued || [];
            queued = null;
            waiting.forEach((event) => receive(...event));
            render();
          }
        }
      },
      onclose() {
        session = null;
        queued = null;
        render();
      },
    };
    const options = { authmethods: ["ticket"], authid: me, onchallenge: () => "poker" };
    if (!live.connect(handlers, options)) show("room-error", "The table needs autobahn-js, which did not load.");
  }

  $("name-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = $("name-input").value.trim();
    if (!NAME.test(wanted)) {
      show("name-error", "A name is 1 to 40 letters, digits, spaces and _ . ' -, starting with a letter or digit.");
      return;
    }
    me = wanted;
    localStorage.setItem("poker.name", me);
    connect();
  });

  // --- rooms (REST) --------------------------------------------------------------------------------------

  $("create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = event.target.querySelector("button");
    button.disabled = true;
    show("create-error", null);
    try {
      const response = await fetch("/api/rooms", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ name: $("room-name-input").value }),
      });
      if (response.status === 201) {
        location.search = "?room=" + (await response.json()).id;
        return;
      }
      show("create-error", await errorText(response));
    } catch (error) {
      show("create-error", "Could not reach the server: " + error.message);
    } finally {
      button.disabled = false;
    }
  });

  function missing(text) {
    $("missing-text").textContent = text;
    screen("missing");
  }

  async function enter() {
    let response;
    try {
      response = await fetch("/api/rooms/" + roomId, { headers: { Accept: "application/json" } });
    } catch (error) {
      missing("Could not reach the server: " + error.message);
      return;
    }
    if (!response.ok) {
      missing(await errorText(response));
      return;
    }
    const state = stateFrom(await response.json());
    if (!state) {
      missing("The server answered something that is no room.");
      return;
    }
    room = merge(room, state);
    $("entrance-room").textContent = room.name;
    if (NAME.test(me)) {
      connect();
    } else {
      screen("entrance");
      $("name-input").focus();
    }
  }

  if (roomId === null) {
    screen("lobby");
    $("room-name-input").focus();
  } else if (!ROOM_ID.test(roomId)) {
    missing("A room's id is 12 letters a-f and digits, as in the link its creator shared.");
  } else {
    enter();
  }
})();
