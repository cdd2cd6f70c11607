// turnd network check: what this network lets through to turnd, step by
// step, and what calls from here will need, in plain words. Runs in the
// browser alone (no second device): STUN, the NAT's mapping behaviour, TURN
// over UDP, TCP and TLS each on its own, and a call to itself through turnd.
// A report can be copied or shared as a link that carries no access key.
'use strict';

const $ = (id) => document.getElementById(id);
const accessKey = document.querySelector('meta[name="turnd-key"]').content;
const params = new URLSearchParams(location.search);
// How long one step waits for an answer (tests shorten it).
const STEP_MS = Math.max(1000, Math.min(30000, Number(params.get('step-ms')) || 6000));

const check = { running: false, report: null };
window.turndCheck = check; // for the browser tests

function withKey(path) {
  return accessKey ? `${path}${path.includes('?') ? '&' : '?'}key=${encodeURIComponent(accessKey)}` : path;
}

function show(step, state, text) {
  const li = $(`step-${step}`);
  li.className = `step ${state}`;
  li.querySelector('.result').textContent = text;
}

const ms = (t0) => Math.round(performance.now() - t0);

// ---- candidates ------------------------------------------------------------

// The fields of an ICE candidate, from its attributes where the browser has
// them, else from its SDP line.
function parse(c) {
  const f = c.candidate.split(' ');
  const at = (k) => {
    const i = f.indexOf(k);
    return i >= 0 ? f[i + 1] : null;
  };
  return {
    type: c.type || at('typ'),
    address: c.address || f[4],
    port: Number(c.port || f[5]),
    protocol: (c.protocol || f[2] || '').toLowerCase(),
    relatedAddress: c.relatedAddress || at('raddr'),
    relatedPort: Number(c.relatedPort || at('rport')),
    url: c.url || null,
  };
}

// Gathers candidates with `iceServers` until `enough(candidates)` holds,
// gathering completes or `STEP_MS` pass. Errors are what the browser
// reported per server (401: credentials refused; 701: no answer).
function gather(iceServers, policy, enough = () => false) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    // `complete`: gathering ended on its own (every server answered or
    // gave up), not at the step's deadline.
    const out = { candidates: [], errors: [], ms: 0, complete: false };
    let pc;
    try {
      pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: policy });
    } catch (e) {
      out.errors.push({ code: 0, text: String(e.message || e) });
      resolve(out);
      return;
    }
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      out.ms = ms(t0);
      clearTimeout(timer);
      pc.close();
      resolve(out);
    };
    const timer = setTimeout(finish, STEP_MS);
    pc.onicecandidate = (e) => {
      if (!e.candidate || !e.candidate.candidate) {
        out.complete = true;
        finish();
        return;
      }
      out.candidates.push(parse(e.candidate));
      if (enough(out.candidates)) finish();
    };
    pc.onicecandidateerror = (e) => {
      out.errors.push({ code: e.errorCode, text: e.errorText || '', url: e.url || '' });
    };
    pc.createDataChannel('check');
    pc.createOffer()
      .then((o) => pc.setLocalDescription(o))
      .catch((e) => {
        out.errors.push({ code: 0, text: String(e.message || e) });
        finish();
      });
  });
}

const refused = (g) => g.errors.some((e) => e.code === 401 || e.code === 403);
// What the browser said went wrong, for the result line.
const said = (g) => {
  const t = [...new Set(g.errors.map((e) => e.text).filter(Boolean))].join('; ');
  return t ? ` (the browser says: ${t})` : '';
};

// ---- the steps -------------------------------------------------------------

async function stepStun(plan, r) {
  show('stun', 'running', 'asking turnd…');
  const g = await gather([{ urls: plan.stun }], 'all', (cs) => cs.some((c) => c.type === 'srflx'));
  const srflx = g.candidates.filter((c) => c.type === 'srflx');
  r.stun = { ok: srflx.length > 0, ms: g.ms, public: srflx.map((c) => `${c.address}:${c.port}`) };
  if (r.stun.ok) {
    show('stun', 'ok', `seen from ${r.stun.public.join(', ')} (${g.ms} ms)`);
  } else if (g.complete && !g.errors.length) {
    // turnd answered with the address the browser already has: no NAT.
    r.stun = { ok: true, ms: g.ms, public: [], noNat: true };
    show('stun', 'ok', `turnd sees this device's own address: no NAT in between (${g.ms} ms)`);
  } else {
    show('stun', 'bad', `no answer over UDP in ${g.ms} ms: UDP to turnd is blocked${said(g)}`);
  }
}

