// The Audiary web page: plain ES modules on the API's own origin, no build step.
// It talks only to /v1 (the same routes the CLI uses) with the key from session storage.

const KEY = "audiary.key";
const TERMINAL = new Set(["DONE", "FAILED", "REJECTED"]);
const HAS_TRANSCRIPT = new Set(["TRANSCRIBED", "SUMMARIZING", "DONE"]);
const $ = (id) => document.getElementById(id);

function show(section) {
  for (const id of ["sign-in", "jobs", "job"]) $(id).hidden = id !== section;
  $("sign-out").hidden = section === "sign-in";
}

function say(text, ok = false) {
  const box = $("message");
  box.textContent = text;
  box.className = ok ? "ok" : "";
  box.hidden = !text;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${sessionStorage.getItem(KEY)}` };
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json) };
  }
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new ApiError(0, "network", "The server could not be reached; check your connection and try again.");
  }
  if (response.ok) return response;
  let code = "error", message = `The server answered ${response.status}.`;
  try {
    const body = await response.json();  // {"error": {"code", "message"}}
    code = (body.error && body.error.code) || code;
    message = (body.error && body.error.message) || message;
  } catch (_) { /* not JSON */ }
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    show("sign-in");
    message = `Signing in failed: ${message}`;
  }
  throw new ApiError(response.status, code, message);
}

const fmt = (s) => {
  const m = Math.floor(s / 60), sec = Math.floor(s % 60);
  return `${m}:${String(sec).padStart(2, "0")}`;
};
const name = (job) => job.source.split("/").pop();

// --- sign in -----------------------------------------------------------------------------

async function signInWith(credential) {
  sessionStorage.setItem(KEY, credential);
  try {
    await api("/v1/jobs?limit=1");
    say("");
    location.hash = "#/";
    route();
  } catch (err) {
    say(err.message);
  }
}

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  $("api-key").value = "";
  signInWith(key);
});

// "Sign in with Google" (Google Identity Services), offered only where the API is configured
// for it: the ID token it hands over is used exactly like a key.
async function offerGoogle() {
  const config = await (await fetch("/web/config")).json();
  if (!config.google_client_id) return;
  const script = document.createElement("script");
  script.src = config.google_script_url;
  script.onload = () => {
    google.accounts.id.initialize({
      client_id: config.google_client_id,
      callback: (answer) => signInWith(answer.credential),
    });
    google.accounts.id.renderButton($("google-button"), { type: "standard", text: "signin_with" });
    $("google-sign-in").hidden = false;
  };
  script.onerror = () => say("Google sign-in could not be loaded; use an API key.");
  document.head.append(script);
}

$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  say("Signed out.", true);
  show("sign-in");
});

// --- jobs and uploads --------------------------------------------------------------------

let pageTokens = [null];
let refresh = null;

async function loadJobs() {
  const token = pageTokens[pageTokens.length - 1];
  const query = token ? `?limit=20&page_token=${encodeURIComponent(token)}` : "?limit=20";
  const page = await (await api(`/v1/jobs${query}`)).json();
  const rows = $("job-rows");
  rows.replaceChildren(...page.jobs.map((job) => {
    const tr = document.createElement("tr");
    tr.dataset.jobId = job.job_id;
    const link = document.createElement("a");
    link.href = `#/jobs/${job.job_id}`;
    link.textContent = name(job);
    const state = job.error ? `${job.status}: ${job.error.message}` : job.status;
    const progress = job.progress.chunks_total
      ? `${job.progress.chunks_done}/${job.progress.chunks_total} chunks` : "";
    const received = job.timestamps.RECEIVED ? new Date(job.timestamps.RECEIVED).toLocaleString() : "";
    tr.append(cell(link), cell(state, "state"), cell(progress), cell(received));
    return tr;
  }));
  $("more").hidden = !page.next_page_token;
  $("more").onclick = () => { pageTokens.push(page.next_page_token); loadJobs(); };
  clearTimeout(refresh);
  if (page.jobs.some((job) => !TERMINAL.has(job.status)) && !$("jobs").hidden) {
    refresh = setTimeout(() => loadJobs().catch((err) => say(err.message)), 2000);
  }
}

function cell(content, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.append(content);
  return td;
}

function uploadRow(file) {
  const li = document.createElement("li");
  const label = document.createElement("span");
  label.textContent = `${file.name} `;
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = 0;
  bar.setAttribute("aria-label", `Upload of ${file.name}`);
  const status = document.createElement("span");
  status.className = "upload-status";
  li.append(label, bar, status);
  $("uploads").append(li);
  return { bar, status };
}

