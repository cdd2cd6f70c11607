// A device changing networks mid-call, measured: shared by move.mjs
// (Chromium) and firefox.mjs (Firefox as the device that moves). Works with
// Playwright and Puppeteer pages alike (only page.evaluate with one argument).
//
// NET is bin/e2e-nat's script: `NET a carrier 7` takes client namespace
// tne-a off whatever network it is on and puts it on the carrier's as
// address .7 (behind the symmetric NAT), returning once that network
// reaches turnd.
// SESSIONS prints turnd's /admin/sessions.
import { execSync } from 'node:child_process';
import { check } from './lib.mjs';

// The public (NAT WAN) address each network's devices reach turnd from.
export const WAN = { home: '198.51.100.2', carrier: '198.51.100.3' };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Video frames decoded so far from the (single) remote peer, read from the
// connection's own statistics (not the page's once-a-second panel), and
// which connection that is (a page that replaces a connection starts
// counting again from 0).
function frames(page) {
  return page.evaluate(async () => {
    const p = [...window.turnd.peers.values()][0];
    if (!p || p.pc.connectionState === 'closed') return { pc: null, n: 0 };
    p.pc.testMark ??= Math.random();
    let n = 0;
    // Bounded: Firefox's getStats can stay pending on a connection being
    // replaced (then this read counts nothing and the next one asks again).
    const stats = await Promise.race([p.pc.getStats(), new Promise((r) => setTimeout(() => r(new Map()), 2000))]);
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0;
    });
    return { pc: p.pc.testMark, n };
  });
}

// Polls `fn` until it returns something; on timeout the error has what
// `seen` (when given) returns.
async function until(what, ms, fn, seen = async () => '') {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`check failed: ${what} (not within ${ms / 1000} s)\n${await seen()}`);
    await sleep(200);
  }
}

// Chat typed into `from`'s page reaches `to`'s.
export async function chatThrough(from, to, text) {
  await from.evaluate((t) => {
    document.getElementById('chat-input').value = t;
    document.getElementById('chat-form').requestSubmit();
  }, text);
  await until(`chat "${text}" delivered`, 10000, () =>
    to.evaluate((t) => document.getElementById('chat-log').textContent.includes(t), text));
}

// The video RTP statistics of both directions, for a run that does not
// recover: whether packets arrive, frames assemble and decode, and what
// keyframe requests went which way.
function video(page) {
  return page.evaluate(async () => {
    const p = [...window.turnd.peers.values()][0];
    if (!p) return null;
    const out = {};
    const stats = await Promise.race([p.pc.getStats(), new Promise((r) => setTimeout(() => r(new Map()), 2000))]);
    stats.forEach((r) => {
      if (r.kind !== 'video') return;
      if (r.type === 'inbound-rtp') {
        out.in = { packets: r.packetsReceived, lost: r.packetsLost, frames: r.framesReceived, decoded: r.framesDecoded,
          keyDecoded: r.keyFramesDecoded, dropped: r.framesDropped, pliSent: r.pliCount, firSent: r.firCount, nackSent: r.nackCount };
      }
      if (r.type === 'outbound-rtp') {
        out.out = { packets: r.packetsSent, frames: r.framesEncoded, keyEncoded: r.keyFramesEncoded,
          pliHeard: r.pliCount, firHeard: r.firCount, nackHeard: r.nackCount, limited: r.qualityLimitationReason };
      }
    });
    return out;
  });
}

function panel(page) {
  return page.evaluate(() => {
    const p = [...window.turnd.peers.values()][0];
    return {
      notice: document.getElementById('notice').textContent,
      path: p ? { ...p.path, ice: p.pc.iceConnectionState } : null,
      restarts: p?.restarts ?? 0,
      recoveries: p?.recoveries ?? [],
      username: window.turnd.ice?.iceServers.find((s) => s.username)?.username,
      reconnects: window.turnd.sig?.reconnects ?? 0,
    };
  });
}

function sessions(cmd) {
  return JSON.parse(execSync(cmd, { encoding: 'utf8' })).sessions;
}

