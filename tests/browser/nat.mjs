// Driven by bin/e2e-nat: one Chromium in each client namespace (through the
// wrapper scripts it writes), both loading turnd's page from the "internet"
// namespace. Usage:
//   node nat.mjs BASE KEY CHROMIUM_A CHROMIUM_B SWITCH_TO_PLAIN_NAT_CMD SHOT_DIR \
//     HTTPS_BASE DROP_UDP_CMD DROP_B_443_CMD
import { execSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { DESKTOP, PHONE, chat, check, deadline, joinRoom, launch, newPage, tryConnect, waitConnected, runChecks } from './lib.mjs';

const [base, key, chromiumA, chromiumB, switchNat, shots, httpsBase, dropUdp, dropB443] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const timer = deadline(260000);
// A plain-HTTP origin other than localhost is not a secure context: allow
// this one, or the browser hides the camera (a real deployment uses HTTPS).
// Case (5) uses HTTPS with turnd's self-signed certificate.
// No certificate error is ignored: HTTPS and TURN/TLS verify against the
// ACME CA's root, which bin/e2e-nat put in Chromium's NSS database.
const args = [`--unsafely-treat-insecure-origin-as-secure=${base}`];
const [ba, bb] = await Promise.all([
  launch({ executablePath: chromiumA, args }),
  launch({ executablePath: chromiumB, args }),
]);

async function both(room, query, relayOnly = false, origin = base) {
  const pages = [await newPage(ba, DESKTOP), await newPage(bb, PHONE)];
  for (const p of pages) await joinRoom(p, `${origin}/?key=${key}${query}`, room, { relayOnly });
  return pages;
}

async function hangUp(pages) {
  for (const p of pages) {
    await p.click('#hangup').catch(() => {});
    await p.context().close();
  }
}

const describe = (p) => `${p.local}/${p.remote} over ${p.protocol} (${p.localAddress} → ${p.remoteAddress})`;

await runChecks(timer, [ba, bb], async () => {
  // (1) Relay only.
  {
    const [a, b] = await both('relay-only', '', true);
    const pa = await waitConnected(a, 30000);
    const pb = await waitConnected(b, 30000);
    check(pa.local === 'relay' && pa.remote === 'relay', `(1) relay only, A: ${describe(pa)}`);
    check(pb.local === 'relay' && pb.remote === 'relay', `(1) relay only, B: ${describe(pb)}`);
    check(pa.framesDecoded > 0 && pb.framesDecoded > 0, `(1) video decoded (${pa.framesDecoded}, ${pb.framesDecoded})`);
    await chat(a, b, 'from behind the home router');
    await chat(b, a, 'from behind the carrier NAT');
    check(true, '(1) chat delivered both ways');
    await a.waitForTimeout(1200);
    await a.screenshot({ path: `${shots}/nat-relay-desktop.png` });
    await b.screenshot({ path: `${shots}/nat-relay-phone.png` });
    await hangUp([a, b]);
  }

  // (2) Policy "all" with turnd's TURN: ICE picks whatever works.
  {
    const [a, b] = await both('policy-all', '');
    const pa = await waitConnected(a, 30000);
    const pb = await waitConnected(b, 30000);
    check(true, `(2) policy all connects, A: ${describe(pa)}, B: ${describe(pb)}`);
    check(pa.local === 'relay' || pa.remote === 'relay', '(2) and needs the relay on one side (symmetric NAT)');
    await hangUp([a, b]);
  }

  // (3) STUN only across the symmetric NAT: no path.
  {
    const [a, b] = await both('stun-only', '&servers=stun');
    const [pa, pb] = await Promise.all([tryConnect(a, 15000), tryConnect(b, 15000)]);
    const gathered = await Promise.all(
      [a, b].map((p) => p.evaluate(() => [...window.turnd.peers.values()][0]?.gathered))
    );
    check(gathered[0]?.srflx > 0 && gathered[1]?.srflx > 0, `(3) STUN works: srflx candidates ${JSON.stringify(gathered)}`);
    check(pa?.state !== 'connected' && pb?.state !== 'connected', `(3) STUN only does not connect (${pa?.state}, ${pb?.state})`);
    const why = await a.textContent('#notice');
    check(/STUN alone cannot traverse/.test(why), `(3) the page says why: ${why}`);
    await a.screenshot({ path: `${shots}/nat-stun-fails-desktop.png` });
    await hangUp([a, b]);
  }

  // (4) Workers: the carrier router does ordinary NAT; STUN only connects.
  {
    execSync(switchNat, { stdio: 'inherit' });
    const [a, b] = await both('stun-control', '&servers=stun');
    const pa = await waitConnected(a, 30000);
    const pb = await waitConnected(b, 30000);
    check(pa.local !== 'relay' && pb.local !== 'relay', `(4) ordinary NAT: direct path, A: ${describe(pa)}`);
    await hangUp([a, b]);
  }

  // (5) Both routers drop all UDP (a hotel or office network): the page
  // comes over HTTPS from the `auto` listener on 443, and so does TURN.
  {
    execSync(dropUdp, { stdio: 'inherit' });
    const [a, b] = await both('udp-blocked', '', false, httpsBase);
    const pa = await waitConnected(a, 40000);
    const pb = await waitConnected(b, 40000);
    const gathered = await Promise.all(
      [a, b].map((p) => p.evaluate(() => [...window.turnd.peers.values()][0]?.gathered))
    );
    check(!gathered[0]?.srflx && !gathered[1]?.srflx, `(5) UDP is blocked: no srflx candidate ${JSON.stringify(gathered)}`);
    check(pa.local === 'relay' && pa.protocol === 'tls', `(5) A: ${describe(pa)}`);
    check(pb.local === 'relay' && pb.protocol === 'tls', `(5) B: ${describe(pb)}`);
    check(pa.framesDecoded > 0 && pb.framesDecoded > 0, `(5) video decoded (${pa.framesDecoded}, ${pb.framesDecoded})`);
    await chat(a, b, 'through TLS on 443');
    check(true, '(5) chat delivered');
    await b.screenshot({ path: `${shots}/nat-udp-blocked-phone.png` });
    await hangUp([a, b]);
  }

  // (6) UDP still blocked, and the carrier now drops TCP 443 as well: A
  // reaches turnd over TLS only, B not at all (its page comes over plain
  // HTTP on 8080). The call fails, and each page says why in words.
  {
    execSync(dropB443, { stdio: 'inherit' });
    const a = await newPage(ba, DESKTOP);
    const b = await newPage(bb, PHONE);
    await joinRoom(a, `${httpsBase}/?key=${key}`, 'blocked', { relayOnly: true });
    await joinRoom(b, `${base}/?key=${key}`, 'blocked', { relayOnly: true });
    const said = (p) =>
      p.waitForFunction(() => /\S/.test(document.getElementById('notice').textContent) &&
        [...window.turnd.peers.values()][0]?.failure, null, { timeout: 45000, polling: 250 })
        .then(() => p.textContent('#notice'));
    const [wa, wb] = await Promise.all([said(a), said(b)]);
    check(/blocks UDP: turnd was only reached over tls/.test(wa), `(6) A (TLS only) says: ${wa}`);
    check(/No relay candidate/.test(wb), `(6) B (nothing reaches turnd) says: ${wb}`);
    await a.screenshot({ path: `${shots}/nat-blocked-explained-desktop.png` });
    await hangUp([a, b]);
  }
  console.log('all NAT checks passed');
});