function put(url, headers, file, bar) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total; };
    xhr.onload = () => (xhr.status < 300 ? resolve() : reject(new Error(`the bucket answered ${xhr.status}`)));
    xhr.onerror = () => reject(new Error("the connection failed during the upload"));
    xhr.send(file);
  });
}

async function upload(file) {
  const { bar, status } = uploadRow(file);
  if (!/^(audio|video)\//.test(file.type || "audio/")) {
    status.textContent = `not uploaded: ${file.name} is not an audio file (${file.type})`;
    return;
  }
  try {
    const created = await (await api("/v1/uploads", { method: "POST", json: {
      filename: file.name, content_type: file.type || "application/octet-stream", size_bytes: file.size,
    } })).json();
    await put(created.upload_url, created.headers, file, bar);
    bar.value = 100;
    status.textContent = "uploaded; transcribing…";
    pageTokens = [null];
    await loadJobs();
  } catch (err) {
    status.textContent = `not uploaded: ${err.message}`;
  }
}

// --- recording from the microphone: MediaRecorder, then the same upload as a picked file -----

let recording = null;

$("record").addEventListener("click", async () => {
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    say("This browser cannot record here: recording needs https (or localhost) and MediaRecorder.");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    say(`The microphone could not be used (${err.name}): allow it for this site and try again.`);
    return;
  }
  const mimeType = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4"]
    .find((type) => MediaRecorder.isTypeSupported(type));
  const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : {});
  const parts = [];
  const started = Date.now();
  const tick = () => {
    $("recording-time").textContent = `Recording… ${fmt((Date.now() - started) / 1000)}`;
  };
  recording = { recorder, timer: setInterval(tick, 250) };
  tick();
  recorder.ondataavailable = (e) => { if (e.data.size) parts.push(e.data); };
  recorder.onstop = () => {
    stream.getTracks().forEach((track) => track.stop());
    clearInterval(recording.timer);
    recording = null;
    $("record").hidden = false;
    $("stop-recording").hidden = true;
    $("recording-time").textContent = "";
    const type = (recorder.mimeType || "audio/webm").split(";")[0];
    const extension = { "audio/webm": "webm", "audio/ogg": "ogg", "audio/mp4": "m4a" }[type] || "webm";
    const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-");
    upload(new File(parts, `recording-${stamp}.${extension}`, { type }));
  };
  recorder.start(1000);
  $("record").hidden = true;
  $("stop-recording").hidden = false;
  $("stop-recording").focus();
});

$("stop-recording").addEventListener("click", () => { if (recording) recording.recorder.stop(); });

$("files").addEventListener("change", (e) => { for (const f of e.target.files) upload(f); });
const zone = $("drop-zone");
zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (e) => {
  e.preventDefault();
  zone.classList.remove("over");
  for (const f of e.dataTransfer.files) upload(f);
});

// --- one job -----------------------------------------------------------------------------

let current = null;

async function loadJob(jobId) {
  const job = await (await api(`/v1/jobs/${jobId}`)).json();
  $("job-title").textContent = name(job);
  const timings = Object.entries(job.stage_seconds).map(([s, t]) => `${s} ${t.toFixed(1)} s`).join(", ");
  $("job-state").textContent = `${job.status}${job.error ? ` (${job.error.code}): ${job.error.message}` : ""}`
    + (timings ? ` · ${timings}` : "")
    + (job.uncertain_segments ? ` · ${job.uncertain_segments} uncertain lines (underlined)` : "");
  current = { job, segments: [] };
  $("segments").replaceChildren();
  $("note").replaceChildren();
  const here = () => location.hash === `#/jobs/${jobId}`;
  if (!TERMINAL.has(job.status) && !HAS_TRANSCRIPT.has(job.status)) {  // look again soon
    setTimeout(() => { if (here()) loadJob(jobId); }, 2000);
    return;
  }
  let transcript;
  try {
    transcript = await (await api(`/v1/jobs/${jobId}/transcript?format=json`)).json();
  } catch (err) {
    if (err.status === 409) return;  // no transcript yet (or never: REJECTED, FAILED early)
    throw err;
  }
  current.segments = transcript.segments;
  renderSegments(transcript.segments);
  for (const a of document.querySelectorAll(".downloads a")) {
    a.onclick = (e) => { e.preventDefault(); download(jobId, a.dataset.format); };
  }
  const audio = await (await api(`/v1/jobs/${jobId}/audio`)).blob();
  $("player").src = URL.createObjectURL(audio);
  const loadNote = async () => {
    try {
      const record = await (await api(`/v1/jobs/${jobId}/notes`)).json();
      current.note = record;
      renderNote(record);
      offerAgain();
    } catch (err) {
      if (err.status !== 409) throw err;
      if (job.status !== "DONE" && here()) setTimeout(() => loadNote().catch((e) => say(e.message)), 2000);
    }
  };
  await loadNote();
}

