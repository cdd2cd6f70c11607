// Driven by bin/e2e-fleet, inside its "internet" namespace: three turnd
// nodes (198.51.100.11-13, names node-1..3), Chromium behind the home NAT
// (A) and behind the symmetric carrier NAT (B) through wrapper scripts, the
// call page on node 1. Usage:
//   node fleet.mjs KEY CHROMIUM_A CHROMIUM_B PID1 PID2 PID3 PROBE SHOT_DIR
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { DESKTOP, PHONE, check, deadline, joinRoom, launch, newPage, path, runChecks, waitConnected, waitOr } from './lib.mjs';

const [key, chromiumA, chromiumB, pid1, pid2, , probe, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const timer = deadline(290000);
const ip = (i) => `198.51.100.1${i}`;
const page = (i) => `http://${ip(i)}:8080`;
const nodeOf = (address) => (address || '').match(/^198\.51\.100\.1([1-3]):/)?.[1] ?? '?';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function metrics(i) {
  return (await fetch(`http://${ip(i)}:9478/metrics`)).text();
}
function metric(text, series) {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? null : Number(line.split(' ')[1]);
}
async function ice(i, room) {
  const r = await fetch(`${page(i)}/api/ice?key=${key}${room ? `&room=${room}` : ''}`);
  if (!r.ok) throw new Error(`/api/ice on node ${i}: ${r.status}`);
  return r.json();
}
// Polls `fn` every 200 ms until it is true; fails after `ms`.
async function until(ms, what, fn) {
  const end = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(200);
  }
}

// Seconds until 12 answers in a row from `asked` nodes leave `gone` out.
async function leftOut(asked, gone) {
  const t = Date.now();
  let clean = 0;
  for (let i = 0; clean < 12; i++) {
    if (Date.now() - t > 10000) throw new Error(`${gone} still handed out after 10 s`);
    clean = (await ice(asked[i % asked.length])).node === gone ? 0 : clean + 1;
    await sleep(20);
  }
  return (Date.now() - t) / 1000;
}

const args = [`--unsafely-treat-insecure-origin-as-secure=${page(1)}`];
const [ba, bb] = await Promise.all([
  launch({ executablePath: chromiumA, args }),
  launch({ executablePath: chromiumB, args }),
]);

// A (home NAT, desktop) and B (carrier NAT, phone) in `room`, relay only,
// from node 1's page; both connected, with the node of each relay.
async function call(room) {
  const pages = [await newPage(ba, DESKTOP), await newPage(bb, PHONE)];
  for (const p of pages) await joinRoom(p, `${page(1)}/?key=${key}`, room, { relayOnly: true });
  const paths = [];
  for (const p of pages) paths.push(await waitConnected(p, 30000));
  for (const [who, p] of [['A', paths[0]], ['B', paths[1]]]) {
    check(p.local === 'relay' && p.remote === 'relay', `${room}: ${who} relay/relay via ${p.localAddress}`);
  }
  return { pages, nodes: paths.map((p) => nodeOf(p.localAddress)) };
}

// Every 50 ms, the page notes when its received video frame count last
// grew; `gap()` is the longest time it did not, so far.
async function watchFrames(p) {
  await p.evaluate(() => {
    const w = { max: 0, last: performance.now(), frames: -1 };
    window.frameWatch = w;
    setInterval(async () => {
      const peer = [...window.turnd.peers.values()][0];
      if (!peer) return;
      let f = 0;
      (await peer.pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') f += r.framesReceived || 0;
      });
      const now = performance.now();
      if (f > w.frames) {
        if (w.frames >= 0) w.max = Math.max(w.max, now - w.last);
        w.last = now;
        w.frames = f;
      }
    }, 50);
  });
}
const gap = (p) => p.evaluate(() => ({ max: Math.max(window.frameWatch.max, performance.now() - window.frameWatch.last), frames: window.frameWatch.frames }));

async function hangUp(pages) {
  for (const p of pages) {
    await p.click('#hangup').catch(() => {});
    await p.context().close();
  }
}

