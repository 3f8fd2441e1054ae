"""The web page of infer_server.py in headless Chromium (Debian's, driven by playwright): choose a
file and see its transcript, copy and download it, see an error in words, record from a (fake)
microphone, and the API documentation at /docs rendered by the bundled Swagger UI."""
from __future__ import annotations

import re
import shutil

import pytest
import requests
import soundfile
from conftest import REPO, require_model
from server_process import ServerProcess

from utils.core.audio import load_audio

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TEST_WAV = REPO / "dataset" / "test.wav"
ENGLISH = REPO / "dataset" / "audio" / "en_test_0001.flac"   # "The train to the airport leaves every twenty minutes."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = require_model(REPO / "models" / "whisper-base-ct2")
    log = tmp_path_factory.mktemp("web-server") / "server.log"
    server = ServerProcess("--backend=ct2", f"--model_path={model}", "--language=zh",
                           "--num_workers=2", log_path=log).wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def playwright():
    if not shutil.which(CHROMIUM) and not (REPO / CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make system-deps`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as handle:
        yield handle


def launch(playwright, *extra_args):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + list(extra_args))


def test_choose_file_and_see_transcript(server, playwright, artifacts_dir):
    browser = launch(playwright)
    try:
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(server.url + "/")
        assert page.input_value("#language") == "zh", "the page must preselect the server's --language"
        assert page.is_disabled("#upload")
        page.set_input_files("#file", str(TEST_WAV))
        # Record the progress bar's values as the upload runs.
        page.evaluate("""() => { window.progressSeen = [];
            new MutationObserver(() => window.progressSeen.push(document.getElementById('progress').value))
              .observe(document.getElementById('progress'), {attributes: true}); }""")
        page.click("#upload")
        page.wait_for_selector("#transcript li.segment", timeout=120_000)
        page.screenshot(path=str(artifacts_dir / "server_web_file.png"), full_page=True)

        shown = page.locator("#transcript li.segment .text").all_inner_texts()
        times = page.locator("#transcript li.segment .time").all_inner_texts()
        assert page.inner_text("#language-out") == "chinese (zh)"
        assert page.inner_text("#duration-out") == "12.16"
        assert page.is_hidden("#error")
        assert 100 in page.evaluate("window.progressSeen"), "the progress bar never reached 100 %"
        assert re.fullmatch(r"\[0\.00 - \d+\.\d\d\]", times[0]), times    # as infer.py prints it

        # The page shows exactly what the API answers for the same upload and options.
        with open(TEST_WAV, "rb") as audio:
            api = requests.post(f"{server.url}/recognition", files={"audio": audio}, timeout=120,
                                data={"language": "zh", "task": "transcribe", "to_simple": "1",
                                      "remove_pun": "0"}).json()
        assert shown == [part["text"] for part in api["results"]]
        assert any("\u4e00" <= ch <= "\u9fff" for ch in "".join(shown)), shown
    finally:
        browser.close()


def test_error_is_shown_in_words(server, playwright, tmp_path, artifacts_dir):
    not_audio = tmp_path / "minutes.txt"
    not_audio.write_text("meeting minutes, not a recording\n")
    browser = launch(playwright)
    try:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.set_input_files("#file", str(not_audio))
        page.click("#upload")
        page.wait_for_selector("#error", state="visible", timeout=60_000)
        message = page.inner_text("#error")
        page.screenshot(path=str(artifacts_dir / "server_web_error.png"))
        assert message.startswith("Error: uploaded file 'minutes.txt': not a readable audio file")
        assert "(HTTP 400)" in message
        assert page.is_hidden("#result")
        assert page.is_enabled("#upload"), "the page must let the user try again"
    finally:
        browser.close()


def test_record_from_microphone_and_see_transcript(server, playwright, tmp_path, artifacts_dir):
    # Chromium's fake microphone plays a WAV file in a loop: the English clip, 16-bit at 48 kHz.
    speech = tmp_path / "speech.wav"
    soundfile.write(speech, load_audio(ENGLISH, sample_rate=48000), 48000, subtype="PCM_16")
    browser = launch(playwright, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                     f"--use-file-for-fake-audio-capture={speech}")
    try:
        context = browser.new_context(permissions=["microphone"])
        page = context.new_page()
        # Playwright cannot read a Blob request body, so note what the page puts in its form.
        page.add_init_script("""(() => { const append = FormData.prototype.append; window.appended = [];
            FormData.prototype.append = function (name, value, filename) {
              window.appended.push([name, value instanceof Blob ? value.type : value, filename || null]);
              return append.apply(this, arguments); }; })()""")
        page.goto(server.url + "/")
        page.select_option("#language", "en")
        page.click("#record")
        page.wait_for_function("document.getElementById('record').textContent.includes('Stop')",
                               timeout=10_000)
        page.wait_for_timeout(4000)      # a little over the clip's 3.64 s
        page.click("#record")
        page.wait_for_selector("#transcript li.segment", timeout=120_000)
        page.screenshot(path=str(artifacts_dir / "server_web_recording.png"), full_page=True)

        text = " ".join(page.locator("#transcript li.segment .text").all_inner_texts()).lower()
        assert {"train", "airport"} <= set(re.findall(r"[a-z]+", text)), text
        assert page.inner_text("#language-out") == "english (en)"
        # About 4 s were recorded; the upper bound only catches a wrong duration (e.g. a padded 30 s
        # window) and leaves a slow browser on a loaded machine 16 s of room.
        duration = float(page.inner_text("#duration-out"))
        assert 3.0 < duration < 20.0, duration
        name, mime, filename = page.evaluate("window.appended")[0]
        assert (name, filename) == ("audio", "recording.webm") and mime.startswith("audio/webm"), mime
    finally:
        browser.close()


def test_copy_and_download_the_transcript(server, playwright):
    browser = launch(playwright)
    try:
        context = browser.new_context(accept_downloads=True, permissions=["clipboard-read", "clipboard-write"])
        page = context.new_page()
        page.goto(server.url + "/")
        page.select_option("#language", "en")
        page.set_input_files("#file", str(ENGLISH))
        page.click("#upload")
        page.wait_for_selector("#transcript li.segment", timeout=120_000)
        files = {}
        for kind in ("txt", "srt", "vtt"):
            with page.expect_download() as caught:
                page.click(f"#download-{kind}")
            assert caught.value.suggested_filename == f"en_test_0001.{kind}"
            files[kind] = open(caught.value.path(), encoding="utf-8").read()
        page.click("#copy")
        page.wait_for_function("document.getElementById('copy-status').textContent.startsWith('copied')")
        copied = page.evaluate("navigator.clipboard.readText()")
    finally:
        browser.close()
    with open(ENGLISH, "rb") as audio:
        api = requests.post(f"{server.url}/recognition", files={"audio": audio}, timeout=120,
                            data={"language": "en"}).json()["results"]
    assert api and files["txt"] == "".join(part["text"] + "\n" for part in api)
    # The page's subtitles are the server's own writers' files for the same segments.
    for kind in ("srt", "vtt"):
        with open(ENGLISH, "rb") as audio:
            written = requests.post(f"{server.url}/v1/audio/transcriptions", files={"file": audio}, timeout=120,
                                    data={"language": "en", "response_format": kind})
        assert files[kind] == written.text, (kind, files[kind], written.text)
    assert copied == "".join(f"[{p['start']:.2f} - {p['end']:.2f}] {p['text']}\n" for p in api)


def test_docs_page_renders_every_route(server, playwright, artifacts_dir):
    browser = launch(playwright)
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server.url + "/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=60_000)
        page.screenshot(path=str(artifacts_dir / "server_docs.png"))
        shown = page.locator(".opblock-summary-path").all_inner_texts()
        assert not page.locator(".errors-wrapper").count(), page.inner_text(".errors-wrapper")
    finally:
        browser.close()
    paths = [path.replace("\u200b", "") for path in shown]
    assert set(paths) == set(requests.get(f"{server.url}/openapi.json", timeout=10).json()["paths"]), paths
    assert "/v1/audio/transcriptions" in paths and "/recognition" in paths
