// Two Chromium pages on loopback call each other through turnd's page.
// Usage: node call.mjs BASE_URL ACCESS_KEY SCREENSHOT_DIR
// (turnd started by tests/browser.rs with room-size 2, so a third page is
// refused.) Exit status 0 only when every check passed.
import { mkdirSync } from 'node:fs';
import {
  DESKTOP,
  PHONE,
  chat,
  check,
  deadline,
  framesDecoded,
  joinRoom,
  launch,
  newPage,
  path,
  waitConnected,
  waitOr,
  runChecks,
} from './lib.mjs';

const [base, key, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const timer = deadline(150000);
const url = `${base}/?key=${key}`;
// Replaces getUserMedia with one that fails as the browser would (runs in
// the page, before its scripts).
const failingCamera = (name) => {
  navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('camera', name));
};
const browser = await launch();
await runChecks(timer, [browser], async () => {
  // Access: the page without its key is a 401 that says what to do.
  {
    const page = await newPage(browser, DESKTOP);
    const r = await page.goto(`${base}/?key=wrong-key-000000`);
    check(r.status() === 401, 'a wrong key gets 401');
    check((await page.textContent('#locked-message')).includes('access key'), 'the 401 page explains the key');
    await page.screenshot({ path: `${shots}/locked-desktop.png` });
  }

  const a = await newPage(browser, DESKTOP);
  const b = await newPage(browser, PHONE);
  await b.goto(url);
  check((await b.isVisible('#join')) && (await b.isHidden('#call')), 'the lobby shows the room form, no call');
  await b.screenshot({ path: `${shots}/lobby-phone.png` });
  // The lobby's "Invite a phone": a code of the join link (tests/browser.rs
  // reads the screenshot with zbarimg).
  {
    const lobby = await newPage(browser, DESKTOP);
    await lobby.goto(url);
    await lobby.click('.invite summary');
    await lobby.waitForFunction(() => document.getElementById('lobby-qr').complete
      && document.getElementById('lobby-qr').naturalWidth > 0);
    await lobby.screenshot({ path: `${shots}/invite-lobby-desktop.png`, fullPage: true });
    console.log(`lobby invite: ${await lobby.getAttribute('#lobby-qr', 'data-link')}`);
    await lobby.close();
  }

  // 1. Relay only: both ends on a relay pair, video decoded both ways.
  await joinRoom(a, url, 'loop', { relayOnly: true });
  await joinRoom(b, url, 'loop', { relayOnly: true });
  const pa = await waitConnected(a);
  const pb = await waitConnected(b);
  console.log(`path A: ${JSON.stringify(pa)}`);
  console.log(`path B: ${JSON.stringify(pb)}`);
  check(pa.local === 'relay' && pa.remote === 'relay', `A's selected pair is relay/relay (${pa.local}/${pa.remote})`);
  check(pb.local === 'relay' && pb.remote === 'relay', `B's selected pair is relay/relay (${pb.local}/${pb.remote})`);
  check(pa.url.startsWith('turn:') && pa.protocol === 'udp', `A's relay came from ${pa.url} over ${pa.protocol}`);
  check(pa.framesDecoded > 0 && pb.framesDecoded > 0, `video decoded on both (${pa.framesDecoded}, ${pb.framesDecoded})`);
  await a.waitForTimeout(1500); // two stats rounds: RTT and bitrates on the panel
  const panel = await a.textContent('.tile.remote .path');
  check(/relay → relay over udp/.test(panel) && /ms/.test(panel), `the path panel shows it: ${panel}`);

  // 2. Chat both ways over the data channel.
  await chat(a, b, 'hello from the laptop');
  await chat(b, a, 'hello from the phone');
  check(true, 'chat arrives both ways');
  await a.screenshot({ path: `${shots}/call-desktop.png` });
  await b.screenshot({ path: `${shots}/call-phone.png` });
  // "Invite a phone" in the call: a code of the room link.
  await a.click('#invite summary');
  await a.waitForFunction(() => document.getElementById('call-qr').complete
    && document.getElementById('call-qr').naturalWidth > 0);
  await a.screenshot({ path: `${shots}/invite-call-desktop.png`, fullPage: true });
  console.log(`room invite: ${await a.inputValue('#link')}`);
  await a.click('#invite summary');

  // 3. Mute disables the audio track we send.
  await a.click('#mute');
  const sentAudio = await a.evaluate(() => [...window.turnd.peers.values()][0].transceiver('audio').sender.track.enabled);
  check(sentAudio === false && (await a.textContent('#mute')) === 'Unmute', 'mute disables the sent audio track');
  await a.click('#mute');

  // 4. Camera switch: another device, frames keep coming, no renegotiation.
  const before = await a.evaluate(() => ({
    n: window.turnd.negotiations,
    device: [...window.turnd.peers.values()][0].transceiver('video').sender.track.getSettings().deviceId,
    options: [...document.querySelectorAll('#camera-select option')].map((o) => o.value),
  }));
  check(before.options.length === 3, `the camera list offers the fake cameras (${before.options.length})`);
  const other = before.options[2]; // the third: an I420 one (see lib.mjs)
  check(other !== before.device, 'switching to another camera');
  const decodedBefore = await framesDecoded(b);
  await a.selectOption('#camera-select', other);
  await a.waitForFunction(
    (d) => [...window.turnd.peers.values()][0].transceiver('video').sender.track.getSettings().deviceId === d,
    other,
    { timeout: 10000 }
  );
  await a.waitForTimeout(2000);
  const after = await a.evaluate(() => window.turnd.negotiations);
  const decodedAfter = await framesDecoded(b);
  await a.waitForTimeout(2000);
  const decodedLater = await framesDecoded(b);
  check(after === before.n, `camera switched without renegotiation (offers ${before.n} → ${after})`);
  check(
    decodedLater > decodedAfter + 5,
    `frames keep flowing after the switch (${decodedBefore} before, ${decodedAfter} → ${decodedLater} in the 2 s after)`
  );

  // 5. A third page is refused: this server's rooms hold 2.
  {
    const c = await newPage(browser, DESKTOP);
    await joinRoom(c, url, 'loop', { relayOnly: true });
    await c.waitForSelector('#notice:not([hidden])', { timeout: 10000 });
    const text = await c.textContent('#notice');
    check(/full/.test(text), `a third page is told the room is full: ${text}`);
    await c.screenshot({ path: `${shots}/room-full-desktop.png` });
    await c.context().close();
  }

  // 6. Credentials are refreshed before they expire (here: now) and handed
  // to the connection; the ICE restarts below then use them.
  const oldUser = await a.evaluate(() => window.turnd.ice.iceServers[1].username);
  await a.evaluate(() => scheduleIceRefresh(0.1));
  await a.waitForFunction(
    (u) => [...window.turnd.peers.values()][0].pc.getConfiguration().iceServers[1].username !== u,
    oldUser,
    { timeout: 10000 }
  );
  check(true, 'fresh TURN credentials reach the live connection');

  // 7. Glare: both switch "relay only" off at the same moment, which
  // restarts ICE on both ends at once; when the two offers cross, perfect
  // negotiation makes the polite side roll back. Either way both ends must
  // end up stable with new ICE credentials on each side.
  const ufrags = (p) =>
    p.evaluate(() => {
      const pc = [...window.turnd.peers.values()][0].pc;
      const u = (d) => /a=ice-ufrag:(\S+)/.exec(d?.sdp || '')?.[1];
      return { local: u(pc.localDescription), remote: u(pc.remoteDescription), state: pc.signalingState };
    });
  const before7 = await Promise.all([ufrags(a), ufrags(b)]);
  const offers = await Promise.all([a, b].map((p) => p.evaluate(() => window.turnd.negotiations)));
  await Promise.all([a, b].map((p) => p.click('#relay-only-live')));
  for (const [i, p] of [a, b].entries()) {
    await waitOr(
      p,
      15000,
      (old) => {
        const pc = [...window.turnd.peers.values()][0].pc;
        const u = (d) => /a=ice-ufrag:(\S+)/.exec(d?.sdp || '')?.[1];
        return pc.signalingState === 'stable' && u(pc.localDescription) !== old.local && u(pc.remoteDescription) !== old.remote;
      },
      before7[i]
    );
  }
  const made = await Promise.all([a, b].map((p, i) => p.evaluate(() => window.turnd.negotiations).then((n) => n - offers[i])));
  console.log(`    offers made during the restart: A ${made[0]}, B ${made[1]} (one each: the offers crossed)`);
  const framesGlare = await framesDecoded(b);
  await b.waitForFunction(
    (n) => {
      const p = [...window.turnd.peers.values()][0];
      return p.pc.connectionState === 'connected' && p.path.framesDecoded > n + 20;
    },
    framesGlare,
    { timeout: 20000 }
  );
  await chat(a, b, 'still here after the restart');
  check(true, `both restarted ICE at once and the call went on (now ${(await path(a)).local} path)`);

  // 7b. Glare in a recovery: both pages find the connection lost in the
  // same second and restart at once, as both do after a network change,
  // A while its signaling is also down and coming back (closed as
  // "reconnecting", so it resumes as the same participant and what it sent
  // meanwhile is replayed). The recovery path (`recover`), not the
  // relay-only switch: one negotiation must win, both ends with new ICE
  // credentials, the same ids, media and chat going on.
  const ids7b = await Promise.all([a, b].map((p) => p.evaluate(() => window.turnd.me)));
  const before7b = await Promise.all([ufrags(a), ufrags(b)]);
  const resumes = await a.evaluate(() => window.turnd.sig.reconnects);
  await Promise.all([
    a.evaluate(() => {
      reconnect('test'); // eslint-disable-line no-undef
      [...window.turnd.peers.values()][0].recover('network', true);
    }),
    b.evaluate(() => [...window.turnd.peers.values()][0].recover('network', true)),
  ]);
  for (const [i, p] of [a, b].entries()) {
    await waitOr(
      p,
      20000,
      (old) => {
        const pc = [...window.turnd.peers.values()][0].pc;
        const u = (d) => /a=ice-ufrag:(\S+)/.exec(d?.sdp || '')?.[1];
        return (
          window.turnd.sig.live &&
          pc.signalingState === 'stable' &&
          u(pc.localDescription) !== old.local &&
          u(pc.remoteDescription) !== old.remote
        );
      },
      before7b[i]
    );
  }
  const logs7b = await Promise.all([a, b].map((p) => p.evaluate(() => window.turnd.log.map(([, w]) => w))));
  const glare = logs7b.flat().filter((w) => w.includes('glare'));
  console.log(`    glare seen: ${glare.join('; ') || 'none (one offer was answered before the other was made)'}`);
  check(
    (await a.evaluate(() => window.turnd.sig.reconnects)) > resumes,
    'A\'s signaling reconnected during the restart'
  );
  const ids7bAfter = await Promise.all([a, b].map((p) => p.evaluate(() => window.turnd.me)));
  check(
    ids7bAfter[0] === ids7b[0] && ids7bAfter[1] === ids7b[1],
    `both kept their ids (${ids7bAfter.join(', ')}): A resumed, no leave and join`
  );
  check(
    (await Promise.all([a, b].map((p) => p.evaluate(() => window.turnd.peers.size)))).every((n) => n === 1),
    'each still has exactly one peer connection'
  );
  const frames7b = await framesDecoded(b);
  await b.waitForFunction(
    (n) => {
      const p = [...window.turnd.peers.values()][0];
      return p.pc.connectionState === 'connected' && p.path.framesDecoded > n + 20;
    },
    frames7b,
    { timeout: 20000 }
  );
  const framesA7b = await framesDecoded(a);
  await a.waitForFunction(
    (n) => [...window.turnd.peers.values()][0].path.framesDecoded > n + 20,
    framesA7b,
    { timeout: 20000 }
  );
  await chat(a, b, 'still here after both recovered at once');
  check(true, 'both restarted from the recovery path at once, one negotiation won, video and chat both ways');

  // 8. Hang up: the other side closes its connection and removes the tile.
  await a.click('#hangup');
  await b.waitForFunction(() => window.turnd.peers.size === 0 && !document.querySelector('.tile.remote'), null, {
    timeout: 10000,
  });
  check(true, 'hang up closes the peer on the other side');
  check((await a.isHidden('#call')) && (await a.isVisible('#join')), 'and the page that hung up is back in the lobby');

  // 9. No camera: the page joins receive-only, says so, and still sees B.
  {
    const c = await newPage(browser, DESKTOP, failingCamera, 'NotFoundError');
    await joinRoom(c, url, 'loop', { relayOnly: true });
    const pc = await waitConnected(c);
    const text = await c.textContent('#notice');
    check(/receive-only/.test(text), `without a camera the page says so: ${text}`);
    check(pc.framesDecoded > 0 && pc.local === 'relay', `and receives video through the relay (${pc.framesDecoded})`);
    await c.screenshot({ path: `${shots}/receive-only-desktop.png` });
    await c.context().close();
  }

  // 10. Camera refused: a plain explanation, receive-only.
  {
    const c = await newPage(browser, PHONE, failingCamera, 'NotAllowedError');
    await joinRoom(c, url, 'refused', { relayOnly: false });
    await c.waitForSelector('#notice:not([hidden])', { timeout: 10000 });
    const text = await c.textContent('#notice');
    check(/refused/.test(text) && /receive-only/.test(text), `a refused camera is explained: ${text}`);
    await c.screenshot({ path: `${shots}/camera-refused-phone.png` });
    await c.context().close();
  }
  console.log('all browser checks passed');
});
