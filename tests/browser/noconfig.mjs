// turnd as a new user first runs it, with no configuration at all: two
// pages on loopback join one room with "relay only" and connect relay/relay
// (turnd's relays sit on its own, denied, loopback address: it relays
// between its own allocations inside the process), video decoded both ways,
// chat delivered both ways.
// Usage: node noconfig.mjs JOIN_LINK
import { DESKTOP, PHONE, chat, check, deadline, joinRoom, launch, newPage, runChecks, waitConnected } from './lib.mjs';

const [link] = process.argv.slice(2);
const timer = deadline(90000);
const browser = await launch();
await runChecks(timer, [browser], async () => {
  const a = await newPage(browser, DESKTOP);
  const b = await newPage(browser, PHONE);
  await joinRoom(a, link, 'first-run', { relayOnly: true });
  await joinRoom(b, link, 'first-run', { relayOnly: true });
  for (const [name, p] of [['A', a], ['B', b]]) {
    const path = await waitConnected(p, 40000);
    check(
      path.local === 'relay' && path.remote === 'relay',
      `${name}: ${path.local}/${path.remote} over ${path.protocol} (${path.localAddress} → ${path.remoteAddress})`
    );
    check(
      path.localAddress.startsWith('127.0.0.1:') && path.remoteAddress.startsWith('127.0.0.1:'),
      `${name}: both relays on loopback, where the page was opened`
    );
    check(path.framesDecoded > 0, `${name}: video decoded (${path.framesDecoded} frames)`);
  }
  await chat(a, b, 'first run, no config');
  await chat(b, a, 'and back');
  check(true, 'chat delivered both ways');
  console.log('all first-run checks passed');
});
