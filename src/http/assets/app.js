// turnd call page: WebSocket signaling (rooms of up to 4, full mesh), camera
// and microphone, screen share, data-channel chat and a live view of the path
// each connection took. Plain JavaScript, no build step, no external assets.
'use strict';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const accessKey = document.querySelector('meta[name="turnd-key"]').content;
// `servers=stun` keeps only the STUN URLs (shows why TURN is needed).
const serverMode = params.get('servers') === 'stun' ? 'stun' : 'turn';

const call = {
  me: null,
  room: null,
  ice: null, // {iceServers, ttl}
  relayOnly: false,
  peers: new Map(), // id -> Peer
  stream: new MediaStream(), // what we send: one audio and one video track at most
  camera: null, // the camera track while a screen is shared
  screen: null,
  negotiations: 0, // offers created, for tests: switching cameras must not add any
  iceTimer: null,
};
window.turnd = call; // for the browser tests and for curious users in the console

// What happened to the call and when (wall clock, ms): network changes,
// signaling connections, restarts, ICE states. The last 200 entries, for
// the tests and for anyone asking why a call stalled.
call.log = [];
function logEvent(what) {
  call.log.push([Date.now(), what]);
  if (call.log.length > 200) call.log.shift();
}

// ---- notices and status ----------------------------------------------------

// One notice at a time; `topic` lets a later event clear only its own
// (a connection that recovers clears its failure, not the camera notice).
function notice(text, kind = 'info', topic = 'general') {
  const n = $('notice');
  n.textContent = text;
  n.className = kind;
  n.dataset.topic = topic;
  n.hidden = !text;
}

function clearNotice(topic) {
  if ($('notice').dataset.topic === topic) notice('');
}

function status(text) {
  $('status').textContent = text;
}

// ---- access and credentials ------------------------------------------------

function withKey(path) {
  return accessKey ? `${path}${path.includes('?') ? '&' : '?'}key=${encodeURIComponent(accessKey)}` : path;
}

$('check-link').href = withKey('/check');

// "Invite a phone": a QR code of `link`, made by turnd (no third party
// sees the link or its key).
function showCode(img, link) {
  img.src = withKey(`/api/qr.svg?text=${encodeURIComponent(link)}`);
  img.dataset.link = link;
}

showCode($('lobby-qr'), (() => {
  const u = new URL(location.origin + '/');
  if (accessKey) u.searchParams.set('key', accessKey);
  return u.toString();
})());

// In a fleet, turnd names the node it sends this page to (`node`); the
// participants of one room are sent to the same node.
async function fetchIce(room = call.room) {
  const path = room ? `/api/ice?room=${encodeURIComponent(room)}` : '/api/ice';
  // Bounded: on a network that just went away a request can hang for long.
  const r = await fetch(withKey(path), { cache: 'no-store', signal: AbortSignal.timeout(4000) });
  if (r.status === 401) throw new Error('The access key is wrong or has changed: ask for a new join link.');
  if (r.status === 429) throw new Error('Too many attempts from this address; wait a minute and try again.');
  if (!r.ok) throw new Error(`turnd answered ${r.status} for credentials.`);
  const ice = await r.json();
  if (serverMode === 'stun') {
    ice.iceServers = ice.iceServers
      .map((s) => ({ urls: [].concat(s.urls).filter((u) => u.startsWith('stun:')) }))
      .filter((s) => s.urls.length);
  }
  return ice;
}

// New credentials: kept for connections made from now on and handed to
// every live one (for its next restart).
function useIce(ice) {
  call.ice = ice;
  for (const p of call.peers.values()) p.pc.setConfiguration(rtcConfig());
}

// Fresh credentials for an ICE restart, handed to every connection when
// they arrive; one request at a time, shared by the connections restarting
// together. Waits at most `waitMs` (a later answer still applies to the
// next restart); a failure leaves the credentials in hand.
let iceRequest = null;
async function freshIce(waitMs) {
  if (!iceRequest) {
    iceRequest = fetchIce()
      .then(useIce)
      .catch((e) => console.warn('no fresh credentials; restarting with the current ones', e))
      .finally(() => {
        iceRequest = null;
      });
  }
  const req = iceRequest;
  let timer;
  await Promise.race([req, new Promise((r) => (timer = setTimeout(r, waitMs)))]);
  clearTimeout(timer);
}

// Credentials expire after `ttl`: fetch fresh ones before that, so an ICE
// restart late in a long call still authenticates.
function scheduleIceRefresh(seconds) {
  clearTimeout(call.iceTimer);
  call.iceTimer = setTimeout(async () => {
    try {
      useIce(await fetchIce());
      scheduleIceRefresh(call.ice.ttl * 0.8);
    } catch (e) {
      console.warn('credential refresh failed; retrying in a minute', e);
      scheduleIceRefresh(60);
    }
  }, seconds * 1000);
}

function rtcConfig() {
  return { iceServers: call.ice.iceServers, iceTransportPolicy: call.relayOnly ? 'relay' : 'all' };
}

// ---- local media -------------------------------------------------------------

