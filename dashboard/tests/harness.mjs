// The browser tests' world: one real `wrenn up` (fresh data folder under /var/tmp, network
// slots 4100-4199, sign-up open, the embedded database) and Debian's Chromium driven by
// playwright-core (no browser download). WRENN_BIN names the binary (default
// $CARGO_TARGET_DIR/debug/wrenn); WRENN_IMAGES the built guest images (hard-linked into the
// data folder's own images folder). Screenshots go to
// DASHBOARD_SHOTS (default /var/tmp/dashboard-shots).

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, openSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const SHOTS = process.env.DASHBOARD_SHOTS ?? '/var/tmp/dashboard-shots';
const TARGET = process.env.CARGO_TARGET_DIR ?? '/var/tmp/wrenn/target';
const BIN = process.env.WRENN_BIN ?? join(TARGET, 'debug', 'wrenn');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * `dataDir/images` (where `wrenn up` keeps images by default) with every built template of
 * `shared` (a folder with `inputs.sha256`) hard-linked in: the snapshot templates the tests
 * make go with the data folder instead of staying in the shared one. `shared` itself when the
 * two are on different filesystems (no hard links across them).
 */
function ownImages(shared, dataDir) {
  if (statSync(shared).dev !== statSync(dataDir).dev) return shared;
  const own = join(dataDir, 'images');
  mkdirSync(own, { mode: 0o700 });
  for (const name of readdirSync(shared).sort()) {
    const src = join(shared, name);
    if (existsSync(join(src, 'inputs.sha256'))) execFileSync('cp', ['-al', src, join(own, name)]);
  }
  return own;
}

/** A running `wrenn up`. */
export async function startServer() {
  const dataDir = mkdtempSync('/var/tmp/dashboard-data-');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const log = openSync(join(dataDir, 'server.log'), 'a');
  const env = { ...process.env };
  for (const k of ['WRENN_DIR', 'WRENN_LISTEN', 'DATABASE_URL', 'WRENN_API_KEY', 'WRENN_BASE_URL']) delete env[k];
  Object.assign(env, {
    WRENN_IMAGES: ownImages(process.env.WRENN_IMAGES ?? '/var/tmp/wrenn/images', dataDir),
    WRENN_AGENT_SLOTS: '4100-4199',
    WRENN_TEMPLATES: process.env.WRENN_TEMPLATES ?? 'minimal',
    WRENN_SIGNUP: 'open',
  });
  const proc = spawn(BIN, ['up', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`], {
    env,
    stdio: ['ignore', log, log],
    detached: true,
  });
  // A test run that is interrupted takes its server with it.
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.once(sig, () => {
      if (proc.exitCode === null) proc.kill('SIGINT');
      process.exit(130);
    });
  }
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`wrenn up exited (${proc.exitCode}): ${tail(dataDir)}`);
    try {
      const r = await fetch(`${url}/health`);
      if (r.ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`wrenn up did not answer /health: ${tail(dataDir)}`);
    await sleep(250);
  }
  const adminKey = readFileSync(join(dataDir, 'admin-api-key'), 'utf8').trim();
  const adminPassword = readFileSync(join(dataDir, 'admin-password'), 'utf8').trim();
  return { proc, url, dataDir, adminKey, adminPassword };
}

export function tail(dataDir) {
  try {
    return readFileSync(join(dataDir, 'server.log'), 'utf8').slice(-4000);
  } catch {
    return '';
  }
}

/** SIGINT, then the data folder goes (kept with DASHBOARD_KEEP_DATA=1). */
export async function stopServer(s) {
  if (!s) return;
  if (s.proc.exitCode === null) {
    s.proc.kill('SIGINT');
    const deadline = Date.now() + 30_000;
    while (s.proc.exitCode === null && Date.now() < deadline) await sleep(200);
    if (s.proc.exitCode === null) s.proc.kill('SIGKILL');
  }
  if (process.env.DASHBOARD_KEEP_DATA !== '1') rmSync(s.dataDir, { recursive: true, force: true });
}

/** Debian's Chromium, headless, with a fresh profile. */
export async function launch() {
  const profile = mkdtempSync('/var/tmp/dashboard-chromium-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1280, height: 800 },
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** A page that records every request leaving the server's origin and every CSP violation. */
export async function openPage(context, server) {
  const page = await context.newPage();
  const foreign = [];
  const violations = [];
  const errors = [];
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(server.url) && !u.startsWith('data:') && !u.startsWith('blob:')) foreign.push(u);
  });
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) violations.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  return { page, foreign, violations, errors };
}

/** JSON API call with a user token or key. */
export async function apiCall(server, method, path, { token, key, body, team, cookie, csrf, origin } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (key) headers['X-API-Key'] = key;
  if (team) headers['X-Team-Id'] = team;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (cookie) headers.Cookie = cookie;
  if (csrf) headers['X-CSRF-Token'] = csrf;
  if (origin) headers.Origin = origin;
  const r = await fetch(server.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: r.status, json, text };
}

export async function signUpApi(server, email, password) {
  await apiCall(server, 'POST', '/v1/auth/signup', { body: { email, password, name: email.split('@')[0] } });
  const r = await apiCall(server, 'POST', '/v1/auth/login', { body: { email, password } });
  if (r.status !== 200) throw new Error(`login ${email}: ${r.status} ${r.text}`);
  return r.json.token;
}

/** Signs in through the console's own form (any session cookie of the browser is dropped
 * first: the pages of one test browser share it). */
export async function signIn(page, server, email, password) {
  await page.context().clearCookies();
  await page.goto(`${server.url}/login`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: /Capsules/ }).waitFor();
}

export function shotsDir() {
  mkdirSync(SHOTS, { recursive: true });
  return SHOTS;
}

export { sleep };

/** Client-side navigation (no reload: quicker, and the page's state is kept). */
export async function go(page, path) {
  await page.evaluate((p) => {
    history.pushState(null, '', p);
    dispatchEvent(new PopStateEvent('popstate'));
  }, path);
}

/** The visible text of terminal `n`, one string per row. */
export async function terminalRows(page, n = 1) {
  return page.locator(`[data-terminal="${n}"] .xterm-rows > div`).allTextContents();
}

export async function waitForRow(page, n, predicate, timeout = 30_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const rows = (await terminalRows(page, n)).map((r) => r.replace(/\u00a0/g, ' ').trimEnd());
    const hit = rows.find(predicate);
    if (hit !== undefined) return hit;
    if (Date.now() > deadline) throw new Error(`terminal ${n}: no matching row in:\n${rows.join('\n')}`);
    await sleep(50);
  }
}

/** Runs `fn(ctx)` on a fresh page; on failure saves a screenshot and the page's text. */
export async function withPage(context, server, name, fn) {
  const ctx = await openPage(context, server);
  try {
    await fn(ctx);
  } catch (e) {
    const dir = shotsDir();
    const file = join(dir, `failed-${name.replace(/[^a-z0-9]+/gi, '-')}`);
    await ctx.page.screenshot({ path: `${file}.png`, fullPage: true }).catch(() => {});
    const text = await ctx.page.locator('body').innerText().catch(() => '');
    throw new Error(`${e.message}\n--- page (${ctx.page.url()}; ${file}.png) ---\n${text.slice(0, 3000)}\n--- errors ---\n${ctx.errors.join('\n')}`);
  } finally {
    await ctx.page.close().catch(() => {});
  }
}
