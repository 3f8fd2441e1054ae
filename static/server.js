// The page talks to POST /recognition, the same API scripts use.
"use strict";

const $ = (id) => document.getElementById(id);
const fileInput = $("file");
const uploadButton = $("upload");
const recordButton = $("record");
let recorder = null;
let recordTimer = null;

function showError(message) {
  $("error").textContent = "Error: " + message;
  $("error").hidden = false;
}

function clearState() {
  $("error").hidden = true;
  $("result").hidden = true;
  $("transcript").replaceChildren();
}

let shownResults = [];
let shownName = "transcript";

// The same line infer.py and infer_ct2.py print: "[0.00 - 3.82] text".
function timedLine(part) {
  return "[" + part.start.toFixed(2) + " - " + part.end.toFixed(2) + "] " + part.text;
}

// Subtitle timestamps as utils/inference/writers.py writes them (always with hours).
function subtitleTime(seconds, marker) {
  let ms = Math.max(0, Math.round(seconds * 1000));
  const hours = Math.floor(ms / 3600000); ms -= hours * 3600000;
  const minutes = Math.floor(ms / 60000); ms -= minutes * 60000;
  const secs = Math.floor(ms / 1000); ms -= secs * 1000;
  const two = (n) => String(n).padStart(2, "0");
  return two(hours) + ":" + two(minutes) + ":" + two(secs) + marker + String(ms).padStart(3, "0");
}

// The files infer.py --output_format=txt/srt/vtt writes for the same segments.
function transcriptFile(kind) {
  const oneLine = (text) => text.split(/\s+/).filter(Boolean).join(" ");
  if (kind === "txt") return shownResults.map((part) => part.text.trim() + "\n").join("");
  const marker = kind === "srt" ? "," : ".";
  const cues = shownResults.map((part, index) => (kind === "srt" ? (index + 1) + "\n" : "") +
    subtitleTime(part.start, marker) + " --> " + subtitleTime(part.end, marker) + "\n" + oneLine(part.text) + "\n\n");
  return (kind === "vtt" ? "WEBVTT\n\n" : "") + cues.join("");
}

function download(kind) {
  const types = { txt: "text/plain", srt: "application/x-subrip", vtt: "text/vtt" };
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([transcriptFile(kind)], { type: types[kind] + ";charset=utf-8" }));
  link.download = shownName + "." + kind;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

async function copyTranscript() {
  const text = shownResults.map(timedLine).join("\n") + "\n";
  try {
    await navigator.clipboard.writeText(text);
    $("copy-status").textContent = "copied " + shownResults.length + " lines";
  } catch (error) {
    $("copy-status").textContent = "the browser refused the clipboard: " + error.message;
  }
}

function showResult(body, elapsed) {
  const name = window.LANGUAGES[body.language] || body.language;
  $("language-out").textContent = name + " (" + body.language + ")";
  $("duration-out").textContent = Number(body.duration).toFixed(2);
  $("elapsed-out").textContent = "recognised in " + elapsed.toFixed(1) + " s";
  shownResults = body.results;
  $("copy-status").textContent = "";
  const list = $("transcript");
  if (body.results.length === 0) {
    const item = document.createElement("li");
    item.className = "empty";
    item.textContent = "(no speech recognised)";
    list.append(item);
  }
  for (const part of body.results) {
    const item = document.createElement("li");
    item.className = "segment";
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = "[" + part.start.toFixed(2) + " - " + part.end.toFixed(2) + "]";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = part.text;
    item.append(time, " ", text);
    list.append(item);
  }
  $("result").hidden = false;
}

function setBusy(busy) {
  uploadButton.disabled = busy || fileInput.files.length === 0;
  recordButton.disabled = busy;
}

// XMLHttpRequest rather than fetch: only it reports upload progress.
function recognise(blob, filename) {
  clearState();
  shownName = filename.replace(/\.[^.]*$/, "") || "transcript";
  const form = new FormData();
  form.append("audio", blob, filename);
  form.append("language", $("language").value);
  form.append("task", $("task").value);
  form.append("to_simple", $("to_simple").checked ? "1" : "0");
  form.append("remove_pun", $("remove_pun").checked ? "1" : "0");

  const request = new XMLHttpRequest();
  request.open("POST", "/recognition");
  const key = $("api_key");
  if (key && key.value) request.setRequestHeader("Authorization", "Bearer " + key.value);
  const started = performance.now();
  $("progress-box").hidden = false;
  $("progress").value = 0;
  $("progress-label").textContent = "uploading…";
  request.upload.onprogress = (event) => {
    if (!event.lengthComputable) return;
    const percent = Math.round((100 * event.loaded) / event.total);
    $("progress").value = percent;
    $("progress-label").textContent = "uploading " + percent + " %";
  };
  request.upload.onload = () => {
    $("progress").value = 100;
    $("progress-label").textContent = "uploaded; recognising…";
  };
  request.onload = () => {
    setBusy(false);
    $("progress-box").hidden = true;
    let body = null;
    try { body = JSON.parse(request.responseText); } catch (e) { body = null; }
    if (request.status === 200 && body && body.code === 0) {
      showResult(body, (performance.now() - started) / 1000);
    } else if (body && body.msg) {
      showError(body.msg + " (HTTP " + request.status + ")");
    } else {
      showError("the server answered HTTP " + request.status + " " + request.statusText);
    }
  };
  request.onerror = () => {
    setBusy(false);
    $("progress-box").hidden = true;
    showError("the server cannot be reached; is infer_server.py still running?");
  };
  setBusy(true);
  request.send(form);
}

