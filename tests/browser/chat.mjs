// The browser client in a real browser: Debian's chromium, driven by playwright-core, against a
// running groupchatd (tests/it/browser.rs starts it and runs this). Two pages at desktop size
// and one raw TCP client chat in one room, each seeing the others' lines (asserted in the DOM
// and on the socket); the pages switch rooms (one by clicking the room list, one with /join) and
// see the history; a page at phone width has no horizontal scroll and shows its input; an
// upgrade (`chatctl upgrade`) hands every connection over, the pages' WebSockets with the TCP
// client, and the pages stay connected in their room and keep chatting (no reconnect notice, no
// second greeting); no page logs an error or a Content-Security-Policy violation. Then a
// screenshot of the desktop page.
//
// node chat.mjs --url http://127.0.0.1:PORT/ --tcp 127.0.0.1:PORT --chatctl PATH --socket PATH
//               --screenshot FILE [--chromium /usr/bin/chromium]
//
// Every wait is bounded (WAIT, and an overall limit); prints one line per step, and
// "browser test passed" at the end. Exit status 0 only if every check held.

import net from "node:net";
import { execFile } from "node:child_process";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const WAIT = 15000;
const OVERALL = 150000;

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    tcp: { type: "string" },
    chatctl: { type: "string" },
    socket: { type: "string" },
    screenshot: { type: "string" },
    "phone-screenshot": { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
  },
});
for (const key of ["url", "tcp", "chatctl", "socket", "screenshot"]) {
  if (!args[key]) fail(`--${key} is required`);
}

function fail(why) {
  console.error(`FAILED: ${why}`);
  process.exit(1);
}

function step(what) {
  console.log(`ok: ${what}`);
}

const overall = setTimeout(() => fail(`not done within ${OVERALL / 1000} s`), OVERALL);

// ---- a raw TCP client, like netcat -------------------------------------------------------------

