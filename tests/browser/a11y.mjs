// The lobby and the call page (connected to a second page) audited by axe-core (WCAG 2.0/2.1 A and AA
// and axe's best practices) at desktop and phone size, "Invite a phone"
// open. Usage: node a11y.mjs BASE_URL ACCESS_KEY. Exit status 0 only when
// no rule is violated, whatever its impact.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { DESKTOP, PHONE, check, deadline, joinRoom, launch, newPage, runChecks, waitConnected } from './lib.mjs';

const [base, key] = process.argv.slice(2);
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'];
const timer = deadline(90000);
const url = `${base}/?key=${key}`;
const browser = await launch();

// The page's CSP allows no inline script: axe goes in through the
// debugging protocol, as the test's own code does.
async function audit(page, what) {
  await page.evaluate(axeSource);
  const r = await page.evaluate((tags) => window.axe.run(document, { runOnly: { type: 'tag', values: tags } }), TAGS);
  for (const v of r.violations) {
    const where = v.nodes.map((n) => n.target.join(' ')).join(', ');
    console.log(`${what}: ${v.id} (${v.impact}): ${v.help}: ${where}`);
  }
  check(r.violations.length === 0, `${what}: no axe violation (${r.passes.length} rules pass)`);
}

await runChecks(timer, [browser], async () => {
  for (const [name, view] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    const page = await newPage(browser, view);
    await page.goto(url);
    await page.click('.invite summary');
    await audit(page, `lobby at ${name} size`);
    // In a call with someone: the remote tile and its path panel too.
    const other = await newPage(browser, DESKTOP);
    await joinRoom(page, url, `a11y-${name}`, { relayOnly: true });
    await joinRoom(other, url, `a11y-${name}`, { relayOnly: true });
    await waitConnected(page);
    await page.waitForTimeout(1500); // the panel's first stats rounds
    await page.click('#invite summary');
    await audit(page, `call page at ${name} size, connected`);
    await page.context().close();
    await other.context().close();
  }
  console.log('all accessibility checks passed');
});
