// The web console in Debian's Chromium against one real `wrenn up` with real microVMs.
// Run with `npm test` (make dashboard-test); see harness.mjs for the world it sets up.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { apiCall, go, launch, openPage, withPage, signIn, sleep, startServer, stopServer, tail, waitForRow, shotsDir } from './harness.mjs';

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
    await withPage(browser.context, server, 'create-destroy', async ({ page, foreign, violations, errors }) => {
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
    });
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

describe('session', () => {
  test('a reload keeps you signed in (HttpOnly cookie, nothing in storage); a forged POST is refused; sign-out ends it on the server', async () => {
    await withPage(browser.context, server, 'session', async ({ page, errors }) => {
      await signIn(page, server, 'ada@example.com', PASSWORD);
      await go(page, '/keys');
      await page.getByRole('heading', { name: 'API keys' }).waitFor();
      // A reload (and a deep link typed anew) stays signed in, in the same page.
      await page.reload();
      await page.getByRole('heading', { name: 'API keys' }).waitFor();
      await page.goto(`${server.url}/audit`);
      await page.getByRole('heading', { name: 'Audit log' }).waitFor();
      assert.equal(new URL(page.url()).pathname, '/audit');

      const cookies = await page.context().cookies(server.url);
      const c = cookies.find((x) => x.name === 'wrenn_session');
      assert.ok(c, JSON.stringify(cookies));
      assert.equal(c.httpOnly, true);
      assert.equal(c.sameSite, 'Strict');
      assert.equal(c.secure, false, 'plain HTTP here: not Secure (it is over TLS)');
      const seen = await page.evaluate(() => ({
        cookie: document.cookie,
        local: Object.keys(localStorage),
        session: Object.entries(sessionStorage),
      }));
      assert.doesNotMatch(seen.cookie, /wrenn_session/, 'no script can read the cookie');
      assert.deepEqual(seen.local, [], 'nothing in localStorage');
      for (const [, v] of seen.session) assert.ok(!v.includes(c.value), 'no token in sessionStorage');

      // A cross-site style POST: the cookie, no CSRF token. Refused with the error body, from
      // another origin and from this page's own script alike; nothing is made.
      const cookie = `wrenn_session=${c.value}`;
      const forged = await apiCall(server, 'POST', '/v1/api-keys', {
        cookie,
        origin: 'https://evil.example',
        body: { name: 'forged' },
      });
      assert.equal(forged.status, 403, forged.text);
      assert.equal(forged.json.error.code, 'forbidden');
      assert.match(forged.json.error.message, /CSRF/);
      const inPage = await page.evaluate(async () => {
        const r = await fetch('/v1/api-keys', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ name: 'no-token' }),
        });
        return { status: r.status, body: await r.json() };
      });
      assert.equal(inPage.status, 403);
      assert.equal(inPage.body.error.code, 'forbidden');
      const keys = await apiCall(server, 'GET', '/v1/api-keys', { cookie });
      assert.equal(keys.status, 200, 'reads by cookie need no token');
      assert.ok(!keys.json.some((k) => k.name === 'forged' || k.name === 'no-token'), keys.text);

      // Sign out: the session ends on the server and the cookie goes.
      await page.getByRole('button', { name: 'Sign out' }).click();
      await page.getByRole('heading', { name: 'Sign in to Wrenn' }).waitFor();
      assert.equal((await page.context().cookies(server.url)).filter((x) => x.name === 'wrenn_session').length, 0);
      const after = await apiCall(server, 'GET', '/v1/auth/session', { cookie });
      assert.equal(after.status, 401, 'the old cookie no longer works');
      await page.reload();
      await page.getByRole('heading', { name: 'Sign in to Wrenn' }).waitFor();
      assert.deepEqual(errors, []);
    });
  });
});

/** Ada's API key (made once), for setting things up through the API. */
let adaKey;
async function key() {
  if (adaKey) return adaKey;
  const login = await apiCall(server, 'POST', '/v1/auth/login', { body: { email: 'ada@example.com', password: PASSWORD } });
  const k = await apiCall(server, 'POST', '/v1/api-keys', { token: login.json.token, body: { name: 'setup' } });
  adaKey = k.json.key;
  return adaKey;
}

