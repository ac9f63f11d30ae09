// The host's console (/host after signing in): the waiting room live, what the host does
// with it, the call with the admitted clients, and recording. One socket to the /host
// namespace (docs/SIGNALING.md): `queue` once per connection, then one `participant` row
// per change.
import { call, connect, refusalCode, resetRetry, retryIfPassing } from "./lib/signal.js";
import { announce, ask, byId, waitedFor } from "./lib/ui.js";
import { KnockAlerts } from "./lib/alerts.js";
import { RecordingConsent } from "./lib/consent.js";
import { startCall } from "./call.js";

const TICK_MS = 15000;
const LISTS = {
  knocking: "ready",
  waiting: "waiting",
  admitted: "session",
  in_session: "session",
};
const BASE_TITLE = document.title;
/** Other people one offer receives: the most 16 media sections hold (docs/SIGNALING.md).
 * Fixed from the start, so an admission never makes the host's media start over. */
const CALL_SLOTS = 7;

/** participant_id -> {row: the data from the gateway, element: its <li>} */
const people = new Map();
const alerts = new KnockAlerts();
const banner = byId("connection-banner");
let socket = null;
let locked = false;
let ended = false;
let everConnected = false;
const retry = {};
/** The call with the people in session: null until someone is admitted. */
let hostCall = null;
/** What the gateway said last: `recording {active}`, or the `queue` answer on connect. */
const recording = { active: false, allowed: false };
let consent = null;

function start() {
  wireControls();
  socket = connect("/host");
  consent = new RecordingConsent(socket, { onChange: renderRecording, onError: recordProblem });
  socket.on("connect", onConnect);
  socket.on("disconnect", onDisconnect);
  socket.on("connect_error", onConnectError);
  socket.on("participant", (row) => upsert(row, { quiet: false }));
  socket.on("notice", onNotice);
  socket.on("room", ({ locked: now }) => setLocked(now));
  socket.on("ended", () => showEnded("The session has ended"));
  socket.on("restarting", ({ retry_after: seconds }) => {
    retry.retryAfter = Number(seconds) || 2;
  });
  socket.on("media.restart", () => hostCall?.restartMedia?.());
  socket.on("recording", ({ active }) => setRecordingActive(active));
  socket.on("recording.asked", (question) => consent.asked(question || {}));
  window.setInterval(refreshTimes, TICK_MS);
}

// --- the connection ---------------------------------------------------------------------

async function onConnect() {
  banner.hidden = true;
  resetRetry(retry);
  hostCall?.setReconnecting?.(false);
  const first = !everConnected;
  everConnected = true;
  const answer = await call(socket, "queue");
  if (!answer.ok) {
    return notify(answer.error.message);
  }
  const seen = new Set();
  for (const row of answer.participants) {
    seen.add(row.participant_id);
    // A knock that came while we were disconnected chimes; the first load does not.
    upsert(row, { quiet: first });
  }
  for (const id of [...people.keys()]) {
    if (!seen.has(id)) {
      drop(id);
    }
  }
  setLocked(Boolean(answer.locked));
  if (answer.recording) {
    recording.allowed = Boolean(answer.recording.allowed);
    // Our own consent as the gateway holds it: after a reload it can still be withdrawn.
    consent.known({ given: answer.recording.consent_given, version: answer.recording.version });
    setRecordingActive(answer.recording.active);
  }
  render();
  return undefined;
}

function onDisconnect(reason) {
  if (ended) {
    return;
  }
  if (reason === "io server disconnect") {
    socket.connect();
  }
  banner.hidden = false;
  byId("room-state").textContent = "Reconnecting…";
  hostCall?.setReconnecting?.(true);
}

function onConnectError(error) {
  if (ended) {
    return undefined;
  }
  const code = refusalCode(error);
  if (code === "unauthenticated" || code === "not_signed_in" || code === "not_allowed") {
    return showEnded(
      "Your sign-in has ended",
      "For your clients' privacy, the console closes after a while. Open your sign-in link " +
        "again to continue.",
    );
  }
  if (retryIfPassing(socket, error, retry)) {
    banner.hidden = false;
    byId("room-state").textContent = "Reconnecting…";
    return undefined;
  }
  if (!socket.active) {
    banner.hidden = true;
    return notify("We couldn't connect your console. Please reload the page in a minute.");
  }
  banner.hidden = !everConnected;
  byId("room-state").textContent = "Connecting… Please check your internet connection.";
  return undefined;
}

