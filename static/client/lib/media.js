// The media connection with the gateway (docs/SIGNALING.md, "Media, on both namespaces"):
// the browser offers, the gateway answers with all of its candidates, the browser trickles
// its own. A failed connection is started over with a fresh offer (the gateway replaces
// the old one), after a growing wait, a bounded number of times.
import { call } from "./signal.js";

/** Waits before each new attempt after a failure, in seconds; then we give up. */
const RETRY_WAITS = [1, 2, 4, 8, 15];
/** How long ICE may stay "disconnected" (it often recovers alone) before we start over. */
const DISCONNECTED_GRACE_MS = 6000;
/** How often the network is judged from the connection's statistics. */
const STATS_EVERY_MS = 2000;
/** The gateway's video codecs: VP8, and H.264 constrained baseline (Safari on iOS). */
const H264_PROFILE = "profile-level-id=42e01f";

/** Answers after which trying again cannot help. */
const FINAL = new Set(["not_allowed", "turn_not_configured", "invalid_input"]);

/**
 * Connect media over ``socket``. ``slots`` audio-and-video pairs are offered: the first
 * sends ``localStream``'s tracks (receive-only where there is none), the others receive
 * only, one per other participant. Callbacks:
 *
 * - ``onState(state, detail)``: "connecting", "connected", "reconnecting", "retrying"
 *   (a new attempt comes), "failed" (we gave up; ``detail.message`` says why, in plain
 *   words) or "closed";
 * - ``onRemote(slot, stream, receiver)``: the stream of slot ``slot`` and its video
 *   receiver (whose statistics say whether someone's video arrives on it now);
 * - ``onNetwork(poor)``: whether the connection looks poor (loss, freezes, delay).
 *
 * Returns ``{close(), restart(), peer()}``.
 */
export function connectMedia(
  socket,
  { localStream = null, slots = 1, onState = () => {}, onRemote = () => {}, onNetwork = () => {} },
) {
  let pc = null;
  let closed = false;
  let attempt = 0;
  let generation = 0;
  let retryTimer = 0;
  let graceTimer = 0;
  let statsTimer = 0;
  let state = null;
  const wanted = Math.max(1, slots);
  const quality = new NetworkJudge(onNetwork);

  const tell = (next, detail = {}) => {
    if (state === next && next !== "failed") {
      return;
    }
    state = next;
    onState(next, detail);
  };

  function dropPeer() {
    window.clearTimeout(graceTimer);
    window.clearInterval(statsTimer);
    if (pc) {
      pc.onicecandidate = null;
      pc.onconnectionstatechange = null;
      pc.close();
      pc = null;
    }
  }

  /** One attempt: configuration, offer, answer. A newer attempt makes this one stale. */
  async function negotiate() {
    const mine = ++generation;
    const stale = () => closed || mine !== generation;
    dropPeer();
    tell(attempt === 0 ? "connecting" : "retrying");
    performance.mark("quietroom:media-start");

    const config = await call(socket, "media.config");
    if (stale()) {
      return;
    }
    if (!config.ok) {
      failed(config.error);
      return;
    }
    let peer;
    let slotsMade;
    try {
      peer = pc = new RTCPeerConnection({
        iceServers: config.ice_servers,
        iceTransportPolicy: config.ice_transport_policy === "relay" ? "relay" : "all",
        bundlePolicy: "max-bundle",
        rtcpMuxPolicy: "require",
      });
      slotsMade = addTransceivers(peer, localStream, wanted);
    } catch {
      failed({ code: "config_failed" });
      return;
    }

    // Candidates wait for the answer: before it, the gateway has no peer (or the old one).
    const trickle = new Trickle(socket, stale);
    peer.onicecandidate = ({ candidate }) => {
      if (candidate && usable(candidate.candidate)) {
        trickle.add({
          candidate: candidate.candidate,
          sdpMid: candidate.sdpMid ?? "0",
          sdpMLineIndex: candidate.sdpMLineIndex ?? 0,
        });
      }
    };
    peer.onconnectionstatechange = () => {
      if (!stale()) {
        connectionChanged(peer.connectionState);
      }
    };

    try {
      await peer.setLocalDescription(await peer.createOffer());
    } catch {
      if (!stale()) {
        failed({ code: "offer_failed" }); // a newer attempt closed this peer: not a failure
      }
      return;
    }
    const answer = await call(socket, "media.offer", {
      type: "offer",
      sdp: peer.localDescription.sdp,
    });
    if (stale()) {
      return;
    }
    if (!answer.ok) {
      failed(answer.error);
      return;
    }
    try {
      await peer.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    } catch {
      if (!stale()) {
        failed({ code: "answer_failed" });
      }
      return;
    }
    if (stale()) {
      return;
    }
    slotsMade.forEach(({ stream, receiver }, slot) => onRemote(slot, stream, receiver));
    trickle.open();
    quality.reset();
    statsTimer = window.setInterval(() => {
      if (!stale()) {
        quality.sample(peer);
      }
    }, STATS_EVERY_MS);
  }

  function connectionChanged(now) {
    window.clearTimeout(graceTimer);
    if (now === "connected") {
      performance.mark("quietroom:media-connected");
      attempt = 0;
      tell("connected");
    } else if (now === "disconnected") {
      tell("reconnecting");
      graceTimer = window.setTimeout(
        () => failed({ code: "ice_disconnected" }),
        DISCONNECTED_GRACE_MS,
      );
    } else if (now === "failed") {
      failed({ code: "ice_failed" });
    }
  }

  /** This attempt did not work: try again after a while, or give up. */
  function failed(error) {
    if (closed) {
      return;
    }
    const code = error && error.code;
    if (code === "not_allowed") {
      // Not (or no longer) admitted: the page hears why from the socket.
      stop("closed");
      return;
    }
    if (FINAL.has(code) || attempt >= RETRY_WAITS.length) {
      dropPeer();
      tell("failed", { message: giveUpMessage(code) });
      return;
    }
    const wait = RETRY_WAITS[attempt];
    attempt += 1;
    dropPeer();
    tell("retrying");
    window.clearTimeout(retryTimer);
    retryTimer = window.setTimeout(negotiate, wait * 1000);
  }

  function stop(final) {
    closed = true;
    generation += 1;
    window.clearTimeout(retryTimer);
    dropPeer();
    quality.reset();
    tell(final);
  }

  negotiate();

  return {
    /** End the media for good (safe to call twice). */
    close() {
      if (!closed) {
        stop("closed");
      }
    },
    /** Start over now with a fresh offer (after the socket came back, or a tap). */
    restart() {
      if (closed) {
        return;
      }
      window.clearTimeout(retryTimer);
      attempt = 0;
      state = null;
      negotiate();
    },
    /** Whether the media is connected now. */
    get connected() {
      return state === "connected";
    },
    /** The current RTCPeerConnection, or null. */
    peer() {
      return pc;
    },
  };
}

