// Live session control in Debian's Chromium: alice's web terminal in one context, an admin
// watching it in another (block, unblock, terminate), then the emergency panel. Run by
// crates/cofre/tests/it/console_browser.rs (`live_sessions_and_the_emergency_panel_in_a_real_browser`),
// which makes the world and checks the CLI, the API and the gateway at the steps this script
// marks with files in cfg.sync (and waits on the files it writes back).
//   node live.mjs CONFIG.json
// Prints one JSON line of results; any failure throws (exit status 1) naming the step.
import { chromium } from "playwright-core";
import { readFileSync, writeFileSync, existsSync, mkdirSync } from "node:fs";
import { createHmac } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
mkdirSync(cfg.screenshots, { recursive: true });
const results = { pages: [], cspViolations: [], axe: {} };

const browser = await chromium.launch({
  executablePath: cfg.chromium,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});

function step(name) { process.stderr.write(`[browser] ${name}\n`); }

async function waitForFile(name) {
  const file = path.join(cfg.sync, name);
  const deadline = Date.now() + 120000;
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`the test never wrote ${name}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// RFC 6238, one code per step (the server takes each step once).
let usedStep = cfg.admin.usedStep;
async function nextCode() {
  for (;;) {
    const now = Math.floor(Date.now() / 1000 / 30);
    const s = Math.max(usedStep + 1, now - 1);
    if (s <= now + 1) {
      usedStep = s;
      const msg = Buffer.alloc(8);
      msg.writeBigUInt64BE(BigInt(s));
      const h = createHmac("sha1", Buffer.from(cfg.admin.seed, "hex")).update(msg).digest();
      const off = h[h.length - 1] & 15;
      const bin = ((h[off] & 127) << 24) | (h[off + 1] << 16) | (h[off + 2] << 8) | h[off + 3];
      return String(bin % 1000000).padStart(6, "0");
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function open(role) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (/Content[ -]Security[ -]Policy|violates the following/i.test(m.text())) results.cspViolations.push(`${role}: ${m.text()}`);
  });
  page.on("pageerror", (e) => results.cspViolations.push(`${role}: page error ${e.message}`));
  return { context, page };
}

async function login(page, user, password, totp) {
  await page.goto(cfg.base + "/login");
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  if (totp) {
    await page.getByLabel("TOTP code").fill(await nextCode());
    await page.getByRole("button", { name: "Log in" }).click();
  }
  await page.waitForURL(cfg.base + "/");
}

async function check(page, role, name) {
  await page.evaluate(axeSource + "\n;0");
  const r = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const out = await axe.run(document, { resultTypes: ["violations"] });
    return out.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  const bad = r.filter((v) => v.impact === "serious" || v.impact === "critical");
  results.axe[`${role}:${name}`] = r;
  const file = path.join(cfg.screenshots, `live-${role}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  results.pages.push(file);
  if (bad.length) throw new Error(`axe on ${role} ${name}: ${JSON.stringify(bad)}`);
}

const screenText = (page, sel) => page.evaluate((s) => document.querySelector(s + " .xterm-rows")?.innerText || "", sel);
const waitScreen = (page, sel, text) => page.waitForFunction(
  ([s, t]) => (document.querySelector(s + " .xterm-rows")?.innerText || "").includes(t), [sel, text], { timeout: 60000 });

