// Consent to recording, for the client and for the host (docs/SIGNALING.md): the gateway
// asks with `recording.asked {version, text}`; the person agrees or declines in a dialog;
// `consent.recording {version, given}` records the choice, and withdrawing is the same
// call with `given: false`, possible at any moment. One call at a time: a choice made
// while one is on its way follows it (the newest wins, and a withdrawal is always sent).
import { call } from "./signal.js";
import { announce, byId } from "./ui.js";

export class RecordingConsent {
  /** ``onChange(consent)`` runs whenever ``given`` or what can be offered changes. */
  constructor(socket, { onChange = () => {}, onError = () => {} } = {}) {
    this.socket = socket;
    this.onChange = onChange;
    this.onError = onError;
    this.dialog = byId("recording-dialog");
    /** The consent text version we have on record (or were last asked about). */
    this.version = null;
    /** The text of the last question, so the person can agree later without being asked. */
    this.text = null;
    this.given = false;
    /** Whether a call is on its way. */
    this.busy = false;
    /** The choices still to send, oldest first: at most a withdrawal, then an agreement. */
    this.queued = [];
  }

  /** Whether the person can agree now (we have the text they would agree to). */
  get canAgree() {
    return !this.given && this.text !== null;
  }

  /** What the gateway holds (the client's `status`, or an answer). */
  known({ given, version }) {
    this.given = Boolean(given);
    if (version !== undefined && version !== null) {
      this.version = version;
    }
    this.onChange(this);
  }

  /** The gateway asks: show the text and its version; the answer is recorded at once. */
  async asked({ version, text }) {
    if (typeof version !== "string" || typeof text !== "string") {
      return;
    }
    this.version = version;
    this.text = text;
    this.onChange(this);
    await this.prompt();
  }

  /** Show the question (again); resolves once the choice is recorded or dismissed. */
  async prompt() {
    if (this.text === null || this.dialog.open || typeof this.dialog.showModal !== "function") {
      return;
    }
    // The answer is to this wording, even if a newer one is asked for meanwhile.
    const shown = this.version;
    fillText(byId("recording-dialog-text"), this.text);
    byId("recording-dialog-version").textContent = shown;
    const choice = await new Promise((resolve) => {
      this.dialog.returnValue = "";
      this.dialog.addEventListener("close", () => resolve(this.dialog.returnValue), { once: true });
      this.dialog.showModal();
      // The question first, not "I agree": nobody agrees by pressing Enter by accident.
      byId("recording-dialog-title").focus();
    });
    if (choice === "agree") {
      await this.record(true, { version: shown });
    } else if (choice === "decline") {
      // Sent even when we think there is nothing to withdraw: an agreement whose answer
      // was lost may be on record, and withdrawing what is not there is harmless.
      await this.record(false, { declined: true, version: shown });
    }
  }

  /**
   * Give or withdraw consent. A choice made while a call is on its way is sent once that
   * call is answered: the newest choice wins, but a withdrawal is never skipped (it stops
   * a recording). What the page shows follows the gateway's answers.
   */
  async record(given, { declined = false, version = this.version } = {}) {
    if (version === null) {
      return;
    }
    const choice = { given, version, declined };
    const withdrawal = this.queued.find((queued) => !queued.given);
    this.queued = given ? [withdrawal, choice].filter(Boolean) : [choice];
    if (this.busy) {
      return;
    }
    this.busy = true;
    try {
      while (this.queued.length > 0) {
        await this.send(this.queued.shift());
      }
    } finally {
      this.busy = false;
    }
  }

  async send({ given, version, declined }) {
    const before = this.given;
    const answer = await call(this.socket, "consent.recording", { version, given });
    if (!answer.ok) {
      this.onError(answer.error.message);
      return;
    }
    this.known({ given: answer.given, version: answer.version });
    if (this.queued.length > 0) {
      return; // another choice follows; say only where it ends
    }
    if (answer.given) {
      announce("Thank you. You agreed to recording. You can withdraw at any moment.");
    } else if (declined && !before) {
      announce("You did not agree. Nothing will be recorded.");
    } else {
      announce(
        "You withdrew your consent to recording. If the session was recorded, that has stopped.",
      );
    }
  }
}

/** Plain text, paragraphs split at blank lines, placed as text (never as markup). */
function fillText(holder, text) {
  holder.textContent = "";
  for (const part of text.split(/\n\s*\n/)) {
    const trimmed = part.trim();
    if (trimmed) {
      const paragraph = document.createElement("p");
      paragraph.textContent = trimmed;
      holder.append(paragraph);
    }
  }
}
