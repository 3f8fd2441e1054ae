"""Speed work that must not regress silently: the CTranslate2 path stays free of torch and transformers,
the arithmetic floor's formulas, and the server's cross-request batching keeps every answer its own."""
import json
import re
import subprocess
import sys

from conftest import REPO

from utils.bench.floor import decoder_weights, encoder_flops, floor_seconds

CLIP = REPO / "dataset" / "sample_en.wav"
TINY_EN_CT2 = REPO / "models" / "whisper-tiny.en-ct2"


def imported_modules(importtime_log: str) -> set[str]:
    """Top-level packages named by `python -X importtime` (one 'import time: ... | module' line each)."""
    return {match.split(".")[0] for match in re.findall(r"^import time:.*\|\s+([\w.]+)$", importtime_log, re.M)}


def test_infer_ct2_transcribes_without_importing_torch_or_transformers(tmp_path):
    result = subprocess.run([sys.executable, "-X", "importtime", "infer_ct2.py", f"--audio_path={CLIP}",
                             f"--model_path={TINY_EN_CT2}", f"--output_dir={tmp_path}", "--output_format=txt",
                             "--use_int8"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert {"faster_whisper", "ctranslate2"} <= modules      # the log is read right: the engine is in it
    assert "torch" not in modules and "transformers" not in modules
    assert "written text" in (tmp_path / "sample_en.txt").read_text()


def test_floor_counts_whisper_base_by_hand():
    config = json.loads((REPO / "models" / "whisper-base" / "config.json").read_text())
    d, frames = 512, 1500
    per_layer = 8 * frames * d * d + 4 * frames * d * 2048 + 4 * frames * frames * d
    convs = 2 * 3000 * 80 * 3 * d + 2 * frames * d * 3 * d
    assert encoder_flops(config) == 6 * per_layer + convs          # about 87 GFLOP a window
    assert decoder_weights(config) == 6 * (6 * d * d + 2 * d * 2048) + 51865 * d
    machine = {"gflops": {"int8": 100.0}, "bandwidth_gbs": 10.0}
    floor = floor_seconds(config, machine, "int8", duration_s=61, tokens=80, batch_size=8)
    # 3 windows over 100 GFLOP/s; 10 decoder steps of one byte a weight over 10 GB/s.
    assert abs(floor["encoder_s"] - 3 * encoder_flops(config) / 100e9) < 1e-9
    assert abs(floor["decoder_s"] - 10 * decoder_weights(config) / 10e9) < 1e-9


def test_concurrent_requests_batched_together_get_their_own_texts():
    from concurrent.futures import ThreadPoolExecutor

    from utils.apps.server import ServerSettings, create_app
    from utils.apps.server.batching import RequestBatcher
    from utils.core.audio import load_audio
    from utils.inference.registry import load_transcriber
    from utils.inference.transcriber import TranscribeOptions

    manifest = [json.loads(line) for line in (REPO / "dataset" / "en_test.jsonl").read_text().splitlines()[:4]]
    clips = [load_audio(str(REPO / item["audio"]["path"])) for item in manifest]
    transcriber = load_transcriber("ct2", str(TINY_EN_CT2), compute_type="int8", cpu_threads=2)
    alone = [" ".join(s.text for s in transcriber.transcribe(clip, TranscribeOptions())[0]) for clip in clips]

    batcher = RequestBatcher(transcriber, max_batch=4, max_wait_s=1.0, window_s=5)
    assert batcher.accepts(clips[0], TranscribeOptions())
    assert not batcher.accepts(clips[0], TranscribeOptions(word_timestamps=True))
    with ThreadPoolExecutor(4) as requests:
        answers = list(requests.map(lambda clip: batcher.transcribe(clip, TranscribeOptions()), clips))
    assert max(batcher.batches) > 1                      # they were decoded together
    def words_of(text: str) -> set[str]:
        return set(re.findall(r"[a-z]+", text.lower()))

    sentences = [words_of(item["sentence"]) for item in manifest]
    for index, ((segments, info), clip, text) in enumerate(zip(answers, clips, alone)):
        answer = words_of(" ".join(segment.text for segment in segments))
        # Each answer is its own clip's: it shares more words with that clip's sentence than with any other,
        # and at least half as many as the clip decoded alone does (which clips share a batch, and so each
        # one's shorter window, depends on when the requests arrive: under load tiny.en lost 3 of 7 words).
        shared = [len(answer & sentence) for sentence in sentences]
        assert shared.index(max(shared)) == index and shared.count(max(shared)) == 1, (answer, shared)
        assert 2 * shared[index] >= len(words_of(text) & sentences[index]), (answer, text)
        assert info.language == "en" and abs(info.duration - len(clip) / 16000) < 1e-6
        assert all(0 <= s.start <= s.end <= info.duration for s in segments)

    # infer_server.py --batch_requests=4 wires one batcher into every request's recognizer.
    app = create_app(transcriber, ServerSettings(backend="ct2", batch_requests=4))
    assert isinstance(app.state.recognizer.batcher, RequestBatcher) and app.state.pool.num_workers == 4