async function startMedia() {
  const tries = [{ audio: true, video: true }, { audio: true }, { video: true }];
  let lastError = null;
  for (const constraints of tries) {
    try {
      const s = await navigator.mediaDevices.getUserMedia(constraints);
      s.getTracks().forEach((t) => call.stream.addTrack(t));
      break;
    } catch (e) {
      lastError = e;
      if (e.name === 'NotAllowedError' || e.name === 'SecurityError') break;
    }
  }
  $('local-video').srcObject = call.stream;
  const got = call.stream.getTracks().map((t) => t.kind);
  if (got.length === 2) return;
  if (lastError && (lastError.name === 'NotAllowedError' || lastError.name === 'SecurityError')) {
    notice('Camera and microphone were refused, so you joined receive-only. Allow them in the site settings ' +
      '(the icon left of the address) and join again to be seen and heard.', 'error');
  } else if (!navigator.mediaDevices) {
    notice('This page is not a secure context (use https:// or http://127.0.0.1), so the browser hides the ' +
      'camera: you joined receive-only.', 'error');
  } else if (got.length === 0) {
    notice('No camera or microphone found: you joined receive-only (you can still see, hear and chat).');
  } else {
    notice(`No ${got.includes('audio') ? 'camera' : 'microphone'} found: joined with ${got[0]} only.`);
  }
  $('local-note').textContent = got.length ? `(${got.join(' + ')} only)` : '(receive-only)';
}

function track(kind) {
  return call.stream.getTracks().find((t) => t.kind === kind) || null;
}

async function listCameras() {
  const sel = $('camera-select');
  sel.replaceChildren();
  const devices = navigator.mediaDevices ? await navigator.mediaDevices.enumerateDevices() : [];
  const cams = devices.filter((d) => d.kind === 'videoinput');
  const current = track('video')?.getSettings().deviceId;
  cams.forEach((d, i) => {
    const o = new Option(d.label || `Camera ${i + 1}`, d.deviceId);
    o.selected = d.deviceId === current;
    sel.add(o);
  });
  sel.disabled = cams.length < 2 || !track('video');
}

// Puts `t` in place of our video track on every connection, without
// renegotiation (RTCRtpSender.replaceTrack).
async function replaceVideo(t) {
  const old = track('video');
  if (old) call.stream.removeTrack(old);
  call.stream.addTrack(t);
  for (const p of call.peers.values()) {
    const tx = p.transceiver('video');
    if (tx) await tx.sender.replaceTrack(t);
  }
  $('local-video').srcObject = call.stream;
  return old;
}

async function switchCamera(deviceId) {
  const s = await navigator.mediaDevices.getUserMedia({ video: { deviceId: { exact: deviceId } } });
  const t = s.getVideoTracks()[0];
  const old = track('video');
  t.enabled = old ? old.enabled : true;
  if (call.screen) {
    call.camera?.stop();
    call.camera = t; // used again when sharing stops
  } else {
    (await replaceVideo(t))?.stop();
  }
}

async function toggleShare() {
  if (call.screen) return stopShare();
  let s;
  try {
    s = await navigator.mediaDevices.getDisplayMedia({ video: true });
  } catch (e) {
    if (e.name !== 'NotAllowedError') notice(`Screen sharing failed: ${e.message}`, 'error');
    return;
  }
  call.screen = s.getVideoTracks()[0];
  call.screen.addEventListener('ended', stopShare);
  call.camera = await replaceVideo(call.screen);
  for (const p of call.peers.values()) p.ensureSending('video');
  $('share').setAttribute('aria-pressed', 'true');
  $('share').textContent = 'Stop sharing';
}

async function stopShare() {
  if (!call.screen) return;
  const screen = call.screen;
  call.screen = null;
  if (call.camera) {
    await replaceVideo(call.camera);
  } else {
    call.stream.removeTrack(screen);
    for (const p of call.peers.values()) await p.transceiver('video')?.sender.replaceTrack(null);
  }
  call.camera = null;
  screen.stop();
  $('share').setAttribute('aria-pressed', 'false');
  $('share').textContent = 'Share screen';
}

// ---- one remote peer -------------------------------------------------------------

class Peer {
  constructor(id) {
    this.id = id;
    // Perfect negotiation (W3C WebRTC §10.7): the polite side yields on glare.
    this.polite = call.me < id;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.queue = Promise.resolve();
    this.candidateErrors = [];
    this.gathered = { host: 0, srflx: 0, prflx: 0, relay: 0 };
    this.prevBytes = null;
    this.pc = new RTCPeerConnection(rtcConfig());
    this.dc = this.pc.createDataChannel('chat', { negotiated: true, id: 0 });
    this.dc.onmessage = (e) => chatLine(this.id, e.data);
    this.dc.onopen = () => this.render();
    this.pc.onnegotiationneeded = () => this.offer();
    this.pc.onicecandidate = ({ candidate }) => {
      if (candidate?.type) this.gathered[candidate.type] += 1;
      logEvent(`${this.id}: gathered ${candidate ? `${candidate.type} ${candidate.protocol} ${candidate.address}:${candidate.port}` : 'all'}`);
      send({ type: 'candidate', to: this.id, payload: candidate ? candidate.toJSON() : null });
    };
    this.pc.onicecandidateerror = (e) => {
      this.candidateErrors.push({ code: e.errorCode, url: e.url, text: e.errorText });
    };
    this.pc.ontrack = ({ track: t }) => {
      this.remote.addTrack(t);
      this.video.srcObject = this.remote;
    };
    this.pc.oniceconnectionstatechange = () => this.iceChanged();
    this.pc.onconnectionstatechange = () => this.render();
    this.remote = new MediaStream();
    this.tile = document.createElement('figure');
    this.tile.className = 'tile remote';
    this.tile.dataset.peer = id;
    this.video = document.createElement('video');
    this.video.autoplay = true;
    this.video.playsInline = true;
    const cap = document.createElement('figcaption');
    cap.textContent = `Peer ${id}`;
    this.panel = document.createElement('dl');
    this.panel.className = 'path';
    this.tile.append(this.video, cap, this.panel);
    $('videos').append(this.tile);
    this.path = {};
    this.timer = setInterval(() => this.readStats(), 1000);
    this.failure = null; // why the connection failed, in words, once known
    this.restarts = 0; // ICE restarts after a lost connection, for tests
    this.lost = null; // the timer that restarts ICE when a lost connection stays lost
    this.recovering = false;
    this.stalled = 0; // seconds in a row the selected pair received nothing
    this.everConnected = false; // only a connection that worked is "lost"
    this.attempts = 0; // restarts since the connection last worked
    this.lostAt = null; // when this page noticed the connection was lost (performance.now())
    this.restartedAt = -Infinity; // the last ICE restart, this side's or the other's
    this.restartSerial = 0;
    this.rebuilt = 0; // new connections in a row since media last worked
    this.videoSeen = false; // video from the other side decoded at some point
    this.undecoded = 0; // seconds of video arriving without decoding
    this.deferred = false; // a polite restart waiting a second for the other side's
    this.resetting = false; // the next offer replaces a failed connection
    this.recoveries = []; // how long each loss took to recover, ms (for the panel and tests)
    // ICE takes up to 30 s to give up; say what is likely wrong sooner.
    this.slow = setTimeout(async () => {
      if (!['connected', 'completed'].includes(this.pc.iceConnectionState)) {
        const why = await this.explainFailure();
        if (!['connected', 'completed'].includes(this.pc.iceConnectionState)) {
          notice(`Still no connection to ${this.id} after 12 s. ${why}`, 'error', 'ice');
        }
      }
    }, 12000);
  }

