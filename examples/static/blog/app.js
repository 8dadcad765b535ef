// The blog page: the articles over REST, the live notifications and the chat over WAMP (autobahn-js, through
// live.connect from /common/live.js). After a reconnection the chat asks the channel's history
// (wamp.subscription.get_events) for the messages sent while the page was away.
// Whatever people typed (titles, messages, channel names) goes into the page as text (textContent),
// never as HTML.
"use strict";

(function () {
  const MAX_ITEMS = 100; // notifications and chat lines kept on the page
  const CHANNEL = /^[\p{L}\p{N}_-]{1,40}$/u; // one part of the topic URI chat/{channel}

  const $ = (id) => document.getElementById(id);
  const wampError = live.wampError;
  const nickname = "guest-" + String(Math.floor(1000 + Math.random() * 9000));

  let session = null; // the open WAMP session, or null
  let channel = "general"; // the chat channel joined, or to join once connected
  let chatSubscription = null;
  let joins = 0; // each join supersedes the ones before it
  let shownChannel = null; // the channel whose messages the chat log shows
  let chatLast = null; // the last message seen on it (a publication id): a catch-up starts after it
  let chatQueue = null; // chat events arriving while the page catches up, or null
  const chatSeen = new Set(); // publication ids shown: the live stream and the history overlap for a moment
  const notices = new Set(); // the topic's own words shown (after a reconnection it says them again)
  let articles = new Map(); // id -> {id, title}
  let announced = null; // articles announced while the list loads, or null

  $("nickname").textContent = nickname;

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function now(at) {
    const time = (at || new Date()).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    return element("time", null, time);
  }

  function show(id, text) {
    const node = $(id);
    node.textContent = text || "";
    node.hidden = !text;
  }

  // --- articles (REST) -----------------------------------------------------------------------------------

  function isArticle(value) {
    return value !== null && typeof value === "object" && Number.isInteger(value.id) && typeof value.title === "string";
  }

  function remember(article) {
    if (!isArticle(article)) return;
    articles.set(article.id, article);
    if (announced) announced.set(article.id, article);
    renderArticles();
  }

  function renderArticles() {
    const items = [...articles.values()]
      .sort((a, b) => b.id - a.id)
      .map((article) => {
        const item = element("li");
        item.append(element("span", "number", "#" + article.id), element("span", "title", article.title));
        return item;
      });
    $("articles").replaceChildren(...items);
    $("no-articles").hidden = articles.size > 0;
  }

  // The server's list replaces the page's (it may have restarted with other articles), plus whatever was
  // announced while the list was on its way.
  async function loadArticles() {
    announced = new Map();
    try {
      const response = await fetch("/api/articles", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("the server answered " + response.status);
      const loaded = new Map();
      for (const article of await response.json()) {
        if (isArticle(article)) loaded.set(article.id, article);
      }
      for (const [id, article] of announced) loaded.set(id, article);
      articles = loaded;
      renderArticles();
    } catch (error) {
      show("publish-error", "Could not load the articles: " + error.message);
    } finally {
      announced = null;
    }
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

  $("publish-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("title");
    const button = event.target.querySelector("button");
    button.disabled = true;
    show("publish-error", null);
    try {
      const response = await fetch("/api/articles", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ title: input.value }),
      });
      if (response.status === 201) {
        remember(await response.json());
        input.value = "";
      } else {
        show("publish-error", await errorText(response));
      }
    } catch (error) {
      show("publish-error", "Could not reach the server: " + error.message);
    } finally {
      button.disabled = false;
      input.focus();
    }
  });

  // --- live notifications (topic "articles") -------------------------------------------------------------

  function onArticles(args) {
    const payload = args && args.length ? args[0] : null;
    const text = payload && typeof payload.message === "string" ? payload.message : JSON.stringify(args);
    const item = element("li");
    item.append(now(), element("span", "text", text));
    const list = $("notifications");
    list.prepend(item);
    while (list.children.length > MAX_ITEMS) list.lastElementChild.remove();
    $("no-notifications").hidden = true;
    if (payload) remember(payload.article);
  }

  // --- chat (topics "chat/{channel}") --------------------------------------------------------------------

  function chatLine(kind, name, text, at) {
    const item = element("li", kind);
    item.append(now(at));
    if (name) item.append(element("span", "name", name));
    item.append(element("span", "text", text));
    const log = $("chat-log");
    log.append(item);
    while (log.children.length > MAX_ITEMS) log.firstElementChild.remove();
    log.scrollTop = log.scrollHeight;
  }

  function onChat(args, kwargs, details) {
    if (chatQueue) chatQueue.push([args, details.publication]);
    else showChat(args, details.publication);
  }

  function firstTime(publication) {
    if (chatSeen.has(publication)) return false;
    chatSeen.add(publication);
    if (chatSeen.size > 10 * MAX_ITEMS) chatSeen.delete(chatSeen.values().next().value);
    return true;
  }

  // One chat event, live (at: undefined) or from the channel's history (at: when it was published).
  function showChat(args, publication, at) {
    if (!firstTime(publication)) return;
    const payload = args && args.length ? args[0] : null;
    if (typeof payload === "string") {
      // the topic's own words, e.g. "Welcome on general": sent to this page only, kept in no history
      if (!notices.has(payload)) chatLine("notice", null, payload, at);
      notices.add(payload);
      return;
    }
    chatLast = publication;
    if (payload && typeof payload.text === "string") {
      chatLine("other", typeof payload.name === "string" ? payload.name : "someone", payload.text, at);
    } else {
      chatLine("other", "someone", JSON.stringify(args), at);
    }
  }

  // After a reconnection: the messages published on the channel since the last one the page saw.
  async function catchUp(current, subscription, mine) {
    let after = chatLast;
    for (let pages = 0; after !== null && pages < 10; pages++) {
      let result;
      try {
        result = await current.call("wamp.subscription.get_events", [subscription.id], {
          after_publication: after,
          limit: 100,
        });
      } catch (error) {
        if (mine === joins) show("chat-error", "Could not fetch the messages sent meanwhile: " + wampError(error));
        return;
      }
      if (mine !== joins) return;
      // with keyword results autobahn-js gives {args, kwargs}; a lone event would come as itself
      const events = result && Array.isArray(result.args) ? result.args : result == null ? [] : [result];
      const flags = (result && result.kwargs) || {};
      if (flags.gap) chatLine("notice", null, "Messages sent while you were away may be missing.");
      for (const event of events) showChat(event.args, event.publication, new Date(event.timestamp));
      after = flags.more && events.length ? events[events.length - 1].publication : null;
    }
  }

  async function join(wanted) {
    const mine = ++joins;
    const current = session;
    const previous = chatSubscription;
    chatSubscription = null;
    channel = wanted;
    $("current-channel").textContent = wanted;
    if (wanted !== shownChannel) {
      shownChannel = wanted;
      $("chat-log").replaceChildren();
      chatLast = null;
      chatSeen.clear();
      notices.clear();
    }
    if (!current) return; // joined when the connection opens
    if (previous) {
      try {
        await current.unsubscribe(previous);
      } catch (error) {
        // the session may be closing; its subscriptions go with it
      }
    }
    chatQueue = [];
    try {
      const subscription = await current.subscribe("chat/" + wanted, onChat);
      if (mine !== joins || current !== session) {
        current.unsubscribe(subscription).then(null, () => {});
        return;
      }
      chatSubscription = subscription;
      await catchUp(current, subscription, mine);
    } catch (error) {
      if (mine === joins) show("chat-error", "Could not join " + wanted + ": " + wampError(error));
    } finally {
      if (mine === joins) {
        const waiting = chatQueue || [];
        chatQueue = null;
        for (const [args, publication] of waiting) showChat(args, publication);
      }
    }
  }

  $("channel-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = $("channel").value.trim();
    show("chat-error", null);
    if (!CHANNEL.test(wanted)) {
      show("chat-error", "A channel name is 1 to 40 letters, digits, - or _.");
      return;
    }
    if (wanted !== channel || !chatSubscription) join(wanted);
  });

  $("message-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("message");
    const text = input.value.trim();
    if (!text) return;
    if (!session) {
      show("chat-error", "Not connected: the message was not sent.");
      return;
    }
    show("chat-error", null);
    const to = channel;
    input.value = "";
    try {
      // The topic relays a message to everyone else on the channel, not back to its sender: show our copy.
      const sent = await session.publish("chat/" + to, [{ name: nickname, text: text }], {}, { acknowledge: true });
      if (to === channel && firstTime(sent.id)) {
        chatLast = sent.id;
        chatLine("mine", nickname + " (you)", text);
      }
    } catch (error) {
      if (!input.value) input.value = text;
      show("chat-error", "Not sent: " + wampError(error));
    }
  });

  // --- the WAMP connection -------------------------------------------------------------------------------

  const connection = live.connect({
    async onopen(opened) {
      session = opened;
      chatSubscription = null;
      show("chat-error", null);
      try {
        await opened.subscribe("articles", onArticles);
      } catch (error) {
        show("publish-error", "Could not follow the articles: " + wampError(error));
      }
      loadArticles();
      join(channel);
    },
    onclose() {
      session = null;
      chatSubscription = null;
    },
  });
  if (!connection) loadArticles(); // no live updates, but the articles all the same
})();
