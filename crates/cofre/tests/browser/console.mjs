// Drives Debian's Chromium through the web console, one role's main flow after another, with a
// screenshot of each main page and axe-core on it. Run by crates/cofre/tests/it/console_browser.rs,
// which makes the world (server, target sshd, users) and passes it in a JSON file:
//   node console.mjs CONFIG.json
// Prints one JSON line of results; any failure throws (exit status 1) naming the step.
import { chromium } from "playwright-core";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
mkdirSync(cfg.screenshots, { recursive: true });
const results = { pages: [], dialogs: [], cspViolations: [], axe: {} };

const browser = await chromium.launch({
  executablePath: cfg.chromium,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});

function step(name) { process.stderr.write(`[browser] ${name}\n`); }

async function open(role) {
  // The server's certificate is self-signed; the test pins nothing here, the Rust side does.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("dialog", async (d) => { results.dialogs.push(`${role}: ${d.type()} ${d.message()}`); await d.dismiss(); });
  page.on("console", (m) => {
    if (/Content[ -]Security[ -]Policy|violates the following/i.test(m.text())) results.cspViolations.push(`${role}: ${m.text()}`);
  });
  page.on("pageerror", (e) => results.cspViolations.push(`${role}: page error ${e.message}`));
  return { context, page };
}

async function login(page, user, password) {
  await page.goto(cfg.base + "/login");
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL(cfg.base + "/");
}