async function capsuleViaApi() {
  const made = await apiCall(server, 'POST', '/v1/capsules', { key: await key(), body: { memory_mb: 256 } });
  assert.equal(made.status, 201, made.text);
  return made.json.id;
}

describe('capsule page', () => {
  test('terminal: a command answers, resize reaches the shell, a dropped socket reattaches', async () => {
    const id = await capsuleViaApi();
    await withPage(browser.context, server, 'terminal', async ({ page, violations, errors }) => {
      // Sockets to the terminal go through a relay the test can cut (a network drop).
      // The relay also times a keystroke's echo between the browser's socket and the server:
      // the local server plus the capsule's round trip, without the browser's rendering.
      const relays = [];
      const probe = { text: null, sentAt: null, ms: [] };
      const has = (m) => probe.text !== null && typeof m !== 'string' && Buffer.from(m).toString('latin1').includes(probe.text);
      await page.routeWebSocket(/\/pty$/, (ws) => {
        const upstream = ws.connectToServer();
        ws.onMessage((m) => {
          if (has(m) && probe.sentAt === null) probe.sentAt = performance.now();
          upstream.send(m);
        });
        upstream.onMessage((m) => {
          if (probe.sentAt !== null && has(m)) {
            probe.ms.push(performance.now() - probe.sentAt);
            probe.sentAt = null;
          }
          ws.send(m);
        });
        relays.push({ ws, upstream });
      });
      await signIn(page, server, 'ada@example.com', PASSWORD);
      await go(page, `/capsules/${id}?tab=terminal`);
      await page.locator('[data-pty-state="open"]').waitFor({ timeout: 60_000 });
      await page.locator('[data-terminal="1"]').click();
      await page.keyboard.type('echo hi-from-browser\n');
      await waitForRow(page, 1, (r) => r.trim() === 'hi-from-browser');

      // One keystroke's echo: the local server plus the capsule's round trip (a figure, not a test).
      const t0 = Date.now();
      probe.text = 'Z';
      await page.keyboard.type('Z');
      await waitForRow(page, 1, (r) => r.endsWith('Z'), 10_000);
      const onScreen = Date.now() - t0;
      await page.keyboard.press('Backspace');
      await sleep(200);
      for (const ch of 'QJXKV') {
        probe.text = ch;
        await page.keyboard.type(ch);
        await waitForRow(page, 1, (r) => r.endsWith(ch), 10_000);
        await page.keyboard.press('Backspace');
        await sleep(200);
      }
      probe.text = null;
      const ms = [...probe.ms].sort((a, b) => a - b);
      const median = ms.length ? ms[Math.floor(ms.length / 2)].toFixed(1) : 'n/a';
      console.log(`FIGURE terminal keystroke echo: ${onScreen} ms on screen (Playwright, 50 ms polling); socket round trip (server + capsule) median ${median} ms over ${ms.length}: ${ms.map((x) => x.toFixed(1)).join(', ')}`);

      await page.keyboard.type('stty size\n');
      const before = await waitForRow(page, 1, (r) => /^\d+ \d+$/.test(r.trim()));
      await page.setViewportSize({ width: 700, height: 600 });
      await sleep(500);
      await page.keyboard.type('clear; stty size\n');
      const after = await waitForRow(page, 1, (r) => /^\d+ \d+$/.test(r.trim()) && r.trim() !== before.trim());
      assert.ok(Number(after.trim().split(' ')[1]) < Number(before.trim().split(' ')[1]), `${before} -> ${after}`);
      await page.setViewportSize({ width: 1280, height: 800 });

      // Cut the socket: the console reattaches by tag and the screen comes back.
      await page.keyboard.type('echo before-drop\n');
      await waitForRow(page, 1, (r) => r.trim() === 'before-drop');
      assert.ok(relays.length >= 1);
      await relays[relays.length - 1].ws.close({ code: 4000, reason: 'test drop' });
      await page.locator('[data-pty-state="reconnecting"]').waitFor({ timeout: 10_000 });
      await page.locator('[data-pty-state="open"]').waitFor({ timeout: 30_000 });
      assert.ok(relays.length >= 2, 'a second socket was opened');
      await waitForRow(page, 1, (r) => r.trim() === 'before-drop'); // replayed
      await page.locator('[data-terminal="1"]').click();
      await page.keyboard.type('echo after-drop\n');
      await waitForRow(page, 1, (r) => r.trim() === 'after-drop');

      // A second tab is a second shell.
      await page.getByRole('button', { name: '+ New terminal' }).click();
      await page.locator('[data-terminal="2"]').waitFor();
      await page.locator('[data-pty-state="open"]').nth(1).waitFor({ timeout: 30_000 });
      assert.deepEqual(violations, []);
      assert.deepEqual(errors, []);
    });
    await apiCall(server, 'DELETE', `/v1/capsules/${id}`, { key: await key() });
  });

  test('files: drop and choose uploads with progress, list, highlighted preview, download, folder, delete', async () => {
    const id = await capsuleViaApi();
    await withPage(browser.context, server, 'files', async ({ page, violations, errors }) => {
      await signIn(page, server, 'ada@example.com', PASSWORD);
      await go(page, `/capsules/${id}?tab=files`);
      await page.getByLabel('Go to folder').fill('/tmp');
      await page.getByRole('button', { name: 'Go', exact: true }).click();
      // Uploads go to the folder shown: wait until /tmp is it (the listing answers first).
      await page.locator('.drop code').filter({ hasText: /^\/tmp$/ }).waitFor();

      // Dropped: a DataTransfer with one file, as a drag from the desktop makes.
      const source = 'import os\n\ndef main():\n    return "hello from the browser"\n';
      await page.evaluate((text) => {
        const dt = new DataTransfer();
        dt.items.add(new File([text], 'hello.py', { type: 'text/x-python' }));
        const zone = document.querySelector('[aria-label="Upload: drop files here"]');
        zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
        zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
      }, source);
      await page.locator('tr[data-file="hello.py"]').waitFor({ timeout: 30_000 });
      await page.locator('[data-upload="hello.py"]').getByText('uploaded').waitFor();

      // Chosen: a 3 MB file through the file picker.
      const big = Buffer.alloc(3 << 20, 7);
      await page.getByLabel('Upload files').setInputFiles({ name: 'big.bin', mimeType: 'application/octet-stream', buffer: big });
      await page.locator('tr[data-file="big.bin"]').waitFor({ timeout: 60_000 });
      await page.locator('tr[data-file="big.bin"]').getByText('3.0 MiB').waitFor();

      await page.locator('tr[data-file="hello.py"]').getByRole('button', { name: 'hello.py', exact: true }).click();
      const pre = page.locator('[data-preview]');
      await pre.getByText('hello from the browser').waitFor();
      assert.ok((await pre.locator('.hljs-keyword').count()) > 0, 'highlighted');

      const [download] = await Promise.all([
        page.waitForEvent('download'),
        page.getByRole('button', { name: 'Download hello.py' }).click(),
      ]);
      assert.equal(download.suggestedFilename(), 'hello.py');
      assert.equal(readFileSync(await download.path(), 'utf8'), source);

      await page.getByLabel('New folder name').fill('made-here');
      await page.getByRole('button', { name: 'Create folder' }).click();
      await page.locator('tr[data-file="made-here"]').waitFor();
      await page.getByRole('button', { name: 'Delete made-here' }).click();
      await page.getByRole('dialog', { name: 'Delete' }).getByRole('button', { name: 'Delete' }).click();
      await page.locator('tr[data-file="made-here"]').waitFor({ state: 'detached' });
      assert.deepEqual(violations, []);
      assert.deepEqual(errors, []);
    });
    await apiCall(server, 'DELETE', `/v1/capsules/${id}`, { key: await key() });
  });
});