  transceiver(kind) {
    return this.pc.getTransceivers().find((t) => !t.stopped && (t.sender.track?.kind || t.receiver.track.kind) === kind);
  }

  // Offer our tracks: a transceiver per kind, send-receive when we have
  // the track, receive-only when not (no camera still sees the others).
  attachMedia() {
    for (const kind of ['audio', 'video']) {
      const t = track(kind);
      const tx = this.transceiver(kind);
      if (!tx) {
        this.pc.addTransceiver(t || kind, { direction: t ? 'sendrecv' : 'recvonly', streams: [call.stream] });
      } else if (t && !tx.sender.track) {
        tx.sender.replaceTrack(t);
        tx.sender.setStreams(call.stream);
        tx.direction = 'sendrecv';
      }
    }
  }

  // Called when we start sending a kind we had none of (screen share from
  // a receive-only page): needs renegotiation, which perfect negotiation handles.
  ensureSending(kind) {
    const tx = this.transceiver(kind);
    if (tx && tx.direction === 'recvonly') tx.direction = 'sendrecv';
  }

  async offer() {
    logEvent(`${this.id}: offer`);
    try {
      this.makingOffer = true;
      call.negotiations += 1;
      await this.pc.setLocalDescription();
      // `reset`: this is a new connection replacing one that failed; the
      // other side starts over too.
      send({ type: 'offer', to: this.id, payload: { ...this.pc.localDescription.toJSON(), reset: this.resetting } });
      this.resetting = false;
    } catch (e) {
      console.warn('offer failed', e);
    } finally {
      this.makingOffer = false;
    }
  }

  // Signaling messages for this peer run one at a time, in order.
  receive(msg) {
    this.queue = this.queue.then(() => this.handle(msg)).catch((e) => console.warn('signaling', msg.type, e));
  }

  async handle({ type, payload }) {
    if (type === 'candidate') {
      try {
        await this.pc.addIceCandidate(payload);
      } catch (e) {
        if (!this.ignoreOffer) throw e;
      }
      return;
    }
    const collision = type === 'offer' && (this.makingOffer || this.pc.signalingState !== 'stable');
    this.ignoreOffer = !this.polite && collision;
    logEvent(`${this.id}: got ${type}${this.ignoreOffer ? ' (ignored: glare, impolite)' : collision ? ' (glare: rolling back ours)' : ''}`);
    if (this.ignoreOffer) return;
    // The other side restarting ICE (new credentials): a recovery is under
    // way, so this side's stall detector waits for it instead of starting
    // over with a restart of its own.
    const ufrag = (d) => /a=ice-ufrag:(\S+)/.exec(d?.sdp || '')?.[1];
    if (type === 'offer' && this.pc.remoteDescription && ufrag(payload) !== ufrag(this.pc.remoteDescription)) {
      this.restartedAt = performance.now();
    }
    await this.pc.setRemoteDescription(payload); // rolls back our own offer when polite
    if (type === 'offer') {
      this.attachMedia();
      await this.pc.setLocalDescription();
      send({ type: 'answer', to: this.id, payload: this.pc.localDescription.toJSON() });
    }
  }

  // A connection lost for a few seconds (the relay node went away, the
  // network changed) gets an ICE restart with fresh credentials: in a fleet
  // they name a node that is up. Failed connections restart at once.
  iceChanged() {
    const s = this.pc.iceConnectionState;
    logEvent(`${this.id}: ice ${s}`);
    clearTimeout(this.lost);
    if (s === 'disconnected') this.lost = setTimeout(() => this.recover(), 2000);
    if (s === 'failed') {
      this.recover();
      this.explainFailure().then((why) => {
        if (this.pc.iceConnectionState === 'failed') notice(why, 'error', 'ice');
      });
    }
    if (s === 'connected' || s === 'completed') {
      this.everConnected = true;
      this.attempts = 0;
      this.failure = null;
      clearNotice('ice');
      this.recovered();
    }
    this.render();
  }

