// Camera and microphone: open them, explain in plain words when that fails, and show
// how loud the microphone hears.

/** Whether this browser can make a video call at all. */
export function callsSupported() {
  return Boolean(
    window.isSecureContext &&
      navigator.mediaDevices &&
      typeof navigator.mediaDevices.getUserMedia === "function" &&
      typeof window.RTCPeerConnection === "function",
  );
}

const VIDEO = {
  width: { ideal: 1280 },
  height: { ideal: 720 },
  frameRate: { ideal: 30, max: 30 },
  facingMode: "user",
};
const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/**
 * Open the camera and microphone. If there is no camera, fall back to the microphone
 * alone. Resolves with ``{stream, video, audio}``; rejects with the browser's error.
 */
export async function openDevices() {
  const media = navigator.mediaDevices;
  try {
    const stream = await media.getUserMedia({ video: VIDEO, audio: AUDIO });
    return { stream, video: true, audio: true };
  } catch (error) {
    if (error && (error.name === "NotFoundError" || error.name === "OverconstrainedError")) {
      const stream = await media.getUserMedia({ audio: AUDIO });
      return { stream, video: false, audio: true };
    }
    throw error;
  }
}

/** Stop every track of ``stream`` (the camera light goes off). */
export function stopStream(stream) {
  if (stream) {
    for (const track of stream.getTracks()) {
      track.stop();
    }
  }
}

/** A title and a plain-language way forward for an error from ``openDevices``. */
export function explain(error) {
  const name = error && error.name;
  if (name === "unsupported") {
    return {
      title: "This browser can't make video calls",
      text:
        "Please ask your therapist or the practice for a new link, and open it in a recent " +
        "version of Chrome, Safari, Firefox or Edge.",
    };
  }
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    return {
      title: "Your browser is blocking the camera and microphone",
      text:
        "To allow them, tap the camera or lock symbol next to the web address, choose Allow " +
        "for the camera and microphone, then tap Try again. On an iPhone, you may find this " +
        "in Settings, under Safari, Camera and Microphone.",
    };
  }
  if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
    return {
      title: "We couldn't find a microphone",
      text:
        "If you use a headset or an external microphone, check that it is plugged in and " +
        "switched on, then tap Try again.",
    };
  }
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
    return {
      title: "Your camera or microphone is busy",
      text:
        "Another app may be using it, such as another video call. Close that app, then tap " +
        "Try again.",
    };
  }
  return {
    title: "We couldn't start your camera and microphone",
    text: "Tap Try again. If it still doesn't work, restarting your browser often helps.",
  };
}

/**
 * Call ``onLevel(0..1)`` about 20 times a second with how loud the microphone of
 * ``stream`` is. Returns a function that stops measuring.
 */
export function watchLevel(stream, audioContext, onLevel) {
  if (!audioContext || stream.getAudioTracks().length === 0) {
    return () => {};
  }
  const source = audioContext.createMediaStreamSource(stream);
  const analyser = audioContext.createAnalyser();
  analyser.fftSize = 512;
  source.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const timer = window.setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const sample of samples) {
      sum += sample * sample;
    }
    // Root mean square, scaled so that normal speech fills most of the bar.
    onLevel(Math.min(1, Math.sqrt(sum / samples.length) * 4));
  }, 50);
  return () => {
    window.clearInterval(timer);
    source.disconnect();
  };
}

/** An AudioContext, made inside a tap (browsers only let sound start from one). */
export function newAudioContext() {
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!Context) {
    return null;
  }
  const context = new Context();
  if (context.state === "suspended") {
    context.resume().catch(() => {});
  }
  return context;
}
