// The browser half: connect to this server's /websocket, show each time it pushes, and come
// back by itself when the link drops. A module script runs once the page is parsed, so the
// elements below already exist.
//
// The pushed text is the server's wall clock with no zone; /clock says which zone that is.
// With both, each tick also tells how far the reader's own clock is from the server's.
//
// Optional query parameters: ?Id=... (else one is made and kept for the tab),
// ?backoff=SECONDS&backoffMax=SECONDS for the reconnect delays (1 and 30 by default), and
// ?restartWindow=SECONDS for the first one after the server restarts (5 by default). A server
// started with --cookie_secret picks the Id itself and puts it in the page (data-id): the signed
// cookie that goes with it is only good for that Id, so ?Id= is then ignored.

const CLOSE_REPLACED = 4000; // the server: a newer connection took over this Id
// The server stops (1001) or restarts (1012): it, or another behind the same address, is back
// in a moment, and so are all the pages it had.
const CLOSE_RESTARTS = new Set([1001, 1012]);
const CLOSE_SERVICE_RESTART = 1012;
const USER_CLOSE = { code: 1000, reason: "Closed by the user" };
const ID_KEY = "clock.id";
const LOG_LIMIT = 12;
const LOG_TEXT_LIMIT = 120;
const DEAD_AFTER_TICKS = 3;
const DEAD_AFTER_MIN_MS = 1000; // a busy browser can stall for a moment; that is not a dead link

// What the codes this server sends mean, for a close frame that carries no reason.
const CLOSE_MEANINGS = {
  1000: "normal closure",
  1001: "going away",
  1003: "text messages only",
  1008: "policy violation",
  1009: "message too big",
  1012: "service restart",
  4000: "replaced by another connection",
};

// str(datetime.datetime.now()) on the server; the fraction is left out at .000000.
const PUSHED_TIME = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(\.\d+)?$/;

const SKEW_TICKS = 9; // the clock offset shown is the median over this many ticks
const SKEW_MIN_TICKS = 3;
const IN_STEP_MS = 100;
// A tick this far from the others means the server's UTC offset changed (daylight saving
// moves it by 30 min or more) or a clock was set: read the zone again and measure afresh.
const JUMP_MS = 60_000;

const settings = readSettings();
const view = {
  status: document.getElementById("status"),
  statusText: document.getElementById("status-text"),
  clock: document.getElementById("clock"),
  time: document.getElementById("clock-time"),
  date: document.getElementById("clock-date"),
  raw: document.getElementById("clock-raw"),
  zone: document.getElementById("clock-zone"),
  zoneSwitch: document.querySelectorAll('input[name="zone"]'),
  skew: document.getElementById("skew"),
  id: document.getElementById("client-id"),
  interval: document.getElementById("interval"),
  form: document.getElementById("send-form"),
  message: document.getElementById("message"),
  send: document.getElementById("send"),
  close: document.getElementById("close"),
  connect: document.getElementById("connect"),
  log: document.getElementById("log"),
};
const dateFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "long",
  year: "numeric",
  month: "long",
  day: "numeric",
  timeZone: "UTC", // the date is built in UTC below, so no offset can move it a day
});
const readerDateFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "long",
  year: "numeric",
  month: "long",
  day: "numeric",
});
const readerZoneName = new Intl.DateTimeFormat().resolvedOptions().timeZone;

// The server's zone as /clock last gave it, and the newest tick.
const zone = { offsetMs: null, abbreviation: "", name: "", reading: false, again: false };
const clock = {
  shown: "server", // or "reader": the big clock in the reader's own zone
  text: "", // the newest pushed text, and its wall-clock reading counted as if it were UTC
  wallMs: NaN,
  // Each tick's arrival on the reader's clock minus its wall-clock reading, newest last.
  // Adding the server's UTC offset turns one into "reader's clock minus server's clock".
  samples: [],
};

// The one live connection, and what the page knows about it.
const link = {
  socket: null,
  attempt: 0, // reconnects since the last connection that delivered a tick
  retryTimer: 0,
  watchdogTimer: 0,
  lastHeardAt: 0,
  opened: false,
  ticked: false,
  userClose: null,
};