  // The connection works again after this page found it lost: ICE
  // connected, or media arriving again (a restart may never leave
  // "connected" when the browser had not noticed the old path die).
  recovered() {
    if (this.lostAt === null) return;
    const ms = performance.now() - this.lostAt;
    this.lostAt = null;
    this.attempts = 0;
    this.rebuilt = 0; // the bound is on new connections in a row, not per call
    this.recovering = false;
    logEvent(`${this.id}: media back after ${Math.round(ms)} ms`);
    this.recoveries.push(Math.round(ms));
    this.announceRecovery(ms);
  }

  // Says, once the new path is known, how long the reconnection took.
  async announceRecovery(ms) {
    await new Promise((r) => setTimeout(r, 1100)); // the next stats read names the new pair
    const p = this.path;
    const via = p.local ? `: ${p.local} → ${p.remote} over ${p.protocol}${p.local === 'relay' && p.url ? ` via ${p.url}` : ''}` : '';
    notice(`Reconnected to ${this.id} in ${(ms / 1000).toFixed(1)} s${via}.`, 'info', 'ice');
  }

  // A connection that never connected is not lost: its failure is
  // explained instead (explainFailure). Six restarts (30 s) at most, then
  // the failure is explained too. `why`: 'ice' (disconnected or failed),
  // 'stalled' (nothing received while media was flowing) or 'network'
  // (this device's network changed: restart whatever ICE says).
  // `now`: even while a restart is under way (the network just came back:
  // the restart made without one gathered nothing).
  async recover(why = 'ice', now = false) {
    const s = this.pc.iceConnectionState;
    if (!this.everConnected || this.attempts >= 6 || this.pc.connectionState === 'closed') return;
    if ((this.recovering && !now) || (why === 'ice' && !['disconnected', 'failed'].includes(s))) return;
    if (now && performance.now() - this.restartedAt < 1000) return; // one restart per change
    if (this.lostAt === null) this.lostAt = performance.now();
    if (navigator.onLine === false) {
      // Nothing to gather candidates on: the restart waits for a network
      // (networkChanged), or for the next check.
      logEvent(`${this.id}: lost (${why}), offline`);
      return;
    }
    if (this.polite && !now && !this.deferred) {
      // Both sides notice a loss at about the same time: the polite one
      // gives the other a second to restart first (answering that restart
      // mends the connection as well as a restart of its own would).
      this.deferred = true;
      const asked = performance.now();
      setTimeout(() => {
        this.deferred = false;
        if (this.restartedAt < asked && this.lostAt !== null) this.recover(why, true);
      }, 1000);
      return;
    }
    const dtlsFailed = this.pc.connectionState === 'failed' && ['connected', 'completed'].includes(s);
    // A negotiation left half done (an answer lost in a glare) blocks any
    // new offer: after one restart that did not help, start over.
    const stuck = this.attempts >= 1 && this.pc.signalingState !== 'stable' && !this.makingOffer;
    // Two restarts that brought no media back: one more rarely does (seen
    // with Firefox after a glare), a new connection does.
    if ((dtlsFailed || stuck || this.attempts >= 2) && this.rebuilt < 3) {
      const reason = dtlsFailed
        ? 'connection failed under working ICE'
        : stuck
          ? `negotiation stuck in ${this.pc.signalingState}`
          : `${this.attempts} restarts did not help`;
      rebuildPeer(this.id, reason);
      return;
    }
    this.stalled = 0;
    this.recovering = true;
    this.attempts += 1;
    const serial = ++this.restartSerial;
    notice(why === 'network' ? 'Network changed; reconnecting…' : `Connection to ${this.id} lost; reconnecting…`, 'info', 'ice');
    logEvent(`${this.id}: restart ${this.attempts} (${why}, ice ${s}, ${this.pc.signalingState})`);
    try {
      // Fresh credentials (in a fleet they may name another node), waited
      // for at most 1.5 s: the ones in hand still work, and right after a
      // network change the request may ride a pooled connection of the
      // old network until it times out (Firefox does that).
      await freshIce(1500);
      this.restarts += 1;
      this.restartedAt = performance.now();
      // Perfect negotiation settles it when the other side restarts too.
      // The offer is made now rather than left to negotiationneeded, which
      // some browsers fire late or again after answering the other side.
      this.pc.restartIce();
      if (this.pc.signalingState === 'stable' && !this.makingOffer) await this.offer();
      if (call.ice.node) notice(`Connection to ${this.id} lost; reconnecting via ${call.ice.node}…`, 'info', 'ice');
    } finally {
      // One restart at a time; another if this one has not brought media
      // back within 6 s (a restart takes a signaling round trip, candidate
      // gathering on a network the browser may only just have noticed, and
      // checks: cutting it short only starts over).
      setTimeout(() => {
        if (this.restartSerial !== serial) return; // a newer one took over
        this.recovering = false;
        if (this.lostAt !== null) this.recover('again', true);
      }, 6000);
    }
  }

