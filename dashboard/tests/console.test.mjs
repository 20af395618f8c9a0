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
      const relays = [];
      await page.routeWebSocket(/\/pty$/, (ws) => {
        const upstream = ws.connectToServer();
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
      await page.keyboard.type('Z');
      await waitForRow(page, 1, (r) => r.endsWith('Z'), 10_000);
      console.log(`FIGURE terminal keystroke echo: ${Date.now() - t0} ms`);
      await page.keyboard.press('Backspace');

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
      await page.getByText('Drop files here').waitFor();

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
  test('every page: no serious axe-core violation, light and dark, desktop and phone (screenshots)', async () => {
    const axe = readFileSync(new URL('../node_modules/axe-core/axe.min.js', import.meta.url), 'utf8');
    const id = await capsuleViaApi();
    const dir = shotsDir();
    const pages = ['/capsules', `/capsules/${id}`, `/capsules/${id}?tab=files`, '/templates', '/usage', '/keys', '/team', '/audit', '/hosts'];
    const problems = [];
    for (const scheme of ['light', 'dark']) {
      for (const [w, h, label] of [[1280, 800, 'desktop'], [375, 740, 'phone']]) {
        await withPage(browser.context, server, `quality-${scheme}-${label}`, async ({ page, violations }) => {
          await page.emulateMedia({ colorScheme: scheme });
          await page.setViewportSize({ width: w, height: h });
          await page.goto(`${server.url}/login`);
          await page.screenshot({ path: join(dir, `login-${scheme}-${label}.png`) });
          await signIn(page, server, 'ada@example.com', PASSWORD);
          for (const p of pages) {
            await go(page, p);
            await page.locator('main h1').first().waitFor();
            await sleep(300);
            const name = p.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').replace(/cl-[a-z0-9]+/, 'capsule') || 'root';
            await page.screenshot({ path: join(dir, `${name}-${scheme}-${label}.png`), fullPage: true });
            const overflow = await page.evaluate(() => document.documentElement.scrollWidth - innerWidth);
            if (overflow > 1) problems.push(`${p} ${scheme} ${label}: the page is ${overflow}px wider than the window`);
            await page.evaluate(axe);
            const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ['violations'] }));
            for (const v of result.violations) {
              if (v.impact === 'serious' || v.impact === 'critical') {
                problems.push(`${p} ${scheme} ${label}: ${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
              }
            }
          }
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
