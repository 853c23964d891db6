// The web terminal: xterm.js and a WebSocket to the console (see cofre-console src/terminal.rs
// for the frames). Everything the session does is decided and recorded on the server.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const form = document.getElementById("connect");
  const screen = document.getElementById("terminal");
  const status = document.getElementById("term-status");
  if (!form || !screen) return;
  const say = function (text) { status.textContent = text; };

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    form.hidden = true;
    const term = new Terminal({ cursorBlink: true, screenReaderMode: true, fontFamily: "DejaVu Sans Mono, monospace" });
    const fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(screen);
    try { fit.fit(); } catch (_) { /* a hidden element has no size yet */ }
    const url = new URL(form.getAttribute("data-ws"), window.location.href);
    url.protocol = "wss:";
    url.searchParams.set("cols", String(term.cols));
    url.searchParams.set("rows", String(term.rows));
    const reason = form.querySelector('[name="reason"]');
    if (reason && reason.value) url.searchParams.set("reason", reason.value);
    say("Connecting…");
    const ws = new WebSocket(url.toString());
    ws.binaryType = "arraybuffer";
    const encoder = new TextEncoder();
    ws.addEventListener("message", function (m) {
      if (typeof m.data !== "string") {
        term.write(new Uint8Array(m.data));
        return;
      }
      const msg = JSON.parse(m.data);
      if (msg.type === "started") {
        screen.setAttribute("data-session", msg.session);
        say("Connected: session " + msg.session + " (recorded).");
        term.focus();
      } else if (msg.type === "notice") {
        term.write("\r\n[cofre] " + msg.text + "\r\n");
        say("Notice: " + msg.text);
      } else if (msg.type === "ended") {
        screen.setAttribute("data-ended", msg.reason);
        term.write("\r\n[cofre] session ended: " + msg.reason + "\r\n");
        say("Session ended: " + msg.reason);
      }
    });
    ws.addEventListener("close", function () {
      if (!screen.hasAttribute("data-ended")) say("Disconnected.");
    });
    term.onData(function (d) { if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(d)); });
    term.onBinary(function (d) {
      if (ws.readyState !== WebSocket.OPEN) return;
      const bytes = new Uint8Array(d.length);
      for (let i = 0; i < d.length; i++) bytes[i] = d.charCodeAt(i) & 255;
      ws.send(bytes);
    });
    term.onResize(function (size) {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols: size.cols, rows: size.rows }));
    });
    window.addEventListener("resize", function () { try { fit.fit(); } catch (_) { /* ignore */ } });
  });
});
