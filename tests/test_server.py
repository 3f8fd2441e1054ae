"""infer_server.py started for real on a loopback port: the original /recognition API (called as the
original README does), OpenAI's client against /v1/audio/*, bad input, API key, load, each backend
(picked by --backend=auto) and the command line."""
from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile
from conftest import REPO, require_model
from server_process import ServerProcess

from utils.core.audio import load_audio

TEST_WAV = REPO / "dataset" / "test.wav"                       # Mandarin, 12.16 s
ENGLISH = REPO / "dataset" / "audio" / "en_test_0001.flac"  # "The train to the airport leaves every twenty minutes."
KEYWORDS = {"train", "airport"}
API_KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def is_chinese(text: str) -> bool:
    han = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
    return han > 0 and han >= 0.5 * len(re.sub(r"[\s\W]", "", text))


@pytest.fixture(scope="module")
def base_server(tmp_path_factory):
    """Real whisper-base through faster-whisper, as the original project served it; --backend=auto
    (the default) picks ct2 for the folder."""
    model = require_model(REPO / "models" / "whisper-base-ct2")
    log = tmp_path_factory.mktemp("base-server") / "server.log"
    server = ServerProcess(f"--model_path={model}", "--language=zh",
                           "--num_workers=2", "--max_queue=2", log_path=log).wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tiny_server(tiny_whisper_dir, tmp_path_factory):
    """Tiny random Whisper on the transformers backend (--backend=auto picks it for the folder), with
    an API key and a 2 MB upload limit.

    TMPDIR points at a folder of its own so the test can see every temporary file the server makes.
    """
    spool = tmp_path_factory.mktemp("server-tmp")
    log = tmp_path_factory.mktemp("tiny-server") / "server.log"
    server = ServerProcess(f"--model_path={tiny_whisper_dir}",
                           "--num_workers=2", "--max_queue=2", "--max_upload_mb=2",
                           # Greedy only: fallback samples, and this test compares answers.
                           "--temperature_increment_on_fallback=0",
                           # A random model decodes silence slowly (up to 448 garbage tokens).
                           "--warmup=false", f"--api_key={API_KEY}", env={"TMPDIR": str(spool)},
                           log_path=log).wait_ready()
    server.spool = spool
    yield server
    server.stop()


@pytest.fixture(scope="module")
def english_formats(tmp_path_factory) -> dict[str, Path]:
    """The English clip as the formats users upload, at other rates and channel counts."""
    out = tmp_path_factory.mktemp("formats")
    audio, rate = soundfile.read(ENGLISH, dtype="float32")
    stereo_44k = out / "stereo_44k.wav"
    soundfile.write(stereo_44k, np.stack([audio, audio], axis=1), rate)
    made = {"flac": ENGLISH, "wav_8k": out / "clip_8k.wav"}
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(ENGLISH), "-ar", "8000",
                    str(made["wav_8k"])], check=True)
    # Opus runs at 48 kHz only.
    for name, codec, rate in [("mp3", "libmp3lame", 44100), ("m4a", "aac", 44100),
                              ("ogg", "libopus", 48000), ("webm", "libopus", 48000)]:
        made[name] = out / f"clip.{name}"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(stereo_44k), "-ar", str(rate),
                        "-c:a", codec, str(made[name])], check=True)
    return made


# --- the original project's API ----------------------------------------------------------

def test_recognition_called_as_the_original_readme_does(base_server):
    # Verbatim from the original README (requests drops `json=` when `files=` is given, so the
    # server's defaults apply: --language=zh here, to_simple=1).
    response = requests.post(url=f"{base_server.url}/recognition",
                             files=[("audio", ("test.wav", open(TEST_WAV, 'rb'), 'audio/wav'))],
                             json={"to_simple": 1, "remove_pun": 0, "language": "zh", "task": "transcribe"},
                             timeout=20)
    print(response.text)
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 0 and body["language"] == "zh"
    assert abs(body["duration"] - 12.16) < 0.05
    assert body["results"], "no segments"
    from zhconv import convert

    for part in body["results"]:
        assert part["result"] == part["text"]
        assert is_chinese(part["text"]), part
        assert convert(part["text"], "zh-cn") == part["text"], "to_simple=1 left traditional characters"
        assert 0 <= part["start"] < part["end"] <= 12.2