describe('lifecycle, templates, keys and audit', () => {
  test('pause, resume, snapshot to a template, launch from it, destroy both; keys shown once; the audit page shows it', async () => {
    const id = await capsuleViaApi();
    await withPage(browser.context, server, 'journey', async ({ page, violations, errors }) => {
      await signIn(page, server, 'ada@example.com', PASSWORD);
      // API key: shown once, then only its prefix; revoked.
      await go(page, '/keys');
      await page.getByLabel('Key name').fill('browser-key');
      await page.getByRole('button', { name: 'Create key' }).click();
      const shown = page.getByRole('dialog', { name: 'Your new API key' });
      const keyText = (await shown.locator('[data-secret]').textContent()).trim();
      assert.match(keyText, /^wrn_[0-9a-f]{32}$/);
      const check = await apiCall(server, 'GET', '/v1/capsules', { key: keyText });
      assert.equal(check.status, 200, 'the key shown works');
      await shown.getByRole('button', { name: 'Done' }).click();
      const row = page.locator('tr[data-key="browser-key"]');
      await row.waitFor();
      assert.ok(!(await page.locator('body').innerText()).includes(keyText), 'never shown again');
      await row.getByRole('button', { name: 'Revoke browser-key' }).click();
      await page.getByRole('dialog', { name: 'Revoke API key' }).getByRole('button', { name: 'Revoke' }).click();
      await row.waitFor({ state: 'detached' });
      assert.equal((await apiCall(server, 'GET', '/v1/capsules', { key: keyText })).status, 401);

      // Pause and resume from the capsule's page.
      await go(page, `/capsules/${id}`);
      await page.locator('[data-status]').getByText('running').waitFor();
      await page.getByRole('button', { name: `Pause ${id}` }).click();
      await page.getByRole('dialog', { name: 'Pause capsule' }).getByRole('button', { name: 'Pause' }).click();
      await page.locator('[data-status]').getByText('paused').waitFor({ timeout: 60_000 });
      await page.getByRole('button', { name: `Resume ${id}` }).click();
      await page.locator('[data-status]').getByText('running').waitFor({ timeout: 60_000 });

      // Snapshot to a template, then launch a capsule from it on the templates page.
      await page.getByRole('button', { name: `Snapshot ${id}` }).click();
      const snap = page.getByRole('dialog', { name: 'Snapshot to a template' });
      await snap.getByLabel(/Template name/).fill('from-browser');
      await snap.getByRole('button', { name: 'Snapshot' }).click();
      await snap.getByText('Template from-browser was made').waitFor({ timeout: 120_000 });
      await snap.getByRole('button', { name: 'Done' }).click();
      await go(page, '/templates');
      const tpl = page.locator('tr[data-template="from-browser"]');
      await tpl.waitFor();
      await tpl.getByRole('button', { name: 'Launch a capsule from from-browser' }).click();
      const dialog = page.getByRole('dialog', { name: 'Create a capsule' });
      await dialog.getByText('A snapshot keeps its shape').waitFor();
      await dialog.getByRole('button', { name: 'Create capsule' }).click();
      const done = page.getByRole('dialog', { name: 'Capsule created' });
      await done.waitFor({ timeout: 120_000 });
      const second = (await done.locator('a code').textContent()).trim();
      await done.getByRole('link', { name: second }).click();
      await page.locator('[data-status]').getByText('running').waitFor();

      // Destroy both from the list.
      await go(page, '/capsules');
      for (const c of [id, second]) {
        const r = page.locator(`tr[data-capsule="${c}"]`);
        await r.getByRole('button', { name: `Destroy ${c}` }).click();
        await page.getByRole('dialog', { name: 'Destroy capsule' }).getByRole('button', { name: 'Destroy' }).click();
        await r.waitFor({ state: 'detached', timeout: 60_000 });
      }

      // The audit log shows all of it.
      await go(page, '/audit');
      await page.locator('tr[data-action]').first().waitFor();
      const actions = await page.locator('tr[data-action]').evaluateAll((rows) => rows.map((r) => r.dataset.action));
      for (const a of ['api_key.create', 'api_key.delete', 'capsule.pause', 'capsule.resume', 'capsule.destroy', 'template.snapshot.create']) {
        assert.ok(actions.some((x) => x === a || x.startsWith(a)), `${a} in ${actions.join(', ')}`);
      }
      assert.deepEqual(violations, []);
      assert.deepEqual(errors, []);
    });
  });
});