class LineClient {
  constructor(hostPort) {
    const [host, port] = hostPort.split(/:(?=\d+$)/);
    this.lines = [];
    this.waiters = [];
    this.partial = "";
    this.socket = net.createConnection({ host, port: Number(port) });
    this.socket.setEncoding("utf8");
    this.socket.on("data", (chunk) => {
      this.partial += chunk;
      let at;
      while ((at = this.partial.indexOf("\r\n")) >= 0) {
        this.lines.push(this.partial.slice(0, at));
        this.partial = this.partial.slice(at + 2);
      }
      this.wake();
    });
    this.socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
    this.socket.on("error", () => {});
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  send(line) {
    this.socket.write(`${line}\n`);
  }

  /// Waits for a line matching `pattern` (a string: equal; a RegExp: matching); returns it, and
  /// drops it and everything before it.
  async expect(pattern, what = String(pattern)) {
    const matches = (l) => (typeof pattern === "string" ? l === pattern : pattern.test(l));
    const deadline = Date.now() + WAIT;
    for (;;) {
      const i = this.lines.findIndex(matches);
      if (i >= 0) {
        const line = this.lines[i];
        this.lines.splice(0, i + 1);
        return line;
      }
      if (this.closed) throw new Error(`TCP client closed while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`TCP client: no ${what}; got ${JSON.stringify(this.lines)}`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

// ---- pages -------------------------------------------------------------------------------------

const problems = [];

async function openPage(browser, name, viewport, extra = {}) {
  const context = await browser.newContext({ viewport, ...extra });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`${name}: console error: ${msg.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${name}: page error: ${e.message}`));
  // Before any script of the page runs: a CSP violation is recorded even if nothing logs it.
  await page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) =>
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`),
    );
  });
  await page.goto(args.url);
  return page;
}

/// The text of every shown line of the page.
function shownLines(page) {
  return page.$$eval("#lines > li:not([hidden])", (lis) => lis.map((li) => li.textContent));
}

/// Waits until a shown line of `page` equals `text` (or matches it, a RegExp).
async function seeLine(page, text) {
  const source = typeof text === "string" ? null : text.source;
  try {
    await page.waitForFunction(
      ([want, re]) =>
        [...document.querySelectorAll("#lines > li:not([hidden])")].some((li) =>
          re ? new RegExp(re).test(li.textContent) : li.textContent === want,
        ),
      [typeof text === "string" ? text : null, source],
      { timeout: WAIT },
    );
  } catch {
    throw new Error(`page never showed ${text}; it shows ${JSON.stringify(await shownLines(page))}`);
  }
}

async function say(page, line) {
  await page.fill("#say", line);
  await page.press("#say", "Enter");
}

async function join(page, nick) {
  await seeLine(page, "*** Choose a nickname:");
  await say(page, nick);
  await seeLine(page, new RegExp(`^\\*\\*\\* Welcome, ${nick}! `));
  await page.waitForFunction((n) => document.getElementById("say-label").textContent === n, nick);
}

async function members(page, names) {
  const want = [...names].sort();
  try {
    await page.waitForFunction(
      (w) =>
        JSON.stringify([...document.querySelectorAll("#members li")].map((li) => li.textContent).sort()) ===
        JSON.stringify(w),
      want,
      { timeout: WAIT },
    );
  } catch {
    const got = await page.$$eval("#members li", (lis) => lis.map((li) => li.textContent));
    throw new Error(`members ${JSON.stringify(got)}, not ${JSON.stringify(want)}`);
  }
}

async function inRoom(page, room) {
  await page.waitForFunction((r) => document.getElementById("room").textContent === r, room);
  await page.waitForFunction(
    (r) => document.querySelector("#rooms button[aria-current]")?.dataset.room === r,
    room,
  );
}

/// The colour a nickname is drawn in on `page` (the last time it appears).
function colourOf(page, nick) {
  return page.$$eval(
    "#lines .nick",
    (els, n) => {
      const mine = els.filter((e) => e.textContent === `<${n}>`);
      return mine.length ? getComputedStyle(mine[mine.length - 1]).color : null;
    },
    nick,
  );
}

function chatctl(...rest) {
  return new Promise((resolve, reject) => {
    execFile(args.chatctl, ["--socket", args.socket, ...rest], { timeout: WAIT }, (err, stdout, stderr) =>
      err ? reject(new Error(`chatctl ${rest.join(" ")}: ${err.message} ${stderr}`)) : resolve(stdout),
    );
  });
}

// ---- the scenario ------------------------------------------------------------------------------

const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  // As root (CI) there is no sandbox; the rest keeps chromium off the network it does not have.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
  ],
  timeout: WAIT,
});

