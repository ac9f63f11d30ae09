// The client's page (/join, after the link): device check, sign-in code, consent,
// waiting room, call, end. One socket to the /client namespace (docs/SIGNALING.md);
// the gateway's answers decide every step, so a reload lands on the right screen.
import { call, connect, refusalCode, resetRetry, retryIfPassing } from "./lib/signal.js";
import { announce, ask, byId, currentScreen, showScreen } from "./lib/ui.js";
import {
  callsSupported,
  explain,
  newAudioContext,
  openDevices,
  stopStream,
  watchLevel,
} from "./lib/devices.js";
import { embedBridge } from "./lib/embed.js";
import { RecordingConsent } from "./lib/consent.js";
import { startCall } from "./call.js";

const root = byId("client-app");
const digits = Number(root.dataset.totpDigits) || 6;
const tell = embedBridge((root.dataset.embedders || "").split(" ").filter(Boolean));
const banner = byId("connection-banner");

/** Other people a client can see and hear: the therapist (always one of them: the
 * gateway gives the host a slot first) and up to six more clients. The slots are fixed by
 * the offer, and 7 is the most 16 media sections hold (docs/SIGNALING.md). */
const CALL_SLOTS = 7;

/** Screens before the waiting room: a reconnect does not pull the person out of them. */
const PREPARING = new Set(["screen-welcome", "screen-check", "screen-identity", "screen-consent"]);

const ENDINGS = {
  denied: {
    title: "You can't join this session",
    text:
      "Your therapist wasn't able to let you in this time. If you think this is a mistake, " +
      "please contact your therapist or the practice.",
  },
  removed: {
    title: "You've left the session",
    text: "Your therapist ended your part of the session. You can close this page now.",
  },
  ended: {
    title: "The session has ended",
    text: "Thank you. You can close this page now.",
  },
  left: {
    title: "You've left",
    text: "You can close this page now.",
    back: true,
  },
  expired: {
    title: "This session is over",
    text:
      "Your link has expired or the session has ended. If you still need to join, please " +
      "ask your therapist or the practice for a new link.",
  },
};

let socket = null;
let activeCall = null;
let finished = false;
let checked = remembered("checked");
let everConnected = false;
let recordingActive = false;
let consent = null;
const retry = {};

// --- the socket -------------------------------------------------------------------------

function start() {
  for (const label of document.querySelectorAll(".digits")) {
    label.textContent = String(digits);
  }
  wireScreens();
  socket = connect("/client");
  consent = new RecordingConsent(socket, { onChange: showConsentBar, onError: callProblem });
  socket.on("connect", onConnect);
  socket.on("disconnect", onDisconnect);
  socket.on("connect_error", onConnectError);
  socket.on("state", ({ state }) => onState(state));
  socket.on("admitted", () => enterCall());
  socket.on("denied", () => finish("denied"));
  socket.on("removed", () => finish("removed"));
  socket.on("ended", () => finish("ended"));
  socket.on("restarting", ({ retry_after: seconds }) => {
    // The gateway restarts; the connection drops and comes back by itself.
    retry.retryAfter = Number(seconds) || 2;
  });
  socket.on("media.restart", () => activeCall?.restartMedia?.());
  socket.on("recording", ({ active }) => setRecording(active));
  socket.on("recording.asked", (question) => consent.asked(question || {}));
  socket.on("message", ({ text }) => showMessage(text));
  socket.on("host", ({ present }) => setHostPresent(present));
  socket.on("room", ({ locked }) => {
    if (!locked && currentScreen() === "screen-locked") {
      advance();
    }
  });
}

async function onConnect() {
  banner.hidden = true;
  resetRetry(retry);
  activeCall?.setReconnecting?.(false);
  const first = !everConnected;
  everConnected = true;
  const status = await call(socket, "status");
  if (!status.ok) {
    return problem(status.error.message);
  }
  // Join-time marks (bench/join.py reads them; they never leave the page).
  mark("ready");
  if (status.state === "denied" || status.state === "removed") {
    return finish(status.state);
  }
  if (status.recording) {
    consent.known({ given: status.recording.consent_given, version: status.recording.version });
    setRecording(status.recording.active);
  }
  if (status.state === "admitted" || status.state === "in_session") {
    return enterCall();
  }
  if (status.state === "waiting") {
    return showWaiting(status);
  }
  // knocking (or back after leaving): get ready first, then knock.
  if (first && !checked) {
    return showScreen("screen-welcome");
  }
  if (!PREPARING.has(currentScreen())) {
    return advance(status);
  }
  return undefined;
}