describe('audit log and admin pages', () => {
  test('audit: the server pages the log (load more) and filters it by resource and action', async () => {
    // Over three pages of entries: 80 keys made and revoked through the API.
    const k = await key();
    for (let i = 0; i < 80; i++) {
      const made = await apiCall(server, 'POST', '/v1/api-keys', { key: k, body: { name: `bulk-${i}` } });
      assert.equal(made.status, 201, made.text);
      await apiCall(server, 'DELETE', `/v1/api-keys/${made.json.id}`, { key: k });
    }
    const whole = await apiCall(server, 'GET', '/v1/audit', { key: k });
    const total = whole.json.entries.length;
    assert.ok(total > 160, `${total}`);
    await withPage(browser.context, server, 'audit', async ({ page, errors }) => {
      await signIn(page, server, 'ada@example.com', PASSWORD);
      await go(page, '/audit');
      const rows = page.locator('tr[data-action]');
      await rows.first().waitFor();
      assert.equal(await rows.count(), 50, 'one page of 50');
      await page.getByRole('button', { name: 'Load more' }).click();
      await page.locator('[data-audit-count="100"]').waitFor();
      await page.getByRole('button', { name: 'Load more' }).click();
      await page.locator('[data-audit-count="150"]').waitFor();
      const shown = await rows.evaluateAll((r) => r.map((x) => x.children[1].textContent));
      const expected = whole.json.entries.slice(0, 150).map((e) => e.action);
      assert.deepEqual(shown, expected, 'the pages in order, none twice');

      // Filters go to the server: a resource type, then an action prefix.
      await page.getByLabel('Resource type').selectOption('capsule');
      await page.waitForFunction(() => {
        const r = [...document.querySelectorAll('tr[data-action]')];
        return r.length > 0 && r.every((x) => x.dataset.action.startsWith('capsule.'));
      });
      const caps = await rows.evaluateAll((r) => r.map((x) => x.dataset.action));
      assert.ok(caps.length > 0 && caps.every((a) => a.startsWith('capsule.')), caps.join(', '));
      await page.getByLabel('Resource type').selectOption('');
      await page.getByLabel('Action', { exact: true }).fill('api_key.delete');
      await page.getByRole('button', { name: 'Filter' }).click();
      await page.waitForFunction(() => {
        const r = [...document.querySelectorAll('tr[data-action]')];
        return r.length === 50 && r.every((x) => x.dataset.action === 'api_key.delete');
      });
      await page.getByLabel('Action', { exact: true }).fill('no.such.action');
      await page.getByRole('button', { name: 'Filter' }).click();
      await page.getByText('No entries match these filters.').waitFor();
      assert.deepEqual(errors, []);
    });
  });

  test('admin pages: the admin of the first start signs in with the password file and sees every user, team and template; others are refused', async () => {
    await withPage(browser.context, server, 'admin', async ({ page, errors }) => {
      // Ada is no platform admin: no admin links, and the page shows the API's refusal.
      await signIn(page, server, 'ada@example.com', PASSWORD);
      assert.equal(await page.getByRole('link', { name: 'Users' }).count(), 0);
      await go(page, '/admin/users');
      await page.getByRole('alert').getByText('forbidden').waitFor();

      // admin@localhost with the password `wrenn up` wrote to <data dir>/admin-password.
      await signIn(page, server, 'admin@localhost', server.adminPassword);
      await page.getByRole('link', { name: 'Users' }).click();
      await page.getByRole('heading', { name: 'Users' }).waitFor();
      await page.locator('tr[data-user="ada@example.com"]').waitFor();
      await page.locator('tr[data-user="bob@example.com"], tr[data-user="admin@localhost"]').first().waitFor();
      await page.getByRole('link', { name: 'All teams' }).click();
      await page.locator('tr[data-team="Ada\'s team"]').waitFor();
      await page.getByRole('link', { name: 'All templates' }).click();
      await page.getByRole('heading', { name: 'All templates' }).waitFor();
      const api = await apiCall(server, 'GET', '/v1/admin/templates', { key: server.adminKey });
      assert.equal(api.status, 200, api.text);
      if (api.json.length === 0) await page.getByText('No templates yet.').waitFor();
      for (const t of api.json) await page.locator(`tr[data-template="${t.name}"]`).first().waitFor();
      await page.getByLabel('Search all templates').fill('zz-no-such');
      await page.getByText('Nothing matches this search.').waitFor();
      assert.deepEqual(errors, []);
    });
  });
});

