/*
 * Quietroom embed SDK: put a Quietroom session in your page and hear what happens in it.
 *
 *   <script src="https://GATEWAY/static/embed/quietroom-embed.js"></script>
 *   <div id="session"></div>
 *   <script>
 *     const room = QuietroomEmbed.create({
 *       link: "https://GATEWAY/j/...",          // the client link your platform issued
 *       container: document.getElementById("session"),
 *     });
 *     room.on("waiting", () => ...);            // also "admitted", "ended", "recording"
 *   </script>
 *
 * Your page's origin must be in the gateway's QUIETROOM_FRAME_ANCESTORS. The frame is
 * told your origin (in the URL fragment, which no server sees) and posts only to it;
 * this SDK accepts messages only from the gateway's origin and from its own frame.
 * Events carry no names or other personal data: "ended" has a `reason` ("ended",
 * "denied", "removed", "left" or "expired"), "recording" a boolean `recording`.
 * A classic script (no module, no dependencies), so it works in any page.
 */
(function (global) {
  "use strict";

  var EVENTS = ["waiting", "admitted", "ended", "recording"];

  function create(options) {
    if (!options || !options.link || !options.container) {
      throw new Error("QuietroomEmbed.create needs {link, container}");
    }
    var link = new URL(options.link, global.location.href);
    if (link.protocol !== "https:" && link.protocol !== "http:") {
      throw new Error("QuietroomEmbed: the link must be an http(s) URL");
    }
    var gatewayOrigin = link.origin;
    var listeners = {};
    EVENTS.forEach(function (name) {
      listeners[name] = [];
    });

    var frame = global.document.createElement("iframe");
    frame.title = options.title || "Video session";
    // Camera and microphone for the call; autoplay so the other side can be heard; the
    // wake lock keeps a phone's screen on during the session.
    frame.allow = "camera; microphone; autoplay; screen-wake-lock";
    frame.referrerPolicy = "no-referrer";
    frame.style.border = "0";
    frame.style.width = options.width || "100%";
    frame.style.height = options.height || "640px";
    link.hash = "embed=" + encodeURIComponent(global.location.origin);
    frame.src = link.href;

    function onMessage(event) {
      if (event.origin !== gatewayOrigin || event.source !== frame.contentWindow) {
        return;
      }
      var data = event.data;
      if (!data || data.source !== "quietroom" || EVENTS.indexOf(data.event) < 0) {
        return;
      }
      var detail = {};
      if (data.event === "ended" && typeof data.reason === "string") {
        detail.reason = data.reason;
      }
      if (data.event === "recording") {
        detail.recording = data.recording === true;
      }
      emit(data.event, detail);
    }

    function emit(name, detail) {
      listeners[name].slice().forEach(function (listener) {
        try {
          listener(detail);
        } catch (error) {
          global.setTimeout(function () {
            throw error;
          });
        }
      });
      if (typeof options.onEvent === "function") {
        options.onEvent(name, detail);
      }
    }

    global.addEventListener("message", onMessage);
    options.container.appendChild(frame);

    return {
      frame: frame,
      /** Call `listener(detail)` on each `name` event. */
      on: function (name, listener) {
        if (!listeners[name]) {
          throw new Error("QuietroomEmbed: unknown event " + name);
        }
        listeners[name].push(listener);
        return this;
      },
      off: function (name, listener) {
        if (listeners[name]) {
          listeners[name] = listeners[name].filter(function (l) {
            return l !== listener;
          });
        }
        return this;
      },
      /** Remove the frame (the camera and microphone stop with it). */
      destroy: function () {
        global.removeEventListener("message", onMessage);
        if (frame.parentNode) {
          frame.parentNode.removeChild(frame);
        }
      },
    };
  }

  global.QuietroomEmbed = { create: create, events: EVENTS.slice() };
})(window);