// One move of client `who` (page `mover`; `other` is the far end): off
// its network, `gapMs` with none, then on `to`. Returns the time from the
// new network being up to video decoding again on both sides (ms).
export async function move({ net, who, to, host = 2, gapMs, mover, other, sessionsCmd, label }) {
  const before = await Promise.all([panel(mover), panel(other)]);
  const off = Date.now();
  execSync(`${net} ${who} none`);
  await sleep(gapMs);
  execSync(`${net} ${who} ${to} ${host}`);
  const t0 = Date.now();
  const base = await Promise.all([frames(mover), frames(other)]);
  let ms = null;
  const sides = [null, null]; // when each side decoded again (ms)
  while (Date.now() - t0 < 30000) {
    const now = await Promise.all([frames(mover), frames(other)]);
    for (const i of [0, 1]) {
      const from = now[i].pc === base[i].pc ? base[i].n : 0;
      if (sides[i] === null && now[i].n >= from + 5) sides[i] = Date.now() - t0;
    }
    if (sides[0] !== null && sides[1] !== null) {
      ms = Date.now() - t0;
      break;
    }
    await sleep(100);
  }
  if (ms === null) {
    const seen = await Promise.all([panel(mover), panel(other)]);
    const rtp = await Promise.all([video(mover), video(other)]);
    const logs = await Promise.all([mover, other].map((p) => p.evaluate(() => window.turnd.log.slice(-30))));
    throw new Error(`check failed: ${label}: no video both ways 30 s after the new network came up ` +
      `(the mover decoding: ${sides[0] !== null}, the other: ${sides[1] !== null})\n` +
      `video RTP, mover: ${JSON.stringify(rtp[0])}; other: ${JSON.stringify(rtp[1])}\n` +
      `mover: ${JSON.stringify(seen[0])}\n${JSON.stringify(logs[0])}\nother: ${JSON.stringify(seen[1])}\n${JSON.stringify(logs[1])}`);
  }
  if (ms > 5000) {
    const rtp = await Promise.all([video(mover), video(other)]);
    console.log(`    slow: video RTP, mover: ${JSON.stringify(rtp[0])}; other: ${JSON.stringify(rtp[1])}`);
  }
  // Then, within a few seconds: both panels show a relay path, the
  // allocation carrying the call (the mover's selected relay address) is
  // one turnd made for the mover's new public address, and a page that
  // restarted its connection says how long reconnecting took.
  let last = null;
  const settled = await until(`${label}: the call is relayed from the new network and the panels say so`, 10000, async () => {
    const ps = await Promise.all([panel(mover), panel(other)]);
    const live = sessions(sessionsCmd).find((s) => s.relayed === ps[0].path?.localAddress);
    last = { ps, live };
    const relayed = ps.every((p) => p.path?.local === 'relay' && p.path.state === 'connected');
    const onNew = live?.client.startsWith(`${WAN[to]}:`) && !live.idle;
    const told = ps.every((p, i) => p.restarts === before[i].restarts || p.recoveries.length > before[i].recoveries.length);
    return relayed && onNew && told ? { ps, live } : null;
  }, async () => JSON.stringify([last, await mover.evaluate(() => window.turnd.log.slice(-30)), await other.evaluate(() => window.turnd.log.slice(-30))]));
  const words = settled.ps
    .filter((p, i) => p.recoveries.length > before[i].recoveries.length)
    .map((p) => `"${p.notice}"`)
    .join(' / ') || 'no restart was needed';
  await chatThrough(mover, other, `${label}: mover here`);
  await chatThrough(other, mover, `${label}: other here`);
  // What each page did, in seconds from the new network being up.
  for (const [name, page] of [['mover', mover], ['other', other]]) {
    const log = await page.evaluate(() => window.turnd.log);
    const seen = log.filter(([t]) => t >= off).map(([t, what]) => `${((t - t0) / 1000).toFixed(1)} ${what}`);
    console.log(`    ${name}: ${seen.join('; ')}`);
  }
  console.log(`ok - ${label}: video both ways ${(ms / 1000).toFixed(1)} s after the new network came up ` +
    `(the mover decoding at ${(sides[0] / 1000).toFixed(1)} s, the other at ${(sides[1] / 1000).toFixed(1)} s); ` +
    `chat both ways; ${settled.live.client} → ${settled.live.relayed}; ${words}`);
  return ms;
}

// What the allocations left behind on old networks cost: every idle one,
// how long it has been silent and how long until it expires.
export function leftBehind(sessionsCmd) {
  const idle = sessions(sessionsCmd).filter((s) => s.idle);
  for (const s of idle) {
    console.log(`    idle allocation ${s.user} from ${s.client} (${s.relayed}): silent ${s.silent_secs} s, ` +
      `expires in ${s.expires_in_secs} s, ${s.channels} channel(s)`);
  }
  return idle;
}

// The median and worst of `times` (ms) against the targets: a failed
// check when `enforce`, otherwise reported as met or missed.
export function summarize(label, times, { enforce = true, medianMs = 5000, worstMs = 10000 } = {}) {
  const sorted = [...times].sort((x, y) => x - y);
  const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  const worst = sorted.at(-1);
  const s = (v) => (v / 1000).toFixed(1);
  const met = median <= medianMs && worst <= worstMs;
  const line = `${label}: recovery over ${times.length} runs: ${times.map(s).join(', ')} s; median ${s(median)} s ` +
    `(target ≤ ${s(medianMs)}), worst ${s(worst)} s (target ≤ ${s(worstMs)})`;
  if (enforce) check(met, line);
  else console.log(`${met ? 'ok' : 'MISSED'} - ${line}`);
}