async function stepMapping(plan, r) {
  if (!plan.stun2) {
    r.mapping = { result: 'untested' };
    show('mapping', 'skip', 'not tested: this server has no second STUN port (stun.other-address)');
    return;
  }
  if (!r.stun.ok) {
    r.mapping = { result: 'untested' };
    show('mapping', 'skip', 'not tested: no STUN answer over UDP');
    return;
  }
  if (r.stun.noNat) {
    r.mapping = { result: 'none' };
    show('mapping', 'ok', 'no NAT: nothing to map');
    return;
  }
  show('mapping', 'running', 'asking two turnd ports…');
  // One local socket asks both ports; the browser reports each distinct
  // public address once. Two for IPv4: the NAT picked a new port for the
  // second destination.
  const g = await gather([{ urls: [plan.stun, plan.stun2] }], 'all');
  const v4 = new Set(
    g.candidates.filter((c) => c.type === 'srflx' && !c.address.includes(':')).map((c) => `${c.address}:${c.port}`)
  );
  // The second port gave no answer (a timeout, not a failed name lookup,
  // which is what a socket of the other family gets for an IPv4-only name).
  const silent = g.errors.some(
    (e) => e.code === 701 && (e.url || '').endsWith(plan.stun2.split(':').pop()) && !/lookup/i.test(e.text || '')
  );
  if (v4.size > 1) {
    r.mapping = { result: 'symmetric', seen: [...v4], ms: g.ms };
    show('mapping', 'warn', `depends on destination (symmetric): ${[...v4].join(' and ')}; calls from this network need the relay`);
  } else if (v4.size === 1 && !silent) {
    r.mapping = { result: 'independent', seen: [...v4], ms: g.ms };
    show('mapping', 'ok', `endpoint-independent: ${[...v4][0]} for both destinations`);
  } else {
    r.mapping = { result: 'unknown', ms: g.ms };
    show('mapping', 'skip', 'could not tell: the second port did not answer');
  }
}

