// The Socket.IO connection to the gateway (docs/SIGNALING.md): same origin, the session
// cookie, automatic reconnection, and every call answered by an acknowledgement.
import { io } from "../vendor/socket.io.esm.min.js";

const ANSWER_TIMEOUT_MS = 10000;

/** Open a namespace ("/client" or "/host") on this page's own origin. */
export function connect(namespace) {
  return io(namespace, {
    // WebSocket only: the gateway refuses a connection without an Origin header, and
    // browsers send none on the same-origin GET that starts long-polling.
    transports: ["websocket"],
    withCredentials: true,
    reconnectionDelay: 1000,
    reconnectionDelayMax: 5000,
    timeout: 10000,
  });
}

/**
 * Call ``event`` and resolve with the gateway's answer: ``{ok: true, ...}`` or
 * ``{ok: false, error: {code, message}}``. Never rejects: a lost answer becomes an error
 * with a plain message, so every caller handles one shape.
 */
export async function call(socket, event, payload) {
  try {
    const timed = socket.timeout(ANSWER_TIMEOUT_MS);
    const answer =
      payload === undefined ? await timed.emitWithAck(event) : await timed.emitWithAck(event, payload);
    if (answer && typeof answer === "object" && typeof answer.ok === "boolean") {
      return answer;
    }
    return failure("bad_answer", "Something went wrong on our side. Please try again.");
  } catch {
    return failure(
      "no_answer",
      "We didn't get an answer. Please check your internet connection and try again.",
    );
  }
}

function failure(code, message) {
  return { ok: false, error: { code, message } };
}

/** The gateway's refusal code from a ``connect_error`` (``null`` for network trouble). */
export function refusalCode(error) {
  const data = error && error.data;
  return data && typeof data.code === "string" ? data.code : null;
}

/** Refusals that pass by themselves: the gateway is restarting or its store is away. */
const PASSING = new Set(["restarting", "store_unavailable"]);

/**
 * Whether a refusal will pass; if so, connect again after a while (Socket.IO does not
 * retry a refused namespace by itself). Growing waits, at most 15 seconds.
 */
export function retryIfPassing(socket, error, state) {
  if (!PASSING.has(refusalCode(error))) {
    return false;
  }
  state.attempt = (state.attempt || 0) + 1;
  const seconds = Math.min(15, (state.retryAfter || 2) * state.attempt);
  window.clearTimeout(state.timer);
  state.timer = window.setTimeout(() => socket.connect(), seconds * 1000);
  return true;
}

/** The connection is up again: forget the waits. */
export function resetRetry(state) {
  window.clearTimeout(state.timer);
  state.attempt = 0;
  state.retryAfter = 0;
}
