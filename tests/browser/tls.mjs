// Two pages served over HTTPS by turnd's `auto` listener, whose iceServers
// hold only that listener's `turns:` URL, call each other with "relay only":
// the path must be relay/relay over TLS with video decoded.
// Usage: node tls.mjs BASE KEY
import { DESKTOP, PHONE, check, deadline, joinRoom, launch, newPage, waitConnected, runChecks } from './lib.mjs';

const [base, key] = process.argv.slice(2);
const timer = deadline(90000);
// The test certificate is self-signed: accepted for the page and for TURN.
const browser = await launch({ args: ['--ignore-certificate-errors'] });
await runChecks(timer, [browser], async () => {
  check(base.startsWith('https://'), `the page is served over HTTPS at ${base}`);
  const pages = [await newPage(browser, DESKTOP), await newPage(browser, PHONE)];
  for (const p of pages) await joinRoom(p, `${base}/?key=${key}`, 'over-tls', { relayOnly: true });
  const urls = await pages[0].evaluate(() => window.turnd.ice.iceServers.flatMap((s) => [].concat(s.urls)));
  check(urls.length > 0 && urls.every((u) => u.startsWith('turns:')), `only turns: URLs: ${urls.join(' ')}`);
  for (const [i, p] of pages.entries()) {
    const path = await waitConnected(p, 40000);
    check(
      path.local === 'relay' && path.protocol === 'tls',
      `page ${i + 1}: ${path.local}/${path.remote} over ${path.protocol} (${path.localAddress} → ${path.remoteAddress})`
    );
    check(path.framesDecoded > 0, `page ${i + 1}: video decoded (${path.framesDecoded} frames)`);
  }
  for (const p of pages) await p.context().close();
  console.log('all TLS browser checks passed');
});