function onDisconnect(reason) {
  if (finished) {
    return;
  }
  if (reason === "io server disconnect") {
    // The gateway closed us on purpose; connecting again tells us why (or resumes).
    socket.connect();
  }
  banner.hidden = false;
  activeCall?.setReconnecting?.(true);
  announce("Reconnecting. Please keep this page open.");
}

function onConnectError(error) {
  if (finished) {
    return;
  }
  const code = refusalCode(error);
  if (code === "denied" || code === "removed") {
    return finish(code);
  }
  if (code === "unauthenticated" || code === "not_allowed" || code === "not_found") {
    return finish("expired");
  }
  if (retryIfPassing(socket, error, retry)) {
    banner.hidden = false;
    activeCall?.setReconnecting?.(true);
    return undefined;
  }
  if (!socket.active) {
    // Refused for a reason that retrying will not fix by itself.
    banner.hidden = true;
    return problem("We couldn't connect you. Please try again in a minute.");
  }
  banner.hidden = !everConnected;
  if (!everConnected) {
    byId("loading-title").textContent = "Connecting… Please check your internet connection.";
  }
  return undefined;
}

function onState(state) {
  if (state === "waiting" && currentScreen() !== "screen-waiting") {
    showWaiting(null);
  } else if (state === "admitted" || state === "in_session") {
    enterCall();
  } else if (state === "denied" || state === "removed") {
    finish(state);
  }
}

// --- the steps --------------------------------------------------------------------------

/** The next step for a knocking client: sign-in code, consent, then knock. */
async function advance(known) {
  const status = known || (await call(socket, "status"));
  if (!status.ok) {
    return problem(status.error.message);
  }
  if (status.identity.required && !status.identity.verified) {
    return showIdentity(status.identity.enrolled);
  }
  const consent = status.telehealth_consent;
  if (consent.version !== null && !consent.given) {
    return showConsent(consent.version);
  }
  const knocked = await call(socket, "knock");
  if (knocked.ok) {
    return showWaiting(status);
  }
  if (knocked.error.code === "room_locked") {
    return showScreen("screen-locked");
  }
  return problem(knocked.error.message);
}

// Device check ---------------------------------------------------------------------------

let preview = null;
let stopLevel = () => {};
// Moves on whenever the preview stops: a camera that opens after that (the person
// answered the permission prompt after the session ended) is stopped at once.
let previewRun = 0;

async function runCheck(audioContext) {
  const help = byId("check-help");
  const video = byId("check-video");
  const status = byId("check-mic-status");
  byId("check-retry").hidden = true;
  byId("check-skip").hidden = true;
  byId("check-continue").hidden = true;
  help.hidden = true;
  status.textContent = "Starting your camera and microphone…";
  stopPreview();
  const run = previewRun;
  if (!callsSupported()) {
    return checkFailed({ name: "unsupported" });
  }
  try {
    const opened = await openDevices();
    if (run !== previewRun) {
      stopStream(opened.stream);
      return undefined;
    }
    preview = opened.stream;
    byId("check-no-video").hidden = opened.video;
    byId("check-level-box").hidden = false;
    if (opened.video) {
      video.srcObject = preview;
      video.play().catch(() => {});
    }
    byId("check-continue").hidden = false;
    status.textContent = opened.video
      ? "Say something: the bar moves when we can hear you."
      : "We found your microphone but no camera. You can join with sound only. " +
        "Say something: the bar moves when we can hear you.";
    let heard = false;
    let shown = 0;
    stopLevel = watchLevel(preview, audioContext, (level) => {
      // Rise at once, fall slowly: short sounds stay visible long enough to be seen.
      shown = Math.max(level, shown * 0.93);
      byId("check-level").style.transform = `scaleX(${shown})`;
      if (!heard && level > 0.08) {
        heard = true;
        status.textContent = "We can hear you.";
      }
    });
    byId("check-continue").focus();
  } catch (error) {
    if (run === previewRun) {
      checkFailed(error);
    }
  }
  return undefined;
}

function checkFailed(error) {
  const { title, text } = explain(error);
  byId("check-help-title").textContent = title;
  byId("check-help-text").textContent = text;
  byId("check-help").hidden = false;
  byId("check-no-video").hidden = false;
  byId("check-level-box").hidden = true;
  byId("check-mic-status").textContent = "";
  byId("check-retry").hidden = error.name === "unsupported";
  byId("check-skip").hidden = false;
}

function stopPreview() {
  previewRun += 1;
  stopLevel();
  stopLevel = () => {};
  stopStream(preview);
  preview = null;
  byId("check-video").srcObject = null;
}