function readSettings() {
  const params = new URLSearchParams(location.search);
  const intervalMs = seconds(document.body.dataset.interval, 1) * 1000;
  return {
    id: document.body.dataset.id || params.get("Id") || keptId(),
    intervalMs,
    deadAfterMs: Math.max(DEAD_AFTER_TICKS * intervalMs, DEAD_AFTER_MIN_MS),
    backoffMs: seconds(params.get("backoff"), 1) * 1000,
    backoffMaxMs: seconds(params.get("backoffMax"), 30) * 1000,
    restartWindowMs: seconds(params.get("restartWindow"), 5) * 1000,
  };
}

function seconds(text, fallback) {
  const value = Number.parseFloat(text);
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

function keptId() {
  try {
    let id = sessionStorage.getItem(ID_KEY);
    if (!id) {
      id = newId();
      sessionStorage.setItem(ID_KEY, id);
    }
    return id;
  } catch {
    return newId(); // storage is blocked: a new Id on each load is the best we can do
  }
}

function newId() {
  // crypto.randomUUID() needs a secure context; getRandomValues() works over plain http too.
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  return "tab-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function socketUrl() {
  // Same host and port as the page, and wss: behind a TLS proxy.
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/websocket?Id=${encodeURIComponent(settings.id)}`;
}

function connect() {
  clearTimeout(link.retryTimer);
  Object.assign(link, { opened: false, ticked: false, userClose: null });
  link.lastHeardAt = performance.now();
  const socket = new WebSocket(socketUrl());
  link.socket = socket;
  // Events from a socket the page has already given up on are ignored.
  socket.addEventListener("open", () => socket === link.socket && onOpen());
  socket.addEventListener("message", (event) => socket === link.socket && onMessage(event));
  socket.addEventListener("close", (event) => socket === link.socket && onClose(event));
  showStatus("connecting", "Connecting…");
  link.watchdogTimer = setTimeout(checkLink, settings.deadAfterMs);
}

function onOpen() {
  link.opened = true;
  // Perhaps another server, or the same one restarted in another zone.
  clock.samples.length = 0;
  readZone();
  link.lastHeardAt = performance.now();
  showStatus("connected", "Connected");
  logEvent("Connected", "good");
}

function onMessage(event) {
  const arrivedAt = Date.now(); // first, so that nothing below counts as travel time
  link.lastHeardAt = performance.now();
  if (!link.ticked) {
    link.ticked = true;
    link.attempt = 0; // a connection that delivers ticks is a good one: start backoff afresh
    view.clock.classList.remove("stale");
  }
  showTime(String(event.data), arrivedAt);
}

function onClose(event) {
  forget();
  if (link.userClose) {
    const { code, reason } = link.userClose;
    showStatus("closed", `Closed: ${code} ${reason}`);
    logEvent(`Closed: ${code} ${reason}`);
  } else if (event.code === CLOSE_REPLACED) {
    const text = `Closed: ${describeClose(event)} · not reconnecting`;
    showStatus("closed", text);
    logEvent(text, "bad");
  } else {
    scheduleReconnect(`Closed: ${describeClose(event)}`, event.code);
  }
}

function describeClose(event) {
  if (event.reason) return `${event.code} ${event.reason}`;
  if (event.code === 1006) {
    // A refused handshake (bad Id, foreign origin, server full) looks just like this.
    return link.opened ? "1006 connection lost" : "1006 could not connect (refused or unreachable)";
  }
  return `${event.code} ${CLOSE_MEANINGS[event.code] ?? "no reason given"}`;
}

function checkLink() {
  // Re-check on wake-up: a throttled background tab may run this timer late.
  const quiet = performance.now() - link.lastHeardAt;
  if (quiet < settings.deadAfterMs) {
    link.watchdogTimer = setTimeout(checkLink, settings.deadAfterMs - quiet);
    return;
  }
  // Over a dead link the closing handshake could take minutes: drop the socket and move on.
  const socket = link.socket;
  forget();
  socket.close();
  scheduleReconnect(`${link.opened ? "No tick" : "No answer"} for ${formatSeconds(quiet)}`);
}

function forget() {
  clearTimeout(link.watchdogTimer);
  link.socket = null;
  view.clock.classList.add("stale");
}

function backoffDelay(attempt) {
  // Exponential, capped, with "full jitter": anywhere from 0 to the step, so that the pages
  // that lost the same server spread out as widely as the step allows.
  const step = Math.min(settings.backoffMaxMs, settings.backoffMs * 2 ** attempt);
  return Math.random() * step;
}

function scheduleReconnect(why, code = 0) {
  // The first try after a restart is at a random moment of the window: every page of that
  // server was told at about the same time, and the next server should see them trickle in.
  const first = CLOSE_RESTARTS.has(code) && link.attempt === 0;
  const delay = first ? Math.random() * settings.restartWindowMs : backoffDelay(link.attempt);
  link.attempt += 1;
  const retry = `reconnecting in ${formatSeconds(delay)}`;
  const retryMs = String(Math.round(delay));
  const told = code === CLOSE_SERVICE_RESTART ? "Server restarting, " : `${why} · `;
  showStatus("reconnecting", told + retry);
  view.status.dataset.retryMs = retryMs;
  logEvent(`${why} · ${retry} (attempt ${link.attempt})`, "bad").dataset.retryMs = retryMs;
  link.retryTimer = setTimeout(connect, delay);
}

function formatSeconds(ms) {
  const digits = ms < 1000 ? 2 : ms < 10000 ? 1 : 0;
  return `${Number((ms / 1000).toFixed(digits))} s`;
}

function closeByUser() {
  clearTimeout(link.retryTimer);
  clearTimeout(link.watchdogTimer);
  const { code, reason } = USER_CLOSE;
  if (link.socket) {
    link.userClose = USER_CLOSE;
    link.socket.close(code, reason);
    showStatus("closing", "Closing…");
  } else {
    showStatus("closed", "Closed by the user");
    logEvent("Stopped reconnecting");
  }
}

function connectByUser() {
  link.attempt = 0;
  connect();
}

function send(event) {
  event.preventDefault();
  const text = view.message.value;
  if (!text || link.socket?.readyState !== WebSocket.OPEN) return;
  link.socket.send(text);
  logEvent(`Sent: ${text}`);
  view.message.value = "";
}

function showStatus(state, text) {
  const focused = document.activeElement;
  view.status.dataset.state = state;
  delete view.status.dataset.retryMs;
  view.statusText.textContent = text;
  view.send.disabled = state !== "connected";
  view.close.disabled = state === "closed";
  view.connect.disabled = state !== "closed" && state !== "reconnecting";
  // A button that has just been disabled would drop keyboard focus: hand it to its partner.
  if (focused === view.close && view.close.disabled) view.connect.focus();
  if (focused === view.connect && view.connect.disabled) view.close.focus();
}

function showTime(text, arrivedAt) {
  setText(view.raw, text);
  const match = PUSHED_TIME.exec(text);
  clock.text = text;
  clock.wallMs = match ? wallClockMs(match) : NaN;
  if (match) measure(arrivedAt - clock.wallMs);
  showClock();
  showSkew();
}

function wallClockMs(match) {
  const [, year, month, day, hours, minutes, secs, fraction = ""] = match;
  const ms = Math.round(Number(`0${fraction}`) * 1000);
  return Date.UTC(year, month - 1, day, hours, minutes, secs, ms);
}

function measure(sample) {
  const samples = clock.samples;
  if (samples.length && Math.abs(sample - median(samples)) > JUMP_MS) {
    samples.length = 0;
    readZone();
  }
  samples.push(sample);
  if (samples.length > SKEW_TICKS) samples.shift();
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function showClock() {
  if (Number.isNaN(clock.wallMs)) {
    setText(view.time, clock.text);
    setText(view.date, "");
    return;
  }
  const known = zone.offsetMs !== null && !zone.reading;
  if (clock.shown === "reader" && zone.offsetMs !== null) {
    // While the zone is being read again the time stays as it was rather than jump an hour.
    if (known) showInReaderZone(clock.wallMs - zone.offsetMs);
    return;
  }
  const wall = new Date(clock.wallMs); // read with the UTC getters: it is the server's wall clock
  setText(view.time, clock.text.slice(11, 19));
  setText(view.date, dateFormat.format(wall));
  // HTML allows up to milliseconds in a datetime attribute, and wants the zone written in.
  const offset = known ? utcOffsetText(zone.offsetMs).slice(3) : "";
  view.time.dateTime = clock.text.slice(0, 23).replace(" ", "T") + offset;
}

function showInReaderZone(instantMs) {
  const at = new Date(instantMs);
  const hms = [at.getHours(), at.getMinutes(), at.getSeconds()];
  setText(view.time, hms.map((n) => String(n).padStart(2, "0")).join(":"));
  setText(view.date, readerDateFormat.format(at));
  view.time.dateTime = at.toISOString();
  showReaderZone(at);
}

function showReaderZone(at) {
  // The reader's offset too changes with daylight saving, so it is taken at the time shown.
  const offset = utcOffsetText(-at.getTimezoneOffset() * 60_000);
  setText(view.zone, `Your zone: ${offset}${readerZoneName ? ` · ${readerZoneName}` : ""}`);
}

function showServerZone() {
  // An abbreviation such as "+04" only repeats the offset, and "UTC" the name "Etc/UTC".
  const repeats = /^[+-]/.test(zone.abbreviation) || zone.name.endsWith(zone.abbreviation);
  const abbreviation = repeats ? "" : zone.abbreviation;
  let named = zone.name || abbreviation; // "Asia/Shanghai", or only "CST" from a POSIX rule
  if (zone.name && abbreviation) named += ` (${abbreviation})`;
  const offset = `Server's zone: ${utcOffsetText(zone.offsetMs)}`;
  setText(view.zone, named ? `${offset} · ${named}` : offset);
}

function utcOffsetText(offsetMs) {
  const minutes = Math.round(Math.abs(offsetMs) / 60_000);
  const hh = String(Math.floor(minutes / 60)).padStart(2, "0");
  const mm = String(minutes % 60).padStart(2, "0");
  return `UTC${offsetMs < 0 ? "-" : "+"}${hh}:${mm}`;
}

function showSkew() {
  if (zone.offsetMs === null || zone.reading || clock.samples.length < SKEW_MIN_TICKS) return;
  const ms = median(clock.samples) + zone.offsetMs;
  view.skew.dataset.ms = String(Math.round(ms));
  if (Math.abs(ms) < IN_STEP_MS) {
    setText(view.skew, "Your clock is in step with the server (within 0.1 s)");
  } else {
    const side = ms > 0 ? "ahead of" : "behind";
    setText(view.skew, `Your clock is ${formatDuration(Math.abs(ms))} ${side} the server`);
  }
}

function formatDuration(ms) {
  if (ms < 59_950) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`;
}

async function readZone() {
  // One request at a time; a call during one asks for another after it.
  if (zone.reading) {
    zone.again = true;
    return;
  }
  zone.reading = true;
  try {
    const response = await fetch("/clock", { cache: "no-store" });
    const facts = response.ok ? await response.json() : {};
    const known = Number.isFinite(facts.utc_offset_seconds);
    zone.offsetMs = known ? facts.utc_offset_seconds * 1000 : null;
    zone.abbreviation = known ? String(facts.abbreviation ?? "") : "";
    zone.name = known ? String(facts.zone ?? "") : "";
  } catch {
    zone.offsetMs = null; // no answer: better to say nothing than an offset that may be wrong
  }
  zone.reading = false;
  if (zone.again) {
    zone.again = false;
    readZone();
    return;
  }
  showZone();
}

function showZone() {
  if (zone.offsetMs === null) {
    setText(view.zone, "The server did not say which time zone its time is in");
    setText(view.skew, "Without the server's zone, your clock cannot be compared with it");
  } else if (clock.shown === "reader") {
    showReaderZone(new Date()); // and from the next tick on, at the time that tick shows
  } else {
    showServerZone();
  }
  if (clock.text) showClock();
  showSkew();
}

function switchZone(event) {
  clock.shown = event.target.value;
  if (!zone.reading) showZone(); // else the answer will show it
}

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

function logEvent(text, kind = "") {
  const item = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString([], { hour12: false });
  const body = document.createElement("span");
  body.textContent = text.length > LOG_TEXT_LIMIT ? `${text.slice(0, LOG_TEXT_LIMIT)}…` : text;
  item.append(time, " ", body);
  if (kind) item.dataset.kind = kind;
  view.log.prepend(item);
  while (view.log.children.length > LOG_LIMIT) view.log.lastElementChild.remove();
  return item;
}

function start() {
  view.id.textContent = settings.id;
  view.interval.textContent = formatSeconds(settings.intervalMs);
  view.form.addEventListener("submit", send);
  view.close.addEventListener("click", closeByUser);
  view.connect.addEventListener("click", connectByUser);
  for (const input of view.zoneSwitch) input.addEventListener("change", switchZone);
  // Back online after a network change: no need to sit out the rest of the backoff.
  window.addEventListener("online", () => {
    if (view.status.dataset.state === "reconnecting") connect();
  });
  connect();
}

start();
