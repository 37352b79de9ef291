// Drives Debian's Chromium (through playwright-core, never a downloaded browser) through a
// sign-in at Portcullis and the real oidc-provider, and prints what it saw as one JSON
// line. Configured by one JSON argument:
//
//   node login.mjs '{"start": "http://127.0.0.1:8080/wiki", "button": "Log in with Acme SSO",
//                    "user": "alice", "landing": "http://127.0.0.1:8080/wiki",
//                    "screenshot": "/path/login-page.png"}'
//
// "button" is omitted when the start page sends the browser straight to the provider.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.argv[2]);
const profile = mkdtempSync(join(tmpdir(), 'portcullis-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const result = { requests: [], consoleErrors: [] };
try {
  const page = context.pages()[0] ?? await context.newPage();
  page.on('request', (r) => result.requests.push(r.url()));
  page.on('console', (m) => { if (m.type() === 'error') result.consoleErrors.push(m.text()); });
  await page.goto(cfg.start);
  if (cfg.button) {
    result.title = await page.title();
    result.heading = await page.locator('h1').innerText();
    result.buttons = await page.getByRole('link').allInnerTexts();
    result.scripts = await page.locator('script').count();
    result.logoAlt = await page.locator('img.logo').getAttribute('alt').catch(() => null);
    // Keyboard users reach the buttons in order, and see where they are.
    await page.keyboard.press('Tab');
    result.firstFocus = await page.evaluate(() => document.activeElement?.textContent);
    result.focusOutline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    const first = page.getByRole('link').first();
    result.buttonColors = await first.evaluate((el) => {
      const s = getComputedStyle(el);
      return [s.color, s.backgroundColor];
    });
    if (cfg.screenshot) await page.screenshot({ path: cfg.screenshot, fullPage: true });
    // Everything the sign-in page needed (the provider's own pages load other things).
    await page.waitForLoadState('networkidle');
    result.pageRequests = [...result.requests];
    result.pageConsoleErrors = [...result.consoleErrors];
    await page.getByRole('link', { name: cfg.button }).click();
  }
  // The provider's own login and consent forms.
  await page.waitForSelector('input[name="login"]');
  result.providerUrl = page.url();
  await page.fill('input[name="login"]', cfg.user);
  await page.fill('input[name="password"]', 'anything');
  await Promise.all([page.waitForLoadState(), page.locator('button[type="submit"]').first().click()]);
  if (await page.locator('input[name="prompt"][value="consent"]').count()) {
    await page.locator('button[type="submit"]').first().click();
  }
  await page.waitForURL((u) => u.toString() === cfg.landing, { timeout: 15000 });
  result.landed = page.url();
  result.body = await page.locator('body').innerText();
} catch (e) {
  result.error = String(e);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