function checkDone() {
  // The camera goes off while waiting; the call opens it again.
  stopPreview();
  checked = true;
  remember("checked");
  advance();
}

// Sign-in code ---------------------------------------------------------------------------

async function showIdentity(enrolled) {
  const enrol = byId("enrol");
  enrol.hidden = true;
  byId("identity-intro").hidden = false;
  byId("code-error").textContent = "";
  byId("code-input").value = "";
  showScreen("screen-identity");
  if (enrolled) {
    byId("identity-title").textContent = "Confirm it's you";
    return;
  }
  byId("identity-title").textContent = "Set up your sign-in code";
  const answer = await call(socket, "identity.enrol");
  if (!answer.ok) {
    // Already enrolled (this page was reloaded): the code from the app is all we need.
    byId("identity-title").textContent = "Confirm it's you";
    return;
  }
  byId("identity-intro").hidden = true;
  byId("enrol-open").href = answer.otpauth_uri;
  byId("enrol-key").textContent = keyOf(answer.otpauth_uri);
  showQr(byId("enrol-qr"), answer.qr_svg);
  enrol.hidden = false;
}

/** The secret from an otpauth URI, in groups of four to type by hand. */
function keyOf(uri) {
  const secret = new URL(uri).searchParams.get("secret") || "";
  return secret.replace(/(.{4})/g, "$1 ").trim();
}

/** The gateway's QR code SVG, parsed in an inert document and placed as an element. */
function showQr(holder, markup) {
  const parsed = new DOMParser().parseFromString(markup, "text/html");
  const svg = parsed.body.firstElementChild;
  holder.textContent = "";
  if (!svg || svg.nodeName.toLowerCase() !== "svg" || svg.querySelector("script, foreignObject")) {
    return;
  }
  const width = svg.getAttribute("width");
  const height = svg.getAttribute("height");
  if (width && height && !svg.getAttribute("viewBox")) {
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  }
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "QR code to scan with your authenticator app");
  holder.append(document.importNode(svg, true));
}