/**
 * Whether the gateway can use a candidate: it checks over UDP toward IP addresses only
 * (mDNS names and TCP are ignored), so sending others would only spend the socket's
 * event budget (docs/SIGNALING.md, "Limits").
 */
function usable(candidate) {
  const bits = (candidate || "").split(" ");
  return bits.length >= 8 && bits[2].toLowerCase() === "udp" && !bits[4].endsWith(".local");
}

/**
 * Our ICE candidates, sent one after the other once ``open()`` (the answer is applied);
 * one refused for the rate limit is sent again a second later.
 */
class Trickle {
  constructor(socket, stale) {
    this.socket = socket;
    this.stale = stale;
    this.queue = [];
    this.opened = false;
    this.sending = false;
  }

  add(payload) {
    this.queue.push({ payload, again: false });
    this.pump();
  }

  open() {
    this.opened = true;
    this.pump();
  }

  async pump() {
    if (!this.opened || this.sending) {
      return;
    }
    this.sending = true;
    while (this.queue.length > 0 && !this.stale()) {
      const { payload, again } = this.queue.shift();
      const answer = await call(this.socket, "media.candidate", payload);
      if (!answer.ok && answer.error.code === "rate_limited" && !again) {
        await new Promise((resolve) => window.setTimeout(resolve, 1000));
        this.queue.unshift({ payload, again: true });
      }
    }
    this.sending = false;
  }
}

/**
 * Audio and video transceivers for ``slots`` pairs; the first pair sends the local
 * tracks. Returns, per slot, ``{stream, receiver}``: the tracks it will receive, and
 * its video receiver.
 */