  // Why the connection failed, in words, from what this page saw: the
  // candidates it gathered (and over which protocol the relay was reached),
  // the errors its TURN client reported, and what turnd says of this
  // page's allocations (a 403 for the other side's address never reaches
  // the page's JavaScript, so it asks).
  async explainFailure() {
    const errors = this.candidateErrors;
    const byCode = (code) => errors.filter((e) => e.code === code);
    const turnErrors = errors.filter((e) => /^turns?:/.test(e.url || ''));
    const relays = await this.relayProtocols();
    let why;
    if (byCode(401).length) {
      why = `turnd refused the TURN credentials (401 at ${byCode(401)[0].url}): reload the page for fresh ones; if ` +
        'it persists, the server clock or shared secret is off.';
    } else if (serverMode === 'stun' && relays.length === 0) {
      why = 'No direct path: one side is behind a NAT that STUN alone cannot traverse (symmetric or ' +
        'carrier-grade NAT). This is what a TURN relay is for: reload without servers=stun.';
    } else if (relays.length === 0 && (call.relayOnly || turnErrors.length)) {
      const silent = [...new Set(turnErrors.filter((e) => e.code === 701).map((e) => e.url))];
      why = 'No relay candidate was gathered: ' +
        (silent.length ? `${silent.join(', ')} did not answer. ` : 'turnd gave no relay address. ') +
        'This network may block UDP (and TCP) to turnd, or the server is down. A TURN-over-TLS server on port ' +
        '443 gets through most firewalls.';
    } else {
      const refused = await this.refusedByServer();
      if (refused.length) {
        why = `turnd refused the permission (403) to relay to the other side's address ${refused.join(', ')}: it ` +
          'is not an address turnd may send to (a private or reserved range, or turnd\'s own address without a ' +
          'live relay behind it). The server\'s [peers] allow list decides.';
      } else if (relays.length && !relays.includes('udp') && this.gathered.srflx === 0) {
        why = `This network blocks UDP: turnd was only reached over ${relays.join(' and ')}, and the other side ` +
          'could not be reached through that relay. The other side may be offline or on a network that blocks ' +
          'it too.';
      } else {
        why = 'The connectivity checks timed out: no candidate pair answered. The other side may have gone ' +
          'away, or a firewall between the relay and the other side drops the traffic.';
      }
    }
    this.failure = why;
    return why;
  }

  // Whether media arrives on the selected pair right now (bytes received
  // grow over 400 ms).
  async flowing() {
    const received = async () => {
      let n = null;
      try {
        const st = await this.pc.getStats();
        st.forEach((r) => {
          if (r.type === 'transport' && r.selectedCandidatePairId) n = st.get(r.selectedCandidatePairId)?.bytesReceived ?? null;
        });
      } catch {
        // closed
      }
      return n;
    };
    const before = await received();
    await new Promise((r) => setTimeout(r, 400));
    const after = await received();
    return before !== null && after !== null && after > before;
  }

  // The transports ("udp", "tcp", "tls") this page reached turnd over for
  // its relay candidates.
  async relayProtocols() {
    const found = new Set();
    try {
      (await this.pc.getStats()).forEach((r) => {
        if (r.type === 'local-candidate' && r.candidateType === 'relay') found.add(r.relayProtocol || 'udp');
      });
    } catch {
      // a closed connection has no stats: nothing gathered
    }
    return [...found];
  }

  // The peers turnd refused this page's allocations a permission for.
  async refusedByServer() {
    const username = call.ice?.iceServers.find((s) => s.username)?.username;
    if (!username) return [];
    try {
      const r = await fetch(withKey(`/api/turn-status?username=${encodeURIComponent(username)}`), { cache: 'no-store' });
      if (!r.ok) return [];
      const { allocations } = await r.json();
      return [...new Set(allocations.flatMap((a) => a.refused))];
    } catch {
      return [];
    }
  }