fileInput.addEventListener("change", () => setBusy(false));
$("copy").addEventListener("click", copyTranscript);
for (const kind of ["txt", "srt", "vtt"]) $("download-" + kind).addEventListener("click", () => download(kind));
uploadButton.addEventListener("click", () => {
  const file = fileInput.files[0];
  if (file) recognise(file, file.name);
});

function recordingType() {
  for (const type of ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus", "audio/mp4"]) {
    if (window.MediaRecorder && MediaRecorder.isTypeSupported(type)) return type;
  }
  return "";
}

// The microphone's stream, or null after showing why not (`supported`: what else the caller needs).
async function openMicrophone(supported, cannot) {
  if (!navigator.mediaDevices || !supported) {
    showError("this browser cannot " + cannot + " (the page must be served over https or from localhost)");
    return null;
  }
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    showError("no microphone access: " + error.message);
    return null;
  }
}

async function startRecording() {
  const stream = await openMicrophone(window.MediaRecorder, "record audio");
  if (!stream) return;
  clearState();
  const type = recordingType();
  recorder = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
  const chunks = [];
  recorder.ondataavailable = (event) => { if (event.data.size > 0) chunks.push(event.data); };
  recorder.onstop = () => {
    stream.getTracks().forEach((track) => track.stop());
    clearInterval(recordTimer);
    recordButton.textContent = "● Record";
    recordButton.classList.remove("recording");
    const mime = recorder.mimeType || "audio/webm";
    const extension = mime.includes("ogg") ? "ogg" : mime.includes("mp4") ? "m4a" : "webm";
    recorder = null;
    recognise(new Blob(chunks, { type: mime }), "recording." + extension);
  };
  const started = Date.now();
  recordTimer = setInterval(() => {
    $("record-time").textContent = ((Date.now() - started) / 1000).toFixed(1) + " s";
  }, 100);
  recorder.start(250);
  recordButton.textContent = "■ Stop and recognise";
  recordButton.classList.add("recording");
}

recordButton.addEventListener("click", () => {
  if (live) stopLive();
  else if (recorder) recorder.stop();
  else if ($("live").checked) startLive();
  else startRecording();
});

// Live: the microphone streams through the WebSocket /ws/stream (docs/server.md) as PCM16 at
// 16 kHz; committed words stay, the partial guess after them is shown greyed until it commits.
let live = null;

function liveUrl() {
  const url = new URL("/ws/stream", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if ($("language").value !== "None") url.searchParams.set("language", $("language").value);
  return url.href;
}

async function startLive() {
  const stream = await openMicrophone(window.WebSocket, "stream audio");
  if (!stream) return;
  clearState();
  const key = $("api_key");
  // A browser cannot set an Authorization header on a WebSocket; the key rides in a subprotocol.
  const socket = new WebSocket(liveUrl(), key && key.value ? ["realtime", "openai-insecure-api-key." + key.value] : []);
  socket.binaryType = "arraybuffer";
  const context = new AudioContext({ sampleRate: 16000 });
  const source = context.createMediaStreamSource(stream);
  const processor = context.createScriptProcessor(4096, 1, 1);
  const committed = $("live-text").querySelector(".committed");
  const partial = $("live-text").querySelector(".partial");
  committed.textContent = "";
  partial.textContent = "";
  $("live-text").hidden = false;
  live = { socket, context, stream, processor, stopping: false };
  processor.onaudioprocess = (event) => {
    if (socket.readyState !== WebSocket.OPEN || live.stopping) return;
    const samples = event.inputBuffer.getChannelData(0);
    const pcm = new Int16Array(samples.length);
    for (let i = 0; i < samples.length; i++) pcm[i] = Math.max(-1, Math.min(1, samples[i])) * 32767;
    socket.send(pcm.buffer);
  };
  source.connect(processor);
  processor.connect(context.destination);
  socket.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "commit") {
      committed.textContent += event.text;
      partial.textContent = "";
    } else if (event.type === "partial") {
      partial.textContent = event.text;
    } else if (event.type === "flushed") {
      socket.close(1000);
    } else if (event.type === "error") {
      showError(event.message);
    }
  };
  socket.onclose = (event) => {
    if (event.code !== 1000 && event.code !== 1005 && event.reason) showError(event.reason + " (WebSocket " + event.code + ")");
    endLive();
  };
  const started = Date.now();
  recordTimer = setInterval(() => {
    $("record-time").textContent = ((Date.now() - started) / 1000).toFixed(1) + " s";
  }, 100);
  recordButton.textContent = "■ Stop";
  recordButton.classList.add("recording");
  $("live").disabled = true;
}

function stopLive() {
  live.stopping = true;
  if (live.socket.readyState === WebSocket.OPEN) live.socket.send(JSON.stringify({ type: "flush" }));
  else endLive();
}

function endLive() {
  if (!live) return;
  clearInterval(recordTimer);
  live.processor.disconnect();
  live.stream.getTracks().forEach((track) => track.stop());
  live.context.close();
  live = null;
  recordButton.textContent = "● Record";
  recordButton.classList.remove("recording");
  $("live").disabled = false;
}
