// Inside a platform's frame: tell the embedding page what happens (waiting, admitted,
// ended, recording), and nobody else.
//
// The embed SDK (embed/quietroom-embed.js) puts the embedding page's origin in the frame
// URL's fragment, "#embed=<origin>"; the link's page posts with it (open-link.js), the
// fragment survives the redirect to /join, and it never reaches the server. We post
// only to that exact origin, and only if the gateway lists it among the origins allowed
// to frame it (QUIETROOM_FRAME_ANCESTORS, in the page's data-embedders), so a page that
// frames us some other way hears nothing.

/** The origin we may post to, or ``null`` when we are not embedded by an allowed page. */
export function embeddingOrigin(allowed, fragment = window.location.hash) {
  if (window.parent === window) {
    return null;
  }
  const claimed = new URLSearchParams(fragment.replace(/^#/, "")).get("embed");
  if (!claimed) {
    return null;
  }
  let origin;
  try {
    origin = new URL(claimed).origin;
  } catch {
    return null;
  }
  if (origin !== claimed || !allowed.includes(origin)) {
    return null;
  }
  // Where the browser can say who frames us, it must agree.
  const ancestors = window.location.ancestorOrigins;
  if (ancestors && ancestors.length > 0 && ancestors[0] !== origin) {
    return null;
  }
  return origin;
}

/** A function ``tell(event, detail)`` that posts to the embedding page, or does nothing. */
export function embedBridge(allowed) {
  const origin = embeddingOrigin(allowed);
  let last = null;
  return function tell(event, detail = {}) {
    const key = JSON.stringify([event, detail]);
    if (origin === null || key === last) {
      return;
    }
    last = key;
    window.parent.postMessage({ source: "quietroom", event, ...detail }, origin);
  };
}
