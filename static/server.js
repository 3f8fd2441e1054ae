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

function clock(seconds) {
  const minutes = Math.floor(seconds / 60);
  const rest = (seconds - minutes * 60).toFixed(2).padStart(5, "0");
  return String(minutes).padStart(2, "0") + ":" + rest;
}

function showResult(body, elapsed) {
  const name = window.LANGUAGES[body.language] || body.language;
  $("language-out").textContent = name + " (" + body.language + ")";
  $("duration-out").textContent = Number(body.duration).toFixed(2);
  $("elapsed-out").textContent = "recognised in " + elapsed.toFixed(1) + " s";
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
    time.textContent = "[" + clock(part.start) + " → " + clock(part.end) + "]";
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

async function startRecording() {
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    showError("this browser cannot record audio (the page must be served over https or from localhost)");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    showError("no microphone access: " + error.message);
    return;
  }
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
  if (recorder) recorder.stop();
  else startRecording();
});