// --- the rows ---------------------------------------------------------------------------

function upsert(row, { quiet }) {
  const known = people.get(row.participant_id);
  const before = known ? known.row.state : null;
  if (!LISTS[row.state]) {
    drop(row.participant_id);
    render();
    return;
  }
  const element = known ? known.element : newRow(row.participant_id);
  people.set(row.participant_id, { row, element });
  fill(element, row);
  if (row.state === "waiting" && before !== "waiting" && !quiet) {
    element.classList.add("fresh");
    alerts.knock();
    announce(`${row.display_name} is waiting.`);
  }
  if (before === "waiting" && row.state !== "waiting") {
    element.classList.remove("fresh");
  }
  render();
}

function drop(id) {
  const known = people.get(id);
  if (known) {
    known.element.remove();
    people.delete(id);
  }
}

function newRow(id) {
  const element = byId("row-template").content.firstElementChild.cloneNode(true);
  element.dataset.participant = id;
  return element;
}

function fill(element, row) {
  element.querySelector(".name").textContent = row.display_name;
  const badge = element.querySelector(".badge");
  badge.textContent = row.verified ? "Verified" : "Not verified";
  badge.classList.toggle("verified", row.verified);
  element.querySelector(".since").textContent = sinceText(row);
  const agreed = element.querySelector(".consent-badge");
  agreed.hidden = LISTS[row.state] !== "session" || typeof row.recording_consent !== "boolean";
  agreed.textContent = row.recording_consent ? "Agreed to recording" : "Not agreed to recording";
  agreed.classList.toggle("agreed", row.recording_consent === true);
  const actions = element.querySelector(".row-actions");
  const wanted = actionsFor(row.state);
  if (actions.dataset.state !== row.state) {
    actions.dataset.state = row.state;
    actions.textContent = "";
    for (const [label, handler, style] of wanted) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = style;
      button.textContent = label;
      button.setAttribute("aria-label", `${label} ${row.display_name}`);
      button.addEventListener("click", () => handler(row.participant_id));
      actions.append(button);
    }
  }
}

function actionsFor(state) {
  if (state === "waiting") {
    return [
      ["Admit", admit, "primary"],
      ["Message", openMessage, "secondary"],
      ["Deny", deny, "secondary"],
    ];
  }
  if (state === "knocking") {
    return [
      ["Message", openMessage, "secondary"],
      ["Deny", deny, "secondary"],
    ];
  }
  return [["Remove", remove, "secondary"]];
}

function sinceText(row) {
  const waited = waitedFor(row.since);
  if (row.state === "waiting") {
    return waited === "just now" ? "Just arrived" : `Waiting ${waited}`;
  }
  if (row.state === "knocking") {
    return waited === "just now" ? "Opened the link just now" : `Opened the link ${waited} ago`;
  }
  return waited === "just now" ? "Joined just now" : `Joined ${waited} ago`;
}

function refreshTimes() {
  for (const { row, element } of people.values()) {
    element.querySelector(".since").textContent = sinceText(row);
  }
}

/** Put every row in its list, longest waiting first, and update the counts. */
function render() {
  const groups = { waiting: [], ready: [], session: [] };
  for (const person of people.values()) {
    groups[LISTS[person.row.state]].push(person);
  }
  for (const [name, members] of Object.entries(groups)) {
    members.sort((a, b) => a.row.since - b.row.since);
    const list = byId(`${name}-list`);
    members.forEach((person, index) => {
      if (list.children[index] !== person.element) {
        const active = document.activeElement;
        const focused = person.element.contains(active) ? active : null;
        list.insertBefore(person.element, list.children[index] || null);
        if (focused) {
          focused.focus();
        }
      }
    });
    byId(`${name}-count`).textContent = String(members.length);
  }
  byId("waiting-empty").hidden = groups.waiting.length > 0;
  byId("session-empty").hidden = groups.session.length > 0;
  byId("ready-box").hidden = groups.ready.length === 0;
  byId("admit-all").disabled = groups.waiting.length === 0 || ended;
  const waiting = groups.waiting.length;
  document.title = waiting > 0 ? `(${waiting}) ${BASE_TITLE}` : BASE_TITLE;
  syncCall(groups.session.length);
  renderRecording();
}