  async readStats() {
    if (this.pc.connectionState === 'closed') return;
    const stats = await this.pc.getStats();
    let pair = null;
    let framesDecoded = 0;
    let rtpIn = 0; // media packets received: the other side sends media
    stats.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
      if (r.type === 'inbound-rtp' && r.kind === 'video') framesDecoded += r.framesDecoded || 0;
      if (r.type === 'inbound-rtp') rtpIn += r.packetsReceived || 0;
    });
    const path = { state: this.pc.connectionState, framesDecoded };
    this.prevFrames = this.path?.framesDecoded ?? 0;
    if (pair) {
      const local = stats.get(pair.localCandidateId) || {};
      const remote = stats.get(pair.remoteCandidateId) || {};
      const now = performance.now();
      const bytes = { sent: pair.bytesSent || 0, received: pair.bytesReceived || 0, at: now };
      const prev = this.prevBytes;
      this.prevBytes = bytes;
      // A connection that carried media and receives nothing for 3 s is
      // lost even while ICE still says "connected" (Chromium keeps saying
      // so for up to 30 s after the relay it goes through died): restart
      // ICE then. (A muted sender still sends packets; a call without any
      // media, chat only, is left to ICE's own verdict.)
      const still = prev && rtpIn > 0 && bytes.received === prev.received;
      this.stalled = still ? this.stalled + 1 : 0;
      const settling = performance.now() - this.restartedAt < 4000; // a restart (either side's) under way
      if (this.stalled >= 3 && !settling) this.recover('stalled');
      const flowing = prev && bytes.received > prev.received && ['connected', 'completed'].includes(this.pc.iceConnectionState);
      if (flowing) this.recovered();
      // Video arriving (over 150 kbit/s: more than audio) that does not
      // decode for 4 s, from a side whose video decoded before: the
      // connection carries packets this browser no longer hands to its
      // decoder (Firefox after some ICE restarts: until ICE consent runs
      // out, 30 s). A restart does not mend that; a new connection does.
      if (framesDecoded > 0) this.videoSeen = true;
      const kbpsIn = prev ? ((bytes.received - prev.received) * 8) / (now - prev.at) : 0;
      const undecoded = flowing && this.videoSeen && kbpsIn > 150 && framesDecoded === this.prevFrames;
      this.undecoded = undecoded ? this.undecoded + 1 : 0;
      if (this.undecoded >= 4 && !settling && this.rebuilt < 3) {
        this.undecoded = 0;
        if (this.lostAt === null) this.lostAt = performance.now();
        rebuildPeer(this.id, `video arrives (${Math.round(kbpsIn)} kbit/s) but does not decode`);
      }
      Object.assign(path, {
        local: local.candidateType,
        remote: remote.candidateType,
        protocol: local.relayProtocol || local.protocol,
        url: local.url || '',
        localAddress: `${local.address || local.ip || '?'}:${local.port}`,
        remoteAddress: `${remote.address || remote.ip || '?'}:${remote.port}`,
        rttMs: pair.currentRoundTripTime !== undefined ? Math.round(pair.currentRoundTripTime * 1000) : null,
        kbpsOut: prev ? Math.round(((bytes.sent - prev.sent) * 8) / (now - prev.at)) : null,
        kbpsIn: prev ? Math.round(((bytes.received - prev.received) * 8) / (now - prev.at)) : null,
      });
    }
    this.path = path;
    this.render();
  }

  render() {
    const p = this.path;
    const rows = [
      ['state', `${this.pc.connectionState} (ice ${this.pc.iceConnectionState})`],
      ['path', p.local ? `${p.local} → ${p.remote} over ${p.protocol}` : '—'],
      ['via', p.local === 'relay' ? `${p.url}${call.ice?.node ? ` (${call.ice.node})` : ''}` : p.localAddress ? `${p.localAddress} → ${p.remoteAddress}` : '—'],
      ['rtt', p.rttMs != null ? `${p.rttMs} ms` : '—'],
      ['rate', p.kbpsIn != null ? `↓ ${p.kbpsIn} kbit/s ↑ ${p.kbpsOut} kbit/s` : '—'],
      ['chat', this.dc.readyState],
      ['recovered', this.recoveries.length ? `in ${(this.recoveries.at(-1) / 1000).toFixed(1)} s (${this.recoveries.length}×)` : '—'],
    ];
    this.panel.replaceChildren(
      ...rows.flatMap(([k, v]) => {
        const dt = document.createElement('dt');
        dt.textContent = k;
        const dd = document.createElement('dd');
        dd.textContent = v;
        if (k === 'path' && p.local) dd.className = p.local;
        dd.dataset.field = k;
        return [dt, dd];
      })
    );
  }

  close() {
    clearInterval(this.timer);
    clearTimeout(this.slow);
    clearTimeout(this.lost);
    this.pc.close();
    this.tile.remove();
  }
}

// ---- signaling -------------------------------------------------------------------
//
// One WebSocket to turnd at a time, outliving networks: a heartbeat every
// second (a connection silent for 3 s is dead, whatever TCP says), a new
// connection with backoff when one is lost or the network changes, and a
// resume token so the page comes back as the same participant (the others
// keep their connection to it). What each side relays carries a `seq`;
// whatever the other end has not acknowledged is sent again on resume, so
// an offer made while the network was away is not lost.

const sig = {
  ws: null,
  live: false, // joined or resumed on this socket
  token: null, // resumes this participant
  heard: 0, // the last seq received
  sent: 0, // the last seq given to one of ours
  unacked: [], // ours, not yet acknowledged
  lastHeard: 0,
  openedAt: 0,
  retries: 0, // connections tried since the last one that worked
  retry: null,
  settle: null, // coalesces a burst of network-change events
  heartbeat: null,
  lostAt: null, // when the connection was found lost
  reconnects: 0, // for tests
};
call.sig = sig;

const RELAYED = ['offer', 'answer', 'candidate'];

function send(msg) {
  if (RELAYED.includes(msg.type)) {
    msg.seq = ++sig.sent;
    sig.unacked.push(msg);
    if (sig.unacked.length > 256) sig.unacked.shift();
  }
  if (sig.live && sig.ws?.readyState === WebSocket.OPEN) sig.ws.send(JSON.stringify(msg));
}

function peer(id) {
  let p = call.peers.get(id);
  if (!p) {
    p = new Peer(id);
    call.peers.set(id, p);
  }
  return p;
}

function dropPeer(id) {
  const p = call.peers.get(id);
  if (p) {
    p.close();
    call.peers.delete(id);
  }
  return p;
}

// Replaces the connection to `id` with a new one: for what an ICE restart
// cannot mend (Firefox can leave DTLS failed under ICE that recovered) or
// restarts that keep failing. `offer`: this side starts (its offer tells
// the other side to start over too).
function rebuildPeer(id, why, offer = true) {
  const old = call.peers.get(id);
  dropPeer(id);
  const p = peer(id);
  if (old) {
    Object.assign(p, { everConnected: true, lostAt: old.lostAt ?? performance.now(), restarts: old.restarts,
      recoveries: old.recoveries, rebuilt: old.rebuilt + 1, restartedAt: performance.now(), videoSeen: old.videoSeen });
  }
  logEvent(`${id}: new connection (${why})`);
  if (offer) {
    p.resetting = true;
    p.attachMedia(); // negotiation needed: the offer
  }
  return p;
}

