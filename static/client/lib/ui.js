// Small DOM helpers shared by the client page and the host console.

/** The element with this id; throws early if the page and the script disagree. */
export function byId(id) {
  const element = document.getElementById(id);
  if (!element) {
    throw new Error(`missing #${id}`);
  }
  return element;
}

let pending = [];

/**
 * Say ``text`` to screen readers through the page's polite live region. What is said in
 * the same moment (a new screen and its notice) is read together, in order.
 */
export function announce(text) {
  pending.push(text);
  if (pending.length > 1) {
    return;
  }
  const region = byId("announcer");
  // Clearing first makes the same sentence be read again.
  region.textContent = "";
  window.setTimeout(() => {
    region.textContent = pending.map((part) => part.replace(/([^.!?…])$/, "$1.")).join(" ");
    pending = [];
  }, 100);
}

/**
 * Show one ``.screen`` and hide the others; focus its heading so keyboard and screen
 * reader users land on the new content, and announce it.
 */
export function showScreen(id, { focus = true } = {}) {
  const target = byId(id);
  for (const screen of document.querySelectorAll(".screen")) {
    screen.hidden = screen !== target;
  }
  const heading = target.querySelector("h1");
  if (heading) {
    if (focus) {
      heading.focus({ preventScroll: true });
    }
    announce(heading.textContent.trim());
  }
  window.scrollTo(0, 0);
  return target;
}

/** The visible screen's id. */
export function currentScreen() {
  const shown = document.querySelector(".screen:not([hidden])");
  return shown ? shown.id : null;
}

/**
 * Open a ``<dialog>`` and resolve with the value of the button that closed it ("" when
 * dismissed with Escape). Falls back to ``window.confirm`` where dialogs are missing.
 */
export function ask(dialog, fallbackQuestion, yes = "yes") {
  if (typeof dialog.showModal !== "function") {
    return Promise.resolve(window.confirm(fallbackQuestion) ? yes : "");
  }
  return new Promise((resolve) => {
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true });
    dialog.showModal();
  });
}

/** "just now", "3 min", "1 h 5 min": how long since ``since`` (seconds since the epoch). */
export function waitedFor(since, now = Date.now() / 1000) {
  const minutes = Math.floor(Math.max(0, now - since) / 60);
  if (minutes < 1) {
    return "just now";
  }
  if (minutes < 60) {
    return `${minutes} min`;
  }
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  return rest ? `${hours} h ${rest} min` : `${hours} h`;
}
