// The call view, for the client (its own screen) and for the host (inside the console):
// remote video large, self view, mute, camera off, leave, and the connecting,
// reconnecting, weak-network and recording states. The page provides the markup with
// the same ids (call-remote, call-status, call-self, call-mic, ...).
//
// MEDIA BOUNDARY. The media itself is lib/media.js: the RTCPeerConnection with the
// gateway (offer and answer, ICE candidates over the socket, the ICE servers the gateway
// hands out, VP8 and H.264 offered for Safari on iOS). This file turns its states into
// what the person sees, and plays what it receives.
import { announce, ask, byId, showScreen } from "./lib/ui.js";
import { openDevices, stopStream } from "./lib/devices.js";
import { connectMedia } from "./lib/media.js";

const STATUS = {
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  retrying: "Trying again…",
};

/**
 * Show the call view and start the call over ``socket``. Options:
 * ``onLeave()`` runs when the person chose to leave (after ``confirmLeave()`` said yes);
 * ``tell(event, detail)`` informs an embedding page; ``show()`` shows the view;
 * ``waiting`` is what the stage says until the other person's video arrives; ``slots``
 * is how many other people's audio and video to receive.
 * Returns the call: ``setReconnecting``, ``restartMedia``, ``setRecording``, ``peer`` and
 * ``stop``.
 */
export async function startCall(
  socket,
  {
    onLeave,
    tell = () => {},
    show = () => showScreen("screen-call"),
    confirmLeave = confirmLeaving,
    waiting = "Waiting for your therapist's video…",
    slots = 1,
  },
) {
  show();
  const ui = {
    stage: byId("call-stage"),
    status: byId("call-status"),
    statusText: byId("call-status-text"),
    retry: byId("call-retry"),
    remote: byId("call-remote"),
    self: byId("call-self"),
    selfOff: byId("call-self-off"),
    mic: byId("call-mic"),
    cam: byId("call-cam"),
    leave: byId("call-leave"),
    sound: byId("call-sound"),
    network: byId("call-network"),
    recording: byId("call-recording"),
  };
  let stopped = false;
  let local = null;
  let media = null;
  let socketDown = false;
  let mediaState = "connecting";
  let failure = "";
  let recording = !ui.recording.hidden;
  // Everything this call listens to on shared elements and the document ends with it: the
  // host starts a new call on the same elements when ending the session failed.
  const listening = new AbortController();
  const remote = new RemoteMedia(ui, () => render(), listening.signal);
  const awake = new WakeLock(listening.signal);

  /** What the stage says now, from the socket's, the media's and the video's states. */
  function render() {
    if (stopped) {
      return; // the stage is another call's now, or nobody's
    }
    let text = "";
    if (socketDown) {
      text = "Reconnecting… Please keep this page open.";
    } else if (mediaState === "failed") {
      text = failure;
    } else if (STATUS[mediaState]) {
      text = STATUS[mediaState];
    } else if (mediaState === "connected" && !remote.hasVideo) {
      text = `Connected. ${waiting}`;
    }
    if (ui.statusText.textContent !== text) {
      ui.statusText.textContent = text;
    }
    ui.status.hidden = text === "";
    ui.status.classList.toggle("over-video", remote.hasVideo);
    ui.retry.hidden = socketDown || mediaState !== "failed";
  }

  const call = {
    /**
     * The socket dropped (true) or is back (false). Back, the media starts over: the
     * session's media may have moved to another gateway process meanwhile, and the
     * `media.restart` that said so may have been missed (docs/SIGNALING.md).
     */
    setReconnecting(reconnecting) {
      const back = socketDown && !reconnecting;
      socketDown = reconnecting;
      render();
      if (back && media) {
        media.restart();
      }
    },
    /** The gateway says the session's media moved (`media.restart`): offer again. */
    restartMedia() {
      if (media) {
        media.restart();
      }
    },
    /** Everyone sees when the session is recorded. */
    setRecording(active) {
      if (recording === Boolean(active)) {
        return;
      }
      recording = Boolean(active);
      ui.recording.hidden = !recording;
      announce(recording ? "This session is now being recorded." : "Recording has stopped.");
      tell("recording", { recording });
    },
    /** The current RTCPeerConnection with the gateway, or null. */
    peer() {
      return media ? media.peer() : null;
    },
    /** End the call on this device: media closed, camera and microphone released. */
    stop() {
      if (stopped) {
        return;
      }
      stopped = true;
      listening.abort();
      awake.release();
      if (media) {
        media.close();
      }
      stopStream(local);
      remote.clear();
      ui.self.srcObject = null;
      ui.network.hidden = true;
    },
  };

  render();
  awake.keep();
  ui.leave.onclick = async () => {
    if (await confirmLeave()) {
      call.stop();
      onLeave();
    }
  };
  ui.retry.onclick = () => {
    if (media) {
      media.restart();
    }
  };

  try {
    local = (await openDevices()).stream;
  } catch {
    local = null; // the call goes on; the others see that our camera is off
  }
  if (stopped) {
    stopStream(local);
    return call;
  }
  const audioTrack = local ? local.getAudioTracks()[0] : undefined;
  const videoTrack = local ? local.getVideoTracks()[0] : undefined;
  if (videoTrack) {
    ui.self.srcObject = local;
    ui.self.play().catch(() => {});
  }
  ui.selfOff.hidden = Boolean(videoTrack);
  ui.mic.disabled = !audioTrack;
  ui.cam.disabled = !videoTrack;
  ui.mic.setAttribute("aria-pressed", "false");
  ui.cam.setAttribute("aria-pressed", "false");

  ui.mic.onclick = () => {
    audioTrack.enabled = !audioTrack.enabled;
    ui.mic.setAttribute("aria-pressed", String(!audioTrack.enabled));
    announce(audioTrack.enabled ? "Your microphone is on." : "You are muted.");
  };
  ui.cam.onclick = () => {
    videoTrack.enabled = !videoTrack.enabled;
    ui.cam.setAttribute("aria-pressed", String(!videoTrack.enabled));
    ui.selfOff.hidden = videoTrack.enabled;
    announce(videoTrack.enabled ? "Your camera is on." : "Your camera is off.");
  };

  media = connectMedia(socket, {
    localStream: local,
    slots,
    onState(state, detail) {
      const before = mediaState;
      mediaState = state;
      if (state === "retrying" || state === "closed") {
        remote.clear(); // the old connection's tracks have ended
      }
      failure = state === "failed" ? detail.message : "";
      render();
      if (state === "connected" && before !== "connected") {
        announce("You're connected.");
      } else if (state === "failed") {
        announce(failure);
      } else if (state === "reconnecting" || (state === "retrying" && before === "connected")) {
        announce("The connection dropped. Reconnecting.");
      }
    },
    onRemote: (slot, stream, receiver) => remote.attach(slot, stream, receiver),
    onNetwork(poor) {
      ui.network.hidden = !poor;
    },
  });
  return call;
}

