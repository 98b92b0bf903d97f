// groupchatd's browser client: a client of the same line protocol as netcat, over a WebSocket
// (one line per text message each way). It reads the server's lines only to show them well:
// who said what (each nickname in a stable colour), which room we are in, the rooms and the
// members. Everything typed goes to the server as it is, so every /command works as in netcat.
// Text is only ever set with textContent: nothing from the server is parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const lines = $("lines");
const input = $("say");
/// Lines kept on screen; older ones are dropped.
const MAX_LINES = 2000;
/// The server's line limit in bytes (filled in by the server), so an overlong line is kept in
/// the input rather than sent and refused.
const MAX_LINE = Number(document.body.dataset.maxLine) || 0;
/// Reconnecting waits this long at first, doubling up to the most.
const BACKOFF_FIRST = 1000;
const BACKOFF_MOST = 30000;
/// How often the room list is asked for again while connected (rooms come and go).
const ROOMS_EVERY = 60000;
/// After someone moves to another room (which may be new), the room list is asked for again
/// this much later, once for any number of moves: every request counts against flood control.
const ROOMS_SOON = 2000;

const state = {
  ws: null,
  nick: null, // our nickname once the server welcomed it (and what we ask for on reconnect)
  joined: false,
  room: null,
  topic: "",
  members: new Set(),
  rooms: [],
  // Replies to requests the page made itself, not shown: how many of each are due.
  quiet: { rooms: 0, who: 0 },
  // A reply spread over several lines: { kind: "rooms" | "names", left, quiet }.
  listing: null,
  // The last line shown, which continuation rows belong to.
  last: null,
  backoff: BACKOFF_FIRST,
  retry: null,
  stay: true, // false after /quit or a kick: then only the button reconnects
  wantRoom: null, // the room to go back to after reconnecting
  rejoining: false, // reconnected with a nickname: the greeting is not shown again
  unseen: [], // ...unless the connection ends before the prompt (a refusal): then it is
  returning: false, // on the way back to wantRoom: the default room's lines are not shown
  home: null, // the default room, where a welcome puts us (learnt from the first room list)
  homeUnknown: false,
  roomsSoon: null,
};

// ---- connection --------------------------------------------------------------------------------