function renderSegments(segments) {
  $("segments").replaceChildren(...segments.map((seg, i) => {
    const li = document.createElement("li");
    li.dataset.index = i;
    if (seg.uncertain) {
      li.classList.add("uncertain");
      li.title = "The recogniser was unsure of this line";
    }
    const time = document.createElement("button");
    time.type = "button";
    time.className = "time";
    time.textContent = fmt(seg.start);
    time.setAttribute("aria-label", `Play from ${fmt(seg.start)}`);
    time.onclick = () => seek(seg.start);
    const text = document.createElement("span");
    text.className = "text";
    text.contentEditable = "true";
    text.setAttribute("role", "textbox");
    text.setAttribute("aria-label", `Text from ${fmt(seg.start)}`);
    if (seg.words && seg.words.length) {  // each word seeks to where it is said
      text.append(...seg.words.map((w) => {
        const word = document.createElement("span");
        word.dataset.start = w.start;
        word.textContent = w.word;
        return word;
      }));
      if (text.textContent.trim() !== seg.text.trim()) text.textContent = seg.text;
    } else {
      text.textContent = seg.text;
    }
    const edited = () => text.textContent.trim() !== seg.text.trim();
    text.addEventListener("input", () => text.classList.toggle("edited", edited()));
    text.addEventListener("click", (e) => {
      if (text.classList.contains("edited")) return;
      seek(e.target.dataset.start !== undefined ? Number(e.target.dataset.start) : seg.start);
    });
    text.addEventListener("keydown", (e) => lineKeys(e, li, seg));
    const flag = document.createElement("button");
    flag.type = "button";
    flag.className = "flag";
    flag.textContent = "⚑";
    flag.setAttribute("aria-pressed", "false");
    flag.setAttribute("aria-label", `Flag the line from ${fmt(seg.start)} for review`);
    flag.title = "Flag this line for review";
    flag.onclick = () => flag.setAttribute("aria-pressed",
      String(flag.getAttribute("aria-pressed") !== "true"));
    li.append(time, text, flag);
    return li;
  }));
}

// Keyboard use of a line: play/pause from it, move on, undo, save.
function lineKeys(event, li, seg) {
  const text = li.querySelector(".text");
  const player = $("player");
  if (event.key === " " && event.ctrlKey) {
    event.preventDefault();
    const inside = seg.start <= player.currentTime && player.currentTime < seg.end;
    if (player.paused) seek(inside ? player.currentTime : seg.start);
    else player.pause();
  } else if (event.key === "Enter" && event.ctrlKey) {
    event.preventDefault();
    $("feedback-form").requestSubmit();
  } else if (event.key === "Enter") {
    event.preventDefault();  // one line stays one line
    (li.nextElementSibling || li).querySelector(".text").focus();
  } else if (event.key === "Escape") {
    event.preventDefault();
    text.textContent = seg.text;
    text.classList.remove("edited");
  }
}

function seek(t) {
  const player = $("player");
  player.currentTime = t;
  player.play().catch(() => { /* autoplay may be refused; the position is set */ });
}

$("player").addEventListener("timeupdate", () => {
  const t = $("player").currentTime;
  for (const li of $("segments").children) {
    const seg = current.segments[li.dataset.index];
    li.classList.toggle("current", seg.start <= t && t < seg.end);
  }
});

async function download(jobId, format) {
  const blob = await (await api(`/v1/jobs/${jobId}/transcript?format=${format}`)).blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `${jobId}.${format}`;
  a.click();
}