async function submitCode(event) {
  event.preventDefault();
  const input = byId("code-input");
  const error = byId("code-error");
  const code = input.value.replace(/\s+/g, "");
  if (!new RegExp(`^[0-9]{${digits}}$`).test(code)) {
    error.textContent = `Please type the ${digits} digits your app shows.`;
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  const button = byId("code-submit");
  button.disabled = true;
  error.textContent = "";
  const answer = await call(socket, "identity.verify", { code });
  button.disabled = false;
  if (answer.ok) {
    input.removeAttribute("aria-invalid");
    mark("verified");
    announce("Thank you. That's confirmed.");
    advance();
    return;
  }
  input.setAttribute("aria-invalid", "true");
  input.value = "";
  error.textContent = codeError(answer.error);
  input.focus();
}

function codeError(error) {
  if (error.code === "totp_rejected" && Number.isInteger(error.remaining)) {
    const left = error.remaining;
    if (left <= 2) {
      return `${error.message} You have ${left} ${left === 1 ? "try" : "tries"} left.`;
    }
  }
  if (error.code === "totp_locked_out" && typeof error.locked_until === "number") {
    const until = new Date(error.locked_until * 1000);
    const time = until.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
    return `Too many wrong codes. You can try again after ${time}. Your therapist knows.`;
  }
  return error.message;
}

// Consent --------------------------------------------------------------------------------

let consentVersion = null;

function showConsent(version) {
  consentVersion = version;
  byId("consent-version").textContent = version;
  byId("consent-declined").hidden = true;
  byId("consent-error").textContent = "";
  showScreen("screen-consent");
}

async function acceptConsent() {
  const answer = await call(socket, "consent.telehealth", { version: consentVersion });
  if (!answer.ok) {
    byId("consent-error").textContent = answer.error.message;
    return;
  }
  announce("Thank you.");
  advance();
}

// Waiting --------------------------------------------------------------------------------

function showWaiting(status) {
  if (activeCall) {
    // Away longer than the grace period: the call is over, the person waits again.
    activeCall.stop?.();
    activeCall = null;
  }
  if (currentScreen() !== "screen-waiting") {
    showScreen("screen-waiting");
  }
  if (status && status.ok) {
    setHostPresent(status.host_present);
  }
  tell("waiting");
}

function setHostPresent(present) {
  const away = byId("waiting-host-away");
  if (away.hidden === Boolean(present)) {
    return;
  }
  away.hidden = Boolean(present);
  if (currentScreen() === "screen-waiting") {
    announce(present ? "Your therapist is here." : away.textContent);
  }
}

function showMessage(text) {
  if (typeof text !== "string" || !text) {
    return;
  }
  const item = document.createElement("li");
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
  const body = document.createElement("span");
  body.textContent = text;
  item.append(time, body);
  byId("waiting-messages").append(item);
  byId("waiting-messages-box").hidden = false;
  announce(`Message from your therapist: ${text}`);
}

async function leaveWaiting() {
  const answer = await call(socket, "leave");
  if (!answer.ok) {
    return problem(answer.error.message);
  }
  return finish("left");
}

// Call and end ---------------------------------------------------------------------------

async function enterCall() {
  if (activeCall || finished) {
    return;
  }
  activeCall = {}; // taken: a second "admitted" must not start a second call
  stopPreview();
  mark("admitted");
  tell("admitted");
  activeCall = await startCall(socket, {
    tell,
    slots: CALL_SLOTS,
    onLeave: async () => {
      await call(socket, "leave");
      finish("left");
    },
  });
  // The connection may have dropped while the call was starting.
  activeCall.setReconnecting(!socket.connected && !finished);
  activeCall.setRecording(recordingActive);
}

// Recording ------------------------------------------------------------------------------

function setRecording(active) {
  recordingActive = Boolean(active);
  activeCall?.setRecording?.(recordingActive);
}

/** Under the call: the person's consent to recording, and the way to change it. */
function showConsentBar(state) {
  const bar = byId("call-consent");
  const change = byId("call-consent-change");
  bar.hidden = !state.given && !state.canAgree;
  byId("call-consent-text").textContent = state.given
    ? "You agreed to recording."
    : "You haven't agreed to recording.";
  change.textContent = state.given ? "Withdraw consent" : "Agree to recording";
}

function callProblem(message) {
  announce(message);
  byId("call-consent-text").textContent = message;
}

function finish(reason) {
  if (finished) {
    return;
  }
  finished = true;
  const ending = ENDINGS[reason] || ENDINGS.ended;
  activeCall?.stop?.();
  for (const dialog of document.querySelectorAll("dialog[open]")) {
    dialog.close();
  }
  stopPreview();
  banner.hidden = true;
  byId("end-title").textContent = ending.title;
  byId("end-text").textContent = ending.text;
  byId("end-back").hidden = !ending.back;
  if (socket) {
    socket.disconnect();
  }
  showScreen("screen-end");
  tell("ended", { reason });
}

function problem(message) {
  byId("problem-text").textContent = message;
  showScreen("screen-problem");
}

/** A User Timing mark, "quietroom:<name>", once per page. */
function mark(name) {
  if (performance.getEntriesByName(`quietroom:${name}`).length === 0) {
    performance.mark(`quietroom:${name}`);
  }
}

/** Small flags for this tab only (a reload skips the device check); never PHI. */
function remember(name) {
  try {
    window.sessionStorage.setItem(`quietroom.${name}`, "1");
  } catch {
    // storage blocked (some embedded frames): the flag is only a convenience
  }
}

function remembered(name) {
  try {
    return window.sessionStorage.getItem(`quietroom.${name}`) === "1";
  } catch {
    return false;
  }
}

// --- wiring -----------------------------------------------------------------------------

function wireScreens() {
  byId("check-start").addEventListener("click", () => {
    // Sound measurement must start inside the tap.
    const audioContext = newAudioContext();
    showScreen("screen-check");
    byId("check-retry").onclick = () => runCheck(audioContext);
    runCheck(audioContext);
  });
  byId("check-continue").addEventListener("click", checkDone);
  byId("check-skip").addEventListener("click", checkDone);
  byId("code-form").addEventListener("submit", submitCode);
  byId("code-input").addEventListener("input", () => {
    byId("code-input").removeAttribute("aria-invalid");
  });
  byId("consent-accept").addEventListener("click", acceptConsent);
  byId("consent-decline").addEventListener("click", () => {
    byId("consent-declined").hidden = false;
    announce(byId("consent-declined").textContent);
  });
  byId("waiting-leave").addEventListener("click", async () => {
    byId("leave-dialog-title").textContent = "Leave the waiting room?";
    const choice = await ask(byId("leave-dialog"), "Leave the waiting room?", "leave");
    if (choice === "leave") {
      leaveWaiting();
    }
  });
  byId("call-consent-change").addEventListener("click", () => {
    if (consent.given) {
      consent.record(false);
    } else {
      consent.prompt();
    }
  });
  byId("end-back").addEventListener("click", () => window.location.reload());
  byId("problem-retry").addEventListener("click", () => window.location.reload());
}

start();