describe('tenants and bad input', () => {
  test("another user cannot open Ada's capsule, terminal or files", async () => {
    const id = await capsuleViaApi();
    await apiCall(server, 'POST', '/v1/auth/signup', { body: { email: 'bob@example.com', password: PASSWORD, name: 'Bob' } });
    await withPage(browser.context, server, 'tenants', async ({ page }) => {
      await signIn(page, server, 'bob@example.com', PASSWORD);
      for (const tab of ['', '?tab=terminal', '?tab=files']) {
        await go(page, `/capsules/${id}${tab}`);
        await page.getByRole('heading', { name: 'Capsule not found' }).waitFor();
        assert.equal(await page.locator('[data-terminal]').count(), 0);
      }
    });
    await apiCall(server, 'DELETE', `/v1/capsules/${id}`, { key: await key() });
  });

  test('a wrong password shows the API error; an ended session goes back to sign-in once', async () => {
    await withPage(browser.context, server, 'bad-input', async ({ page }) => {
      await page.context().clearCookies();
      await page.goto(`${server.url}/login`);
      await page.getByLabel('Email').fill('ada@example.com');
      await page.getByLabel('Password').fill('not-the-password-1');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByRole('alert').getByText('unauthorized').waitFor();

      await signIn(page, server, 'ada@example.com', PASSWORD);
      // End every session of Ada's: the next request is refused, the console shows sign-in.
      const login = await apiCall(server, 'POST', '/v1/auth/login', { body: { email: 'ada@example.com', password: PASSWORD } });
      await apiCall(server, 'POST', '/v1/auth/logout-all', { token: login.json.token });
      let loginLoads = 0;
      page.on('load', () => loginLoads++);
      await go(page, '/keys');
      await page.getByText('Your session has ended. Sign in again.').waitFor();
      await sleep(1000);
      assert.equal(new URL(page.url()).pathname, '/login');
      assert.equal(loginLoads, 0, 'no reload loop');
      // A reload with the ended session's cookie shows sign-in once, no loop.
      await page.reload();
      await page.getByRole('heading', { name: 'Sign in to Wrenn' }).waitFor();
      await sleep(1000);
      assert.equal(new URL(page.url()).pathname, '/login');
      assert.equal(loginLoads, 1, 'one load: the reload itself');
    });
  });

  test('a capsule destroyed while its page is open says so', async () => {
    const id = await capsuleViaApi();
    await withPage(browser.context, server, 'destroyed-open', async ({ page }) => {
      await signIn(page, server, 'ada@example.com', PASSWORD);
      await go(page, `/capsules/${id}`);
      await page.locator('[data-status]').getByText('running').waitFor();
      await apiCall(server, 'DELETE', `/v1/capsules/${id}`, { key: await key() });
      await page.getByText('This capsule has been destroyed.').waitFor({ timeout: 30_000 });
    });
  });
});

