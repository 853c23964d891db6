// Watching a live session: a read-only xterm.js fed by the console's Server-Sent Events (see
// cofre-console src/pages/sessions.rs, `watch_events`). The watch lasts while this page listens.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const screen = document.getElementById("watch-screen");
  const status = document.getElementById("watch-status");
  const state = document.getElementById("watch-state");
  if (!screen) return;
  const say = function (text) { status.textContent = text; };
  // disableStdin: nothing typed here reaches the session (the server ignores it anyway).
  const term = new Terminal({ disableStdin: true, screenReaderMode: true, fontFamily: "DejaVu Sans Mono, monospace" });
  term.open(screen);
  const events = new EventSource(screen.getAttribute("data-events"));
  let ended = false;
  events.addEventListener("start", function (m) {
    const s = JSON.parse(m.data);
    term.resize(Math.max(10, s.cols), Math.max(5, s.rows));
    const words = ["live"];
    if (s.moderated) words.push(s.moderator ? "moderated (you are its moderator)" : "moderated");
    if (s.input_blocked) words.push("input blocked");
    state.textContent = words.join(", ");
    screen.setAttribute("data-watching", s.session);
    say("Watching session " + s.session + ".");
  });
  events.addEventListener("output", function (m) {
    const raw = atob(m.data);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    term.write(bytes);
  });
  events.addEventListener("missed", function (m) {
    term.write("\r\n[cofre] " + m.data + " chunk(s) of output missed (slow connection)\r\n");
  });
  events.addEventListener("end", function () {
    ended = true;
    events.close();
    screen.setAttribute("data-ended", "true");
    state.textContent = "ended";
    say("The session has ended.");
  });
  events.addEventListener("error", function () {
    // A refused watch (ended, unknown, not yours to watch) answers an error page, not events.
    if (ended) return;
    events.close();
    say("Not watching: the session is over or you may not watch it. Reload to try again.");
  });
});