/** The client's question before leaving the call. */
async function confirmLeaving() {
  byId("leave-dialog-title").textContent = "Leave the session?";
  return (await ask(byId("leave-dialog"), "Leave the session?", "leave")) === "leave";
}

/** A slot whose receiver decoded no new frame for this long shows nobody. */
const STALE_MS = 3000;
const WATCH_MS = 1000;

/**
 * What the gateway sends us: each slot's video (the first live one large, the others as
 * tiles) and each slot's sound (its own audio element, so nobody's sound depends on their
 * camera). A slot is live while its receiver decodes new frames: the gateway stops
 * forwarding to it when that person leaves. Browsers (iOS Safari above all) may refuse
 * sound until the person taps: then the sound starts muted, and a button turns it on.
 */
class RemoteMedia {
  /** Listens on the shared elements until ``signal`` aborts (the call stopped). */
  constructor(ui, changed, signal) {
    this.ui = ui;
    this.changed = changed;
    this.signal = signal;
    this.slots = [];
    this.tiles = null;
    this.soundBlocked = false;
    this.hasVideo = false;
    this.timer = 0;
    for (const event of ["resize", "loadeddata", "emptied"]) {
      ui.remote.addEventListener(event, () => this.update(), { signal });
    }
    ui.sound.addEventListener("click", () => this.unblockSound(), { signal });
  }

  /** Note which slots decoded new frames lately; lay them out again if that changed. */
  async watch() {
    const now = performance.now();
    let changed = false;
    for (const slot of this.slots) {
      if (!slot || !slot.receiver) {
        continue;
      }
      let frames = slot.frames;
      try {
        (await slot.receiver.getStats()).forEach((stat) => {
          if (stat.type === "inbound-rtp") {
            frames = stat.framesDecoded || 0;
          }
        });
      } catch {
        continue;
      }
      if (frames > slot.frames) {
        slot.frames = frames;
        slot.freshAt = now;
      }
      const live = now - slot.freshAt < STALE_MS;
      if (live !== slot.live) {
        slot.live = live;
        changed = true;
      }
    }
    if (changed) {
      this.layout();
    }
  }

  attach(index, stream, receiver = null) {
    if (this.signal.aborted) {
      return;
    }
    this.release(index);
    if (!this.timer) {
      this.timer = window.setInterval(() => this.watch(), WATCH_MS);
    }
    const audio = document.createElement("audio");
    audio.autoplay = true;
    audio.srcObject = new MediaStream(stream.getAudioTracks());
    audio.hidden = true;
    this.ui.stage.append(audio);
    this.playSound(audio);
    const video = new MediaStream(stream.getVideoTracks());
    const track = stream.getVideoTracks()[0];
    const slot = {
      index,
      audio,
      video,
      track,
      receiver,
      tile: null,
      frames: 0,
      freshAt: -Infinity,
      live: false,
    };
    if (track) {
      track.onunmute = () => this.watch();
    }
    this.slots[index] = slot;
    this.layout();
  }