function inSession() {
  let count = 0;
  for (const person of people.values()) {
    if (LISTS[person.row.state] === "session") {
      count += 1;
    }
  }
  return count;
}

// --- the call ---------------------------------------------------------------------------

/** The call starts with the first admission and receives up to CALL_SLOTS people. */
async function syncCall(count) {
  if (ended || count === 0 || !socket.connected) {
    return;
  }
  if (hostCall) {
    return;
  }
  hostCall = {}; // taken: a second render must not start a second call
  const started = await startCall(socket, {
    show() {
      const view = byId("host-call");
      view.hidden = false;
      // On a phone the call starts out of sight, above the list where "Admit" was.
      view.scrollIntoView({ block: "start" });
    },
    confirmLeave: () =>
      confirmAction(
        "End the session for everyone?",
        "Everyone leaves, and every link for this session stops working.",
        "End the session",
      ),
    async onLeave() {
      // The call stopped; if the session did not end after all, a new call starts.
      hostCall = null;
      await endNow();
      syncCall(inSession());
    },
    waiting: "Waiting for your client's video…",
    slots: CALL_SLOTS,
  });
  if (ended) {
    started.stop();
    return;
  }
  hostCall = started;
  hostCall.setRecording(recording.active);
}

// --- recording --------------------------------------------------------------------------

function setRecordingActive(active) {
  recording.active = Boolean(active);
  hostCall?.setRecording?.(recording.active);
  renderRecording();
}

function renderRecording() {
  const button = byId("record");
  const askButton = byId("record-ask");
  const someone = inSession() > 0;
  button.textContent = recording.active ? "Stop recording" : "Start recording";
  button.className = recording.active ? "danger" : "secondary";
  button.disabled = ended || !recording.allowed || (!recording.active && !someone);
  askButton.disabled = ended || !recording.allowed || !someone || recording.active;
  let note = "Nothing is recorded unless everyone in the session agrees.";
  if (!recording.allowed) {
    note = "Recording isn't available for this room.";
  } else if (recording.active) {
    note = "Recording now. Everyone in the session sees that it is.";
  } else if (!someone) {
    note = "Recording can start once someone is in the session. " + note;
  }
  byId("record-note").textContent = note;
  const mine = byId("record-consent");
  mine.hidden = !consent || (!consent.given && !consent.canAgree);
  if (consent) {
    mine.textContent = consent.given ? "Withdraw my consent" : "Agree to recording";
  }
}

/**
 * Start or stop. Whether a recording runs is only ever what the gateway's `recording
 * {active}` says (it may stop a recording right after starting it, when consent changed
 * meanwhile); the answer here only tells what went wrong.
 */
async function toggleRecording() {
  recordProblem("");
  const answer = await call(socket, recording.active ? "recording.stop" : "recording.start");
  if (answer.ok) {
    return;
  }
  if (answer.error.code === "consent_missing") {
    const lacking = Array.isArray(answer.error.lacking) ? answer.error.lacking : [];
    recordProblem(
      lacking.length > 0
        ? `Recording didn't start: ${whoHasNotAgreed(lacking)} Use “Ask for consent” to ask.`
        : answer.error.message,
    );
    return;
  }
  recordProblem(answer.error.message);
}

async function askForConsent() {
  recordProblem("");
  const answer = await call(socket, "recording.ask");
  if (!answer.ok) {
    recordProblem(answer.error.message);
    return;
  }
  const lacking = Array.isArray(answer.lacking) ? answer.lacking : [];
  const others = lacking.filter((id) => people.has(id));
  if (lacking.length === 0) {
    announce("Everyone has agreed. You can start recording.");
    byId("record-note").textContent = "Everyone has agreed. You can start recording.";
  } else if (others.length > 0) {
    const text = `Asked ${namesOf(others)}. They see the consent text now.`;
    announce(text);
    byId("record-note").textContent = text;
  }
}

