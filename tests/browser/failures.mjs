// When a call fails, the page says why in words, from what it saw. Four
// calls, at once, each between page A (turnd P's own iceServers, relay
// only) and page B, whose /api/ice answer the test replaces:
//   403      B relays through another turnd on P's address: P refuses A the
//            permission to B's relay (turnd's own address, not its relay);
//   401      B's credentials are wrong: B gets no relay;
//   701      B's TURN server does not answer: B gets no relay;
//   timeout  B's relay is advertised where nothing listens: both relays
//            accept the permissions, and the checks time out.
// Usage: node failures.mjs BASE KEY ICE_403 ICE_401 ICE_701 ICE_TIMEOUT
import { DESKTOP, PHONE, check, deadline, joinRoom, launch, newPage, runChecks } from './lib.mjs';

const [base, key, ...ices] = process.argv.slice(2);
const [ice403, ice401, ice701, iceTimeout] = ices.map((j) => JSON.parse(j));
const timer = deadline(120000);
const url = `${base}/?key=${key}`;
const browser = await launch();

// Waits until the page's notice says something matching `re`; returns it.
async function noticeMatching(page, re, timeout = 45000) {
  await page.waitForFunction(
    (src) => new RegExp(src).test(document.getElementById('notice').textContent),
    re.source,
    { timeout, polling: 250 }
  );
  return page.textContent('#notice');
}

async function scenario(name, ice, watch, re) {
  const a = await newPage(browser, DESKTOP);
  const b = await newPage(browser, PHONE);
  await b.route('**/api/ice*', (route) => route.fulfill({ json: ice }));
  await joinRoom(a, url, `fail-${name}`, { relayOnly: true });
  await joinRoom(b, url, `fail-${name}`, { relayOnly: true });
  const page = watch === 'A' ? a : b;
  let text;
  try {
    text = await noticeMatching(page, re);
  } catch (e) {
    const seen = await page.evaluate(() => ({
      notice: document.getElementById('notice').textContent,
      peers: [...window.turnd.peers.values()].map((p) => ({
        ice: p.pc.iceConnectionState,
        gathered: p.gathered,
        errors: p.candidateErrors,
        failure: p.failure,
      })),
    }));
    throw new Error(`${name}: ${e.message}\n${JSON.stringify(seen)}`);
  }
  check(true, `${name}: page ${watch} says: ${text}`);
  await a.context().close();
  await b.context().close();
}

await runChecks(timer, [browser], async () => {
  await Promise.all([
    scenario('403', ice403, 'A', /refused the permission \(403\)/),
    scenario('401', ice401, 'B', /refused the TURN credentials \(401/),
    scenario('701', ice701, 'B', /No relay candidate was gathered/),
    scenario('timeout', iceTimeout, 'A', /connectivity checks timed out/),
  ]);
  console.log('all failure checks passed');
});
