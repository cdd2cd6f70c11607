// Driven by bin/e2e-nat: the network check page (/check) run from behind
// each NAT, with each step's failure forced, and its verdict asserted.
// Usage:
//   node check.mjs BASE KEY CHROMIUM_A CHROMIUM_B SHOT_DIR \
//     DROP_UDP_CMD UNDROP_UDP_CMD DROP_B_443_CMD UNDROP_B_443_CMD
// A is behind the home NAT (endpoint-independent mapping), B behind the
// carrier's (a new port per destination). The commands change the routers'
// firewalls; each case undoes what it did.
import { execSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { DESKTOP, PHONE, check, deadline, launch, newPage, runChecks } from './lib.mjs';

const [base, key, chromiumA, chromiumB, shots, dropUdp, undropUdp, dropB443, undropB443] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const timer = deadline(240000);
// turnd's certificate is self-signed (TURN over TLS checks it).
const args = ['--ignore-certificate-errors'];
const [ba, bb] = await Promise.all([
  launch({ executablePath: chromiumA, args }),
  launch({ executablePath: chromiumB, args }),
]);

// Runs the check on a fresh page; returns the page and its report.
async function runCheck(browser, view, { corrupt = false } = {}) {
  // With `corrupt`, the page is handed a credential turnd never minted (its
  // fetch of /api/check altered in the page: the plan still comes from
  // turnd, through the namespace's network).
  const page = await newPage(browser, view, corrupt ? () => {
    const fetch0 = window.fetch;
    window.fetch = async (...args) => {
      const res = await fetch0(...args);
      if (!String(args[0]).includes('/api/check')) return res;
      const plan = await res.json();
      plan.credential = 'not-the-password';
      return new Response(JSON.stringify(plan), { status: res.status, headers: { 'content-type': 'application/json' } });
    };
  } : undefined);
  const r = await page.goto(`${base}/check?key=${key}&step-ms=5000`);
  check(r.status() === 200, `check page loads (${r.status()})`);
  await page.click('#run');
  await page.waitForFunction(() => window.turndCheck.report !== null, null, { timeout: 100000, polling: 250 });
  const report = await page.evaluate(() => window.turndCheck.report);
  return { page, report };
}

const step = (page, id) => page.textContent(`#step-${id} .result`);

await runChecks(timer, [ba, bb], async () => {
  // Behind the home NAT, on a phone-sized screen: everything works, one
  // public port for every destination.
  {
    const { page, report } = await runCheck(ba, PHONE);
    check(report.stun.ok && report.stun.public.some((a) => a.startsWith('198.51.100.2:')), `A: STUN sees the home NAT: ${await step(page, 'stun')}`);
    check(report.mapping.result === 'independent', `A: mapping: ${await step(page, 'mapping')}`);
    for (const t of ['udp', 'tls']) check(report[t].ok, `A: TURN over ${t}: ${await step(page, t)}`);
    // bin/e2e-nat's turnd has no plain TCP listener (TLS and HTTP share 443).
    check(report.tcp.offered === false, `A: TURN over tcp: ${await step(page, 'tcp')}`);
    check(report.call.ok && report.call.loss <= 5, `A: call to itself: ${await step(page, 'call')}`);
    check(/keeps one public port/.test(report.verdict), `A: verdict: ${report.verdict}`);
    await page.screenshot({ path: `${shots}/check-phone.png`, fullPage: true });
    // The shared link shows the same report, with no key and no API.
    const link = await page.inputValue('#report-link');
    check(!link.includes(key) && link.includes('/check/report#r='), 'the report link carries no access key');
    const shared = await newPage(ba, DESKTOP);
    await shared.goto(link);
    check((await shared.textContent('#verdict-text')) === report.verdict, 'the report link shows the same verdict');
    check(await shared.isHidden('#run'), 'a shared report runs nothing');
    await shared.context().close();
    await page.context().close();
  }

  // Behind the carrier's NAT, desktop-sized: a new port per destination.
  {
    const { page, report } = await runCheck(bb, DESKTOP);
    check(report.mapping.result === 'symmetric', `B: mapping: ${await step(page, 'mapping')}`);
    check(report.udp.ok && report.call.ok, `B: TURN over UDP and a call through turnd: ${await step(page, 'call')}`);
    check(/symmetric/.test(report.verdict) && /need the relay/.test(report.verdict), `B: verdict: ${report.verdict}`);
    await page.screenshot({ path: `${shots}/check-desktop.png`, fullPage: true });
    await page.context().close();
  }

  // Wrong credentials: every TURN step says 401, and so does the verdict.
  {
    const { page, report } = await runCheck(ba, PHONE, { corrupt: true });
    for (const t of ['udp', 'tls']) check(!report[t].ok && report[t].refused, `wrong credentials, ${t}: ${await step(page, t)}`);
    check(/refused the credentials/.test(report.verdict), `wrong credentials: verdict: ${report.verdict}`);
    await page.context().close();
  }

  // UDP dropped by both routers: no STUN, no TURN over UDP; TLS on 443.
  execSync(dropUdp);
  try {
    const { page, report } = await runCheck(ba, PHONE);
    check(!report.stun.ok && !report.udp.ok, `UDP dropped: ${await step(page, 'stun')} / ${await step(page, 'udp')}`);
    check(report.tls.ok && report.call.ok, `UDP dropped: TLS works and carries the call: ${await step(page, 'call')}`);
    check(/^UDP blocked: calls will use TLS on 443/.test(report.verdict), `UDP dropped: verdict: ${report.verdict}`);
    await page.screenshot({ path: `${shots}/check-udp-blocked.png`, fullPage: true });
    await page.context().close();
  } finally {
    execSync(undropUdp);
  }

  // TCP 443 closed at the carrier: TLS fails on its own, UDP carries on.
  execSync(dropB443);
  try {
    const { page, report } = await runCheck(bb, DESKTOP);
    check(!report.tls.ok && !report.tls.refused, `443 closed: ${await step(page, 'tls')}`);
    check(report.udp.ok && report.call.ok, `443 closed: UDP still relays: ${await step(page, 'udp')}`);
    check(/symmetric/.test(report.verdict) && /over UDP/.test(report.verdict), `443 closed: verdict: ${report.verdict}`);
    await page.context().close();
  } finally {
    execSync(undropB443);
  }
});