function onSignal(msg) {
  if (msg.seq) {
    if (msg.seq <= sig.heard) return; // sent again after a resume
    sig.heard = msg.seq;
  }
  switch (msg.type) {
    case 'peers':
      // A fresh participant (the first join, or a resume that came too
      // late): whatever connections this page had belong to its old self.
      if (call.me && call.me !== msg.you) {
        for (const id of [...call.peers.keys()]) dropPeer(id);
        sig.heard = 0;
        sig.sent = 0;
        sig.unacked = [];
      }
      signalingBack(msg);
      // The newcomer calls everyone already there; they answer.
      for (const id of msg.peers) peer(id).attachMedia();
      break;
    case 'resumed':
      signalingBack(msg);
      sig.unacked = sig.unacked.filter((m) => m.seq > msg.ack);
      for (const m of sig.unacked) sig.ws.send(JSON.stringify(m));
      break;
    case 'pong':
      sig.unacked = sig.unacked.filter((m) => m.seq > msg.ack);
      break;
    case 'join':
      chatLine(null, `${msg.from} joined`);
      break;
    case 'offer':
      // The other side replaced a failed connection: so does this one
      // (unless it is itself new).
      if (msg.payload?.reset && call.peers.get(msg.from)?.pc.remoteDescription) rebuildPeer(msg.from, 'the other side started over', false);
      peer(msg.from).receive(msg);
      break;
    case 'answer':
    case 'candidate':
      peer(msg.from).receive(msg);
      break;
    case 'leave':
      if (dropPeer(msg.from)) chatLine(null, `${msg.from} left`);
      break;
    case 'error':
      if (msg.code === 'room-full') {
        notice(`${msg.message}. Pick another room name.`, 'error');
        leave();
      } else {
        console.warn('signaling error', msg);
      }
      break;
  }
}

function signalingBack(msg) {
  logEvent(`signaling ${msg.type} as ${msg.you}`);
  call.me = msg.you;
  sig.token = msg.token;
  sig.live = true;
  sig.retries = 0;
  status(`in room ${msg.room} as ${msg.you}`);
  if (sig.lostAt !== null) {
    sig.lostAt = null;
    clearNotice('signaling');
    // Back after an outage (the network may have changed without the
    // browser saying so): restart what does not flow.
    if (msg.type === 'resumed') restartStalled(performance.now());
  }
}

// After a network change or a signaling outage: an ICE restart for every
// connection whose media does not flow, unless the other side restarted
// since `since` (answering that gathers on the network this side has now).
async function restartStalled(since) {
  for (const p of [...call.peers.values()]) {
    if (p.restartedAt >= since || (await p.flowing())) continue;
    p.recover('network', true);
  }
}