function connect() {
  clearTimeout(state.retry);
  finish();
  $("reconnect").hidden = true;
  state.stay = true;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws`);
  state.ws = ws;
  state.joined = false;
  state.listing = null;
  state.quiet = { rooms: 0, who: 0 };
  status("connecting…");
  ws.onopen = () => {
    status("connected");
    if (state.nick) {
      ws.send(state.nick);
      state.rejoining = true;
      state.unseen = [];
    }
  };
  ws.onmessage = (ev) => onLine(String(ev.data));
  ws.onclose = () => {
    if (state.ws !== ws) return;
    finish();
    state.ws = null;
    // Closed before the prompt: what it said instead (a refusal, "server full") is shown.
    for (const li of state.unseen) li.hidden = false;
    state.unseen = [];
    state.rejoining = false;
    state.returning = false;
    if (state.joined) state.wantRoom = state.room;
    state.joined = false;
    document.body.classList.remove("joined");
    if (!state.stay) {
      status("disconnected");
      $("reconnect").hidden = false;
      return;
    }
    // A little jitter, so that after a restart the browsers do not all come back at once.
    const wait = state.backoff * (0.8 + Math.random() * 0.4);
    state.backoff = Math.min(state.backoff * 2, BACKOFF_MOST);
    status(`reconnecting in ${Math.max(1, Math.round(wait / 1000))} s`);
    state.retry = setTimeout(connect, wait);
  };
}

function send(line) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(line);
    return true;
  }
  return false;
}

function status(text) {
  $("status").textContent = text;
}

// ---- what the server says ----------------------------------------------------------------------

// The server wraps long lines for terminals: rows after the first start with four spaces. Each
// logical line is one list item, its rows added as they come; a server notice is read once it
// is whole (when the next line begins, or when nothing more came for a moment).
let open = null; // { li, text } of a notice still receiving rows
let openTimer = null;

function onLine(line) {
  if (line.startsWith("    ") && state.last) {
    const row = line.slice(4);
    state.last.querySelector(".text").append("\n" + row);
    if (open) {
      open.text += " " + row;
      holdOpen();
    }
    if (!state.last.hidden) scrollDown();
    return;
  }
  finish();
  const skip = skipped(line);
  if (line.startsWith("*** ")) {
    const text = line.slice(4);
    open = { li: show(text, { server: true, hidden: skip || quietAt(text) }), text };
    if (skip && state.rejoining) state.unseen.push(open.li);
    holdOpen();
    return;
  }
  // Only history lines start with a time stamp: everyone's text comes after a nickname.
  const m = /^\[(\d\d:\d\d)\] (.*)$/.exec(line);
  if (m) show(m[2], { time: m[1], history: true, hidden: skip });
  else show(line, { hidden: skip });
}

/// Whether a line is one a reconnect brings again, not shown: the greeting (up to the nickname
/// prompt, which the page answers by itself), and the default room's welcome and history on the
/// way back to the room we were in.
function skipped(line) {
  if (state.rejoining) {
    if (line === "*** Choose a nickname:") state.rejoining = false;
    return true;
  }
  if (state.returning) {
    if (/^\*\*\* (Now in |Cannot join)/.test(line)) {
      state.returning = false;
      return false;
    }
    return !line.startsWith("*** Welcome, ");
  }
  return false;
}

function holdOpen() {
  clearTimeout(openTimer);
  openTimer = setTimeout(finish, 50);
}

/// Reads the notice being received, now whole.
function finish() {
  clearTimeout(openTimer);
  const done = open;
  open = null;
  if (done) onNotice(done.text);
}

/// Whether a notice starting with `text` belongs to a reply the page asked for itself, and so
/// is not shown. Decided on its first row, so that nothing flashes up.
function quietAt(text) {
  if (state.listing) return state.listing.quiet;
  if (/^\d+ rooms? \(\/join NAME/.test(text)) return state.quiet.rooms > 0;
  if (/^\d+ online/.test(text)) return state.quiet.who > 0;
  return false;
}

function onNotice(text) {
  let m;
  const listing = state.listing;
  if (listing && listing.kind === "rooms") {
    if ((m = /^(\S+) \((\d+)(, you are here)?\)(?:: (.*))?$/.exec(text))) {
      state.rooms.push({ name: m[1], members: Number(m[2]), topic: m[4] || "" });
      if (m[3]) {
        setRoom(m[1]);
        setTopic(m[4] || "");
        if (state.homeUnknown) state.home = m[1];
        state.homeUnknown = false;
      }
      listing.left -= 1;
      if (listing.left === 0) {
        state.listing = null;
        drawRooms();
      }
      return;
    }
    state.listing = null;
    drawRooms();
  }
  if (listing && listing.kind === "names") {
    // Big rooms: the names come on lines of their own after "N online:".
    addNames(text);
    if (state.members.size >= listing.left) state.listing = null;
    return;
  }
  if ((m = /^(\d+) rooms? \(\/join NAME to enter one\):$/.exec(text))) {
    const quiet = state.quiet.rooms > 0;
    if (quiet) state.quiet.rooms -= 1;
    state.rooms = [];
    const n = Number(m[1]);
    state.listing = n > 0 ? { kind: "rooms", left: n, quiet } : null;
    if (n === 0) drawRooms();
  } else if ((m = /^(\d+) online(.*)$/.exec(text))) {
    // A reply to /who.
    const quiet = state.quiet.who > 0;
    if (quiet) state.quiet.who -= 1;
    online(Number(m[1]), m[2], quiet);
  } else if (text === "Choose a nickname:") {
    state.joined = false;
    $("say-label").textContent = "Nickname";
    input.placeholder = "Choose a nickname";
  } else if ((m = /^Welcome, (.+?)! (\d+) online(.*)$/.exec(text))) {
    welcomed(m[1]);
    online(Number(m[2]), m[3], false);
    askRooms();
  } else if ((m = /^Now in (\S+) \((.*)\)\. (\d+) online(.*)$/.exec(text))) {
    setRoom(m[1]);
    setTopic(m[2] === "no topic" ? "" : m[2].replace(/^topic: /, ""));
    online(Number(m[3]), m[4], false);
    askRooms();
  } else if ((m = /^Topic: (.*)$/.exec(text))) {
    setTopic(m[1]);
  } else if ((m = /^Topic of (\S+): (.*)$/.exec(text))) {
    if (m[1] === state.room) setTopic(m[2]);
  } else if ((m = /^(\S+) joined$/.exec(text))) {
    state.members.add(m[1]);
    drawMembers();
    roomsSoon();
  } else if ((m = /^(\S+) left \((moved to )?/.exec(text))) {
    state.members.delete(m[1]);
    drawMembers();
    if (m[2]) roomsSoon();
  } else if ((m = /^(\S+) is now known as (\S+)$/.exec(text))) {
    state.members.delete(m[1]);
    state.members.add(m[2]);
    if (m[1] === state.nick) setNick(m[2]);
    drawMembers();
  } else if ((m = /^\S+ set the topic: (.*)$/.exec(text))) {
    setTopic(m[1]);
    askRooms();
  } else if (/^\S+ cleared the topic$/.test(text)) {
    setTopic("");
    askRooms();
  } else if (text === "Goodbye." || text.startsWith("you were kicked")) {
    // The user or the operator ended this on purpose: no reconnecting by ourselves.
    state.stay = false;
  }
}

/// After "N online": ": a, b, c" (the names, maybe continued on the next rows), ":" (the names
/// follow on lines of their own), or " (type /who to list them)" (too many to list).
function online(count, rest, quiet) {
  if (rest.startsWith(": ")) {
    state.members = new Set();
    addNames(rest.slice(2));
  } else if (rest === ":") {
    state.members = new Set();
    state.listing = { kind: "names", left: count, quiet };
  } else if (state.joined) {
    askWho();
  }
  drawMembers();
}

function addNames(text) {
  for (const name of text.split(",")) {
    const n = name.trim();
    if (n) state.members.add(n);
  }
  drawMembers();
}

function welcomed(nick) {
  state.joined = true;
  state.backoff = BACKOFF_FIRST;
  setNick(nick);
  input.placeholder = "Say something, or /help";
  document.body.classList.add("joined");
  status("connected");
  // Back to where we were before the connection dropped.
  const room = state.wantRoom;
  state.wantRoom = null;
  if (room && room !== state.home && send(`/join ${room}`)) state.returning = true;
  else state.homeUnknown = state.home === null;
}

function setNick(nick) {
  state.nick = nick;
  $("say-label").textContent = nick;
}

function askRooms() {
  if (send("/rooms")) state.quiet.rooms += 1;
}

/// Asks for the room list in a moment, once however often this is called meanwhile.
function roomsSoon() {
  if (state.roomsSoon) return;
  state.roomsSoon = setTimeout(() => {
    state.roomsSoon = null;
    if (state.joined) askRooms();
  }, ROOMS_SOON);
}

function askWho() {
  if (send("/who")) state.quiet.who += 1;
}

// ---- drawing -----------------------------------------------------------------------------------

/// A stable colour per nickname (its hue), so one person always looks the same.
function hue(nick) {
  let h = 0;
  for (const c of nick.toLowerCase()) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return h % 360;
}

function show(text, { server = false, time = null, history = false, mine = false, hidden = false }) {
  const li = document.createElement("li");
  li.hidden = hidden;
  if (server) li.className = "server";
  if (history) li.classList.add("history");
  if (mine) li.classList.add("mine");
  if (time) {
    const t = document.createElement("time");
    t.textContent = time;
    li.append(t, " ");
  }
  const body = document.createElement("span");
  body.className = "text";
  let m;
  if (!server && (m = /^<([^>]+)> (.*)$/s.exec(text))) {
    li.classList.add("said");
    li.append(who(m[1], `<${m[1]}>`), " ");
    body.textContent = m[2];
  } else if (!server && (m = /^\* (\S+) (.*)$/s.exec(text))) {
    li.classList.add("action");
    li.append("* ", who(m[1], m[1]), " ");
    body.textContent = m[2];
  } else if (!server && (m = /^\*([^*\s]+)\* (.*)$/s.exec(text))) {
    li.classList.add("private");
    li.append(who(m[1], `*${m[1]}*`), " ");
    body.textContent = m[2];
  } else {
    body.textContent = server ? `*** ${text}` : text;
  }
  li.append(body);
  const atBottom = lines.scrollHeight - lines.scrollTop - lines.clientHeight < 40;
  lines.append(li);
  state.last = li;
  while (lines.childElementCount > MAX_LINES) lines.firstElementChild.remove();
  if (atBottom && !hidden) scrollDown();
  return li;
}

function scrollDown() {
  lines.scrollTop = lines.scrollHeight;
}

function who(nick, label) {
  const b = document.createElement("b");
  b.className = "nick";
  b.style.setProperty("--hue", hue(nick));
  b.textContent = label;
  return b;
}

function setRoom(name) {
  state.room = name;
  $("room").textContent = name;
  document.title = `${name} · groupchatd`;
  drawRooms();
}

function setTopic(topic) {
  state.topic = topic;
  $("topic").textContent = topic;
  $("topic").title = topic;
}

function drawMembers() {
  const names = [...state.members].sort((a, b) => a.localeCompare(b));
  $("member-count").textContent = names.length ? `(${names.length})` : "";
  $("members").replaceChildren(
    ...names.map((n) => {
      const li = document.createElement("li");
      li.append(who(n, n));
      return li;
    }),
  );
}

function drawRooms() {
  $("rooms").replaceChildren(
    ...state.rooms.map((r) => {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.room = r.name;
      const name = document.createElement("span");
      name.textContent = r.name;
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = String(r.members);
      b.append(name, count);
      if (r.topic) b.title = r.topic;
      if (r.name === state.room) b.setAttribute("aria-current", "true");
      b.addEventListener("click", () => {
        if (r.name !== state.room) send(`/join ${r.name}`);
        input.focus();
      });
      li.append(b);
      return li;
    }),
  );
}

// ---- input -------------------------------------------------------------------------------------

$("say-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const line = input.value;
  if (!line.trim()) return;
  if (MAX_LINE && new TextEncoder().encode(line).length > MAX_LINE) {
    // What the server would say; the text stays in the input to be shortened.
    show(`Line too long (limit ${MAX_LINE} bytes); it was not sent.`, { server: true });
    scrollDown();
    return;
  }
  if (!send(line)) return;
  input.value = "";
  if (!state.joined) return;
  // The server does not echo our own lines back (netcat shows what you typed): show them here.
  const me = state.nick;
  if (!line.startsWith("/")) show(`<${me}> ${line}`, { mine: true });
  else if (line.startsWith("//")) show(`<${me}> ${line.slice(1)}`, { mine: true });
  else if (/^\/me /i.test(line)) show(`* ${me} ${line.slice(4)}`, { mine: true });
  else if (/^\/quit\b/i.test(line)) state.stay = false;
  scrollDown();
});

$("join-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("join-name").value.trim();
  if (name && send(`/join ${name}`)) $("join-name").value = "";
});

$("reconnect").addEventListener("click", () => {
  state.backoff = BACKOFF_FIRST;
  connect();
});

setInterval(() => {
  if (state.joined && document.visibilityState === "visible") askRooms();
}, ROOMS_EVERY);

connect();
