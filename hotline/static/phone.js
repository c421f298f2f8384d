/* The built-in phone (demo mode): plays Twilio's part against the hotline's real webhooks.
 *
 * Each webhook request is signed by the server (POST /phone/sign, the configured auth token,
 * twilio's RequestValidator) and posted with X-Twilio-Signature, as Twilio posts it. The TwiML
 * answer is followed verb by verb: <Say> (speechSynthesis when the browser has a voice for the
 * language; always shown as text), <Play>, <Pause>, <Gather> (keys, its timeout, its action or
 * the next verb), <Record> (microphone -> MediaRecorder -> 8 kHz mono 16-bit WAV -> uploaded to
 * /phone/recordings -> the Record action and the recording status callback, signed), <Redirect>
 * and <Hangup>. At the end: /voice/status "completed", and links to the questions left.
 * Plain JS, no build step.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("phone-config").textContent);
  const T = config.texts;
  let csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const RECORDING_RATE = 8000; // Twilio records calls at 8 kHz
  const SOUND_LEVEL = 0.01; // RMS above this is speech, for <Record timeout> and "nothing heard"

  const el = {
    from: document.getElementById("phone-from"),
    status: document.getElementById("phone-status"),
    call: document.getElementById("phone-call"),
    hangup: document.getElementById("phone-hangup"),
    skip: document.getElementById("phone-skip"),
    keys: Array.from(document.querySelectorAll(".keypad .key")),
    transcript: document.getElementById("phone-transcript"),
    result: document.getElementById("phone-result"),
  };

  let call = null; // the call in progress

  // -- small helpers ---------------------------------------------------------------------------

  function setStatus(text) { el.status.textContent = text; }

  function entry(kind, text, lang) {
    const item = document.createElement("li");
    item.className = kind;
    if (lang) { item.lang = lang; }
    item.textContent = text;
    el.transcript.appendChild(item);
    // The transcript scrolls in its own box: the page (and the keypad on a phone) stays put.
    el.transcript.scrollTop = el.transcript.scrollHeight;
    return item;
  }

  /* A request to this page's own routes, with the CSRF token. A login or logout in another tab
   * gives the session a new token and the page's is refused ({"error": "csrf"}, 400): fetch
   * the session's token once and try again; if that fails too, the page has expired. Another
   * refusal (a URL not signed, a bad WAV) is returned as it is. */
  async function withToken(url, options) {
    const send = () => fetch(url, Object.assign({}, options, {
      headers: Object.assign({}, options.headers, { "X-CSRFToken": csrfToken }),
    }));
    const refusedToken = async (response) => response.status === 400
      && (await response.clone().json().catch(() => ({}))).error === "csrf";
    let response = await send();
    if (await refusedToken(response)) {
      const fresh = await fetch(config.tokenUrl, { cache: "no-store" });
      if (fresh.ok) {
        csrfToken = (await fresh.json()).csrfToken;
        response = await send();
      }
      if (!fresh.ok || await refusedToken(response)) { throw new PhoneError(T.expired, url); }
    }
    return response;
  }

  /* Why a request of the page was refused: the server's words, for the line's title. */
  async function refusal(what, response) {
    const body = await response.clone().json().catch(() => ({}));
    return what + ": HTTP " + response.status + (body.error ? " (" + body.error + ")" : "")
      + (body.description ? " " + body.description : "");
  }

  /* An error to show the visitor in the page's language; the technical detail as its title. */
  class PhoneError extends Error {
    constructor(text, detail) { super(text); this.detail = detail; }
  }

  function showError(error) {
    const text = error instanceof PhoneError ? error.message : T.failed;
    const last = el.transcript.lastElementChild;
    if (last && last.className === "error" && last.textContent === text) { return; } // said
    const item = entry("error", text);
    item.title = error instanceof PhoneError ? String(error.detail) : String(error);
  }

  function randomHex(bytes) {
    const values = crypto.getRandomValues(new Uint8Array(bytes));
    return Array.from(values, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function intAttr(node, name, fallback) {
    const value = parseInt(node.getAttribute(name) || "", 10);
    return Number.isFinite(value) ? value : fallback;
  }

  /* Wait ms milliseconds, or less when the call's current wait is interrupted (a key pressed in
   * a <Gather>, Skip, Hang up). Resolves to true when interrupted. */
  function interruptibleWait(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { call.interrupt = null; resolve(false); }, ms);
      call.interrupt = () => { clearTimeout(timer); call.interrupt = null; resolve(true); };
    });
  }

  function interrupt() {
    if (call && call.interrupt) { call.interrupt(); }
  }

  function sameOrigin(url) {
    const target = new URL(url, window.location.href);
    return target.pathname + target.search;
  }

  // -- talking to the hotline, as Twilio --------------------------------------------------------

  async function signature(url, params) {
    const response = await withToken(config.signUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ url: url, params: params }),
    });
    if (!response.ok) { throw new Error(await refusal("sign", response)); }
    return (await response.json()).signature;
  }

  /* Post a webhook the way Twilio does: the call's fields plus data, form-encoded, signed. */
  async function webhook(url, data) {
    const params = Object.assign({
      AccountSid: config.accountSid, CallSid: call.sid, From: call.from, To: config.to,
      ApiVersion: "2010-04-01", Direction: "inbound",
      CallStatus: call.answered ? "in-progress" : "ringing",
    }, data);
    const response = await fetch(sameOrigin(url), {
      method: "POST",
      headers: { "X-Twilio-Signature": await signature(url, params) },
      body: new URLSearchParams(params),
      credentials: "omit", // Twilio has no cookies
    });
    return { status: response.status, text: await response.text() };
  }

  // -- the verbs --------------------------------------------------------------------------------

  let voices = [];
  function loadVoices() { voices = window.speechSynthesis ? speechSynthesis.getVoices() : []; }
  if (window.speechSynthesis) {
    loadVoices();
    speechSynthesis.addEventListener("voiceschanged", loadVoices);
  }

  function voiceFor(language) {
    const wanted = language.toLowerCase();
    const short = wanted.slice(0, 2);
    return voices.find((v) => v.lang.toLowerCase() === wanted) ||
      voices.find((v) => v.lang.toLowerCase().replace("_", "-").slice(0, 2) === short) || null;
  }

  async function say(node) {
    const text = node.textContent.replace(/\s+/g, " ").trim();
    const language = node.getAttribute("language") || "en-US";
    const prosody = node.querySelector("prosody");
    const rate = prosody && /%$/.test(prosody.getAttribute("rate") || "")
      ? parseFloat(prosody.getAttribute("rate")) / 100 : 1;
    const loops = Math.min(Math.max(intAttr(node, "loop", 1), 1), 10);
    const item = entry("say", text, language.slice(0, 2));
    item.dataset.state = "speaking";
    written(text, language.slice(0, 2), item);
    const voice = voiceFor(language);
    if (!voice) { item.title = T.noVoice; item.classList.add("no-voice"); }
    for (let i = 0; i < loops && !call.ended; i += 1) {
      let interrupted;
      if (voice) {
        interrupted = await speak(text, voice, rate);
      } else {
        // No voice: give the reader about the time the words would take to say.
        const words = text.split(" ").length;
        interrupted = await interruptibleWait(1000 * words / (2.5 * rate));
      }
      if (interrupted) { break; }
    }
    item.dataset.state = "done";
  }

  function speak(text, voice, rate) {
    return new Promise((resolve) => {
      const utterance = new SpeechSynthesisUtterance(text);
      utterance.voice = voice;
      utterance.lang = voice.lang;
      utterance.rate = rate;
      let finished = false;
      const done = (interrupted) => {
        if (finished) { return; }
        finished = true;
        call.interrupt = null;
        resolve(interrupted);
      };
      utterance.onend = () => done(false);
      utterance.onerror = () => done(false);
      call.interrupt = () => { speechSynthesis.cancel(); done(true); };
      speechSynthesis.speak(utterance);
    });
  }

  async function play(node) {
    const url = node.textContent.trim();
    const loops = Math.min(Math.max(intAttr(node, "loop", 1), 1), 10);
    const item = entry("play", "♪ " + url.split("/").pop());
    item.dataset.state = "playing";
    describe(url, item);
    for (let i = 0; i < loops && !call.ended; i += 1) {
      // From this site, as the webhooks are (sameOrigin): the TwiML's URL is PUBLIC_BASE_URL's
      // where one is set, which the page's Content-Security-Policy does not let it play.
      const outcome = await playAudio(sameOrigin(url));
      item.dataset.state = outcome;
      if (outcome !== "played") { break; }
    }
  }

  function playAudio(url) {
    return new Promise((resolve) => {
      const audio = new Audio(url);
      let finished = false;
      const done = (outcome) => {
        if (finished) { return; }
        finished = true;
        call.interrupt = null;
        audio.pause();
        resolve(outcome);
      };
      audio.addEventListener("ended", () => done("played"));
      audio.addEventListener("error", () => done("failed"));
      call.interrupt = () => done("skipped");
      audio.play().catch(() => done("failed"));
    });
  }

  /* Show the words of a prompt's audio file next to it (Kazakh prompts are always audio). */
  async function describe(url, item) {
    try {
      const response = await fetch(config.promptTextUrl + "?url=" + encodeURIComponent(url));
      const found = await response.json();
      if (found.text) {
        item.textContent = "♪ " + found.text;
        item.lang = found.language;
      }
    } catch (error) { /* the file name stays */ }
  }

  /* Show a <Say> prompt as written: it carries what the voice is to say ("эс-эм-эс",
   * "один, четыре, один, четыре"), not the text ("SMS", "1414"). */
  async function written(text, language, item) {
    try {
      const response = await fetch(config.promptTextUrl + "?" + new URLSearchParams({
        say: text, language: language }));
      const found = await response.json();
      if (found.text) { item.textContent = found.text; }
    } catch (error) { /* the spoken form stays */ }
  }

  async function pause(node) {
    entry("pause", T.pause + " " + intAttr(node, "length", 1) + " " + T.seconds);
    await interruptibleWait(1000 * intAttr(node, "length", 1));
  }

  /* <Gather>: nested prompts (a key interrupts them), then wait timeout seconds for keys. */
  async function gather(node) {
    const numDigits = intAttr(node, "numDigits", Infinity);
    const timeoutMs = 1000 * intAttr(node, "timeout", 5);
    const finishOnKey = node.hasAttribute("finishOnKey") ? node.getAttribute("finishOnKey") : "#";
    let digits = "";
    let settle;
    const settled = new Promise((resolve) => { settle = resolve; });
    let over = false;
    let timer = null;
    const startTimer = () => {
      clearTimeout(timer);
      timer = setTimeout(() => settle("timeout"), timeoutMs);
    };
    settled.then(() => { over = true; clearTimeout(timer); });
    call.onKey = (key) => {
      interrupt(); // barge in: the prompt stops
      if (key !== "" && finishOnKey.includes(key)) { settle("finished"); return; }
      digits += key;
      if (digits.length >= numDigits) { settle("digits"); } else { startTimer(); }
    };
    call.onHangup = () => settle("hangup");
    for (const child of Array.from(node.children)) {
      if (over || call.ended) { break; }
      await verb(child);
    }
    if (call.ended) { settle("hangup"); }
    if (!over && !digits) { startTimer(); }
    const how = await settled;
    call.onKey = null;
    call.onHangup = null;
    if (how === "hangup" || call.ended) { return null; }
    if (!digits) { entry("silence", T.silence); }
    if (digits || node.getAttribute("actionOnEmptyResult") === "true") {
      return { url: node.getAttribute("action") || call.url, data: digits ? { Digits: digits } : {} };
    }
    return undefined; // on to the next verb
  }

  // -- <Record> ---------------------------------------------------------------------------------

  function audioContext() {
    if (!call.audio) {
      call.audio = new (window.AudioContext || window.webkitAudioContext)();
    }
    return call.audio;
  }

  async function beep() {
    entry("beep", T.beep);
    const context = audioContext();
    await context.resume();
    const tone = context.createOscillator();
    const gain = context.createGain();
    tone.frequency.value = 1000;
    gain.gain.value = 0.2;
    tone.connect(gain).connect(context.destination);
    tone.start();
    tone.stop(context.currentTime + 0.4);
    await new Promise((resolve) => { tone.onended = resolve; setTimeout(resolve, 600); });
  }

  async function record(node) {
    const maxMs = 1000 * intAttr(node, "maxLength", 3600);
    const silenceMs = 1000 * intAttr(node, "timeout", 5);
    const finishOnKey = node.hasAttribute("finishOnKey")
      ? node.getAttribute("finishOnKey") : "1234567890*#";
    // The microphone first, then the beep: a visitor who starts speaking at the beep while
    // the browser still asks "Allow the microphone?" would not be recorded.
    let stream;
    const asked = navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    // Hanging up while the browser asks for the microphone ends the call there: nothing is
    // recorded, and a permission given later opens a microphone only to close it.
    const hungUp = new Promise((resolve) => { call.onHangup = () => resolve(null); });
    try {
      stream = await Promise.race([asked, hungUp]);
    } catch (error) {
      call.onHangup = null;
      if (call.ended) { return null; }
      entry("error", T.noMicrophone + " (" + error.name + ")");
      return undefined; // as Twilio with nothing recorded: the next verb
    }
    call.onHangup = null;
    if (!stream || call.ended) {
      asked.then((late) => late.getTracks().forEach((track) => track.stop()), () => {});
      return null;
    }
    if (node.getAttribute("playBeep") !== "false") { await beep(); }
    if (call.ended) {
      stream.getTracks().forEach((track) => track.stop());
      return null;
    }
    const recorder = new MediaRecorder(stream);
    const chunks = [];
    recorder.ondataavailable = (event) => { if (event.data.size) { chunks.push(event.data); } };
    const stopped = new Promise((resolve) => { recorder.onstop = resolve; });

    // Silence detection, for <Record timeout>.
    const context = audioContext();
    await context.resume();
    if (call.ended) { // hung up while the audio was being set up
      stream.getTracks().forEach((track) => track.stop());
      return null;
    }
    const analyser = context.createAnalyser();
    analyser.fftSize = 2048;
    const source = context.createMediaStreamSource(stream);
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);

    const item = entry("recording", "● " + T.recording);
    setStatus(T.recording);
    recorder.start(250);
    const started = performance.now();
    let lastSound = started;
    const reason = await new Promise((resolve) => {
      call.onKey = (key) => { if (key !== "" && finishOnKey.includes(key)) { resolve(key); } };
      call.onHangup = () => resolve("hangup");
      const tick = setInterval(() => {
        analyser.getFloatTimeDomainData(samples);
        let sum = 0;
        for (const s of samples) { sum += s * s; }
        const now = performance.now();
        if (Math.sqrt(sum / samples.length) > SOUND_LEVEL) { lastSound = now; }
        const seconds = Math.round((now - started) / 1000);
        item.textContent = "● " + T.recording + " " + seconds + " " + T.seconds;
        if (now - started >= maxMs) { clearInterval(tick); resolve("max"); }
        if (now - lastSound >= silenceMs) { clearInterval(tick); resolve("silence"); }
      }, 100);
      call.stopTick = () => clearInterval(tick);
    });
    call.stopTick();
    call.onKey = null;
    call.onHangup = null;
    recorder.stop();
    await stopped;
    source.disconnect();
    stream.getTracks().forEach((track) => track.stop());

    setStatus(T.uploading);
    let pcm = await toPcm(new Blob(chunks, { type: recorder.mimeType }));
    if (node.getAttribute("trim") !== "do-not-trim") { pcm = trimSilence(pcm); }
    if (!pcm.length) {
      item.textContent = T.nothingRecorded;
      item.dataset.state = "empty";
      return reason === "hangup" ? null : undefined;
    }
    let uploaded;
    try {
      uploaded = await upload(wav(pcm, RECORDING_RATE));
    } catch (error) {
      item.textContent = T.notSent;
      item.dataset.state = "failed";
      throw error;
    }
    item.textContent = "● " + T.recorded + ": " + uploaded.seconds + " " + T.seconds;
    item.dataset.state = "recorded";
    item.dataset.recordingSid = uploaded.sid;
    call.recordings.push(uploaded.sid);
    const recording = {
      RecordingSid: uploaded.sid, RecordingUrl: uploaded.url,
      RecordingDuration: String(uploaded.duration),
    };
    const action = Object.assign({}, recording);
    if (reason === "hangup") { action.Digits = "hangup"; }
    else if (reason !== "max" && reason !== "silence") { action.Digits = reason; }
    const statusUrl = node.getAttribute("recordingStatusCallback");
    const events = (node.getAttribute("recordingStatusCallbackEvent") || "completed").split(/[ ,]+/);
    const statusCallback = statusUrl && events.includes("completed") ? () => webhook(statusUrl,
      Object.assign({
        RecordingStatus: "completed", RecordingSource: "RecordVerb", RecordingChannels: "1",
      }, recording)) : null;
    setStatus(T.connected);
    // The action URL is requested even after a hang-up (its answer is then not followed).
    return {
      url: node.getAttribute("action") || call.url, data: action, statusCallback: statusCallback,
      last: reason === "hangup",
    };
  }

  /* Decode what MediaRecorder made and resample it to 8 kHz mono floats. */
  async function toPcm(blob) {
    const bytes = await blob.arrayBuffer();
    if (!bytes.byteLength) { return new Float32Array(0); }
    const decoded = await audioContext().decodeAudioData(bytes);
    const frames = Math.max(1, Math.ceil(decoded.duration * RECORDING_RATE));
    const offline = new OfflineAudioContext(1, frames, RECORDING_RATE);
    const source = offline.createBufferSource();
    source.buffer = decoded;
    source.connect(offline.destination);
    source.start();
    return (await offline.startRendering()).getChannelData(0);
  }

  /* Like <Record trim="trim-silence">: drop silence at both ends (all of it, if nothing else). */
  function trimSilence(pcm) {
    const windowSize = RECORDING_RATE / 50; // 20 ms
    const loud = (start) => {
      let sum = 0;
      const end = Math.min(start + windowSize, pcm.length);
      for (let i = start; i < end; i += 1) { sum += pcm[i] * pcm[i]; }
      return Math.sqrt(sum / Math.max(1, end - start)) > SOUND_LEVEL;
    };
    let first = 0;
    while (first < pcm.length && !loud(first)) { first += windowSize; }
    if (first >= pcm.length) { return new Float32Array(0); }
    let last = pcm.length - windowSize;
    while (last > first && !loud(last)) { last -= windowSize; }
    const margin = RECORDING_RATE / 5; // keep 200 ms either side
    return pcm.subarray(Math.max(0, first - margin), Math.min(pcm.length, last + windowSize + margin));
  }

  /* Mono 16-bit PCM WAV. */
  function wav(pcm, rate) {
    const buffer = new ArrayBuffer(44 + pcm.length * 2);
    const view = new DataView(buffer);
    const text = (offset, value) => {
      for (let i = 0; i < value.length; i += 1) { view.setUint8(offset + i, value.charCodeAt(i)); }
    };
    text(0, "RIFF");
    view.setUint32(4, 36 + pcm.length * 2, true);
    text(8, "WAVE");
    text(12, "fmt ");
    view.setUint32(16, 16, true);
    view.setUint16(20, 1, true); // PCM
    view.setUint16(22, 1, true); // mono
    view.setUint32(24, rate, true);
    view.setUint32(28, rate * 2, true);
    view.setUint16(32, 2, true);
    view.setUint16(34, 16, true);
    text(36, "data");
    view.setUint32(40, pcm.length * 2, true);
    for (let i = 0; i < pcm.length; i += 1) {
      const s = Math.max(-1, Math.min(1, pcm[i]));
      view.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
    }
    return new Blob([buffer], { type: "audio/wav" });
  }

  async function upload(blob) {
    const response = await withToken(config.uploadUrl, {
      method: "POST", headers: { "Content-Type": "audio/wav" }, body: blob,
    });
    if (!response.ok) { throw new Error(await refusal("upload", response)); }
    return response.json();
  }

  // -- following TwiML ------------------------------------------------------------------------

  /* Act out one verb. Returns a request to make next ({url, data}), null to end the call, or
   * undefined to go on with the next verb. */
  async function verb(node) {
    switch (node.tagName) {
      case "Say": await say(node); return undefined;
      case "Play": await play(node); return undefined;
      case "Pause": await pause(node); return undefined;
      case "Gather": return gather(node);
      case "Record": return record(node);
      case "Redirect": return { url: node.textContent.trim() || call.url, data: {} };
      case "Hangup":
        entry("ended", T.hotlineHungUp);
        call.hungUpBy = "hotline";
        return null;
      default:
        entry("error", "<" + node.tagName + ">");
        return undefined;
    }
  }

  async function follow(xml) {
    const doc = new DOMParser().parseFromString(xml, "text/xml");
    const root = doc.documentElement;
    if (!root || root.tagName !== "Response") { throw new Error("not TwiML"); }
    for (const node of Array.from(root.children)) {
      if (call.ended) { return null; }
      const next = await verb(node);
      if (next !== undefined) { return next; }
    }
    return null; // the end of the document: Twilio hangs up
  }

  async function run() {
    let next = { url: config.incomingUrl, data: {} };
    while (next) {
      const answer = await webhook(next.url, next.data);
      if (!call.answered && answer.status === 200) { setStatus(T.connected); }
      call.answered = true;
      if (next.statusCallback) {
        const status = await next.statusCallback();
        if (status.status >= 400) { entry("error", T.error + ": " + status.status); }
      }
      if (answer.status !== 200) {
        entry("error", T.error + ": HTTP " + answer.status);
        break;
      }
      if (next.last || call.ended) { break; }
      call.url = next.url;
      next = await follow(answer.text);
    }
  }

  async function startCall() {
    call = {
      sid: "CA" + randomHex(16),
      from: el.from.value.replace(/[^0-9+]/g, "") || "+77011234567",
      answered: false, ended: false, hungUpBy: "", url: config.incomingUrl,
      started: Date.now(), recordings: [], interrupt: null, onKey: null, onHangup: null,
      // Made while the click that started the call still counts as the user's gesture.
      audio: new (window.AudioContext || window.webkitAudioContext)(),
    };
    window.phoneDemo.call = call;
    el.transcript.textContent = "";
    el.result.hidden = true;
    el.result.textContent = "";
    setCalling(true);
    setStatus(T.calling);
    try {
      await run();
    } catch (error) {
      showError(error);
    }
    await endCall();
  }

  async function endCall() {
    const ending = call;
    ending.ended = true;
    if (ending.hungUpBy === "") { ending.hungUpBy = "caller"; }
    try {
      await webhook(config.statusUrl, {
        CallStatus: "completed",
        CallDuration: String(Math.max(1, Math.round((Date.now() - ending.started) / 1000))),
      });
    } catch (error) {
      showError(error);
    }
    if (window.speechSynthesis) { speechSynthesis.cancel(); }
    if (ending.audio) { ending.audio.close(); }
    setCalling(false);
    setStatus(T.ended);
    await showQuestions(ending);
    window.phoneDemo.finished.push(ending.sid);
  }

  /* Link to the questions left on the call; with a separate worker (make run) transcription
   * comes a little later, so ask again every 2 s for a minute while it is under way. */
  async function showQuestions(ended, tries) {
    let found = [];
    try {
      const response = await fetch(config.questionsUrl.replace("CALLSID", ended.sid));
      found = response.ok ? (await response.json()).questions : [];
    } catch (error) { /* the hotline is not answering: as if nothing was left */ }
    if (call !== ended) { return; } // a new call has started
    el.result.hidden = false;
    if (!found.length) {
      el.result.textContent = T.noQuestion;
      return;
    }
    const waiting = found.some((q) => q.transcription === "pending" || q.transcription === "running");
    if (waiting && (tries || 0) < 30) {
      setTimeout(() => showQuestions(ended, (tries || 0) + 1), 2000);
    }
    // Each poll updates the lines in place: a link rebuilt every two seconds would lose the
    // keyboard focus of someone about to follow it.
    for (const question of found) {
      let link = el.result.querySelector('a[data-question-id="' + question.id + '"]');
      if (!link) {
        const line = document.createElement("p");
        link = document.createElement("a");
        link.href = question.url;
        link.className = "question-link";
        link.dataset.questionId = question.id;
        link.textContent = T.question + ": #" + question.id;
        const state = document.createElement("span");
        state.className = "transcription-state";
        line.append(link, " ", state);
        el.result.appendChild(line);
      }
      link.dataset.transcription = question.transcription;
      link.parentNode.querySelector(".transcription-state").textContent =
        "(" + T.transcription + ": " + question.transcription_label + ")";
    }
  }

  function setCalling(on) {
    el.call.disabled = on;
    el.hangup.disabled = !on;
    el.skip.disabled = !on;
    el.from.disabled = on;
    el.keys.forEach((key) => { key.disabled = !on; });
  }

  // -- the buttons ------------------------------------------------------------------------------

  function press(key) {
    if (!call || call.ended) { return; }
    entry("key", T.pressed + " " + key);
    if (call.onKey) { call.onKey(key); }
  }

  function hangUp() {
    if (!call || call.ended) { return; }
    entry("ended", T.youHungUp);
    call.ended = true;
    call.hungUpBy = "caller";
    const onHangup = call.onHangup;
    interrupt();
    if (onHangup) { onHangup(); }
  }

  el.call.addEventListener("click", () => { if (!call || call.ended) { startCall(); } });
  el.hangup.addEventListener("click", hangUp);
  el.skip.addEventListener("click", interrupt);
  el.keys.forEach((button) => {
    button.addEventListener("click", () => press(button.dataset.key));
  });
  document.addEventListener("keydown", (event) => {
    // A key held down repeats: one press, not a choice in each menu it passes through.
    if (event.target === el.from || event.ctrlKey || event.altKey || event.metaKey
        || event.repeat) { return; }
    if (/^[0-9*#]$/.test(event.key)) { event.preventDefault(); press(event.key); }
  });

  // Leaving the page (a link, a reload, closing the tab) in a call ends it where it is: a
  // question being recorded is lost. The browser asks first, as it does for unsaved text.
  window.addEventListener("beforeunload", (event) => {
    if (call && !call.ended) { event.preventDefault(); event.returnValue = ""; }
  });

  // For tests and curious developers: the current call and the calls finished so far.
  window.phoneDemo = { call: null, finished: [] };
})();
