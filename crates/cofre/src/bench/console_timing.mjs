// `cofre-bench console`'s browser part: each page loaded ROUNDS times in Debian's Chromium (after
// one unmeasured load), logged in through the console's own form, and the Navigation Timing
// API's figures from the start of the navigation: first byte, DOMContentLoaded, load. The
// benchmark writes this file to a scratch dir and runs it with a JSON config:
//   node console_timing.mjs CONFIG.json
// {chromium, modules (a node_modules with playwright-core), base, password, rounds,
//  pages: [{role, path}]}. Prints one JSON line: [{role, path, ttfb, dcl, load, status}] (ms).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const require = createRequire(cfg.modules + "/");
const { chromium } = require("playwright-core");

const browser = await chromium.launch({
  executablePath: cfg.chromium,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const median = (xs) => {
  const v = [...xs].sort((a, b) => a - b);
  return v[Math.floor((v.length - 1) / 2)];
};
const out = [];
try {
  const contexts = new Map();
  for (const p of cfg.pages) {
    let page = contexts.get(p.role);
    if (!page) {
      // The server's certificate is self-signed; the Rust side pins it, this only measures.
      const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
      page = await context.newPage();
      await page.goto(cfg.base + "/login");
      await page.getByLabel("User name").fill(p.role);
      await page.getByLabel("Password").fill(cfg.password);
      await page.getByRole("button", { name: "Log in" }).click();
      await page.waitForURL(cfg.base + "/");
      contexts.set(p.role, page);
    }
    const t = [];
    let status = 0;
    for (let i = 0; i <= cfg.rounds; i++) {
      const r = await page.goto(cfg.base + p.path, { waitUntil: "load", timeout: 60000 });
      status = r ? r.status() : 0;
      const n = await page.evaluate(() => {
        const e = performance.getEntriesByType("navigation")[0];
        return { ttfb: e.responseStart - e.startTime, dcl: e.domContentLoadedEventEnd - e.startTime, load: e.loadEventStart - e.startTime };
      });
      if (i > 0) t.push(n);
    }
    out.push({
      role: p.role, path: p.path, status,
      ttfb: median(t.map((x) => x.ttfb)), dcl: median(t.map((x) => x.dcl)), load: median(t.map((x) => x.load)),
    });
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