function addTransceivers(pc, localStream, slots) {
  const local = {
    audio: localStream ? localStream.getAudioTracks()[0] : undefined,
    video: localStream ? localStream.getVideoTracks()[0] : undefined,
  };
  const streams = [];
  for (let slot = 0; slot < slots; slot += 1) {
    const tracks = [];
    let receiver = null;
    for (const kind of ["audio", "video"]) {
      const track = slot === 0 ? local[kind] : undefined;
      const transceiver = track
        ? pc.addTransceiver(track, { direction: "sendrecv", streams: [localStream] })
        : pc.addTransceiver(kind, { direction: "recvonly" });
      if (kind === "video") {
        preferGatewayVideoCodecs(transceiver);
        receiver = transceiver.receiver;
      }
      tracks.push(transceiver.receiver.track);
    }
    streams.push({ stream: new MediaStream(tracks), receiver });
  }
  return streams;
}

/** VP8, H.264 constrained baseline (packetization mode 1) and RTX: what the gateway forwards. */
function preferGatewayVideoCodecs(transceiver) {
  const capable = typeof window.RTCRtpReceiver?.getCapabilities === "function";
  if (typeof transceiver.setCodecPreferences !== "function" || !capable) {
    return;
  }
  const codecs = RTCRtpReceiver.getCapabilities("video")?.codecs || [];
  const fmtp = (codec) => codec.sdpFmtpLine || "";
  const vp8 = codecs.filter((c) => c.mimeType.toLowerCase() === "video/vp8");
  const h264 = codecs.filter(
    (c) =>
      c.mimeType.toLowerCase() === "video/h264" &&
      fmtp(c).includes("packetization-mode=1") &&
      fmtp(c).includes(H264_PROFILE),
  );
  const rtx = codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx");
  if (vp8.length + h264.length === 0) {
    return;
  }
  try {
    transceiver.setCodecPreferences([...vp8, ...h264, ...rtx]);
  } catch {
    // A browser that refuses the list offers its defaults, which include both codecs.
  }
}

function giveUpMessage(code) {
  if (code === "turn_not_configured") {
    return "Video calls can't connect in this room right now. Please tell your practice.";
  }
  return "We couldn't connect the call. Please check your internet connection, then tap Try again.";
}

/**
 * Is the network poor? From ``getStats()`` every few seconds: packets lost on what we
 * receive and on what we send (as the gateway reports it), video freezes, round-trip
 * delay. Two poor samples in a row to say so, three good ones to take it back.
 */
class NetworkJudge {
  constructor(onNetwork) {
    this.onNetwork = onNetwork;
    this.reset();
  }

  reset() {
    this.last = new Map();
    this.bad = 0;
    this.good = 0;
    if (this.poor) {
      this.onNetwork(false);
    }
    this.poor = false;
  }

  async sample(pc) {
    let report;
    try {
      report = await pc.getStats();
    } catch {
      return;
    }
    let received = 0;
    let lost = 0;
    let freezes = 0;
    let remoteLoss = 0;
    let rtt = 0;
    report.forEach((stat) => {
      if (stat.type === "inbound-rtp") {
        const before = this.last.get(stat.id) || {
          packetsReceived: 0,
          packetsLost: 0,
          freezeCount: 0,
        };
        received += Math.max(0, (stat.packetsReceived || 0) - before.packetsReceived);
        lost += Math.max(0, (stat.packetsLost || 0) - before.packetsLost);
        freezes += Math.max(0, (stat.freezeCount || 0) - before.freezeCount);
        this.last.set(stat.id, {
          packetsReceived: stat.packetsReceived || 0,
          packetsLost: stat.packetsLost || 0,
          freezeCount: stat.freezeCount || 0,
        });
      } else if (stat.type === "remote-inbound-rtp") {
        remoteLoss = Math.max(remoteLoss, stat.fractionLost || 0);
      } else if (stat.type === "candidate-pair" && stat.nominated && stat.state === "succeeded") {
        rtt = Math.max(rtt, stat.currentRoundTripTime || 0);
      }
    });
    const loss = received + lost > 0 ? lost / (received + lost) : 0;
    const poorNow = loss > 0.08 || remoteLoss > 0.08 || freezes > 0 || rtt > 0.8;
    if (poorNow) {
      this.bad += 1;
      this.good = 0;
    } else {
      this.good += 1;
      this.bad = 0;
    }
    if (!this.poor && this.bad >= 2) {
      this.poor = true;
      this.onNetwork(true);
    } else if (this.poor && this.good >= 3) {
      this.poor = false;
      this.onNetwork(false);
    }
  }
}
