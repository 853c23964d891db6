// Logs in at the test OpenID provider (oidc-idp.mjs) in Debian's Chromium, as a person would:
// the provider's login form, then its consent page. Run by crates/cofre/tests/it/sso.rs.
//
//   node oidc-login.mjs CONFIG.json
//
// CONFIG: {"chromium", "start": URL (Cofre's "Log in with" link, or an authorization URL the
// CLI printed), "login", "password", "stopAt": optional URL prefix, "totp": optional code for
// the console's TOTP step after the provider}.
// With stopAt, the browser's request to that prefix is answered here and not sent (the test
// then holds the code itself, e.g. to replay it); without, the browser follows to the end.
// Prints {"final": URL, "text": the final page's text, "stopped": URL or null}.

import fs from 'node:fs';
import { chromium } from 'playwright-core';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const browser = await chromium.launch({
  executablePath: config.chromium,
  args: ['--no-sandbox', '--ignore-certificate-errors'],
});
let stopped = null;
let onStop;
const stoppedAt = new Promise((resolve) => { onStop = resolve; });
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  if (config.stopAt) {
    await page.route((url) => url.href.startsWith(config.stopAt), async (route) => {
      stopped = route.request().url();
      onStop();
      await route.fulfill({ status: 200, contentType: 'text/plain', body: 'stopped by the test' });
    });
  }
  await page.goto(config.start);
  await page.waitForSelector('input[name=login]', { timeout: 30000 }).catch(async (e) => {
    const text = await page.evaluate(() => document.body?.innerText ?? '').catch(() => '');
    throw new Error(`no login form at ${page.url()}: ${text}\n${e}`);
  });
  await page.fill('input[name=login]', config.login);
  await page.fill('input[name=password]', config.password);
  await page.click('button[type=submit]');
  // The consent page, unless the provider already has this grant.
  const consent = await page
    .waitForSelector('input[name=prompt][value=consent]', { state: 'attached', timeout: 10000 })
    .then(() => true)
    .catch(() => false);
  if (consent) {
    await page.click('button[type=submit]');
  }
  if (config.stopAt) {
    let timer;
    await Promise.race([
      stoppedAt,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no request to ${config.stopAt} within 30 s: at ${page.url()}`)), 30000);
      }),
    ]);
    clearTimeout(timer);
  } else {
    await page.waitForLoadState('load');
    if (config.totp) {
      await page.waitForSelector('input[name=totp_code]', { timeout: 15000 });
      await page.fill('input[name=totp_code]', config.totp);
      await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    }
    // The console's callback page moves on to the console by itself (Refresh).
    if (page.url().includes('/login/sso/callback')) {
      await page.waitForURL((u) => !u.href.includes('/login/sso/callback'), { timeout: 15000 })
        .catch(() => {});
    }
  }
  // Held back at stopAt, the page is still on its way to the stand-in answer: no text to read.
  const text = config.stopAt ? '' : await page.evaluate(() => document.body?.innerText ?? '');
  console.log(JSON.stringify({ final: page.url(), text, stopped }));
} finally {
  await browser.close();
}
