// An invitee in Debian's Chromium with mailed codes (`[external] second_factor = "email"`,
// issue 18): the link's page (a password, no TOTP key), the code page, the code from the mail
// typed in, the home page, the login page again; axe-core on each page (no serious or critical
// violation). Run by crates/cofre/tests/it/gateway/invite.rs
// (`gateway::invite::an_invitee_with_mailed_codes_works_in_a_real_browser`), which makes the
// world and reads the mail: the browser writes `code-wanted` in cfg.sync, the test answers with
// the code in `code`.
//   node invite-email.mjs CONFIG.json
// Prints one JSON line of results; any failure throws (exit status 1) naming the step.
import { chromium } from "playwright-core";
import { readFileSync, writeFileSync, existsSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
mkdirSync(cfg.screenshots, { recursive: true });
const results = { cspViolations: [], axe: {} };

function step(name) { process.stderr.write(`[browser] ${name}\n`); }

const browser = await chromium.launch({
  executablePath: cfg.chromium,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
page.on("console", (m) => {
  if (/Content[ -]Security[ -]Policy|violates the following/i.test(m.text())) results.cspViolations.push(m.text());
});
page.on("pageerror", (e) => results.cspViolations.push(`page error ${e.message}`));

// axe on the page as it is, and a screenshot.
async function check(name) {
  await page.evaluate(axeSource + "\n;0");
  const r = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const out = await axe.run(document, { resultTypes: ["violations"] });
    return out.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  results.axe[name] = r;
  await page.screenshot({ path: path.join(cfg.screenshots, `invite-email-${name}.png`), fullPage: true });
  const bad = r.filter((v) => v.impact === "serious" || v.impact === "critical");
  if (bad.length) throw new Error(`axe on ${name}: ${JSON.stringify(bad)}`);
}

async function codeFromTheTest() {
  writeFileSync(path.join(cfg.sync, "code-wanted"), "");
  const file = path.join(cfg.sync, "code");
  const deadline = Date.now() + 60000;
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error("the test never gave the mailed code");
    await new Promise((r) => setTimeout(r, 50));
  }
  return readFileSync(file, "utf8").trim();
}

try {
  step("the link's page: a password, no TOTP key");
  await page.goto(cfg.link);
  await check("enrol");
  results.totpShown = (await page.locator("#totp-secret").count()) > 0;
  await page.getByLabel("New password").fill(cfg.password);
  await page.getByRole("button", { name: "Accept" }).click();

  step("the code page, and the code from the mail");
  await page.getByLabel("Code from the e-mail").waitFor({ timeout: 30000 });
  await check("code");
  await page.getByLabel("Code from the e-mail").fill("00000000");
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("alert").waitFor({ timeout: 30000 });
  results.wrongCode = await page.getByRole("alert").innerText();
  await check("code-refused");
  await page.getByLabel("Code from the e-mail").fill(await codeFromTheTest());
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { name: "Open a terminal" }).waitFor({ timeout: 30000 });
  results.links = await page.locator("ul.invited a").allInnerTexts();
  await check("home");

  step("logged out: the login page asks for no code");
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByLabel("E-mail address").waitFor({ timeout: 30000 });
  results.loginAsksCode = (await page.locator("#code").count()) > 0;
  await check("login");
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(results) + "\n");