async function stepTurn(plan, r, transport) {
  const url = plan.turn[transport];
  if (!url) {
    r[transport] = { ok: false, offered: false };
    show(transport, 'skip', 'not offered by this server');
    return;
  }
  show(transport, 'running', `allocating at ${url}…`);
  const g = await gather(
    [{ urls: url, username: plan.username, credential: plan.credential }],
    'relay',
    (cs) => cs.some((c) => c.type === 'relay')
  );
  const relay = g.candidates.find((c) => c.type === 'relay');
  r[transport] = { ok: !!relay, offered: true, ms: g.ms, refused: refused(g), relay: relay && `${relay.address}:${relay.port}` };
  if (relay) {
    show(transport, 'ok', `relay address ${relay.address}:${relay.port} in ${g.ms} ms`);
  } else if (refused(g)) {
    show(transport, 'bad', 'turnd refused the credentials (401)');
  } else if (transport === 'tls' && g.complete && !g.errors.length && /^turns:(\[|[0-9.]+:)/.test(url)) {
    // Firefox skips turns: URLs naming an IP address, without a word.
    r.tls.ipOnly = true;
    show(transport, 'bad', 'this browser uses TURN over TLS only with a host name, and turnd is known here by its ' +
      'IP address: whoever runs turnd should set public-host to a DNS name (with a certificate for it)');
  } else if (g.complete) {
    show(transport, 'bad', `no relay address: turnd could not be reached this way${said(g)}`);
  } else {
    show(transport, 'bad', `no answer in ${g.ms} ms: blocked on the way to turnd${said(g)}`);
  }
}

// Two peer connections in this page, relay only, joined by a data channel:
// round-trip time, then a few seconds of paced unreliable messages for
// throughput and loss.
async function stepCall(plan, r) {
  const urls = ['udp', 'tcp', 'tls'].filter((t) => r[t] && r[t].ok).map((t) => plan.turn[t]);
  if (!urls.length) {
    r.call = { ok: false, why: 'no relay' };
    show('call', 'bad', 'not possible: no TURN transport worked');
    return;
  }
  show('call', 'running', 'connecting through turnd…');
  const config = {
    iceServers: [{ urls, username: plan.username, credential: plan.credential }],
    iceTransportPolicy: 'relay',
  };
  const a = new RTCPeerConnection(config);
  const b = new RTCPeerConnection(config);
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate).catch(() => {});
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate).catch(() => {});
  try {
    const ping = a.createDataChannel('ping', { ordered: true });
    const flood = a.createDataChannel('flood', { ordered: false, maxRetransmits: 0 });
    const channels = new Promise((resolve) => {
      const got = {};
      b.ondatachannel = (e) => {
        got[e.channel.label] = e.channel;
        if (got.ping && got.flood) resolve(got);
      };
    });
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(b.localDescription);
    const opened = new Promise((resolve) => {
      if (ping.readyState === 'open') resolve();
      ping.onopen = () => resolve();
    });
    const t0 = performance.now();
    const connected = await Promise.race([opened.then(() => true), new Promise((res) => setTimeout(() => res(false), 2 * STEP_MS))]);
    if (!connected) {
      r.call = { ok: false, why: 'no connection' };
      show('call', 'bad', `no connection through turnd in ${ms(t0)} ms`);
      return;
    }
    const connectMs = ms(t0);
    const far = await channels;
    far.ping.onmessage = (e) => far.ping.send(e.data);
    const rtts = [];
    for (let i = 0; i < 10; i++) {
      const sent = performance.now();
      const back = new Promise((resolve) => {
        ping.onmessage = () => resolve(true);
        setTimeout(() => resolve(false), 1000);
      });
      ping.send(String(i));
      if (await back) rtts.push(performance.now() - sent);
    }
    rtts.sort((x, y) => x - y);
    // 200 messages a second of 1000 bytes (1.6 Mbit/s, a video call's
    // order) for 3 seconds, unreliable: what arrives is what got through.
    let received = 0;
    let bytes = 0;
    far.flood.onmessage = (e) => {
      received += 1;
      bytes += e.data.byteLength || e.data.length || 0;
    };
    const payload = new Uint8Array(1000);
    let sent = 0;
    const floodStart = performance.now();
    await new Promise((resolve) => {
      const tick = setInterval(() => {
        const due = Math.floor((performance.now() - floodStart) / 5);
        while (sent < due && sent < 600 && flood.bufferedAmount < 256 * 1024) {
          flood.send(payload);
          sent += 1;
        }
        if (performance.now() - floodStart > 3000 || sent >= 600) {
          clearInterval(tick);
          resolve();
        }
      }, 20);
    });
    const seconds = (performance.now() - floodStart) / 1000;
    await new Promise((res) => setTimeout(res, 500)); // the last ones in flight
    const stats = await a.getStats();
    let via = '';
    stats.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        const local = stats.get(s.localCandidateId);
        if (local) via = local.relayProtocol || local.protocol || '';
      }
    });
    r.call = {
      ok: true,
      connectMs,
      rttMs: rtts.length ? Math.round(rtts[Math.floor(rtts.length / 2)]) : null,
      kbps: Math.round((bytes * 8) / seconds / 1000),
      loss: sent ? Math.round((1000 * (sent - received)) / sent) / 10 : 0,
      via,
    };
    const c = r.call;
    show('call', c.loss > 5 ? 'warn' : 'ok', `connected in ${c.connectMs} ms${via ? ` over ${via}` : ''}: ` +
      `round trip ${c.rttMs} ms, ${c.kbps} kbit/s (1600 offered), ${c.loss} % lost`);
  } catch (e) {
    r.call = { ok: false, why: String(e.message || e) };
    show('call', 'bad', `failed: ${r.call.why}`);
  } finally {
    a.close();
    b.close();
  }
}

// ---- the verdict -----------------------------------------------------------

function verdict(r) {
  const works = ['udp', 'tcp', 'tls'].filter((t) => r[t] && r[t].ok);
  const words = [];
  if (['udp', 'tcp', 'tls'].some((t) => r[t] && r[t].refused) && !works.length) {
    words.push('turnd refused the credentials (401): the page was given a credential turnd does not accept ' +
      '(the server\'s secret changed, or its clock is wrong). Reload; if it stays, tell whoever runs turnd.');
  } else if (!works.length) {
    words.push(r.stun && r.stun.ok
      ? 'UDP reaches turnd but no relay could be allocated: calls that need a relay will fail from here.'
      : 'Nothing reaches turnd from this network (UDP, TCP and TLS all blocked, or the server is down): ' +
        'calls that need a relay will fail from here.');
  } else if (!r.udp.ok) {
    words.push(r.tls && r.tls.ok
      ? 'UDP blocked: calls will use TLS on 443, expect higher latency.'
      : 'UDP blocked: calls will use TURN over TCP, expect higher latency.');
  } else if (r.mapping && r.mapping.result === 'symmetric') {
    words.push('Your NAT picks a new public port for every destination (symmetric): calls from this network ' +
      'need the relay, and turnd relays them over UDP.');
  } else if (r.mapping && r.mapping.result === 'independent') {
    words.push('UDP works and your NAT keeps one public port for every destination: most calls connect ' +
      'directly, and turnd relays the rest over UDP.');
  } else {
    words.push('UDP works: calls can go through turnd over UDP.');
  }
  if (r.call && r.call.ok) {
    words.push(`A call through turnd: ${r.call.rttMs} ms round trip, ${r.call.kbps} kbit/s, ${r.call.loss} % lost` +
      (r.call.loss > 5 ? ' (too lossy for good video).' : '.'));
  } else if (r.call && works.length) {
    words.push('A call through turnd did not connect.');
  }
  return words.join(' ');
}