function renderNote(record) {
  const note = record.note;
  const parts = [];
  const el = (tag, text) => { const e = document.createElement(tag); e.textContent = text; return e; };
  parts.push(el("h3", note.title));
  if (note.date) parts.push(el("p", note.date));
  if (note.mood) parts.push(el("p", `Mood: ${note.mood}`));
  parts.push(el("p", note.summary));
  const list = (title, items) => {
    if (!items || !items.length) return;
    parts.push(el("h4", title));
    const ul = document.createElement("ul");
    ul.append(...items);
    parts.push(ul);
  };
  list("Highlights", (note.highlights || []).map((h) => {
    const li = document.createElement("li");
    if (h.source) {
      const b = el("button", fmt(h.source.start));
      b.type = "button";
      b.onclick = () => seek(h.source.start);
      li.append(b, " ");
    }
    li.append(h.text);
    return li;
  }));
  list("Action items", (note.action_items || []).map((a) => el("li", a.due ? `${a.text} (due ${a.due})` : a.text)));
  list("People", (note.people || []).map((p) => el("li", typeof p === "string" ? p : p.name)));
  list("Places", (note.places || []).map((p) => el("li", typeof p === "string" ? p : p.name)));
  if (note.tags && note.tags.length) parts.push(el("p", `Tags: ${note.tags.join(", ")}`));
  const version = record.version > 1 ? ` · note version ${record.version}, from transcript version ${record.transcript_version}` : "";
  parts.push(el("p", `Written by ${record.provider}${record.cost_usd ? ` for $${record.cost_usd.toFixed(5)}` : ""}${version}`));
  $("note").replaceChildren(...parts);
}

$("feedback-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const edits = [...$("segments").children]
    .map((li) => ({ li, text: li.querySelector(".text") }))
    .filter(({ text }) => text.classList.contains("edited"));
  const flagged = $("flagged").checked;
  const flaggedLines = [...$("segments").children]
    .filter((li) => li.querySelector(".flag").getAttribute("aria-pressed") === "true")
    .map((li) => Number(li.dataset.index));
  if (!edits.length && !flagged && !flaggedLines.length) {
    say("Nothing to save: correct a line or flag the recording (or a line) first.");
    return;
  }
  // Each corrected line keeps its time range: the corrections become the next version.
  const body = { flagged, flagged_segments: flaggedLines, comment: $("comment").value || null };
  if (edits.length) {
    body.segments = edits.map(({ li, text }) => ({ index: Number(li.dataset.index), text: text.textContent.trim() }));
  }
  try {
    const saved = await (await api(`/v1/jobs/${current.job.job_id}/feedback`, { method: "POST", json: body })).json();
    for (const { li, text } of edits) {
      current.segments[li.dataset.index].text = text.textContent.trim();
      text.classList.remove("edited");
    }
    if (saved.transcript_version) current.job.transcript_version = saved.transcript_version;
    offerAgain();
    for (const li of $("segments").children) li.querySelector(".flag").setAttribute("aria-pressed", "false");
    const version = saved.transcript_version ? ` as transcript version ${saved.transcript_version}` : "";
    const queued = saved.review_items.length
      ? ` ${saved.review_items.length} sent to review.` : "";
    say(`Saved${version}.${queued} Thank you.`, true);
  } catch (err) {
    say(`Not saved: ${err.message}`);
  }
});

function offerAgain() {
  const note = current && current.note;
  $("summarize-again").hidden = !note || note.transcript_version >= current.job.transcript_version;
}

$("summarize-again").addEventListener("click", async () => {
  const jobId = current.job.job_id;
  const before = current.note.version;
  try {
    await api(`/v1/jobs/${jobId}/notes`, { method: "POST" });
    $("summarize-again").hidden = true;
    say("Writing the note again…", true);
    const started = Date.now();
    while (Date.now() - started < 300000) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const record = await (await api(`/v1/jobs/${jobId}/notes`)).json();
      if (record.version > before) {
        current.note = record;
        renderNote(record);
        say(`Note version ${record.version} written from transcript version ${record.transcript_version}; the earlier one is kept.`, true);
        return;
      }
    }
    say("The note is taking long; look again later.");
  } catch (err) {
    say(`Not written: ${err.message}`);
  }
});

// --- routing -----------------------------------------------------------------------------

async function route() {
  if (!sessionStorage.getItem(KEY)) {
    show("sign-in");
    return;
  }
  const match = location.hash.match(/^#\/jobs\/([\w-]+)$/);
  try {
    if (match) {
      show("job");
      await loadJob(match[1]);
    } else {
      show("jobs");
      pageTokens = [null];
      await loadJobs();
    }
  } catch (err) {
    say(err.message);
  }
}

window.addEventListener("hashchange", () => { say(""); route(); });
route();
offerGoogle().catch(() => { /* keys still work */ });