/** "Ana Client hasn't agreed to recording yet." for the ids the gateway named. */
function whoHasNotAgreed(ids) {
  const others = ids.filter((id) => people.has(id));
  const you = others.length < ids.length; // the host's own id is not among the rows
  if (others.length === 0) {
    return "you haven't agreed to recording yet.";
  }
  const names = namesOf(others) + (you ? " and you" : "");
  return `${names} ${others.length === 1 && !you ? "hasn't" : "haven't"} agreed to recording yet.`;
}

function namesOf(ids) {
  const names = ids.map(nameOf);
  if (names.length <= 1) {
    return names.join("");
  }
  return `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
}

function recordProblem(message) {
  byId("record-problem").textContent = message;
}

function nameOf(id) {
  const known = people.get(id);
  return known ? known.row.display_name : "A client";
}

// --- actions ----------------------------------------------------------------------------

/** Apply an action's answer at once (the `participant` delta follows anyway). */
function applied(answer, id) {
  if (!answer.ok) {
    notify(answer.error.message);
    return false;
  }
  const known = people.get(id);
  if (known && answer.state) {
    upsert({ ...known.row, state: answer.state }, { quiet: true });
  }
  return true;
}

async function admit(id) {
  const name = nameOf(id);
  if (applied(await call(socket, "admit", { participant_id: id }), id)) {
    announce(`${name} admitted.`);
    keepFocusInConsole();
  }
}

async function deny(id) {
  const name = nameOf(id);
  const yes = await confirmAction(
    `Deny ${name}?`,
    "They won't be able to join this session with their link.",
    "Deny",
  );
  if (yes && applied(await call(socket, "deny", { participant_id: id }), id)) {
    announce(`${name} was not let in.`);
    keepFocusInConsole();
  }
}

async function remove(id) {
  const name = nameOf(id);
  const yes = await confirmAction(
    `Remove ${name} from the session?`,
    "They will need a new link to come back.",
    "Remove",
  );
  if (yes && applied(await call(socket, "remove", { participant_id: id }), id)) {
    announce(`${name} was removed.`);
    keepFocusInConsole();
  }
}

async function admitAll() {
  const answer = await call(socket, "admit_all");
  if (!answer.ok) {
    notify(answer.error.message);
    return;
  }
  for (const id of answer.admitted) {
    applied({ ok: true, state: "admitted" }, id);
  }
  const count = answer.admitted.length;
  announce(count === 1 ? "1 person admitted." : `${count} people admitted.`);
  keepFocusInConsole();
}

async function toggleLock() {
  const answer = await call(socket, "lock", { locked: !locked });
  if (!answer.ok) {
    notify(answer.error.message);
    return;
  }
  setLocked(answer.locked);
  announce(answer.locked ? "The room is locked." : "The room is open.");
}

function setLocked(now) {
  locked = Boolean(now);
  byId("lock").textContent = locked ? "Unlock the room" : "Lock the room";
  byId("room-state").textContent = locked
    ? "Locked: nobody new can join. People already waiting stay."
    : "Open: your clients can join the waiting room.";
}

async function endSession() {
  const yes = await confirmAction(
    "End the session for everyone?",
    "Everyone leaves, and every link for this session stops working.",
    "End the session",
  );
  if (yes) {
    await endNow();
  }
}

async function endNow() {
  const answer = await call(socket, "end");
  if (!answer.ok && !ended) {
    notify(answer.error.message);
    return;
  }
  showEnded("The session has ended");
}

function showEnded(title, text) {
  if (ended) {
    return;
  }
  ended = true;
  hostCall?.stop?.();
  for (const dialog of document.querySelectorAll("dialog[open]")) {
    dialog.close();
  }
  socket.disconnect();
  banner.hidden = true;
  byId("console-live").hidden = true;
  byId("head-actions").hidden = true;
  byId("notices").textContent = "";
  byId("ended-title").textContent = title;
  if (text) {
    byId("console-ended").querySelector("p").textContent = text;
  }
  byId("console-ended").hidden = false;
  byId("room-state").textContent = "Closed";
  document.title = BASE_TITLE;
  byId("ended-title").focus();
  announce(title);
}

// --- the message dialog -----------------------------------------------------------------

let messageTo = null;

function openMessage(id) {
  const dialog = byId("message-dialog");
  messageTo = id;
  byId("message-title").textContent = `Message to ${nameOf(id)}`;
  byId("message-text").value = "";
  byId("message-error").textContent = "";
  countLeft();
  if (typeof dialog.showModal === "function") {
    dialog.showModal();
    byId("message-text").focus();
  }
}

function countLeft() {
  const text = byId("message-text");
  byId("message-left").textContent = String(text.maxLength - text.value.length);
}

async function sendMessage(event) {
  event.preventDefault();
  const text = byId("message-text").value.trim();
  if (!text) {
    byId("message-error").textContent = "Please write a message first.";
    byId("message-text").focus();
    return;
  }
  const button = byId("message-send");
  button.disabled = true;
  const answer = await call(socket, "message", { participant_id: messageTo, text });
  button.disabled = false;
  if (!answer.ok) {
    byId("message-error").textContent = answer.error.message;
    return;
  }
  byId("message-dialog").close("sent");
  announce(`Message sent to ${nameOf(messageTo)}.`);
}

// --- small parts ------------------------------------------------------------------------

async function confirmAction(title, text, yesLabel) {
  const dialog = byId("confirm-dialog");
  byId("confirm-title").textContent = title;
  byId("confirm-text").textContent = text;
  byId("confirm-yes").textContent = yesLabel;
  return (await ask(dialog, `${title} ${text}`)) === "yes";
}

/** Show a problem to the host, dismissible, announced at once. */
function notify(message) {
  if (ended) {
    return;
  }
  const notice = document.createElement("div");
  notice.className = "notice";
  notice.setAttribute("role", "alert");
  const text = document.createElement("span");
  text.textContent = message;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "secondary";
  close.textContent = "Dismiss";
  close.addEventListener("click", () => notice.remove());
  notice.append(text, close);
  byId("notices").append(notice);
}

function onNotice(notice) {
  if (notice && notice.kind === "locked_out") {
    notify(
      `${nameOf(notice.participant_id)} typed too many wrong codes and is locked out for now. ` +
        "They can try again later; you may want to message them.",
    );
  }
}

/** After an action moves a row away, keep the keyboard in the console, not on <body>. */
function keepFocusInConsole() {
  if (document.activeElement === document.body || !document.activeElement) {
    const next = document.querySelector("#waiting-list button") || byId("waiting-heading");
    if (next === byId("waiting-heading")) {
      next.tabIndex = -1;
    }
    next.focus();
  }
}

function wireControls() {
  byId("alerts").addEventListener("click", async () => {
    const button = byId("alerts");
    if (alerts.on) {
      alerts.disable();
      button.textContent = "Turn on sound and alerts";
      announce("Sound and alerts are off.");
      return;
    }
    await alerts.enable();
    button.textContent = "Turn off sound and alerts";
    announce(
      alerts.notifying
        ? "Sound and alerts are on."
        : "Sound is on. Your browser won't show notifications.",
    );
  });
  byId("admit-all").addEventListener("click", admitAll);
  byId("record").addEventListener("click", toggleRecording);
  byId("record-ask").addEventListener("click", askForConsent);
  byId("record-consent").addEventListener("click", () => {
    if (consent.given) {
      consent.record(false);
    } else {
      consent.prompt();
    }
  });
  byId("lock").addEventListener("click", toggleLock);
  byId("end-session").addEventListener("click", endSession);
  byId("message-text").addEventListener("input", countLeft);
  byId("message-send").addEventListener("click", sendMessage);
  for (const chip of document.querySelectorAll("#message-dialog .chip")) {
    chip.addEventListener("click", () => {
      byId("message-text").value = chip.textContent.trim();
      countLeft();
      byId("message-text").focus();
    });
  }
}

start();
