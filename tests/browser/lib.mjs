// Shared by the browser tests: launch Debian's Chromium through playwright-core
// (never a downloaded browser), join a room through the page's own UI, and
// wait on what the page reports.
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.TURND_CHROMIUM || '/usr/bin/chromium';

// Flags: fake cameras (three: Chromium makes the second fake device a Y16
// depth camera whose frames the encoder drops, so switching is tested
// between the first and the third) and
// microphone, no permission prompts, no traffic to Google's services.
export function chromiumArgs(extra = []) {
  return [
    '--use-fake-device-for-media-stream=device-count=3',
    '--use-fake-ui-for-media-stream',
    '--auto-select-desktop-capture-source=Entire screen',
    '--autoplay-policy=no-user-gesture-required',
    '--allow-loopback-in-peer-connection',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
    ...extra,
  ];
}

export async function launch({ executablePath = CHROMIUM, args = [] } = {}) {
  return chromium.launch({ executablePath, headless: true, args: chromiumArgs(args), timeout: 30000 });
}

export const DESKTOP = { viewport: { width: 1280, height: 800 } };
export const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };

// A page in a fresh context (its own permissions and storage) whose console
// errors and warnings show in the test output; `init(arg)`, when given, runs
// before the page's own scripts.
export async function newPage(browser, view, init, arg) {
  const ctx = await browser.newContext(view);
  if (init) await ctx.addInitScript(init, arg);
  const page = await ctx.newPage();
  page.on('console', (m) => ['error', 'warning'].includes(m.type()) && console.log(`[page] ${m.text()}`));
  return page;
}

export function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

// Opens `url`, fills the room, sets "relay only", clicks Join.
export async function joinRoom(page, url, room, { relayOnly }) {
  const r = await page.goto(url);
  check(r.status() === 200, `page loads (${r.status()}) at ${new URL(url).origin}`);
  await page.fill('#room', room);
  await page.setChecked('#relay-only', relayOnly);
  await page.click('#join');
}

// The single remote peer's path, as the page's stats panel reads it.
export async function path(page) {
  return page.evaluate(() => {
    const p = [...window.turnd.peers.values()][0];
    return p ? { ...p.path, ice: p.pc.iceConnectionState, dc: p.dc.readyState } : null;
  });
}

// Waits until the page has one peer, connected, with video decoded.
export async function waitConnected(page, timeout = 30000) {
  await waitOr(page, timeout, 
    () => {
      const p = [...window.turnd.peers.values()][0];
      return p && p.pc.connectionState === 'connected' && p.path.framesDecoded > 0 && p.dc.readyState === 'open';
    },
  );
  return path(page);
}

// Like page.waitForFunction(fn, null, {timeout}), but a timeout says what
// the page saw: its peers' state, candidates gathered and candidate errors.
export async function waitOr(page, timeout, fn, arg = null) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 250 });
  } catch (e) {
    const seen = await page.evaluate(() => ({
      me: window.turnd.me,
      notice: document.getElementById('notice').textContent,
      peers: [...window.turnd.peers.values()].map((p) => ({
        id: p.id,
        state: p.pc.connectionState,
        ice: p.pc.iceConnectionState,
        signaling: p.pc.signalingState,
        gathered: p.gathered,
        errors: p.candidateErrors,
        path: p.path,
      })),
    }));
    throw new Error(`${e.message}\npage state: ${JSON.stringify(seen)}`);
  }
}

// Waits up to `ms` for a connection; returns the final path (connected or not).
export async function tryConnect(page, ms) {
  try {
    await page.waitForFunction(
      () => {
        const p = [...window.turnd.peers.values()][0];
        return p && ['connected', 'failed'].includes(p.pc.connectionState);
      },
      null,
      { timeout: ms, polling: 250 }
    );
  } catch {
    // still checking: reported as not connected
  }
  return path(page);
}

export async function chat(from, to, text) {
  await from.fill('#chat-input', text);
  await from.press('#chat-input', 'Enter');
  await to.waitForFunction((t) => document.getElementById('chat-log').textContent.includes(t), text, {
    timeout: 10000,
  });
}

export async function framesDecoded(page) {
  return (await path(page))?.framesDecoded ?? 0;
}

// Fails the whole run if it has not finished in `ms`.
export function deadline(ms) {
  return setTimeout(() => {
    console.error(`not finished after ${ms / 1000}s`);
    process.exit(1);
  }, ms);
}

// Runs the checks in `body`: a failure prints its stack and sets exit code
// 1; the browsers are closed and the deadline `timer` cleared either way.
export async function runChecks(timer, browsers, body) {
  try {
    await body();
  } catch (e) {
    console.error(e.stack || String(e));
    process.exitCode = 1;
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
    clearTimeout(timer);
  }
}