function lines(r) {
  const out = [`turnd network check, ${r.at}, server ${r.server}`];
  for (const step of ['stun', 'mapping', 'udp', 'tcp', 'tls', 'call']) {
    const li = $(`step-${step}`);
    out.push(`- ${li.querySelector('.name').textContent}: ${li.querySelector('.result').textContent}`);
  }
  out.push(`Verdict: ${r.verdict}`);
  return out.join('\n');
}

const encode = (o) => btoa(unescape(encodeURIComponent(JSON.stringify(o)))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const decode = (s) => JSON.parse(decodeURIComponent(escape(atob(s.replace(/-/g, '+').replace(/_/g, '/')))));

function finish(r) {
  r.verdict = verdict(r);
  $('verdict').hidden = false;
  $('verdict-text').textContent = r.verdict;
  r.text = lines(r);
  $('report').value = r.text;
  const shared = { ...r };
  delete shared.text;
  $('report-link').value = `${location.origin}/check/report#r=${encode(shared)}`;
  check.report = r;
}

async function run() {
  if (check.running) return;
  check.running = true;
  $('run').disabled = true;
  $('verdict').hidden = true;
  for (const s of ['stun', 'mapping', 'udp', 'tcp', 'tls', 'call']) show(s, '', '');
  $('status').textContent = 'checking…';
  try {
    const res = await fetch(withKey('/api/check'), { cache: 'no-store' });
    if (res.status === 401) throw new Error('The access key is wrong or has changed: ask for a new link.');
    if (res.status === 429) throw new Error('Too many attempts from this address; wait a minute and try again.');
    if (!res.ok) throw new Error(`turnd answered ${res.status}.`);
    const plan = await res.json();
    const r = { v: 1, at: new Date().toISOString(), server: location.host };
    await stepStun(plan, r);
    await stepMapping(plan, r);
    for (const t of ['udp', 'tcp', 'tls']) await stepTurn(plan, r, t);
    await stepCall(plan, r);
    finish(r);
    $('status').textContent = 'done';
  } catch (e) {
    $('status').textContent = String(e.message || e);
  } finally {
    check.running = false;
    $('run').disabled = false;
  }
}

// A shared report (/check/report#r=…): shown as it was, nothing run.
function showShared() {
  const m = location.hash.match(/^#r=([A-Za-z0-9_-]+)$/);
  if (!m) return false;
  let r;
  try {
    r = decode(m[1]);
  } catch {
    $('status').textContent = 'this report link is damaged';
    return true;
  }
  $('run').hidden = true;
  $('back').hidden = true;
  $('intro').textContent = `A report shared from ${r.server || 'turnd'}, ${r.at || ''}.`;
  const text = (v) => (typeof v === 'string' ? v : '');
  const st = r.stun || {};
  show('stun', st.ok ? 'ok' : 'bad',
    st.noNat ? 'no NAT in between' : st.ok ? `seen from ${(st.public || []).map(text).join(', ')}` : 'no answer over UDP');
  const mapping = {
    independent: 'endpoint-independent',
    symmetric: 'depends on destination (symmetric)',
    none: 'no NAT',
    unknown: 'could not tell',
    untested: 'not tested',
  };
  show('mapping', '', mapping[text(r.mapping && r.mapping.result)] || 'not tested');
  for (const t of ['udp', 'tcp', 'tls']) {
    const x = r[t] || {};
    show(t, x.ok ? 'ok' : x.offered === false ? 'skip' : 'bad',
      x.ok ? `relay address ${text(x.relay)} in ${Number(x.ms) || 0} ms` : x.offered === false ? 'not offered' : x.refused ? 'credentials refused' : 'no relay address');
  }
  const c = r.call || {};
  show('call', c.ok ? 'ok' : 'bad', c.ok ? `round trip ${Number(c.rttMs)} ms, ${Number(c.kbps)} kbit/s, ${Number(c.loss)} % lost` : 'did not connect');
  $('verdict').hidden = false;
  $('verdict-text').textContent = text(r.verdict);
  $('report').value = lines({ ...r, verdict: text(r.verdict) });
  $('report-link').value = location.href;
  $('status').textContent = 'shared report';
  return true;
}

$('run').addEventListener('click', run);
$('back').href = withKey('/');
$('copy-report').addEventListener('click', () => navigator.clipboard && navigator.clipboard.writeText($('report').value));
$('copy-link').addEventListener('click', () => navigator.clipboard && navigator.clipboard.writeText($('report-link').value));
if (!showShared() && params.get('run') === '1') run();
