"""Hugging Face conventions: adapters that AutoPeftModel loads from any folder, merged models that
pipeline() decodes in the fine-tuned language without arguments, --push_to_hub against a local Hub stand-in,
and folder permissions of what the toolkit saves."""
from __future__ import annotations

import base64
import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from conftest import REPO

import merge_lora
from utils.training.lora import adapter_base, add_adapter


def _err(capsys):
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def relative_run(tiny_whisper_dir, tmp_path_factory):
    """An adapter trained the way finetune.py builds it, from a base given as a path relative to the run's folder."""
    from utils.core.models import load_whisper

    root = tmp_path_factory.mktemp("run")
    (root / "models").mkdir()
    (root / "models" / "tiny").symlink_to(tiny_whisper_dir)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        torch.manual_seed(0)
        model = add_adapter(load_whisper("models/tiny"), use_adalora=False, r=2, alpha=4, dropout=0.0,
                            target_modules=["q_proj", "v_proj"], freeze_encoder=False)
        for name, param in model.named_parameters():
            if "lora_B" in name:     # non-zero, so that an adapter that was not loaded changes the logits
                torch.nn.init.normal_(param, std=0.5)
        model.save_pretrained("adapter")
    finally:
        os.chdir(cwd)
    return root, model.eval()


def test_adapter_records_an_absolute_base_and_auto_peft_model_loads_it_from_elsewhere(relative_run, tmp_path,
                                                                                      monkeypatch):
    from peft import AutoPeftModel

    root, trained = relative_run
    config = json.loads((root / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(root / "models" / "tiny")
    monkeypatch.chdir(tmp_path)
    loaded = AutoPeftModel.from_pretrained(str(root / "adapter")).eval()
    features, ids = torch.randn(1, 80, 3000), torch.tensor([[50258, 50259, 50359, 50363]])
    with torch.no_grad():
        got = loaded(input_features=features, decoder_input_ids=ids).logits
        want = trained(input_features=features, decoder_input_ids=ids).logits
        plain = loaded.get_base_model()
        with loaded.disable_adapter():
            bare = plain(input_features=features, decoder_input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5) and (got - bare).abs().max() > 1e-3


def test_adapter_of_an_older_run_with_a_relative_base_is_merged_with_a_note(relative_run, tmp_path, capsys,
                                                                             monkeypatch):
    root, _ = relative_run
    old = root / "old-run" / "checkpoint-best"
    old.mkdir(parents=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (old / name).write_bytes((root / "adapter" / name).read_bytes())
    config = json.loads((old / "adapter_config.json").read_text())
    # Relative to the adapter's own folder, as an old run started elsewhere might have recorded it.
    config["base_model_name_or_path"] = "../../models/tiny"
    (old / "adapter_config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    assert merge_lora.main([f"--lora_model={old}", f"--output_dir={tmp_path / 'out'}"]) == 0
    out = capsys.readouterr().out
    assert (f"note: {old / 'adapter_config.json'} names the base model '../../models/tiny' relative to the folder "
            f"its run started in; using {root / 'models' / 'tiny'}") in out
    assert (tmp_path / "out" / "tiny-finetune" / "model.safetensors").is_file()
    # The layout of this repository's own runs: models/whisper-base, relative to the repository root.
    config["base_model_name_or_path"] = "models/whisper-base"
    (old / "adapter_config.json").write_text(json.dumps(config))
    assert adapter_base(str(old))[0] == str(REPO / "models" / "whisper-base")
    config["base_model_name_or_path"] = "openai/whisper-small"
    (old / "adapter_config.json").write_text(json.dumps(config))
    assert adapter_base(str(old)) == ("openai/whisper-small", None)


def test_merged_model_records_language_and_pipeline_decodes_it_without_arguments(relative_run, tmp_path):
    from transformers import pipeline

    root, _ = relative_run
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    for language, name in (("English", "english"), ("ja", "japanese")):
        out_dir = tmp_path / language
        assert merge_lora.main([f"--lora_model={root / 'adapter'}", f"--output_dir={out_dir}",
                                f"--language={language}", "--task=transcribe"]) == 0
        merged = out_dir / "tiny-finetune"
        generation = json.loads((merged / "generation_config.json").read_text())
        assert (generation["language"], generation["task"], generation["forced_decoder_ids"]) == \
            (name[:2], "transcribe", None)
        asr = pipeline("automatic-speech-recognition", model=str(merged))
        # No language in the call: the pipeline's generate takes the recorded one (its first decoded token).
        result = asr(audio, return_language=True, generate_kwargs={"max_new_tokens": 2})
        assert result["chunks"][0]["language"] == name, result


class _HubStandIn(BaseHTTPRequestHandler):
    """The three Hub endpoints upload_folder uses (create repo, preupload, commit), keeping what was sent."""
    received: dict = {}

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        endpoint = f"http://{self.headers['Host']}"
        if self.headers.get("authorization") != "Bearer hf_standin":
            return self._reply(401, {"error": "Invalid credentials"})
        if self.path == "/api/repos/create":
            request = json.loads(body)
            self.received["repo"] = (request["organization"], request["name"], request.get("visibility"))
            return self._reply(200, {"url": f"{endpoint}/{request['organization']}/{request['name']}"})
        if self.path.endswith("/preupload/main"):
            return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                               for f in json.loads(body)["files"]]})
        if self.path.endswith("/commit/main"):
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.received.setdefault("files", {})[item["value"]["path"]] = \
                        base64.b64decode(item["value"]["content"])
            repo = self.path.split("/api/models/")[1].rsplit("/commit/", 1)[0]
            return self._reply(200, {"commitUrl": f"{endpoint}/{repo}/commit/{'c' * 40}", "commitOid": "c" * 40})
        return self._reply(404, {"error": "not found"})

    def do_GET(self):  # noqa: N802
        self._reply(404, {"error": "not found"})

    def log_message(self, *args):
        pass


def test_push_to_hub_uploads_the_merged_folder(relative_run, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    root, _ = relative_run
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    # huggingface_hub reads these once at import; the test session imported it long ago.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    argv = [f"--lora_model={root / 'adapter'}", f"--output_dir={tmp_path}", "--push_to_hub",
            "--hub_model_id=someone/tiny-zh", "--hub_private_repo"]
    try:
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
        assert merge_lora.main(argv) == 2
        assert _err(capsys) == ("error: --hub_model_id=someone/tiny-zh: the Hub refused the upload (HTTP 401; a 401 "
                                f"or 403 means the token may not write there); {tmp_path / 'tiny-finetune'} is "
                                f"saved, upload it later")
        monkeypatch.setenv("HF_TOKEN", "hf_standin")
        assert merge_lora.main(argv) == 0
    finally:
        server.shutdown()
    assert f"pushed {tmp_path / 'tiny-finetune'} to someone/tiny-zh: {endpoint}/someone/tiny-zh/commit/" \
        in capsys.readouterr().out
    merged = tmp_path / "tiny-finetune"
    assert _HubStandIn.received["repo"] == ("someone", "tiny-zh", "private")
    assert _HubStandIn.received["files"] == {p.name: p.read_bytes() for p in merged.iterdir()}


def test_push_to_hub_refuses_before_merging_when_it_cannot_work(relative_run, tmp_path, capsys, monkeypatch):
    root, _ = relative_run
    argv = [f"--lora_model={root / 'adapter'}", f"--output_dir={tmp_path}", "--push_to_hub"]
    with pytest.raises(SystemExit) as refused:
        merge_lora.main(argv)
    assert refused.value.code == 2 and "--push_to_hub needs --hub_model_id=<user>/<name>" in _err(capsys)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert merge_lora.main([*argv, "--hub_model_id=someone/x"]) == 2
    assert _err(capsys) == ("error: --push_to_hub: HF_HUB_OFFLINE is set, so nothing can be uploaded to someone/x; "
                            "unset it, or drop --push_to_hub and upload the folder later")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")     # the discard port: nothing listens
    assert merge_lora.main([*argv, "--hub_model_id=someone/x"]) == 2
    assert _err(capsys) == ("error: --push_to_hub: the Hugging Face Hub (http://127.0.0.1:9) is unreachable from "
                            "this machine; drop --push_to_hub and upload the folder later")
    assert list(tmp_path.iterdir()) == []


def test_saved_folders_have_the_usual_permissions(tmp_path):
    from utils.core.files import atomic_dir

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "model") as tmp:
            os.makedirs(os.path.join(tmp, "sub"))
            for name in ("config.json", "sub/weights.bin"):
                # As safetensors and mkstemp write: owner-only.
                os.close(os.open(os.path.join(tmp, name), os.O_CREAT | os.O_WRONLY, 0o600))
        modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode)
                 for p in [tmp_path / "model", *(tmp_path / "model").rglob("*")]}
        assert modes == {"model": 0o755, "model/sub": 0o755, "model/config.json": 0o644,
                         "model/sub/weights.bin": 0o644}
        os.umask(0o027)
        with atomic_dir(tmp_path / "group") as tmp:
            os.close(os.open(os.path.join(tmp, "a"), os.O_CREAT | os.O_WRONLY, 0o600))
        assert stat.S_IMODE((tmp_path / "group").stat().st_mode) == 0o750
        assert stat.S_IMODE((tmp_path / "group" / "a").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_report_to_takes_trainers_names_and_refuses_a_missing_reporter_before_training(tiny_whisper_dir, tmp_path,
                                                                                       capsys):
    from training_fixtures import finetune_args, make_corpus
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    import finetune

    train, test = make_corpus(tmp_path, n_train=1, n_test=1)
    base = finetune_args(tiny_whisper_dir, train, test, tmp_path / "out")
    missing = next(n for n in ("wandb", "mlflow", "comet_ml") if n not in get_available_reporting_integrations())
    assert finetune.main([*base, f"--report_to=tensorboard,{missing}"]) == 2
    assert _err(capsys) == (f"error: --report_to={missing}: the {missing} package is not installed in this "
                            f"environment; install it, or use --report_to=tensorboard or none")
    assert finetune.main([*base, "--report_to=tensorbord"]) == 2
    assert _err(capsys).startswith("error: --report_to: 'tensorbord' is not a reporter transformers knows; use "
                                   "none, all or a comma-separated list of azure_ml, clearml,")
    # Tests run with HF_HUB_OFFLINE=1 (conftest): --push_to_hub is refused before anything is loaded.
    assert finetune.main([*base, "--push_to_hub", "--hub_model_id=someone/x"]) == 2
    assert _err(capsys) == ("error: --push_to_hub: HF_HUB_OFFLINE is set, so nothing can be uploaded to someone/x; "
                            "unset it, or drop --push_to_hub and upload the folder later")
    assert not (tmp_path / "out").exists(), "the refusal came after the run started"

    def reporting(flag):
        args = finetune.FinetuneArguments(base_model=str(tiny_whisper_dir), report_to=flag)
        return finetune.trainer_arguments(args, reads_stored_outputs=False).report_to

    assert reporting("tensorboard") == ["tensorboard"] and reporting("none") == []
    assert reporting("all") == get_available_reporting_integrations()