try {
  const desktop = { width: 1280, height: 800 };
  const tess = new LineClient(args.tcp);
  await tess.expect("*** Choose a nickname:");
  tess.send("tess");
  await tess.expect(/^\*\*\* Welcome, tess! /);
  step("TCP client tess joined");

  const anna = await openPage(browser, "anna", desktop);
  await join(anna, "anna");
  await tess.expect("*** anna joined");
  const ben = await openPage(browser, "ben", desktop);
  await join(ben, "ben");
  await tess.expect("*** ben joined");
  await seeLine(anna, "*** ben joined");
  await members(anna, ["anna", "ben", "tess"]);
  await members(ben, ["anna", "ben", "tess"]);
  await inRoom(anna, "#lobby");
  step("two pages joined; each lists all three members and the room");

  await say(anna, "hello from the browser");
  await tess.expect("<anna> hello from the browser");
  await seeLine(ben, "<anna> hello from the browser");
  await seeLine(anna, "<anna> hello from the browser");
  await say(ben, "hi anna, a browser here too");
  await tess.expect("<ben> hi anna, a browser here too");
  await seeLine(anna, "<ben> hi anna, a browser here too");
  tess.send("and netcat here");
  await seeLine(anna, "<tess> and netcat here");
  await seeLine(ben, "<tess> and netcat here");
  tess.send("/me waves");
  await seeLine(ben, "* tess waves");
  step("pages and TCP client see each other's lines");

  const annaOnAnna = await colourOf(anna, "anna");
  const annaOnBen = await colourOf(ben, "anna");
  const benOnBen = await colourOf(ben, "ben");
  if (!annaOnAnna || annaOnAnna !== annaOnBen) {
    throw new Error(`anna's colour differs between pages: ${annaOnAnna} / ${annaOnBen}`);
  }
  if (annaOnBen === benOnBen) throw new Error(`anna and ben share a colour: ${benOnBen}`);
  const serverLine = await ben.$eval("#lines li.server", (li) => getComputedStyle(li).color);
  const chatText = await ben.$eval("#lines li.said .text", (s) => getComputedStyle(s).color);
  if (serverLine === chatText) throw new Error("server lines look like chat lines");
  step(`each nickname has its own stable colour (anna ${annaOnAnna}); server lines set apart`);

  // anna makes a room with /join and talks there; ben follows by clicking the room list.
  await say(anna, "/join #dev");
  await seeLine(anna, "*** Now in #dev (no topic). 1 online: anna");
  await inRoom(anna, "#dev");
  await members(anna, ["anna"]);
  await seeLine(ben, "*** anna left (moved to #dev)");
  await say(anna, "/topic Release planning");
  await seeLine(anna, "*** anna set the topic: Release planning");
  await say(anna, "shall we ship on Friday?");
  await say(anna, "the WebSocket tests are green");
  const devButton = ben.locator('#rooms button[data-room="#dev"]');
  await devButton.waitFor({ timeout: WAIT });
  await devButton.click();
  await seeLine(ben, "*** Now in #dev (topic: Release planning). 2 online: anna, ben");
  await seeLine(ben, /^\*\*\* History of #dev: the last 2 lines \(times UTC\)$/);
  await seeLine(ben, /^\d\d:\d\d <anna> shall we ship on Friday\?$/);
  await seeLine(ben, /^\d\d:\d\d <anna> the WebSocket tests are green$/);
  const history = await ben.$$eval("#lines li.history", (lis) => lis.length);
  if (history < 2) throw new Error(`history lines not marked as history (${history})`);
  await inRoom(ben, "#dev");
  await ben.waitForFunction(() => document.getElementById("topic").textContent === "Release planning");
  await members(ben, ["anna", "ben"]);
  await seeLine(anna, "*** ben joined");
  step("pages switched rooms (/join, a click in the room list) and saw the history and topic");

  tess.send("/join #dev");
  await tess.expect(/^\*\*\* Now in #dev \(topic: Release planning\)\. 3 online: anna, ben, tess$/);
  await tess.expect(/^\[\d\d:\d\d\] <anna> shall we ship on Friday\?$/);
  await tess.expect(/^\[\d\d:\d\d\] <anna> the WebSocket tests are green$/);
  await seeLine(anna, "*** tess joined");
  await say(ben, "Friday works for me");
  await tess.expect("<ben> Friday works for me");
  await seeLine(anna, "<ben> Friday works for me");
  tess.send("same here");
  await seeLine(ben, "<tess> same here");
  await seeLine(anna, "<tess> same here");
  step("all three chat in #dev");

  // A phone: no horizontal scroll, the input on screen, and it chats.
  const phone = await openPage(browser, "cleo", { width: 390, height: 844 }, {
    isMobile: true,
    hasTouch: true,
    deviceScaleFactor: 2,
  });
  await join(phone, "cleo");
  await say(phone, "/join #dev");
  await seeLine(phone, /^\*\*\* Now in #dev \(topic: Release planning\)\. 4 online: /);
  await tess.expect("*** cleo joined");
  await members(phone, ["anna", "ben", "cleo", "tess"]);
  const layout = await phone.evaluate(() => {
    const box = document.getElementById("say").getBoundingClientRect();
    const send = document.querySelector("#say-form button").getBoundingClientRect();
    return {
      scrollWidth: document.documentElement.scrollWidth,
      bodyScroll: document.body.scrollWidth,
      innerWidth: window.innerWidth,
      innerHeight: window.innerHeight,
      input: [box.left, box.top, box.right, box.bottom, box.width],
      send: [send.right, send.bottom],
    };
  });
  const [left, top, right, bottom, width] = layout.input;
  if (layout.scrollWidth > layout.innerWidth || layout.bodyScroll > layout.innerWidth) {
    throw new Error(`horizontal scroll at phone width: ${JSON.stringify(layout)}`);
  }
  if (left < 0 || top < 0 || right > layout.innerWidth || bottom > layout.innerHeight || width < 150) {
    throw new Error(`the input is not on screen at phone width: ${JSON.stringify(layout)}`);
  }
  if (layout.send[0] > layout.innerWidth || layout.send[1] > layout.innerHeight) {
    throw new Error(`the send button is off screen: ${JSON.stringify(layout)}`);
  }
  if (!(await phone.isVisible("#members-pane")) || !(await phone.isVisible("#rooms-pane"))) {
    throw new Error("the room and member strips are hidden at phone width");
  }
  await say(phone, "+1 from my phone");
  await tess.expect("<cleo> +1 from my phone");
  await seeLine(anna, "<cleo> +1 from my phone");
  if (args["phone-screenshot"]) await phone.screenshot({ path: args["phone-screenshot"] });
  step(`phone width (390x844): no horizontal scroll, input at ${Math.round(top)}..${Math.round(bottom)} px; it chats`);

  // An upgrade: every connection is handed over, the pages' WebSockets with the TCP client's
  // socket. The pages stay connected: no reconnect notice, no second greeting, same room.
  const upgraded = await chatctl("upgrade");
  const moved = /(\d+) connections? handed over/.exec(upgraded);
  if (!moved || Number(moved[1]) !== 4) throw new Error(`chatctl upgrade said ${upgraded}`);
  await say(anna, "still here after the upgrade");
  await tess.expect("<anna> still here after the upgrade");
  await seeLine(ben, "<anna> still here after the upgrade");
  await say(ben, "me too");
  await tess.expect("<ben> me too");
  await seeLine(anna, "<ben> me too");
  tess.send("and the terminal");
  await seeLine(anna, "<tess> and the terminal");
  await seeLine(ben, "<tess> and the terminal");
  for (const [name, page] of [["anna", anna], ["ben", ben]]) {
    const lines = await page.evaluate(() => [...document.querySelectorAll("#lines li")].map((li) => li.textContent));
    const told = lines.filter((l) => l.includes("server upgrading"));
    const welcomes = lines.filter((l) => new RegExp(`^\\*\\*\\* Welcome, ${name}! `).test(l));
    if (told.length || welcomes.length !== 1) {
      throw new Error(`${name} reconnected across the upgrade: ${JSON.stringify({ told, welcomes })}`);
    }
    await inRoom(page, "#dev");
  }
  step("after chatctl upgrade the pages stayed connected in #dev (no reconnect, no second greeting), as did TCP");

  await say(ben, "/help");
  await seeLine(ben, "*** /join ROOM       go to ROOM (made if new)");
  step("/commands work as in netcat");

  for (const [name, page] of [["anna", anna], ["ben", ben], ["cleo", phone]]) {
    const violations = await page.evaluate(() => window.__violations);
    for (const v of violations) problems.push(`${name}: CSP violation: ${v}`);
  }
  if (problems.length) throw new Error(problems.join("\n"));
  step("no console errors and no Content-Security-Policy violations");

  await anna.evaluate(() => {
    document.getElementById("lines").scrollTop = 1e9;
  });
  await anna.screenshot({ path: args.screenshot });
  step(`screenshot saved to ${args.screenshot}`);
  tess.socket.destroy();
  console.log("browser test passed");
} catch (e) {
  console.error(`FAILED: ${e.message}`);
  if (process.env.DEBUG_PAGES) {
    for (const p of browser.contexts().flatMap((c) => c.pages())) {
      console.error(JSON.stringify(await p.$$eval("#lines > li", (lis) => lis.map((li) => (li.hidden ? "[hidden] " : "") + li.textContent))));
    }
  }
  process.exitCode = 1;
} finally {
  clearTimeout(overall);
  await browser.close();
}
// Nothing else may keep the process: the TCP client's socket, if a check failed first.
process.exit(process.exitCode ?? 0);
