// Driven by bin/e2e-nat: a phone on an IPv6-only mobile network (the
// 464XLAT case of many carriers: tne-c has no IPv4 at all) calls a laptop
// behind an IPv4-only home NAT (tne-a), relay only. The IPv6-only side
// reaches turnd over IPv6 and gets an IPv4 relayed address (RFC 8656: an
// Allocate without REQUESTED-ADDRESS-FAMILY relays IPv4), so the relay
// joins the two families. Usage:
//   node ipv6only.mjs BASE4 BASE6 KEY CHROMIUM_A CHROMIUM_C SHOT_DIR
import { mkdirSync } from 'node:fs';
import { DESKTOP, PHONE, chat, check, deadline, joinRoom, launch, newPage, runChecks, waitConnected } from './lib.mjs';

const [base4, base6, key, chromiumA, chromiumC, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const timer = deadline(120000);
const insecure = (base) => [`--unsafely-treat-insecure-origin-as-secure=${base}`];
const [ba, bc] = await Promise.all([
  launch({ executablePath: chromiumA, args: insecure(base4) }),
  launch({ executablePath: chromiumC, args: insecure(base6) }),
]);

const describe = (p) => `${p.local}/${p.remote} over ${p.protocol} (${p.localAddress} → ${p.remoteAddress})`;

await runChecks(timer, [ba, bc], async () => {
  const c = await newPage(bc, PHONE);
  const a = await newPage(ba, DESKTOP);
  await joinRoom(c, `${base6}/?key=${key}`, 'ipv6-only', { relayOnly: true });
  await joinRoom(a, `${base4}/?key=${key}`, 'ipv6-only', { relayOnly: true });
  const pc = await waitConnected(c, 40000);
  const pa = await waitConnected(a, 40000);
  check(pc.local === 'relay' && pc.remote === 'relay', `IPv6-only phone: ${describe(pc)}`);
  check(/^198\.51\.100\.1:\d+$/.test(String(pc.localAddress)),
    `the IPv6-only side relays through turnd's IPv4 address (${pc.localAddress})`);
  check(pa.local === 'relay' && pa.remote === 'relay', `IPv4-only laptop: ${describe(pa)}`);
  check(pc.framesDecoded > 0 && pa.framesDecoded > 0, `video decoded both ways (${pc.framesDecoded}, ${pa.framesDecoded})`);
  await chat(c, a, 'from an IPv6-only network');
  await chat(a, c, 'from IPv4 behind NAT');
  check(true, 'chat delivered both ways');
  await c.screenshot({ path: `${shots}/ipv6-only-phone.png` });
  console.log('all IPv6-only checks passed');
});
