"""The real infer_server.py (a process on a loopback port) through the official `openai` client: both
audio endpoints, every response format, verbose_json's decoder fields, word timestamps, streaming,
models, silence and OpenAI's error shape.

One server for the module: whisper-tiny.en (CTranslate2), the smallest real model, on short clips. It is
English-only, so its translations endpoint refuses; a real translation is in test_server.py (whisper-base).
"""
from __future__ import annotations

import io
import re

import numpy as np
import openai
import pytest
import soundfile
import srt
import webvtt
from conftest import REPO, require_model
from server_process import ServerProcess

MODEL = "models/whisper-tiny.en-ct2"
ENGLISH = REPO / "dataset" / "audio" / "en_test_0001.flac"  # "The train to the airport leaves every twenty minutes."
DURATION = 3.64
KEYWORDS = {"train", "minutes"}   # tiny.en mishears "airport"

# The translations endpoint is deprecated in the client's type hints; the API itself is not.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_model(REPO / MODEL)
    log = tmp_path_factory.mktemp("openai-server") / "server.log"
    # The defaults (greedy decoding, no fallback), so every format below gets the same transcript; one
    # thread, as it decodes fastest on two shared cores.
    server = ServerProcess(f"--model_path={MODEL}", "--cpu_threads=1", log_path=log).wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused-without---api_key", max_retries=0)


def transcribe(client: openai.OpenAI, **options):
    with open(ENGLISH, "rb") as audio:
        return client.audio.transcriptions.create(model="whisper-1", file=audio, **options)


@pytest.fixture(scope="module")
def verbose(client):
    return transcribe(client, language="en", response_format="verbose_json",
                      timestamp_granularities=["word", "segment"])


def test_every_response_format_carries_the_same_transcript(client, verbose):
    text = transcribe(client, language="en", response_format="json").text
    assert KEYWORDS <= words(text), text
    assert verbose.text == text
    assert transcribe(client, language="en", response_format="text").strip() == text

    subtitles = list(srt.parse(transcribe(client, language="en", response_format="srt")))
    assert subtitles and " ".join(s.content for s in subtitles) == text
    assert subtitles[0].start.total_seconds() >= 0 and subtitles[-1].end.total_seconds() <= DURATION

    captions = webvtt.from_buffer(io.StringIO(transcribe(client, language="en", response_format="vtt")))
    assert " ".join(c.text for c in captions) == text


def test_verbose_json_has_openais_segment_and_word_fields_from_the_decoder(verbose):
    assert verbose.task == "transcribe" and verbose.language == "english"
    assert verbose.duration == pytest.approx(DURATION, abs=0.05)
    assert verbose.segments
    for i, segment in enumerate(verbose.segments):
        assert segment.id == i and 0 <= segment.start < segment.end <= DURATION
        assert segment.text.startswith(" ")                 # Whisper's leading space, as OpenAI keeps it
        assert segment.tokens and all(isinstance(t, int) and t >= 0 for t in segment.tokens)
        assert segment.temperature == 0.0                   # the one used: greedy, no fallback
        assert -5 < segment.avg_logprob < 0
        assert 0 < segment.compression_ratio < 2.4          # above 2.4 Whisper calls it a loop
        assert 0 <= segment.no_speech_prob < 0.6            # speech
        # seek: where the segment's 30 s window starts, in 10 ms frames; one window for a 3.6 s clip.
        assert segment.seek == 0
    assert " ".join(s.text.strip() for s in verbose.segments) == verbose.text
    spoken = [w.word.strip(" .,").lower() for w in verbose.words]
    assert "train" in spoken and "minutes" in spoken, spoken
    assert all(0 <= w.start <= w.end <= DURATION for w in verbose.words)
    assert all(a.start <= b.start for a, b in zip(verbose.words, verbose.words[1:]))


def test_stream_yields_deltas_then_the_whole_text(client, verbose):
    with open(ENGLISH, "rb") as audio:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=audio, language="en",
                                                         stream=True))
    kinds = [event.type for event in events]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.done") == 1
    assert kinds[:-1] and set(kinds[:-1]) == {"transcript.text.delta"}
    assert "".join(event.delta for event in events[:-1]) == events[-1].text == verbose.text


def test_translations_of_an_english_only_model_are_refused_in_a_sentence(client):
    with open(ENGLISH, "rb") as audio:
        with pytest.raises(openai.BadRequestError) as caught:
            client.audio.translations.create(model="whisper-1", file=audio, response_format="verbose_json")
    assert caught.value.body["message"] == "this model is English-only; it cannot translate"


def test_all_silent_upload_is_an_empty_transcript(client, tmp_path):
    """Ten minutes of digital silence: no text, rather than Whisper's " you" in every window."""
    silence = tmp_path / "silence.flac"
    soundfile.write(silence, np.zeros(600 * 16000, dtype=np.float32), 16000)
    with open(silence, "rb") as audio:
        result = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="verbose_json")
    assert result.text == "" and result.segments == [] and result.duration == pytest.approx(600.0)


def test_models_list_and_retrieve(client):
    listed = client.models.list().data
    assert [m.id for m in listed] == ["whisper-tiny.en-ct2"]
    assert listed[0].object == "model" and listed[0].created > 1_500_000_000 and listed[0].owned_by
    assert client.models.retrieve("whisper-tiny.en-ct2") == listed[0]
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("whisper-1")
    assert "'whisper-1' does not exist" in caught.value.message


@pytest.mark.parametrize("options,sentence", [
    ({"include": ["logprobs"]}, "form field 'include[]': token log-probabilities"),
    ({"chunking_strategy": "auto"}, "form field 'chunking_strategy': this server decodes"),
    ({"response_format": "xml"}, "form field 'response_format': unknown format 'xml'"),
    ({"timestamp_granularities": ["word"]}, "timestamp_granularities[] needs response_format=verbose_json"),
    ({"stream": True, "response_format": "srt"}, "streaming answers in json or text format, not srt"),
], ids=["include", "chunking_strategy", "response_format", "granularity", "stream-format"])
def test_unsupported_options_raise_bad_request_with_the_servers_sentence(client, options, sentence):
    with pytest.raises(openai.BadRequestError) as caught:
        transcribe(client, **options)
    assert caught.value.status_code == 400 and sentence in caught.value.message
    assert set(caught.value.body) == {"message", "type", "param", "code"}
    assert caught.value.body["type"] == "invalid_request_error"


def test_unreadable_audio_raises_bad_request_naming_the_file(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("notes.wav", b"not audio at all"))
    assert "notes.wav" in caught.value.message and "not a readable audio file" in caught.value.message
    assert caught.value.body["param"] == "file"
