// Cofre console: the little the pages need beyond HTML. Loaded as a file (the CSP admits no
// inline script); every other script on a page runs after this one.
"use strict";

// xterm.js makes <style> elements; the page's CSP admits styles from files and those carrying
// the page's nonce, so elements made here get it before they are inserted.
(function () {
  const meta = document.querySelector('meta[name="csp-nonce"]');
  if (!meta) return;
  const nonce = meta.getAttribute("content");
  const make = Document.prototype.createElement;
  Document.prototype.createElement = function (tag, options) {
    const el = make.call(this, tag, options);
    if (String(tag).toLowerCase() === "style") el.nonce = nonce;
    return el;
  };
})();

// A revealed secret leaves the page after its time (data-hide-after, in seconds).
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-hide-after]").forEach(function (el) {
    const seconds = Number(el.getAttribute("data-hide-after")) || 30;
    window.setTimeout(function () {
      el.textContent = "(hidden: reveal it again if you still need it)";
      el.classList.add("hidden-secret");
      el.removeAttribute("data-hide-after");
    }, seconds * 1000);
  });
});
