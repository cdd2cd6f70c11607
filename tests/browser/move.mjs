// Driven by bin/e2e-nat: a call between Chromium behind the home NAT (A,
// the device that moves) and Chromium behind the symmetric carrier NAT (B),
// relay only, survives A changing networks mid-call: home Wi-Fi → carrier
// and back (five times each way), and a 10-second outage with no network at
// all (a tunnel) followed by the same network (five times). Each move is
// timed from the new network being up to video decoding again on both
// sides. Usage:
//   node move.mjs BASE KEY CHROMIUM_A CHROMIUM_B NET SESSIONS_CMD SHOT_DIR
import { mkdirSync } from 'node:fs';
import { execSync } from 'node:child_process';
import { DESKTOP, PHONE, check, deadline, joinRoom, launch, newPage, runChecks, waitConnected } from './lib.mjs';
import { leftBehind, move, summarize } from './moving.mjs';

const [base, key, chromiumA, chromiumB, net, sessionsCmd, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const timer = deadline(420000);
const args = [`--unsafely-treat-insecure-origin-as-secure=${base}`];
const [ba, bb] = await Promise.all([
  launch({ executablePath: chromiumA, args }),
  launch({ executablePath: chromiumB, args }),
]);
const RUNS = 5;

await runChecks(timer, [ba, bb], async () => {
  try {
    const a = await newPage(ba, PHONE);
    const b = await newPage(bb, DESKTOP);
    await joinRoom(a, `${base}/?key=${key}`, 'moving', { relayOnly: true });
    await joinRoom(b, `${base}/?key=${key}`, 'moving', { relayOnly: true });
    const pa = await waitConnected(a, 30000);
    const pb = await waitConnected(b, 30000);
    check(pa.local === 'relay' && pb.local === 'relay', 'a relay-only call between home (A) and carrier (B)');
    const ids = await Promise.all([a, b].map((p) => p.evaluate(() => window.turnd.me)));

    const out = [];
    const back = [];
    // Each network hands the phone a new address on every attach (as
    // carriers do); the tunnel gives back the same network and address.
    for (let i = 1; i <= RUNS; i++) {
      const common = { net, who: 'a', gapMs: 2000, mover: a, other: b, sessionsCmd, host: 10 + i };
      out.push(await move({ ...common, to: 'carrier', label: `home → carrier #${i}` }));
      if (i === 1) await a.screenshot({ path: `${shots}/moved-to-carrier-phone.png` });
      back.push(await move({ ...common, to: 'home', label: `carrier → home #${i}` }));
    }
    const tunnel = [];
    for (let i = 1; i <= RUNS; i++) {
      const common = { net, who: 'a', to: 'home', host: 10 + RUNS, gapMs: 10000, mover: a, other: b, sessionsCmd };
      tunnel.push(await move({ ...common, label: `10 s tunnel #${i}` }));
    }
    // Neither side saw the other leave and join again: the same ids, one
    // peer connection each all along.
    const after = await Promise.all([a, b].map((p) => p.evaluate(() => [window.turnd.me, [...window.turnd.peers.keys()]])));
    check(after[0][0] === ids[0] && after[1][0] === ids[1] && after[0][1][0] === ids[1] && after[1][1][0] === ids[0],
      `the same participants throughout (${ids.join(', ')}), resumed rather than rejoined`);
    const reconnects = await a.evaluate(() => window.turnd.sig.reconnects);
    console.log(`    A's signaling reconnected ${reconnects} times`);
    summarize('home Wi-Fi → carrier (Chromium)', out);
    summarize('carrier → home Wi-Fi (Chromium)', back);
    summarize('10 s without a network, then the same one (Chromium)', tunnel);
    const idle = leftBehind(sessionsCmd);
    console.log(`    ${idle.length} idle allocation(s) left behind by ${3 * RUNS} moves`);
    await a.context().close();
    await b.context().close();
  } finally {
    execSync(`${net} a home`);
  }
  console.log('all moving-network checks passed');
});