await runChecks(timer, [ba, bb], async () => {
  // The fleet converges: every node sees its two siblings healthy.
  await until(15000, 'every node sees two healthy siblings', async () => {
    for (const i of [1, 2, 3]) {
      if (metric(await metrics(i), 'turnd_cluster_siblings{state="healthy"}') !== 2) return false;
    }
    return true;
  });
  check(true, 'fleet: every node sees two healthy siblings');

  // 60 API clients, asking the three nodes in turn.
  const counts = {};
  for (let i = 0; i < 60; i++) {
    const v = await ice(1 + (i % 3));
    counts[v.node] = (counts[v.node] || 0) + 1;
  }
  const spread = Object.values(counts);
  check(
    Object.keys(counts).length === 3 && spread.every((n) => n >= 16 && n <= 24),
    `60 API clients spread within ±20 % of 20: ${JSON.stringify(counts)}`
  );

  // The handouts above count as load for 10 s: let them age. Call 1 then
  // goes to the page's own node (all are equally idle), and call 2 to the
  // least-loaded one: node 2 (node 1 carries call 1, ties go in list order).
  await sleep(11000);
  const one = await call('fleet-one');
  check(one.nodes.every((n) => n === '1'), `call 1 relays on node 1 (${one.nodes})`);

  const two = await call('fleet-two');
  check(two.nodes.every((n) => n === '2'), `call 2 relays on node 2 (${two.nodes})`);

  // /metrics of all three nodes, each carrying what it was given.
  for (const i of [1, 2, 3]) {
    const m = await metrics(i);
    const allocs = metric(m, 'turnd_allocations');
    check(allocs !== null && metric(m, 'turnd_draining') === 0, `node ${i} /metrics scraped: ${allocs} allocations`);
    if (i < 3) check(allocs >= 2, `node ${i} carries call ${i}`);
  }


  // Node 2 is killed: both pages restart ICE through another node.
  const framesBefore = await Promise.all(two.pages.map(async (p) => (await path(p)).framesDecoded));
  const killed = Date.now();
  process.kill(Number(pid2), 'SIGKILL');
  check((await leftOut(['1', '3'], 'node-2')) < 5, 'killed node 2 is left out of /api/ice answers within 5 s');
  const back = async (p, before) =>
    p.evaluate((before) => {
      const peer = [...window.turnd.peers.values()][0];
      const ok = ['connected', 'completed'].includes(peer.pc.iceConnectionState);
      const via = peer.path.localAddress || '';
      return ok && peer.restarts > 0 && peer.path.local === 'relay' && !via.startsWith('198.51.100.12:') &&
        peer.path.framesDecoded > before;
    }, before);
  await until(20000, 'call 2 reconnects after node 2 is killed', async () =>
    (await back(two.pages[0], framesBefore[0])) && (await back(two.pages[1], framesBefore[1]))).catch(async (e) => {
    const seen = await Promise.all(two.pages.map((p) => p.evaluate(() => {
      const peer = [...window.turnd.peers.values()][0];
      return { node: window.turnd.ice.node, ice: peer.pc.iceConnectionState, restarts: peer.restarts, path: peer.path,
        errors: peer.candidateErrors.slice(-5), notice: document.getElementById('notice').textContent };
    })));
    throw new Error(`${e.message}: ${JSON.stringify(seen)}`);
  });
  const took = (Date.now() - killed) / 1000;
  const after = await Promise.all(two.pages.map(path));
  check(
    took <= 10,
    `node 2 killed: call 2 reconnected via node ${after.map((p) => nodeOf(p.localAddress))} (ICE restart) in ${took.toFixed(1)} s`
  );

  // Call 2 has done its part; fewer pages decoding video leave the two
  // cores to call 1.
  await hangUp(two.pages);

  // Node 1 drains under call 1.
  for (const p of one.pages) await watchFrames(p);
  await sleep(2000);
  const drained = Date.now();
  process.kill(Number(pid1), 'SIGTERM');
  check((await leftOut(['1', '3'], 'node-1')) < 5, 'draining node 1 is left out of /api/ice answers within 5 s');
  await until(5000, 'node 1 readiness says draining', async () => (await fetch(`http://${ip(1)}:9478/readyz`)).status === 503);
  check(true, 'node 1 draining: /readyz answers 503');
  // A new client: 300, sent to the live sibling (node 2 is dead).
  let said = '';
  await until(5000, 'a new Allocate on node 1 gets 300 naming node 3', async () => {
    const r = spawnSync(probe, ['1'], { encoding: 'utf8', timeout: 10000 });
    said = `${r.stdout}${r.stderr}`;
    return said.includes(`error 300`) && said.includes(`sends new clients to ${ip(3)}:3478`);
  });
  check(true, `new Allocate on draining node 1: ${said.split('\n').find((l) => l.includes('300')).trim()}`);
  // Call 1 went on all along (measured before new browsers start: on two
  // cores their start-up alone stalls the others' video).
  while (Date.now() - drained < 8000) await sleep(250);
  const gaps = await Promise.all(one.pages.map(gap));
  check(
    gaps.every((g) => g.max <= 1000 && g.frames > 0),
    `call 1 through the drain: longest gap in received frames A ${Math.round(gaps[0].max)} ms, B ${Math.round(gaps[1].max)} ms`
  );
  // A call that starts now lands on a live node.
  const three = await call('fleet-three');
  check(three.nodes.every((n) => n === '2' || n === '3'), `a call joining after the drain relays on node ${three.nodes}`);
  const joined = await three.pages[0].evaluate(() => window.turnd.ice.node);
  check(joined !== 'node-1', `the late joiners were sent to ${joined}`);
  await hangUp(three.pages);
  // ... and goes on until it ends (the late call's start-up left out).
  for (const p of one.pages) await p.evaluate(() => Object.assign(window.frameWatch, { max: 0, last: performance.now() }));
  await sleep(4000);
  const later = await Promise.all(one.pages.map(gap));
  check(
    later.every((g) => g.max <= 1000),
    `call 1 still flowing ${Math.round((Date.now() - drained) / 1000)} s into the drain: longest gap A ${Math.round(later[0].max)} ms, B ${Math.round(later[1].max)} ms`
  );
  await one.pages[0].screenshot({ path: `${shots}/fleet-drain-desktop.png` });
  // Call 1 ends: node 1 exits (its last allocation gone, or the drain timeout).
  await hangUp(one.pages);
  const ended = Date.now();
  await until(95000, 'node 1 exits', async () => {
    try {
      await fetch(`http://${ip(1)}:9478/healthz`, { signal: AbortSignal.timeout(1000) });
      return false;
    } catch {
      return true;
    }
  });
  check(true, `node 1 exited ${((Date.now() - ended) / 1000).toFixed(1)} s after call 1 ended`);
});