def test_recognition_fields_language_and_punctuation(base_server):
    def post(**fields):
        with open(ENGLISH, "rb") as audio:
            response = requests.post(f"{base_server.url}/recognition", files={"audio": audio},
                                     data=fields, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    detected = post(language="None")                         # the original's spelling of "detect"
    assert detected["language"] == "en" and detected["language_probability"] > 0.3
    text = " ".join(p["text"] for p in detected["results"])
    assert KEYWORDS <= words(text), text
    assert "." in text
    bare = post(language="en", remove_pun="1")
    bare_text = " ".join(p["text"] for p in bare["results"])
    assert KEYWORDS <= words(bare_text) and not re.search(r"[.,!?]", bare_text), bare_text


@pytest.mark.parametrize("fmt", ["wav_8k", "mp3", "m4a", "ogg", "webm"])
def test_recognition_decodes_common_formats_at_any_rate(base_server, english_formats, fmt):
    with open(english_formats[fmt], "rb") as audio:
        response = requests.post(f"{base_server.url}/recognition", data={"language": "en"},
                                 files={"audio": (english_formats[fmt].name, audio)}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert abs(body["duration"] - 3.64) < 0.1, body
    assert KEYWORDS <= words(" ".join(p["text"] for p in body["results"])), body


# --- OpenAI's audio API through the official client ----------------------------------------

@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # the client marks translations so
@pytest.mark.slow
def test_openai_client_translates_with_a_multilingual_model(base_server):
    """Translation needs a multilingual model; the other formats, streaming and errors of the OpenAI API
    are in test_server_openai.py (whisper-tiny.en)."""
    import openai

    client = openai.OpenAI(base_url=f"{base_server.url}/v1", api_key="unused-without---api_key")
    with open(ENGLISH, "rb") as audio:
        translation = client.audio.translations.create(model="whisper-1", file=audio,
                                                       response_format="verbose_json")
    assert translation.task == "translate" and KEYWORDS <= words(translation.text)
    assert translation.segments and translation.segments[0].tokens


# --- load --------------------------------------------------------------------------------

class HealthPoller:
    """Polls /health in a thread while a burst runs; keeps each answer's status and workers."""

    def __init__(self, url: str):
        self.url, self.answers, self._stop = url, [], threading.Event()
        self._thread = threading.Thread(target=self._poll)

    def _poll(self):
        while not self._stop.is_set():
            try:
                response = requests.get(f"{self.url}/health", timeout=60)
                self.answers.append((response.status_code, response.json()["workers"]))
            except requests.RequestException as exc:
                self.answers.append((repr(exc), {}))
            self._stop.wait(0.05)

    def __enter__(self) -> "HealthPoller":
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()


def test_fifty_concurrent_requests_get_answers_or_clean_503(base_server):
    clip = ENGLISH.read_bytes()

    def recognise(_=None):
        return requests.post(f"{base_server.url}/recognition", data={"language": "en"},
                             files={"audio": ("clip.flac", clip)}, timeout=600)

    reference = recognise()
    assert reference.status_code == 200
    assert requests.get(f"{base_server.url}/health", timeout=60).json()["backend"] == "ct2"
    expected = reference.json()["results"]
    with HealthPoller(base_server.url) as health, ThreadPoolExecutor(50) as pool:
        results = list(pool.map(recognise, range(50)))

    ok = [r for r in results if r.status_code == 200]
    busy = [r for r in results if r.status_code == 503]
    print(f"50 requests: {len(ok)} answered, {len(busy)} x 503; health polls {len(health.answers)}")
    assert len(ok) + len(busy) == 50, [r.status_code for r in results]
    assert len(ok) >= 4 and busy, "2 workers + 2 queued must be served, the rest refused"
    for response in ok:
        assert response.json()["results"] == expected
    for response in busy:
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["code"] == 503 and "busy" in response.json()["msg"]
    assert health.answers and all(status == 200 for status, _ in health.answers), health.answers
    # /health answered while both workers were decoding: a running recognition does not block it.
    assert any(workers["busy"] == 2 for _, workers in health.answers), "never saw both workers busy"
    assert all(workers["busy"] <= 2 and workers["waiting"] <= 2 for _, workers in health.answers)
    workers = requests.get(f"{base_server.url}/health", timeout=60).json()["workers"]
    assert workers["busy"] == 0 and workers["waiting"] == 0
    assert workers["rejected_busy"] == len(busy)


def test_transformers_backend_answers_concurrent_requests_identically(tiny_server):
    clip = ENGLISH.read_bytes()

    def recognise(_=None):
        response = requests.post(f"{tiny_server.url}/recognition", headers=AUTH, data={"language": "en"},
                                 files={"audio": ("clip.flac", clip)}, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()["results"]

    expected = recognise()
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(recognise, range(2))) == [expected] * 2
    health = requests.get(f"{tiny_server.url}/health", timeout=5).json()
    assert health["backend"] == "transformers" and health["workers"]["total"] == 2


# --- bad input ---------------------------------------------------------------------------

CLIP = ENGLISH.read_bytes()


BAD_RECOGNITION = [
    # (files, form fields, status, words the message must contain)
    ({"audio": ("notes.txt", b"hello, this is text")}, {}, 400, ["notes.txt", "not a readable audio file"]),
    ({"audio": ("empty.wav", b"")}, {}, 400, ["empty.wav", "empty"]),
    ({"audio": ("cut.flac", CLIP[:44])}, {}, 400, ["cut.flac", "not a readable audio file"]),
    ({"audio": ("big.wav", b"\0" * (3 * 1024 * 1024))}, {}, 413, ["2 MB", "--max_upload_mb"]),
    ({"audio": ("a.flac", CLIP)}, {"language": "klingon"}, 400, ["language", "klingon"]),
    ({"audio": ("a.flac", CLIP)}, {"task": "summarise"}, 400, ["task", "summarise"]),
    ({"file": ("a.flac", CLIP)}, {}, 400, ["missing form field 'audio'"]),
    ({"audio": ("a.flac", CLIP)}, {"to_simple": "yes"}, 400, ["to_simple"]),
]


@pytest.mark.parametrize("files,fields,status,expected", BAD_RECOGNITION,
                         ids=["not-audio", "empty", "truncated", "too-large", "language", "task",
                              "missing-field", "bad-int"])
def test_recognition_bad_input_gets_a_sentence(tiny_server, files, fields, status, expected):
    response = requests.post(f"{tiny_server.url}/recognition", headers=AUTH, files=files,
                             data=fields, timeout=30)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status and set(body) == {"code", "msg"}
    for part in expected:
        assert part in body["msg"], body["msg"]
    assert "Traceback" not in response.text


def test_openai_bad_input_uses_openai_error_format(tiny_server):
    url = f"{tiny_server.url}/v1/audio/transcriptions"
    cases = [
        ({"file": ("a.flac", CLIP)}, {"response_format": "xml"}, 400, "response_format"),
        ({"model": (None, "whisper-1")}, {}, 400, "missing form field 'file'"),
        ({"file": ("a.flac", CLIP)}, {"timestamp_granularities[]": "word"}, 400,
         "verbose_json"),
        ({"file": ("a.flac", CLIP)}, {"temperature": "7"}, 400, "temperature"),
        ({"file": ("big.wav", b"\0" * (3 * 1024 * 1024))}, {}, 413, "--max_upload_mb"),
    ]
    for files, fields, status, expected in cases:
        response = requests.post(url, headers=AUTH, files=files, data=fields, timeout=30)
        assert response.status_code == status, response.text
        assert expected in response.json()["error"]["message"], response.text
    # A body streamed without Content-Length is cut off at the limit as well.
    def chunks():
        yield b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
        for _ in range(40):
            yield b"\0" * 100_000
    response = requests.post(url, headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"},
                             data=chunks(), timeout=30)
    assert response.status_code == 413, response.text


def test_server_keeps_serving_and_leaves_no_temporary_files(tiny_server, tmp_path):
    before = sorted(p.name for p in tiny_server.spool.iterdir())
    # Over Starlette's 1 MB in-memory threshold, so the upload is spooled to a temporary file;
    # the name tries to escape into tmp_path.
    escape = tmp_path / "escaped.wav"
    response = requests.post(f"{tiny_server.url}/recognition", headers=AUTH, timeout=30,
                             files={"audio": (f"../../../../../..{escape}", b"x" * 1_500_000)})
    assert response.status_code == 400 and "not a readable audio file" in response.json()["msg"]
    assert not escape.exists()
    buffer = io.BytesIO()   # the clip at 48 kHz stereo float: 1.4 MB
    audio = load_audio(ENGLISH, sample_rate=48000)
    soundfile.write(buffer, np.stack([audio, audio], axis=1), 48000, format="WAV", subtype="FLOAT")
    assert 1024 * 1024 < len(buffer.getvalue()) < 2 * 1024 * 1024
    response = requests.post(f"{tiny_server.url}/recognition", headers=AUTH, timeout=120,
                             files={"audio": ("long.wav", buffer.getvalue())}, data={"language": "en"})
    assert response.status_code == 200 and abs(response.json()["duration"] - 3.64) < 0.05
    assert sorted(p.name for p in tiny_server.spool.iterdir()) == before
    assert requests.get(f"{tiny_server.url}/health", timeout=5).status_code == 200


def test_api_key_guards_every_endpoint_but_health(tiny_server):
    url = tiny_server.url
    with open(ENGLISH, "rb") as audio:
        clip = audio.read()
    missing = requests.post(f"{url}/recognition", files={"audio": ("a.flac", clip)}, timeout=10)
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["msg"]
    wrong = requests.post(f"{url}/recognition", files={"audio": ("a.flac", clip)}, timeout=10,
                          headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong" in wrong.json()["msg"]
    openai_style = requests.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.flac", clip)}, timeout=10)
    assert openai_style.status_code == 401 and openai_style.json()["error"]["type"] == "authentication_error"
    assert requests.get(f"{url}/v1/models", timeout=10).status_code == 401
    assert requests.get(f"{url}/v1/models", headers=AUTH, timeout=10).json()["data"][0]["object"] == "model"
    health = requests.get(f"{url}/health", timeout=10).json()
    assert health["model_loaded"] is True and health["settings"]["api_key"] == "(set)"
    assert API_KEY not in json.dumps(health)
    page = requests.get(f"{url}/", timeout=10)
    assert page.status_code == 200 and 'id="api_key"' in page.text
    assert "/v1/audio/transcriptions" in requests.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    docs = requests.get(f"{url}/docs", timeout=10).text
    # The API page works offline: Swagger UI's files come from this server, not a CDN.
    assert "/swagger-ui/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    script = requests.get(f"{url}/swagger-ui/swagger-ui-bundle.js", timeout=10)
    assert script.status_code == 200 and "SwaggerUIBundle" in script.text


# --- a backend failure stays inside its request -----------------------------------------

def test_backend_exception_fails_only_that_request():
    """Fault injection: a real tiny.en model that raises for clips under a second, served by
    the real app in uvicorn, with other requests in flight."""
    import uvicorn

    from utils.apps.server import ServerSettings, create_app
    from utils.inference.backends.ct2 import CT2Transcriber

    class FailsOnShortClips(CT2Transcriber):
        def _transcribe(self, audio, options):
            if len(audio) < 16000:
                raise RuntimeError("engine crashed on a short clip")
            return super()._transcribe(audio, options)

    model = require_model(REPO / "models" / "whisper-tiny.en-ct2")
    app = create_app(FailsOnShortClips(str(model), num_workers=2),
                     ServerSettings(backend="ct2", model_name="tiny.en", num_workers=2, max_queue=4,
                                    temperature_increment_on_fallback=0))
    # A socket that listens before uvicorn starts: requests wait in its backlog instead of racing
    # the server's start, and the port is never let go between choosing it and serving on it.
    sock = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        audio, rate = soundfile.read(ENGLISH, dtype="float32")
        short = io.BytesIO()
        soundfile.write(short, audio[: rate // 2], rate, format="WAV")

        def post(payload):
            return requests.post(f"{url}/recognition", files={"audio": ("a.wav", payload)}, timeout=600)

        with ThreadPoolExecutor(3) as pool:
            good1, bad, good2 = pool.map(post, [ENGLISH.read_bytes(), short.getvalue(), ENGLISH.read_bytes()])
        assert bad.status_code == 500
        assert bad.json() == {"code": 500, "msg": "recognition failed: RuntimeError: engine crashed on a short clip"}
        for good in (good1, good2):
            assert good.status_code == 200
            assert "minutes" in words(good.json()["results"][0]["text"])
        workers = requests.get(f"{url}/health", timeout=60).json()["workers"]
        assert workers["busy"] == 0 and workers["waiting"] == 0 and workers["served"] == 3
        assert post(ENGLISH.read_bytes()).status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=60)


# --- command line ------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "infer_server.py", "--port=0", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def assert_refused(result, *expected):
    """Exit status 2 (a user mistake) and one `error:` line naming the problem."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in expected:
        assert part in lines[0], lines[0]


def test_cli_help_lists_every_flag():
    helped = run_cli("--help")
    assert helped.returncode == 0
    for flag in ["--host", "--port", "--model_path", "--backend", "--use_gpu", "--compute_type",
                 "--num_beams", "--beam_size", "--batch_size", "--vad_filter", "--num_workers",
                 "--max_queue", "--max_upload_mb", "--api_key", "--language", "--use_int8",
                 "--local_files_only", "--warmup", "--cpu_threads", "--log_level"]:
        assert flag in helped.stdout
    assert "{auto,transformers,ct2,ggml}" in helped.stdout


def test_cli_help_does_not_show_the_api_key_from_the_environment():
    helped = subprocess.run([sys.executable, "infer_server.py", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "WHISPER_SERVER_API_KEY": "sekrit-123"})
    assert helped.returncode == 0 and "sekrit-123" not in helped.stdout


def test_cli_rejects_bad_arguments_in_one_sentence(tmp_path):
    assert_refused(run_cli("--bogus=1"), "unknown flag --bogus")
    assert_refused(run_cli("--num_workers=0"), "--num_workers must be 1 or more")
    assert_refused(run_cli(f"--model_path={tmp_path / 'nope'}"), "nope", "no such model file or folder")
    assert_refused(run_cli("--model_path=models/whisper-base-ct2", "--language=klingon"),
                   "unknown language 'klingon'")
    assert_refused(run_cli("--model_path=models/whisper-base", "--compute_type=int8"),
                   "compute_type=int8", "it takes float32, bfloat16, float16")
    assert_refused(run_cli("--backend=transformers", "--model_path=models/whisper-base", "--compute_type=float16"),
                   "float16 on the transformers backend needs a CUDA GPU")
    assert_refused(run_cli("--model_path=models/whisper-base-ct2", "--use_int8=True", "--compute_type=float32"),
                   "--use_int8 and --compute_type=float32")
    assert_refused(run_cli("--model_path=models/whisper-base", "--vad_filter"),
                   "--vad_filter applies only to --backend=ct2, not transformers")


def test_cli_auto_backend_names_what_a_path_holds(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    assert_refused(run_cli(f"--model_path={notes}"), "notes.txt", "GGML")
    (tmp_path / "empty").mkdir()
    assert_refused(run_cli(f"--model_path={tmp_path / 'empty'}"), "empty", "model.bin", "config.json")
    assert_refused(run_cli("--backend=ct2", "--model_path=models/whisper-base"), "not a CTranslate2 one")


def test_cli_port_in_use_is_refused_before_the_model_loads():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "infer_server.py", f"--port={port}"], cwd=REPO,
                                capture_output=True, text=True, timeout=600)
    assert_refused(result, f"--port={port}", "cannot listen there")
    assert "loaded" not in result.stdout


def test_engine_flags_reach_each_backend_as_its_own_options():
    import infer_server
    from utils.core.cli import parse_args
    from utils.inference.registry import resolve_backend

    def options(*argv):
        args = parse_args(infer_server.ServerArguments, list(argv))
        return infer_server.engine_options(args, resolve_backend(args.backend, args.model_path))

    transformers = "--model_path=models/whisper-base"
    assert options(transformers, "--compute_type=bfloat16")["compute_type"] == "bfloat16"
    assert "compute_type" not in options(transformers) and "num_workers" not in options(transformers)
    assert options(transformers, "--use_int8") == {"use_int8": True}
    ct2 = options("--model_path=models/whisper-base-ct2", "--use_int8=True", "--num_workers=3")
    assert ct2 == {"compute_type": "int8", "num_workers": 3}
    with pytest.raises(ValueError, match="--compute_type applies only to --backend=transformers or ct2, not ggml"):
        options("--backend=ggml", "--model_path=models/ggml-model.bin", "--compute_type=int8")


# --- whisper.cpp ---------------------------------------------------------------------------

@pytest.mark.slow
def test_ggml_file_is_served_by_whisper_cpp(tmp_path, whisper_tiny_en_dir):
    """--backend=auto on a GGML file (convert-ggml.py's output) serves it through whisper.cpp."""
    ggml = tmp_path / "tiny-en.bin"
    converted = subprocess.run([sys.executable, "convert-ggml.py", f"--model_dir={whisper_tiny_en_dir}",
                                f"--output_path={ggml}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert converted.returncode == 0, converted.stderr
    server = ServerProcess(f"--model_path={ggml}", "--language=en", log_path=tmp_path / "server.log").wait_ready()
    try:
        health = requests.get(f"{server.url}/health", timeout=60).json()
        assert health["backend"] == "ggml" and health["model"] == "tiny-en.bin"
        with open(ENGLISH, "rb") as audio:
            response = requests.post(f"{server.url}/recognition", files={"audio": audio}, timeout=600)
        assert response.status_code == 200, response.text
        body = response.json()
        assert abs(body["duration"] - 3.64) < 0.05 and body["language"] == "en"
        assert {"train", "minutes"} <= words(" ".join(p["text"] for p in body["results"])), body
        with open(ENGLISH, "rb") as audio:
            words_asked = requests.post(f"{server.url}/v1/audio/transcriptions", timeout=600, files={"file": audio},
                                        data={"response_format": "verbose_json",
                                              "timestamp_granularities[]": "word"})
        assert words_asked.status_code == 400 and "word_timestamps" in words_asked.json()["error"]["message"]
    finally:
        server.stop()


def test_an_open_address_without_a_key_is_warned_about_at_start(capsys):
    import infer_server

    for host, key, warned in [("127.0.0.1", None, False), ("0.0.0.0", None, True), ("0.0.0.0", "k", False)]:
        with socket.create_server((host, 0)) as sock:
            infer_server.warn_if_open(sock, key)
        err = capsys.readouterr().err
        assert ("warning: listening on 0.0.0.0 without an API key" in err) is warned, (host, key, err)