  /** Slot 0, or the first slot with live video, is large; other live ones are tiles. */
  layout() {
    const live = this.slots.filter((s) => s && s.live);
    const main = live[0] || this.slots.find(Boolean);
    if (main && this.ui.remote.srcObject !== main.video) {
      this.ui.remote.srcObject = main.video;
      this.ui.remote.play().catch(() => {});
    }
    for (const slot of this.slots) {
      if (!slot) {
        continue;
      }
      const tiled = slot !== main && live.includes(slot);
      if (tiled && !slot.tile) {
        slot.tile = document.createElement("video");
        slot.tile.muted = true;
        slot.tile.autoplay = true;
        slot.tile.playsInline = true;
        slot.tile.setAttribute("aria-label", "Another person in the session");
        slot.tile.srcObject = slot.video;
        this.tileBox().append(slot.tile);
        slot.tile.play().catch(() => {});
      } else if (!tiled && slot.tile) {
        slot.tile.remove();
        slot.tile = null;
      }
    }
    if (this.tiles) {
      this.tiles.hidden = this.tiles.childElementCount === 0;
    }
    this.update();
  }

  tileBox() {
    if (!this.tiles) {
      this.tiles = document.createElement("div");
      this.tiles.className = "tiles";
      this.ui.stage.append(this.tiles);
    }
    return this.tiles;
  }

  /** Whether the large video shows someone now. */
  update() {
    if (this.signal.aborted) {
      return; // a stopped call's: the element may show another call's video now
    }
    const video = this.ui.remote;
    const first = performance.getEntriesByName("quietroom:first-frame").length === 0;
    if (first && video.videoWidth > 0) {
      performance.mark("quietroom:first-frame");
      this.watch(); // at once, not at the next tick
    }
    const main = this.slots.find((s) => s && s.video === video.srcObject);
    const now = Boolean(main && main.live && video.videoWidth > 0 && video.readyState >= 2);
    if (now !== this.hasVideo) {
      this.hasVideo = now;
      this.changed();
    }
  }

  playSound(audio) {
    audio.muted = this.soundBlocked;
    audio.play().then(
      () => {},
      () => {
        this.soundBlocked = true;
        audio.muted = true;
        audio.play().catch(() => {});
        this.ui.sound.hidden = false;
      },
    );
  }

  unblockSound() {
    this.soundBlocked = false;
    for (const slot of this.slots) {
      if (slot) {
        slot.audio.muted = false;
        slot.audio.play().catch(() => {});
      }
    }
    this.ui.sound.hidden = true;
    announce("Sound is on.");
  }

  release(index) {
    const slot = this.slots[index];
    if (slot) {
      slot.audio.srcObject = null;
      slot.audio.remove();
      if (slot.tile) {
        slot.tile.remove();
      }
      if (slot.track) {
        slot.track.onunmute = null;
      }
      this.slots[index] = undefined;
    }
  }

  clear() {
    window.clearInterval(this.timer);
    this.timer = 0;
    this.slots.forEach((_, index) => this.release(index));
    this.slots = [];
    this.ui.remote.srcObject = null;
    this.ui.sound.hidden = true;
    if (this.tiles) {
      this.tiles.remove();
      this.tiles = null;
    }
    this.update();
  }
}

/** Keep a phone's screen on during the call, where the browser allows it. */
class WakeLock {
  /** Released, and asked for no more, once ``signal`` aborts. */
  constructor(signal) {
    this.signal = signal;
    this.sentinel = null;
  }

  keep() {
    const policy = document.featurePolicy;
    if (!("wakeLock" in navigator) || (policy && !policy.allowsFeature("screen-wake-lock"))) {
      return;
    }
    this.request();
    // The browser lets the lock go when the page is hidden; ask again when it is back.
    document.addEventListener(
      "visibilitychange",
      () => {
        if (document.visibilityState === "visible") {
          this.request();
        }
      },
      { signal: this.signal },
    );
  }

  async request() {
    let sentinel;
    try {
      sentinel = await navigator.wakeLock.request("screen");
    } catch {
      return; // not now (battery saver, a hidden page): the call goes on
    }
    if (this.signal.aborted) {
      sentinel.release().catch(() => {}); // granted after the call stopped
      return;
    }
    this.sentinel?.release().catch(() => {});
    this.sentinel = sentinel;
  }

  release() {
    this.sentinel?.release().catch(() => {});
    this.sentinel = null;
  }
}
