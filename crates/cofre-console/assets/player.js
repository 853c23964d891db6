// The recording player: an asciicast v2 file (from the console, which streams what
// `cofre session export` writes) played into xterm.js: play, pause, seek, speed, and markers
// (commands, file transfers, the end) to jump to.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const root = document.getElementById("player");
  if (!root) return;
  const screen = document.getElementById("screen");
  const play = document.getElementById("play");
  const seek = document.getElementById("seek");
  const clock = document.getElementById("clock");
  const speed = document.getElementById("speed");
  const markerList = document.getElementById("markers");
  let events = []; // [seconds, code, text]
  let duration = 0;
  let term = null;
  let shown = 0; // index of the next output event to write
  let position = 0; // seconds
  let playing = false;
  let last = 0;

  function setState(s) { root.setAttribute("data-state", s); }
  function show() {
    clock.textContent = position.toFixed(1) + " s of " + duration.toFixed(1) + " s";
    seek.value = String(duration > 0 ? Math.round((position / duration) * 1000) : 0);
    root.setAttribute("data-position", position.toFixed(3));
  }
  // Writes every output event up to `position`; a jump back starts again from the top.
  function render(to) {
    if (to < position || shown === 0) {
      term.reset();
      shown = 0;
    }
    position = to;
    let out = "";
    while (shown < events.length && events[shown][0] <= position) {
      const e = events[shown];
      if (e[1] === "o") out += e[2];
      if (e[1] === "r") {
        const m = /^(\d+)x(\d+)$/.exec(e[2]);
        if (m) term.resize(Number(m[1]), Number(m[2]));
      }
      shown++;
    }
    if (out) term.write(out);
    show();
  }
  function tick(now) {
    if (!playing) return;
    const dt = (now - last) / 1000;
    last = now;
    const next = Math.min(duration, position + dt * Number(speed.value));
    render(next);
    if (next >= duration) {
      playing = false;
      play.textContent = "Play";
      setState("ended");
      return;
    }
    window.requestAnimationFrame(tick);
  }
  play.addEventListener("click", function () {
    if (!term) return;
    playing = !playing;
    play.textContent = playing ? "Pause" : "Play";
    setState(playing ? "playing" : "paused");
    if (playing) {
      if (position >= duration) render(0);
      last = performance.now();
      window.requestAnimationFrame(tick);
    }
  });
  seek.addEventListener("input", function () {
    if (term) render((Number(seek.value) / 1000) * duration);
  });

  setState("loading");
  fetch(root.getAttribute("data-cast"), { credentials: "same-origin" })
    .then(function (r) {
      if (!r.ok) throw new Error("the recording could not be read (" + r.status + ")");
      return r.text();
    })
    .then(function (text) {
      const lines = text.split("\n").filter(function (l) { return l.trim() !== ""; });
      const header = JSON.parse(lines[0]);
      events = lines.slice(1).map(function (l) { return JSON.parse(l); });
      duration = events.length ? events[events.length - 1][0] : 0;
      term = new Terminal({ cols: header.width || 80, rows: header.height || 24, disableStdin: true, screenReaderMode: true, fontFamily: "DejaVu Sans Mono, monospace" });
      term.open(screen);
      events.forEach(function (e) {
        if (e[1] !== "m") return;
        const li = document.createElement("li");
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = e[0].toFixed(1) + " s: " + e[2];
        b.addEventListener("click", function () { render(e[0]); });
        li.appendChild(b);
        markerList.appendChild(li);
      });
      show();
      setState("paused");
    })
    .catch(function (err) {
      setState("error");
      clock.textContent = String(err.message || err);
    });
});
