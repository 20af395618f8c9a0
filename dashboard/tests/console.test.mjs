// The web console in Debian's Chromium against one real `wrenn up` with real microVMs.
// Run with `npm test` (make dashboard-test); see harness.mjs for the world it sets up.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { apiCall, launch, openPage, signIn, startServer, stopServer, tail } from './harness.mjs';

const PASSWORD = 'violet-harbour-lantern-42';
let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  if (server && process.exitCode) console.error(tail(server.dataDir));
  await stopServer(server);
});

describe('serving', () => {
  test('/ is the console with a strict policy; assets are hashed, cached and compressed', async () => {
    const r = await fetch(`${server.url}/`, { headers: { 'Accept-Encoding': 'br, gzip' } });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /text\/html/);
    const csp = r.headers.get('content-security-policy');
    assert.match(csp, /script-src 'self';/);
    assert.match(csp, /connect-src 'self'/);
    assert.equal(r.headers.get('cache-control'), 'no-cache');
    const html = await r.text();
    assert.doesNotMatch(html, /<script>(?!<\/)/, 'no inline script');
    const assets = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]);
    assert.ok(assets.length >= 2, html);
    for (const a of assets) {
      assert.match(a, /-[A-Za-z0-9_-]{8}\.(js|css)$/, 'content-hashed name');
      const br = await fetch(server.url + a, { headers: { 'Accept-Encoding': 'br' } });
      assert.equal(br.status, 200);
      assert.equal(br.headers.get('content-encoding'), 'br');
      assert.equal(br.headers.get('cache-control'), 'public, max-age=31536000, immutable');
      const gz = await fetch(server.url + a, { headers: { 'Accept-Encoding': 'gzip' } });
      assert.equal(gz.headers.get('content-encoding'), 'gzip');
    }
    // A deep link is the console too; the API keeps its JSON errors.
    const deep = await fetch(`${server.url}/capsules/cl-x`);
    assert.equal(deep.status, 200);
    assert.match(await deep.text(), /<div id="app">/);
    const api = await fetch(`${server.url}/v1/nope`);
    assert.equal(api.status, 404);
    assert.equal((await api.json()).error.code, 'not_found');
    const missing = await fetch(`${server.url}/assets/nope-12345678.js`);
    assert.equal(missing.status, 404);
  });
});

describe('capsules', () => {
  test('sign up, create a capsule in the dialog, see it listed, destroy it', async () => {
    const { page, foreign, violations, errors } = await openPage(browser.context, server);
    await page.goto(`${server.url}/`);
    await page.getByRole('button', { name: 'No account? Sign up' }).click();
    await page.getByLabel('Email').fill('ada@example.com');
    await page.getByLabel('Name').fill('Ada');
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign up' }).click();
    await page.getByRole('heading', { name: /Capsules/ }).waitFor();
    await page.getByText('No capsules yet.').waitFor();
    await page.locator('[data-stream="live"]').waitFor();

    await page.getByRole('button', { name: 'Create capsule' }).first().click();
    const dialog = page.getByRole('dialog', { name: 'Create a capsule' });
    await dialog.getByLabel('Memory (MiB)').fill('256');
    await dialog.getByLabel(/Metadata/).fill('purpose=browser-test');
    await dialog.getByRole('button', { name: 'Create capsule' }).click();
    const done = page.getByRole('dialog', { name: 'Capsule created' });
    await done.waitFor({ timeout: 120_000 });
    const id = (await done.locator('a code').textContent()).trim();
    assert.match(id, /^cl-/);
    await done.getByRole('button', { name: 'Done' }).click();
    const row = page.locator(`tr[data-capsule="${id}"]`);
    await row.getByText('running').waitFor();
    await row.getByText('256 MiB').waitFor();

    await row.getByRole('button', { name: `Destroy ${id}` }).click();
    const confirm = page.getByRole('dialog', { name: 'Destroy capsule' });
    await confirm.getByRole('button', { name: 'Destroy' }).click();
    await row.waitFor({ state: 'detached', timeout: 60_000 });
    assert.deepEqual(foreign, [], 'no request leaves the server');
    assert.deepEqual(violations, [], 'no CSP violation');
    assert.deepEqual(errors, [], 'no page error');
    await page.close();
  });

  test('a capsule made through the API appears in the open list without a reload', async () => {
    const { page } = await openPage(browser.context, server);
    await signIn(page, server, 'ada@example.com', PASSWORD);
    await page.locator('[data-stream="live"]').waitFor();
    const login = await apiCall(server, 'POST', '/v1/auth/login', {
      body: { email: 'ada@example.com', password: PASSWORD },
    });
    const key = await apiCall(server, 'POST', '/v1/api-keys', { token: login.json.token, body: { name: 'ci' } });
    assert.equal(key.status, 201, key.text);
    const made = await apiCall(server, 'POST', '/v1/capsules', { key: key.json.key, body: { memory_mb: 256 } });
    assert.equal(made.status, 201, made.text);
    const row = page.locator(`tr[data-capsule="${made.json.id}"]`);
    await row.waitFor({ timeout: 30_000 });
    const gone = await apiCall(server, 'DELETE', `/v1/capsules/${made.json.id}`, { key: key.json.key });
    assert.equal(gone.status, 204);
    await row.waitFor({ state: 'detached', timeout: 30_000 });
    await page.close();
  });
});
