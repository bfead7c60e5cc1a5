// What the browser tests share: launching Debian's Chromium through
// playwright-core, pages that record every console error, waiting for a
// condition with a generous bound, screenshots, and a small API client
// for setting up and checking state behind the dashboard's back.
//
// Each test script reads its target from the environment, which the Go test
// (web/e2e_test.go) sets:
//   TAAS_URL        base URL of the taasd under test, e.g. http://127.0.0.1:41234
//   TAAS_ARTIFACTS  directory for screenshots
//   TAAS_TOKEN      a valid token, for the token-mode script
//   CHROMIUM        the browser binary (default /usr/bin/chromium)
// and may print "METRIC name value unit" lines, which the Go test logs.

import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

export const BASE = process.env.TAAS_URL || 'http://127.0.0.1:9696';
export const ARTIFACTS = process.env.TAAS_ARTIFACTS || path.join(path.dirname(new URL(import.meta.url).pathname), 'artifacts');
fs.mkdirSync(ARTIFACTS, { recursive: true });

export const LAPTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

// launch starts headless Chromium with the flags the project settled on.
// playwright gives every launch a fresh, temporary --user-data-dir of its
// own (it refuses one in args), so no profile state leaks between runs.
export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: 60_000,
    args: [
      '--no-sandbox', // the tests run as root, where Chromium's sandbox cannot start
      '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
    ],
  });
}

// newPage opens a page in a fresh context. Every console error and uncaught
// exception is recorded; checkProblems fails the test on any that the
// script did not expect (allow: regexps of expected messages, such as the
// 401s of token mode).
export async function newPage(browser, viewport = LAPTOP) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.problems = [];
  page.on('console', (m) => { if (m.type() === 'error') page.problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => page.problems.push(`exception: ${e.message}`));
  openPages.push(page);
  return page;
}

const openPages = [];

// hostNetworkChanged is Chromium aborting its requests because the host's
// links or addresses changed: the data-plane tests (and other packages'
// tests running at the same time) add and remove veths in the browser's
// namespace. The page's polls retry on their own; it is not a page error.
const hostNetworkChanged = /net::ERR_NETWORK_CHANGED/;

export function checkProblems(page, allow = []) {
  const bad = page.problems.filter((p) => !hostNetworkChanged.test(p) && !allow.some((re) => re.test(p)));
  if (bad.length) throw new Error(`the page reported errors:\n  ${bad.join('\n  ')}`);
}

// until polls fn until it returns a truthy value and returns that value, or
// fails after timeoutMs with what it was waiting for. The bounds are
// generous on purpose: tests never fail on a timing.
export async function until(what, fn, timeoutMs = 15_000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function shot(page, name) {
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot ${file}`);
}

// nav follows one of the dashboard's view links in the top bar.
export async function nav(page, view) {
  await page.getByRole('navigation', { name: 'Views' }).getByRole('link', { name: view }).click();
}

export function step(name) {
  console.log(`-- ${name}`);
}

export function metric(name, value, unit) {
  console.log(`METRIC ${name} ${value} ${unit}`);
}

// captureDownload runs trigger (which starts a capture in the Capture
// dialog and lets it end), waits for the browser's download and saves it
// as <name>.pcapng in ARTIFACTS; it returns the file's path.
export async function captureDownload(page, trigger, name) {
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: 60_000 }), trigger()]);
  assert.match(download.suggestedFilename(), /\.pcapng$/, 'the file is named .pcapng');
  const file = path.join(ARTIFACTS, `${name}.pcapng`);
  await download.saveAs(file);
  console.log(`download ${download.suggestedFilename()} saved as ${file}`);
  return file;
}

// tsharkFrames reads a capture file with tshark (failing on any error it
// reports) and returns one row per frame: its length and its bytes after
// the Ethernet header, in hex.
export function tsharkFrames(file) {
  const out = execFileSync('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.len', '-e', 'data.data'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return out.split('\n').filter(Boolean).map((line) => {
    const [len, data] = line.split('\t');
    return { len: Number(len), data: data || '' };
  });
}

// api calls the REST API directly (not through the page), to set up or
// check what the dashboard did.
export async function api(method, urlPath, body, token) {
  const headers = { Accept: 'application/json' };
  if (token) headers['X-Auth-Token'] = token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(BASE + urlPath, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${urlPath}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// run runs a test body with a browser and closes it however the body ends;
// a failure exits 1 after printing the error.
export async function run(body) {
  const browser = await launch();
  try {
    await body(browser);
    console.log('PASS');
  } catch (e) {
    console.error(`FAIL: ${e.stack || e}`);
    process.exitCode = 1;
    const script = path.basename(process.argv[1], '.mjs');
    for (const [i, page] of openPages.entries()) {
      if (!page.isClosed()) await shot(page, `${script}-failure-${i}`).catch(() => {});
    }
  } finally {
    await browser.close();
  }
}