// The page's markup once it stops navigating (history moves may still be loading).
async function settled(page) {
  for (let i = 0; i < 50; i++) {
    try {
      await page.waitForLoadState("load");
      return await page.content();
    } catch (e) {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error("the page never settled");
}

// A main page: screenshot kept, axe run (no serious or critical violation).
async function check(page, role, name) {
  await page.evaluate(axeSource + "\n;0");
  const r = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const out = await axe.run(document, { resultTypes: ["violations"] });
    return out.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  const bad = r.filter((v) => v.impact === "serious" || v.impact === "critical");
  results.axe[`${role}:${name}`] = r;
  const file = path.join(cfg.screenshots, `${role}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  results.pages.push(file);
  if (bad.length) throw new Error(`axe on ${role} ${name}: ${JSON.stringify(bad)}`);
}

// --- user: targets and how policy covers them, reveal (hidden after 30 s), request, terminal.
step("user logs in");
const user = await open("user");
await user.page.clock.install();
await login(user.page, cfg.user.name, cfg.user.password);
await check(user.page, "user", "home");
await user.page.goto(cfg.base + "/targets");
await user.page.getByRole("cell", { name: "db01", exact: true }).waitFor();
await check(user.page, "user", "targets");
await user.page.goto(cfg.base + "/targets/db01");
await check(user.page, "user", "target");
step("user reveals");
await user.page.getByRole("button", { name: "Reveal the secret" }).first().click();
const secret = user.page.locator("pre.secret");
await secret.waitFor();
if (!(await secret.textContent()).includes(cfg.secretFragment)) throw new Error("the revealed secret is not shown");
if (user.page.url().includes("secret") || user.page.url().includes(cfg.secretFragment)) throw new Error("a secret in the URL");
await check(user.page, "user", "reveal");
await user.page.clock.fastForward(31000);
await user.page.waitForFunction((frag) => !document.body.innerText.includes(frag), cfg.secretFragment);
results.secretHidden = true;
// Nor in the history: no entry's URL names it, back shows the target page without it, and
// forward (the reveal was a POST of a no-store page) does not bring it back.
if ((await user.page.evaluate(() => location.href)).includes(cfg.secretFragment)) throw new Error("a secret in the URL");
await user.page.goBack({ waitUntil: "load" });
if ((await settled(user.page)).includes(cfg.secretFragment)) throw new Error("the secret is back after going back");
try {
  await user.page.goForward({ waitUntil: "load" });
} catch (e) {
  // A resubmission the browser refuses (ERR_CACHE_MISS): nothing was kept to show.
}
if ((await settled(user.page)).includes(cfg.secretFragment)) throw new Error("the secret is in the history");
results.secretNotInHistory = true;
step("user requests access with markup in the reason");
await user.page.goto(cfg.base + "/targets/db02");
await user.page.getByText("Request access to root").click();
await user.page.getByLabel("Reason", { exact: true }).fill(cfg.xss);
await user.page.getByLabel("Duration (e.g. 1h)").fill("1h");
await user.page.getByRole("button", { name: "Send the request" }).click();
await user.page.waitForURL(/\/requests\/.+/);
const requestUrl = user.page.url();
await user.page.getByText(cfg.xss).first().waitFor();
await check(user.page, "user", "request");

// --- approver: the inbox, approve with a comment.
step("approver decides");
const approver = await open("approver");
await login(approver.page, cfg.approver.name, cfg.approver.password);
await approver.page.goto(cfg.base + "/inbox");
await approver.page.getByText(cfg.xss).first().waitFor();
await check(approver.page, "approver", "inbox");
await approver.page.locator("table a[href^='/requests/']").first().click();
await approver.page.getByLabel("Comment (required to deny)").fill("ok, <b>go</b> ahead");
await approver.page.getByRole("button", { name: "Approve" }).click();
await approver.page.getByText("approved").first().waitFor();
await check(approver.page, "approver", "decided");
await user.page.goto(requestUrl);
await user.page.getByText("grant active").first().waitFor();

// --- the web terminal: type, see the output.
step("user opens a terminal");
await user.page.clock.resume();
await user.page.goto(cfg.base + "/terminal/db01/root");
await user.page.getByRole("button", { name: "Connect" }).click();
await user.page.locator("#terminal[data-session]").waitFor({ timeout: 60000 });
const sessionId = await user.page.locator("#terminal").getAttribute("data-session");
await user.page.locator("#terminal .xterm").click();
await user.page.keyboard.type("echo web-$((40+2))\n");
await user.page.waitForFunction(() => (document.querySelector("#terminal .xterm-rows")?.innerText || "").includes("web-42"), null, { timeout: 60000 });
await check(user.page, "user", "terminal");

// --- admin: the live list, terminate; users, audit, Orbit.
step("admin terminates");
const admin = await open("admin");
await login(admin.page, cfg.admin.name, cfg.admin.password);
await admin.page.goto(cfg.base + "/sessions");
await admin.page.getByRole("cell", { name: sessionId, exact: true }).waitFor();
await admin.page.getByRole("cell", { name: "web-shell", exact: true }).first().waitFor();
await check(admin.page, "admin", "live-sessions");
await admin.page.getByLabel("Reason").first().fill("browser test");
await admin.page.getByRole("button", { name: `Terminate ${sessionId}` }).click();
await admin.page.waitForURL(cfg.base + "/sessions");
await user.page.locator("#terminal[data-ended]").waitFor({ timeout: 60000 });
results.terminalEnded = await user.page.locator("#terminal").getAttribute("data-ended");
for (const [p, name] of [["/users", "users"], ["/groups", "groups"], ["/policies", "policies"], ["/policies/r/edit", "policy-edit"], ["/targets", "targets"], ["/grants", "grants"], ["/audit", "audit"], ["/orbit", "orbit"]]) {
  await admin.page.goto(cfg.base + p);
  await check(admin.page, "admin", name);
}
step("admin takes a snapshot");
await admin.page.goto(cfg.base + "/orbit");
await admin.page.getByRole("button", { name: "Take a snapshot now" }).click();
await admin.page.waitForURL(/\/orbit\/snapshots\/jobs\/.+/);
await admin.page.getByText("Phase: done").waitFor({ timeout: 60000 });
await check(admin.page, "admin", "orbit-snapshot");
await admin.page.goto(cfg.base + "/audit?actor=" + encodeURIComponent(cfg.admin.name) + "&action=auth.*");
await admin.page.getByRole("cell", { name: "auth.login", exact: true }).first().waitFor();
await check(admin.page, "admin", "audit-search");
await admin.page.getByRole("button", { name: "Log out" }).click();
await admin.page.waitForURL(cfg.base + "/login");

// The user's own pages: requests, and two-factor enrolment.
for (const [p, name] of [["/requests", "requests"], ["/totp", "totp"]]) {
  await user.page.goto(cfg.base + p);
  await check(user.page, "user", name);
}

// --- auditor: the trail (verify), recordings, the player.
step("auditor replays");
const auditor = await open("auditor");
await login(auditor.page, cfg.auditor.name, cfg.auditor.password);
await auditor.page.goto(cfg.base + "/audit?action=session.*");
await check(auditor.page, "auditor", "audit");
await auditor.page.getByRole("button", { name: "Verify the chain" }).click();
await auditor.page.getByText("Intact:").waitFor();
await auditor.page.goto(cfg.base + "/recordings");
await check(auditor.page, "auditor", "recordings");
await auditor.page.goto(cfg.base + "/recordings/" + sessionId);
await auditor.page.locator("#player[data-state=paused]").waitFor({ timeout: 30000 });
const markers = await auditor.page.locator("#markers button").allTextContents();
if (!markers.some((m) => m.includes("end:"))) throw new Error(`no end marker: ${markers}`);
await auditor.page.getByLabel("Speed").selectOption("8");
await auditor.page.getByRole("button", { name: "Play" }).click();
await auditor.page.locator("#player[data-state=ended]").waitFor({ timeout: 60000 });
await auditor.page.waitForFunction(() => (document.querySelector("#screen .xterm-rows")?.innerText || "").includes("web-42"));
// Seek back to the start and jump to a marker.
await auditor.page.locator("#seek").fill("0");
await auditor.page.locator("#markers button").last().click();
results.markers = markers;
await check(auditor.page, "auditor", "player");

// A page the auditor may not open is refused in the browser too.
const refused = await auditor.page.goto(cfg.base + "/users");
results.auditorUsersStatus = refused.status();

// --- vendor support: asks for a grant (markup in the reason); a customer admin approves it.
step("support asks for a grant");
const support = await open("support");
await login(support.page, cfg.support.name, cfg.support.password);
await support.page.goto(cfg.base + "/support");
await check(support.page, "support", "support");
await support.page.getByLabel(/^diagnostics/).check();
await support.page.getByLabel("Reason", { exact: true }).fill(cfg.xss);
await support.page.getByLabel("Ticket", { exact: true }).fill("TICKET-881");
await support.page.getByLabel("Duration (e.g. 2h; default 8h)").fill("1h");
await support.page.getByRole("button", { name: "Ask for the grant" }).click();
await support.page.waitForURL(/\/support\/.+/);
const supportUrl = support.page.url();
await support.page.getByText(cfg.xss).first().waitFor();
await check(support.page, "support", "support-request");
step("admin approves the support grant");
const customer = await open("admin");
await login(customer.page, cfg.admin.name, cfg.admin.password);
await customer.page.goto(cfg.base + "/support");
await customer.page.getByText(cfg.xss).first().waitFor();
await check(customer.page, "admin", "support");
await customer.page.goto(supportUrl);
await customer.page.getByLabel("Comment (required to deny)").fill("ok");
await customer.page.getByRole("button", { name: "Approve" }).click();
await customer.page.locator("#support-state", { hasText: "approved" }).waitFor();
await check(customer.page, "admin", "support-decided");
// Under the grant, support's pages are audited; the customer sees them in the grant's activity.
await support.page.goto(cfg.base + "/");
await customer.page.goto(supportUrl + "/activity");
await customer.page.getByRole("cell", { name: "support.call", exact: true }).first().waitFor();
await check(customer.page, "admin", "support-activity");
results.supportApproved = true;

await browser.close();
if (results.dialogs.length) throw new Error(`dialogs fired: ${results.dialogs}`);
if (results.cspViolations.length) throw new Error(`CSP violations or page errors: ${results.cspViolations}`);
process.stdout.write(JSON.stringify(results) + "\n");