describe('quality', () => {
  test('every page: no serious axe-core violation, light and dark, desktop and phone (screenshots); no overflow from 360 to 1920 px', async () => {
    const axe = readFileSync(new URL('../node_modules/axe-core/axe.min.js', import.meta.url), 'utf8');
    const id = await capsuleViaApi();
    const dir = shotsDir();
    const pages = ['/capsules', `/capsules/${id}`, `/capsules/${id}?tab=files`, '/templates', '/usage', '/keys', '/team', '/audit', '/hosts'];
    const adminPages = ['/admin/users', '/admin/teams', '/admin/templates'];
    const problems = [];
    const name = (p) => p.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').replace(/cl-[a-z0-9]+/, 'capsule') || 'root';
    const sizes = [[1280, 800, 'desktop', true], [360, 740, 'phone', true], [768, 1000, 'tablet', false], [1920, 1080, 'wide', false]];
    for (const scheme of ['light', 'dark']) {
      for (const [w, h, label, full] of sizes) {
        if (!full && scheme === 'dark') continue; // widths only: the layout is the scheme's same
        await withPage(browser.context, server, `quality-${scheme}-${label}`, async ({ page, violations }) => {
          await page.emulateMedia({ colorScheme: scheme });
          await page.setViewportSize({ width: w, height: h });
          const visit = async (p) => {
            await go(page, p);
            await page.locator('main h1').first().waitFor();
            await page.locator('[aria-busy="true"]').waitFor({ state: 'detached', timeout: 15_000 }).catch(() => {});
            await sleep(300);
            const overflow = await page.evaluate(() => document.documentElement.scrollWidth - innerWidth);
            if (overflow > 1) problems.push(`${p} ${scheme} ${w}px: the page is ${overflow}px wider than the window`);
            if (!full) return;
            await page.screenshot({ path: join(dir, `${name(p)}-${scheme}-${label}.png`), fullPage: true });
            await page.evaluate(axe);
            const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ['violations'] }));
            for (const v of result.violations) {
              if (v.impact === 'serious' || v.impact === 'critical') {
                problems.push(`${p} ${scheme} ${label}: ${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
              }
            }
          };
          await page.context().clearCookies();
          await page.goto(`${server.url}/login`);
          await page.getByRole('heading', { name: 'Sign in to Wrenn' }).waitFor();
          const loginOverflow = await page.evaluate(() => document.documentElement.scrollWidth - innerWidth);
          if (loginOverflow > 1) problems.push(`/login ${scheme} ${w}px: ${loginOverflow}px too wide`);
          if (full) await page.screenshot({ path: join(dir, `login-${scheme}-${label}.png`) });
          await signIn(page, server, 'ada@example.com', PASSWORD);
          if (scheme === 'light' && label === 'desktop') {
            // The README's picture: the capsules page with a running capsule, the window only.
            await page.locator(`tr[data-capsule="${id}"]`).getByText('running').waitFor();
            await page.setViewportSize({ width: 1100, height: 560 });
            await sleep(300);
            await page.screenshot({ path: process.env.DASHBOARD_README_SHOT ?? join(dir, 'readme-capsules.png') });
            await page.setViewportSize({ width: w, height: h });
          }
          for (const p of pages) await visit(p);
          await signIn(page, server, 'admin@localhost', server.adminPassword);
          for (const p of adminPages) await visit(p);
          assert.deepEqual(violations, []);
        });
      }
    }
    await apiCall(server, 'DELETE', `/v1/capsules/${id}`, { key: await key() });
    assert.deepEqual(problems, []);
  });

  test('1,000 capsules: the list renders only what is in view (API answer faked: 1,000 microVMs cannot run here)', async () => {
    await withPage(browser.context, server, 'thousand', async ({ page }) => {
      const now = new Date().toISOString();
      const many = Array.from({ length: 1000 }, (_, i) => ({
        id: `cl-${String(i).padStart(25, '0')}`, status: i % 3 ? 'running' : 'paused', template: 'minimal',
        vcpus: 1, memory_mb: 256, disk_size_mb: 2048, timeout_sec: 0, metadata: { n: String(i) }, error: null,
        created_at: now, started_at: now, last_active_at: now, last_updated: now,
      }));
      // A stand-in for the list answer only (named as such); everything else is the real server.
      await page.route('**/v1/capsules', (route) =>
        route.request().method() === 'GET' ? route.fulfill({ json: many }) : route.continue());
      await signIn(page, server, 'ada@example.com', PASSWORD);
      const t0 = Date.now();
      await go(page, '/templates');
      await go(page, '/capsules');
      await page.locator('tr[data-capsule]').first().waitFor();
      console.log(`FIGURE capsules page with 1,000 capsules interactive after ${Date.now() - t0} ms`);
      const rows = await page.locator('tr[data-capsule]').count();
      assert.ok(rows < 100, `only the rows in view are in the page (${rows})`);
      await page.getByLabel('Search capsules').fill('n=999');
      await page.locator(`tr[data-capsule="cl-${String(999).padStart(25, '0')}"]`).waitFor();
      await page.getByLabel('Search capsules').fill('');
      const list = page.locator('.list');
      await list.evaluate((el) => (el.scrollTop = el.scrollHeight));
      await page.locator(`tr[data-capsule="cl-${String(999).padStart(25, '0')}"], tr[data-capsule="cl-${String(0).padStart(25, '0')}"]`).first().waitFor();
    });
  });
});

test('initial JavaScript stays within 250 KB gzipped (before the terminal loads)', async () => {
  const html = await (await fetch(`${server.url}/`)).text();
  const scripts = [...html.matchAll(/<script[^>]+src="([^"]+)"/g), ...html.matchAll(/<link[^>]+modulepreload[^>]+href="([^"]+)"/g)].map((m) => m[1]);
  let total = 0;
  for (const s of scripts) {
    const r = await fetch(server.url + s, { headers: { 'Accept-Encoding': 'gzip' } });
    total += Number(r.headers.get('content-length'));
    await r.arrayBuffer();
  }
  assert.ok(scripts.length > 0, html);
  console.log(`FIGURE initial JavaScript: ${(total / 1024).toFixed(1)} KB gzipped in ${scripts.length} files`);
  assert.ok(total <= 250 * 1024, `${total} bytes`);
});