if (cfg.scenario === "moderated") {
  step("alice opens a moderated terminal");
  const user = await open("user");
  await login(user.page, cfg.user.name, cfg.user.password, false);
  await user.page.goto(cfg.base + "/terminal/db01/root");
  await user.page.getByRole("button", { name: "Connect" }).click();
  await user.page.locator("#terminal[data-session]").waitFor({ timeout: 60000 });
  const sessionId = await user.page.locator("#terminal").getAttribute("data-session");
  await user.page.locator("#term-status", { hasText: "waiting for a moderator" }).waitFor({ timeout: 30000 });
  await user.page.locator("#terminal .xterm").click();
  await user.page.keyboard.type("echo early-$((3*3))\n");

  step("the admin finds it held and watches: it opens");
  const admin = await open("admin");
  await login(admin.page, cfg.admin.name, cfg.admin.password, false);
  await admin.page.goto(cfg.base + "/sessions");
  await admin.page.getByRole("cell", { name: /moderated, held/ }).waitFor();
  await check(admin.page, "admin", "live-sessions-held");
  results.ranBeforeModerator = (await screenText(user.page, "#terminal")).includes("early-9");
  await admin.page.getByRole("link", { name: `Watch ${sessionId}` }).click();
  await admin.page.locator("#watch-state", { hasText: "you are its moderator" }).waitFor({ timeout: 30000 });
  await waitScreen(user.page, "#terminal", "early-9");
  await waitScreen(admin.page, "#watch-screen", "early-9");
  await user.page.locator("#term-status", { hasText: "a moderator is watching" }).waitFor({ timeout: 30000 });
  await check(admin.page, "admin", "watch-moderated");

  step("the moderator leaves: it pauses");
  await admin.page.goto(cfg.base + "/sessions");
  await user.page.locator("#term-status", { hasText: "the session is paused" }).waitFor({ timeout: 30000 });
  await user.page.locator("#terminal .xterm").click();
  await user.page.keyboard.type("echo during-$((5*5))\n");
  await admin.page.reload();
  await admin.page.getByRole("cell", { name: /moderated, held/ }).waitFor();
  results.ranWhilePaused = (await screenText(user.page, "#terminal")).includes("during-25");

  step("the moderator is back: it goes on");
  await admin.page.getByRole("link", { name: `Watch ${sessionId}` }).click();
  await waitScreen(user.page, "#terminal", "during-25");
  await waitScreen(admin.page, "#watch-screen", "during-25");
  await admin.page.getByLabel("Reason to terminate").fill("moderated test end");
  await admin.page.getByRole("button", { name: "Terminate", exact: true }).click();
  await user.page.locator("#terminal[data-ended]").waitFor({ timeout: 60000 });
  results.terminalEnded = await user.page.locator("#terminal").getAttribute("data-ended");
} else {
  step("alice opens a terminal");
  const user = await open("user");
  await login(user.page, cfg.user.name, cfg.user.password, false);
  await user.page.goto(cfg.base + "/terminal/db01/root");
  await user.page.getByRole("button", { name: "Connect" }).click();
  await user.page.locator("#terminal[data-session]").waitFor({ timeout: 60000 });
  const sessionId = await user.page.locator("#terminal").getAttribute("data-session");
  writeFileSync(path.join(cfg.sync, "session"), sessionId);

  step("the admin watches");
  const admin = await open("admin");
  await login(admin.page, cfg.admin.name, cfg.admin.password, true);
  await admin.page.goto(cfg.base + "/sessions");
  await admin.page.getByRole("link", { name: `Watch ${sessionId}` }).click();
  await admin.page.locator("#watch-screen[data-watching]").waitFor({ timeout: 30000 });
  await waitForFile("cli-watching");
  await user.page.locator("#terminal .xterm").click();
  await user.page.keyboard.type("echo live-$((40+2))\n");
  await waitScreen(user.page, "#terminal", "live-42");
  await waitScreen(admin.page, "#watch-screen", "live-42");
  await check(admin.page, "admin", "watch");

  step("the admin blocks input");
  await admin.page.getByLabel("Reason to lock").fill("browser test block");
  await admin.page.getByRole("button", { name: "Block input", exact: true }).click();
  await admin.page.locator("#watch-screen[data-watching]").waitFor({ timeout: 30000 });
  await admin.page.getByText("input blocked").first().waitFor();
  await user.page.locator("#term-status", { hasText: "browser test block" }).waitFor({ timeout: 30000 });
  await user.page.locator("#terminal .xterm").click();
  await user.page.keyboard.type("echo blocked-$((1+1))\n");
  await admin.page.goto(cfg.base + "/sessions");
  await admin.page.getByRole("cell", { name: /input blocked/ }).waitFor();
  await check(admin.page, "admin", "live-sessions-blocked");

  step("the admin unblocks");
  await admin.page.getByLabel("Reason to unlock").fill("browser test unblock");
  await admin.page.getByRole("button", { name: `Unblock input of ${sessionId}` }).click();
  await admin.page.waitForURL(cfg.base + "/sessions");
  await user.page.waitForFunction(() => !/browser test block/.test(document.getElementById("term-status").textContent), null, { timeout: 30000 });
  await user.page.locator("#terminal .xterm").click();
  await user.page.keyboard.type("echo after-$((2+2))\n");
  await waitScreen(user.page, "#terminal", "after-4");
  // What was typed while blocked was dropped: its answer never came, before or after.
  results.blockedNeverRan = !(await screenText(user.page, "#terminal")).includes("blocked-2");

  step("the admin terminates from the watch page");
  await admin.page.goto(cfg.base + `/sessions/${encodeURIComponent(sessionId)}/watch`);
  await admin.page.locator("#watch-screen[data-watching]").waitFor({ timeout: 30000 });
  await admin.page.getByLabel("Reason to terminate").fill("browser test end");
  await admin.page.getByRole("button", { name: "Terminate", exact: true }).click();
  await user.page.locator("#terminal[data-ended]").waitFor({ timeout: 60000 });
  results.terminalEnded = await user.page.locator("#terminal").getAttribute("data-ended");

  step("the admin terminates every live session");
  await user.page.goto(cfg.base + "/terminal/db01/root");
  await user.page.getByRole("button", { name: "Connect" }).click();
  await user.page.locator("#terminal[data-session]").waitFor({ timeout: 60000 });
  const second = await user.page.locator("#terminal").getAttribute("data-session");
  await admin.page.goto(cfg.base + "/emergency");
  await check(admin.page, "admin", "emergency");
  await admin.page.locator("#terminate-totp").fill(await nextCode());
  await admin.page.locator("#terminate-reason").fill("browser drill: all out");
  await admin.page.getByRole("button", { name: "Terminate all sessions" }).click();
  await admin.page.getByText(second).first().waitFor();
  await user.page.locator("#terminal[data-ended]").waitFor({ timeout: 60000 });
  results.terminateAllEnded = await user.page.locator("#terminal").getAttribute("data-ended");

  step("the admin locks the instance down");
  await admin.page.locator("#lockdown-totp").fill(await nextCode());
  await admin.page.locator("#lockdown-reason").fill("browser drill");
  await admin.page.getByRole("button", { name: "Lock the instance down" }).click();
  await admin.page.locator("#lockdown-status[data-locked=true]").waitFor();
  await check(admin.page, "admin", "emergency-locked");
  const refused = await user.page.goto(cfg.base + "/");
  results.consoleRefused = refused.status();
  await user.page.getByRole("heading", { name: "Cofre is locked down" }).waitFor();
  await check(user.page, "user", "locked-down");
  writeFileSync(path.join(cfg.sync, "locked-down"), "");
  await waitForFile("others-refused");

  step("the admin who locked it down cannot lift it; a second admin does");
  await admin.page.getByLabel("Reason to lift").fill("all clear");
  await admin.page.getByRole("button", { name: "Lift the lockdown" }).click();
  await admin.page.locator('[data-code="lockdown_needs_second_admin"]').waitFor();
  const admin2 = await open("admin2");
  await login(admin2.page, cfg.admin2.name, cfg.admin2.password, false);
  await admin2.page.goto(cfg.base + "/emergency");
  await admin2.page.getByLabel("Reason to lift").fill("all clear, checked");
  await admin2.page.getByRole("button", { name: "Lift the lockdown" }).click();
  await admin2.page.locator("#lockdown-status[data-locked=false]").waitFor();
  const back = await user.page.goto(cfg.base + "/");
  results.consoleBack = back.status();

}

await browser.close();
if (results.cspViolations.length) throw new Error(`CSP violations or page errors: ${results.cspViolations}`);
process.stdout.write(JSON.stringify(results) + "\n");
