// The call screen: remote video large, self view, mute, camera off, leave, and the
// reconnecting, weak-network and recording states.
//
// MEDIA BOUNDARY. Everything the person sees and touches in a call is here and works
// now; the media itself is not wired yet. When the gateway's media relay lands,
// connectMedia() below gets the RTCPeerConnection with the gateway (offer and answer,
// ICE candidates over the socket, the ICE servers the gateway hands out, H.264 offered
// for Safari on iOS) and calls playRemote() with the remote stream. Until then the
// stage says "Connecting…".
import { announce, ask, byId, showScreen } from "./lib/ui.js";
import { openDevices, stopStream } from "./lib/devices.js";

/**
 * Show the call screen for an admitted participant and start the call over ``socket``.
 * ``onLeave()`` runs when the person chooses to leave; ``tell(event, detail)`` informs
 * an embedding page. Returns the call: ``setReconnecting``, ``setNetworkPoor``,
 * ``setRecording`` and ``stop``.
 */
export async function startCall(socket, { onLeave, tell = () => {} }) {
  showScreen("screen-call");
  const ui = {
    status: byId("call-status"),
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
  let connectingText = "Connecting…";

  const setStatus = (text) => {
    connectingText = text;
    ui.status.textContent = text;
  };

  const call = {
    /** The socket dropped (true) or is back (false). */
    setReconnecting(reconnecting) {
      ui.status.textContent = reconnecting
        ? "Reconnecting… Please keep this page open."
        : connectingText;
      ui.status.classList.toggle("over-video", reconnecting && hasRemoteVideo(ui.remote));
    },
    /** The media layer's verdict on the network. */
    setNetworkPoor(poor) {
      ui.network.hidden = !poor;
    },
    /** Everyone sees when the session is recorded. */
    setRecording(recording) {
      if (ui.recording.hidden === !recording) {
        return;
      }
      ui.recording.hidden = !recording;
      announce(recording ? "This session is now being recorded." : "Recording has stopped.");
      tell("recording", { recording });
    },
    /** End the call on this device: media closed, camera and microphone released. */
    stop() {
      if (stopped) {
        return;
      }
      stopped = true;
      if (media) {
        media.close();
      }
      stopStream(local);
      ui.self.srcObject = null;
      ui.remote.srcObject = null;
    },
  };

  setStatus("Connecting…");
  keepAwake();
  ui.leave.onclick = async () => {
    byId("leave-dialog-title").textContent = "Leave the session?";
    const choice = await ask(byId("leave-dialog"), "Leave the session?", "leave");
    if (choice === "leave") {
      call.stop();
      onLeave();
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

  media = await connectMedia(socket, {
    localStream: local,
    remoteVideo: ui.remote,
    soundButton: ui.sound,
    onStatus: setStatus,
  });
  if (stopped) {
    media.close();
  }
  return call;
}

/**
 * The media connection with the gateway. Not wired yet: the media relay is being built.
 * Resolves with an object whose ``close()`` ends the media; meanwhile the stage keeps
 * saying "Connecting…".
 */
async function connectMedia(socket, { localStream, remoteVideo, soundButton, onStatus }) {
  void socket;
  void localStream;
  void remoteVideo;
  void soundButton;
  onStatus("Connecting…");
  return { close() {} };
}

/**
 * Play the remote stream. Browsers (iOS Safari above all) may refuse sound until the
 * person taps: then play muted, and offer a button that turns the sound on.
 */
export async function playRemote(video, stream, soundButton) {
  video.srcObject = stream;
  video.muted = false;
  try {
    await video.play();
    soundButton.hidden = true;
  } catch {
    video.muted = true;
    await video.play().catch(() => {});
    soundButton.hidden = false;
    soundButton.onclick = () => {
      video.muted = false;
      video.play().catch(() => {});
      soundButton.hidden = true;
    };
  }
}

function hasRemoteVideo(video) {
  return Boolean(video.srcObject) && video.readyState >= 2;
}

/** Keep a phone's screen on during the call, where the browser allows it. */
function keepAwake() {
  const policy = document.featurePolicy;
  if (!("wakeLock" in navigator) || (policy && !policy.allowsFeature("screen-wake-lock"))) {
    return;
  }
  const request = () => navigator.wakeLock.request("screen").catch(() => {});
  request();
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") {
      request();
    }
  });
}
