// An invitee in Debian's Chromium (issue 18): the invitation mail's link on the external
// listener, a password and TOTP enrolment, the web terminal to the invited target, and every
// other place tried and refused. Run by crates/cofre/tests/it/gateway/invite.rs
// (`gateway::invite::an_invitee_works_in_a_real_browser`), which makes the world, reads the mail and checks the
// recording; the steps it waits on are files in cfg.sync.
//   node invite.mjs CONFIG.json
// Prints one JSON line of results; any failure throws (exit status 1) naming the step.
import { chromium } from "playwright-core";
import { readFileSync, writeFileSync, existsSync, mkdirSync } from "node:fs";
import { createHmac } from "node:crypto";
import path from "node:path";

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
mkdirSync(cfg.screenshots, { recursive: true });
const results = { cspViolations: [], refused: {} };

function step(name) { process.stderr.write(`[browser] ${name}\n`); }

function base32(s) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0, value = 0;
  const out = [];
  for (const c of s.replace(/=+$/, "").toUpperCase()) {
    value = (value << 5) | alphabet.indexOf(c);
    bits += 5;
    if (bits >= 8) { out.push((value >>> (bits - 8)) & 255); bits -= 8; }
  }
  return Buffer.from(out);
}

// RFC 6238 at a step.
function code(seed, s) {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(s));
  const h = createHmac("sha1", seed).update(msg).digest();
  const off = h[h.length - 1] & 15;
  const bin = ((h[off] & 127) << 24) | (h[off + 1] << 16) | (h[off + 2] << 8) | h[off + 3];
  return String(bin % 1000000).padStart(6, "0");
}

const browser = await chromium.launch({
  executablePath: cfg.chromium,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
page.on("console", (m) => {
  if (/Content[ -]Security[ -]Policy|violates the following/i.test(m.text())) results.cspViolations.push(m.text());
});
const screenText = () => page.evaluate(() => document.querySelector("#terminal .xterm-rows")?.innerText || "");
const waitScreen = (text) => page.waitForFunction(
  (t) => (document.querySelector("#terminal .xterm-rows")?.innerText || "").includes(t), text, { timeout: 60000 });

try {
  step("the invitee opens the mail's link and enrols");
  await page.goto(cfg.link);
  await page.screenshot({ path: path.join(cfg.screenshots, "invite-enrol.png") });
  const secret = (await page.locator("#totp-secret").innerText()).trim();
  await page.getByLabel("New password").fill(cfg.password);
  await page.getByLabel("Authenticator code").fill(code(base32(secret), Math.floor(Date.now() / 30000)));
  await page.getByRole("button", { name: "Accept" }).click();
  await page.getByRole("heading", { name: "Open a terminal" }).waitFor({ timeout: 30000 });
  results.links = await page.locator("ul.invited a").allInnerTexts();
  await page.screenshot({ path: path.join(cfg.screenshots, "invite-home.png") });

  step("the invited terminal");
  await page.getByRole("link", { name: "root@db01" }).click();
  await page.getByRole("button", { name: "Connect" }).click();
  await page.locator("#terminal[data-session]").waitFor({ timeout: 60000 });
  results.session = await page.locator("#terminal").getAttribute("data-session");
  await page.locator("#terminal .xterm").click();
  await page.keyboard.type("echo browser-$((20+22))\n");
  await waitScreen("browser-42");
  await page.screenshot({ path: path.join(cfg.screenshots, "invite-terminal.png") });

  step("everything else is refused");
  const other = await context.newPage();
  for (const p of ["/terminal/db02/root", "/api/v1/targets", "/api/v1/openapi.json", "/targets", "/users", "/orbit", "/audit"]) {
    const r = await other.goto(cfg.base + p);
    if (p.startsWith("/terminal/")) {
      await other.getByRole("button", { name: "Connect" }).click({ timeout: 30000 })
        .catch(async (e) => { throw new Error(`${p} (${r.status()}): ${await other.locator("body").innerText()}: ${e}`); });
      await other.waitForFunction(() => document.querySelector("#terminal")?.hasAttribute("data-ended")
        || /ended|Disconnected/.test(document.querySelector("#term-status")?.textContent || ""), null, { timeout: 30000 })
        .catch(async (e) => { throw new Error(`${p}: ${await other.locator("#term-status").innerText()}: ${e}`); });
      results.refused[p] = (await other.locator("#terminal").getAttribute("data-ended"))
        || await other.locator("#term-status").innerText();
    } else {
      results.refused[p] = r.status();
    }
  }
  const reused = await other.goto(cfg.link);
  results.reusedLink = reused.status();
  await other.close();
  // Only now may the test revoke: every refusal above must be judged while the invitation holds
  // (a revoked one would send each page to the login form instead).
  writeFileSync(path.join(cfg.sync, "checked"), "");

  step("revoked: the terminal ends");
  const deadline = Date.now() + 60000;
  while (!existsSync(path.join(cfg.sync, "revoked"))) {
    if (Date.now() > deadline) throw new Error("the test never revoked the invitation");
    await new Promise((r) => setTimeout(r, 50));
  }
  await page.locator("#terminal[data-ended]").waitFor({ timeout: 30000 });
  results.ended = await page.locator("#terminal").getAttribute("data-ended");
  results.screen = await screenText();
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(results) + "\n");