// Opens a signaling connection and joins (or resumes in) the room.
// Resolves once the socket is open; rejects if the very first one cannot.
function openSignaling() {
  return new Promise((resolve, reject) => {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}${withKey('/ws')}`);
    sig.ws = ws;
    sig.live = false;
    sig.openedAt = performance.now();
    let opened = false;
    ws.onopen = () => {
      opened = true;
      sig.lastHeard = performance.now();
      const join = { type: 'join', room: call.room };
      if (sig.token) Object.assign(join, { resume: sig.token, ack: sig.heard });
      ws.send(JSON.stringify(join));
      resolve(ws);
    };
    ws.onmessage = (e) => {
      if (sig.ws !== ws) return;
      sig.lastHeard = performance.now();
      try {
        onSignal(JSON.parse(e.data));
      } catch (err) {
        console.warn('bad signaling message', err);
      }
    };
    ws.onclose = () => {
      if (sig.ws !== ws) return;
      if (!opened && !call.me) {
        sig.ws = null;
        reject(new Error('Cannot reach the signaling server (or the access key was refused).'));
      } else {
        reconnect('closed');
      }
    };
  });
}

// The connection is lost (or suspect): drop it and open another, at once
// the first time, then after 0.5, 1, 2 and 4 s.
function reconnect(why) {
  if (!call.room) return;
  const old = sig.ws;
  sig.ws = null;
  sig.live = false;
  if (old) {
    old.onclose = null;
    // 4000: "reconnecting", so turnd keeps this participant for a resume.
    if (old.readyState <= WebSocket.OPEN) old.close(4000, 'reconnecting');
  }
  if (sig.lostAt === null) {
    sig.lostAt = performance.now();
    notice(why === 'network' ? 'Network changed; reconnecting…' : 'Lost the connection to turnd; reconnecting…', 'info', 'signaling');
  }
  sig.reconnects += 1;
  logEvent(`signaling lost (${why}); reconnecting`);
  clearTimeout(sig.retry);
  const delay = sig.retries === 0 ? 0 : Math.min(4000, 250 * 2 ** sig.retries);
  sig.retries += 1;
  sig.retry = setTimeout(() => call.room && openSignaling().catch(() => {}), delay);
}

function heartbeat() {
  const ws = sig.ws;
  const now = performance.now();
  if (!ws) return;
  if (ws.readyState === WebSocket.CONNECTING) {
    if (now - sig.openedAt > 5000) reconnect('timeout');
  } else if (ws.readyState === WebSocket.OPEN) {
    if (now - sig.lastHeard > 3000) reconnect('heartbeat');
    else ws.send(JSON.stringify({ type: 'ping', ack: sig.heard }));
  }
}

// This device's network changed (the browser says so where it can): once
// it is online again, a new signaling connection at once and an ICE
// restart on every connection, rather than waiting for either to time out.
function networkChanged() {
  if (!call.room) return;
  logEvent(`network changed (${navigator.onLine === false ? 'offline' : 'online'})`);
  if (navigator.onLine === false) {
    notice('No network; the call resumes when there is one…', 'info', 'signaling');
    return;
  }
  // Browsers report a change as a burst of events: act once it settles.
  clearTimeout(sig.settle);
  sig.settle = setTimeout(async () => {
    sig.retries = 0;
    const changedAt = performance.now();
    reconnect('network');
    // Signaling back first (up to 2 s): what the other side sent meanwhile
    // arrives, and a restart it made answers for this one. A connection
    // whose media flows (the same network came back) is left alone.
    for (let i = 0; i < 20 && !sig.live; i++) await new Promise((r) => setTimeout(r, 100));
    restartStalled(changedAt);
  }, 250);
}
window.addEventListener('online', networkChanged);
navigator.connection?.addEventListener?.('change', networkChanged);

// ---- joining and leaving -------------------------------------------------------

function roomLink(room) {
  const u = new URL(location.origin + '/');
  if (accessKey) u.searchParams.set('key', accessKey);
  u.searchParams.set('room', room);
  return u.toString();
}

async function join(room) {
  notice('');
  $('join').disabled = true;
  try {
    call.relayOnly = $('relay-only').checked;
    $('relay-only-live').checked = call.relayOnly;
    call.ice = await fetchIce(room);
    scheduleIceRefresh(call.ice.ttl * 0.8);
    await startMedia();
    await listCameras();
    call.room = room;
    $('link').value = roomLink(room);
    showCode($('call-qr'), roomLink(room));
    history.replaceState(null, '', roomLink(room));
    $('lobby').hidden = true;
    $('call').hidden = false;
    await openSignaling();
    clearInterval(sig.heartbeat);
    sig.heartbeat = setInterval(heartbeat, 1000);
  } catch (e) {
    notice(e.message, 'error');
    leave();
  } finally {
    $('join').disabled = false;
  }
}

function leave() {
  clearTimeout(call.iceTimer);
  send({ type: 'leave' });
  call.room = null;
  clearInterval(sig.heartbeat);
  clearTimeout(sig.retry);
  const ws = sig.ws;
  Object.assign(sig, { ws: null, live: false, token: null, heard: 0, sent: 0, unacked: [], lostAt: null, retries: 0 });
  call.me = null;
  if (ws) {
    ws.onclose = null;
    ws.close(1000, 'left');
  }
  for (const p of call.peers.values()) p.close();
  call.peers.clear();
  call.screen?.stop();
  call.camera?.stop();
  call.screen = call.camera = null;
  call.stream.getTracks().forEach((t) => {
    t.stop();
    call.stream.removeTrack(t);
  });
  $('call').hidden = true;
  $('lobby').hidden = false;
  $('chat-log').replaceChildren();
  status('not in a call');
}

// ---- chat -------------------------------------------------------------------------

function chatLine(from, text) {
  const li = document.createElement('li');
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = from === null ? '·' : from === call.me ? 'you' : from;
  li.append(who, document.createTextNode(text));
  const log = $('chat-log');
  log.append(li);
  log.scrollTop = log.scrollHeight;
}

function sendChat(text) {
  let sent = 0;
  for (const p of call.peers.values()) {
    if (p.dc.readyState === 'open') {
      p.dc.send(text);
      sent += 1;
    }
  }
  chatLine(call.me, sent ? text : `${text} (nobody connected yet: not delivered)`);
}

// ---- controls ---------------------------------------------------------------------

$('room').value = params.get('room') || '';
$('relay-only').checked = params.get('relay') === '1';

$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  join($('room').value.trim());
});

$('copy').addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText($('link').value);
    $('copy').textContent = 'Copied';
  } catch {
    $('link').select();
  }
});

// Mute and camera off: the track stays (no renegotiation), disabled, so
// the others get silence and black frames.
function toggleButton(button, kind, onLabel, offLabel) {
  $(button).addEventListener('click', () => {
    const t = track(kind);
    if (!t) return;
    t.enabled = !t.enabled;
    $(button).setAttribute('aria-pressed', String(!t.enabled));
    $(button).textContent = t.enabled ? onLabel : offLabel;
  });
}
toggleButton('mute', 'audio', 'Mute', 'Unmute');
toggleButton('camera-toggle', 'video', 'Camera off', 'Camera on');

$('camera-select').addEventListener('change', (e) => {
  switchCamera(e.target.value).catch((err) => notice(`Cannot switch camera: ${err.message}`, 'error'));
});

$('share').addEventListener('click', () => {
  if (!navigator.mediaDevices?.getDisplayMedia) {
    notice('This browser cannot share its screen (most phones cannot).', 'error');
    return;
  }
  toggleShare();
});

// Relay only, live: new ICE configuration and an ICE restart on every
// connection, so the path moves to (or away from) the relay mid-call.
$('relay-only-live').addEventListener('change', (e) => {
  call.relayOnly = e.target.checked;
  $('relay-only').checked = call.relayOnly;
  for (const p of call.peers.values()) {
    p.pc.setConfiguration(rtcConfig());
    p.pc.restartIce();
  }
});

$('hangup').addEventListener('click', leave);

$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('chat-input').value.trim();
  if (!text) return;
  sendChat(text);
  $('chat-input').value = '';
});

window.addEventListener('pagehide', () => send({ type: 'leave' }));
