// groupchatd's browser client: a client of the same line protocol as netcat, over a WebSocket
// (one line per text frame each way). It only reads the server's lines to show them well: who
// said what (each nickname in a stable colour), which room we are in, the rooms and the members.
// Everything typed goes to the server as it is, so every /command works as it does in netcat.
// Text is only ever set with textContent: nothing from the server is parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const lines = $("lines");
const input = $("say");
const MAX_LINES = 2000;

const state = {
  ws: null,
  nick: null, // the nickname we asked for, kept for reconnecting
  joined: false,
  room: null,
  members: new Set(),
  rooms: [],
  quiet: { rooms: 0, who: 0 }, // replies to requests the page made itself, not shown
  roomsListing: false,
  backoff: 1000,
  last: null, // the last line element, for continuation rows
};

// ---- connection --------------------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws`);
  state.ws = ws;
  state.joined = false;
  status("connecting…");
  ws.onopen = () => {
    status("connected");
    state.backoff = 1000;
    if (state.nick) ws.send(state.nick);
  };
  ws.onmessage = (ev) => onLine(String(ev.data));
  ws.onclose = () => {
    state.ws = null;
    state.joined = false;
    const wait = state.backoff;
    state.backoff = Math.min(state.backoff * 2, 30000);
    status(`disconnected; reconnecting in ${Math.round(wait / 1000)} s`);
    setTimeout(connect, wait);
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

function onLine(line) {
  if (line.startsWith("    ") && state.last) {
    // A continuation row of the line before (the server wraps long lines).
    state.last.querySelector(".text").append("\n" + line.slice(4));
    return;
  }
  if (line.startsWith("*** ")) return onNotice(line.slice(4));
  if (line.startsWith("[")) {
    const m = /^\[(\d\d:\d\d)\] (.*)$/.exec(line);
    if (m) return show(m[2], { time: m[1], history: true });
  }
  show(line, {});
}

function onNotice(text) {
  let m;
  if (state.quiet.rooms > 0 && (m = /^(\d+) rooms? \(\/join NAME to enter one\):$/.exec(text))) {
    state.quiet.rooms -= 1;
    state.roomsListing = Number(m[1]);
    state.rooms = [];
    return;
  }
  if (state.roomsListing && (m = /^(#\S+) \((\d+)(, you are here)?\)(?:: (.*))?$/.exec(text))) {
    state.rooms.push({ name: m[1], members: Number(m[2]), here: !!m[3], topic: m[4] || "" });
    if (m[3]) setRoom(m[1]);
    state.roomsListing -= 1;
    if (state.roomsListing === 0) {
      state.roomsListing = false;
      drawRooms();
    }
    return;
  }
  if (state.quiet.who > 0 && (m = /^\d+ online: (.*)$/.exec(text))) {
    state.quiet.who -= 1;
    setMembers(m[1].split(", "));
    return;
  }
  if (text === "Choose a nickname:") {
    state.joined = false;
    $("say-label").textContent = "Nickname";
    input.placeholder = "Choose a nickname";
  } else if ((m = /^Welcome, (.+?)! (\d+) online(?:: (.*))?/.exec(text))) {
    state.joined = true;
    state.nick = m[1];
    $("say-label").textContent = m[1];
    input.placeholder = "Say something, or /help";
    if (m[3]) setMembers(m[3].split(", "));
    else askWho();
    askRooms();
  } else if ((m = /^Now in (#\S+) \(.*?\)\. \d+ online(?:: (.*))?/.exec(text))) {
    setRoom(m[1]);
    if (m[2]) setMembers(m[2].split(", "));
    else askWho();
    askRooms();
  } else if ((m = /^\d+ online: (.*)$/.exec(text))) {
    setMembers(m[1].split(", "));
  } else if ((m = /^(\S+) joined$/.exec(text))) {
    state.members.add(m[1]);
    drawMembers();
  } else if ((m = /^(\S+) left \(/.exec(text))) {
    state.members.delete(m[1]);
    drawMembers();
  } else if ((m = /^(\S+) is now known as (\S+)$/.exec(text))) {
    state.members.delete(m[1]);
    state.members.add(m[2]);
    if (m[1] === state.nick) state.nick = m[2];
    drawMembers();
  } else if (/ set the topic: | cleared the topic$/.test(text)) {
    askRooms();
  }
  show(text, { server: true });
}

function askRooms() {
  if (send("/rooms")) state.quiet.rooms += 1;
}

function askWho() {
  if (send("/who")) state.quiet.who += 1;
}

// ---- drawing -----------------------------------------------------------------------------------

/// A stable colour per nickname, so one person always looks the same.
function colour(nick) {
  let h = 0;
  for (const c of nick) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return `hsl(${h % 360} 65% 38%)`;
}

function show(text, { server = false, time = null, history = false }) {
  const li = document.createElement("li");
  if (server) li.className = "server";
  if (history) li.classList.add("history");
  if (time) {
    const t = document.createElement("time");
    t.textContent = time;
    li.append(t, " ");
  }
  const body = document.createElement("span");
  body.className = "text";
  let m;
  if (!server && (m = /^<([^>]+)> (.*)$/s.exec(text))) {
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
  if (atBottom) lines.scrollTop = lines.scrollHeight;
}

function who(nick, label) {
  const b = document.createElement("b");
  b.className = "nick";
  b.style.color = colour(nick);
  b.textContent = label;
  return b;
}

function setRoom(name) {
  state.room = name;
  $("room").textContent = name;
  document.title = `${name} · groupchatd`;
}

function setMembers(names) {
  state.members = new Set(names.filter((n) => n));
  drawMembers();
}

function drawMembers() {
  const ul = $("members");
  ul.replaceChildren(
    ...[...state.members].sort((a, b) => a.localeCompare(b)).map((n) => {
      const li = document.createElement("li");
      li.append(who(n, n));
      return li;
    }),
  );
}

function drawRooms() {
  const ul = $("rooms");
  ul.replaceChildren(
    ...state.rooms.map((r) => {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = `${r.name} (${r.members})`;
      if (r.topic) b.title = r.topic;
      if (r.name === state.room) b.setAttribute("aria-current", "true");
      b.addEventListener("click", () => send(`/join ${r.name}`));
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
  if (!state.joined) state.nick = line.trim();
  if (send(line)) {
    input.value = "";
    // Our own chat lines are not echoed by the server (netcat shows what you typed): show them.
    if (state.joined && !line.startsWith("/")) show(`<${state.nick}> ${line}`, {});
    else if (state.joined && line.startsWith("//")) show(`<${state.nick}> ${line.slice(1)}`, {});
    else if (state.joined && /^\/me /i.test(line)) show(`* ${state.nick} ${line.slice(4)}`, {});
  }
});

$("join-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("join-name").value.trim();
  if (name && send(`/join ${name}`)) $("join-name").value = "";
});

connect();
