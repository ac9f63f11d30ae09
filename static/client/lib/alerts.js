// The host's knock alert: a soft two-note chime made with WebAudio (no sound file) and,
// when the console is in the background, a system notification without any name in it.

export class KnockAlerts {
  constructor() {
    this.audio = null;
    this.on = false;
  }

  /** Turn alerts on; must run inside a click (sound and permission prompts need one). */
  async enable() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (Context && !this.audio) {
      this.audio = new Context();
    }
    if (this.audio && this.audio.state === "suspended") {
      await this.audio.resume().catch(() => {});
    }
    if ("Notification" in window && Notification.permission === "default") {
      await Notification.requestPermission().catch(() => "default");
    }
    this.on = true;
    this.chime();
  }

  disable() {
    this.on = false;
  }

  /** Whether the browser will show notifications. */
  get notifying() {
    return "Notification" in window && Notification.permission === "granted";
  }

  /** Someone new is waiting. */
  knock() {
    if (!this.on) {
      return;
    }
    this.chime();
    if (this.notifying && document.visibilityState !== "visible") {
      // No name: notifications show on lock screens and shared monitors.
      const note = new Notification("Someone is waiting", {
        body: "A client is in your Quietroom waiting room.",
        tag: "quietroom-knock",
      });
      note.onclick = () => {
        window.focus();
        note.close();
      };
    }
  }

  chime() {
    const audio = this.audio;
    if (!audio) {
      return;
    }
    const start = audio.currentTime + 0.02;
    [659.25, 880].forEach((frequency, index) => {
      const tone = audio.createOscillator();
      const volume = audio.createGain();
      const at = start + index * 0.18;
      tone.type = "sine";
      tone.frequency.value = frequency;
      volume.gain.setValueAtTime(0.0001, at);
      volume.gain.exponentialRampToValueAtTime(0.2, at + 0.02);
      volume.gain.exponentialRampToValueAtTime(0.0001, at + 0.35);
      tone.connect(volume).connect(audio.destination);
      tone.start(at);
      tone.stop(at + 0.4);
    });
  }
}
